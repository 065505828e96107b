//! Sparkplug datatypes (3.0, 6.4.16) to historian values.
//!
//! Integers arrive in `int_value` (uint32) or `long_value` (uint64) as the
//! two's-complement bits of the declared type; implementations differ in
//! which field they use for UInt32 and in whether they sign-extend, so both
//! fields are accepted and signed types read only their own low bits.

use crate::encoding::{Value, ValueType};
use crate::ingest::sparkplug::proto::payload::metric::Value as MetricValue;
use crate::ingest::sparkplug::proto::DataType;
use crate::ingest::{check_len, IngestError, IngestLimits};

/// How a metric of a datatype is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// As points of this type.
    As(ValueType),
    /// Not stored (DataSet, Template, Bytes, File, PropertySet, arrays).
    Unsupported,
}

/// The datatype of a BIRTH metric.
pub(crate) fn datatype(raw: u32) -> Result<DataType, IngestError> {
    i32::try_from(raw)
        .ok()
        .and_then(|d| DataType::try_from(d).ok())
        .filter(|d| *d != DataType::Unknown)
        .ok_or(IngestError::UnknownDataType(raw))
}

/// How `datatype` is stored.
pub(crate) fn storage(datatype: DataType) -> Storage {
    use DataType as D;
    match datatype {
        D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::UInt8
        | D::UInt16
        | D::UInt32
        | D::UInt64
        | D::DateTime => Storage::As(ValueType::I64),
        D::Float | D::Double => Storage::As(ValueType::F64),
        D::Boolean => Storage::As(ValueType::Bool),
        D::String | D::Text | D::Uuid => Storage::As(ValueType::Str),
        _ => Storage::Unsupported,
    }
}

/// Converts a metric value of a stored datatype. DateTime stays epoch
/// milliseconds, as sent.
pub(crate) fn convert(
    datatype: DataType,
    value: &MetricValue,
    limits: &IngestLimits,
) -> Result<Value, IngestError> {
    use DataType as D;
    match storage(datatype) {
        Storage::As(ValueType::I64) => {
            let raw = match value {
                MetricValue::IntValue(v) => u64::from(*v),
                MetricValue::LongValue(v) => *v,
                _ => {
                    return Err(IngestError::WrongType {
                        expected: ValueType::I64,
                    })
                }
            };
            let [b0, b1, b2, b3, ..] = raw.to_le_bytes();
            let v = match datatype {
                D::Int8 => i64::from(i8::from_le_bytes([b0])),
                D::Int16 => i64::from(i16::from_le_bytes([b0, b1])),
                D::Int32 => i64::from(i32::from_le_bytes([b0, b1, b2, b3])),
                D::Int64 => i64::from_le_bytes(raw.to_le_bytes()),
                // Unsigned types and DateTime.
                _ => i64::try_from(raw).map_err(|_| IngestError::IntegerOutOfRange)?,
            };
            Ok(Value::I64(v))
        }
        Storage::As(ValueType::F64) => match value {
            MetricValue::FloatValue(v) => Ok(Value::F64(f64::from(*v))),
            MetricValue::DoubleValue(v) => Ok(Value::F64(*v)),
            _ => Err(IngestError::WrongType {
                expected: ValueType::F64,
            }),
        },
        Storage::As(ValueType::Bool) => match value {
            MetricValue::BooleanValue(v) => Ok(Value::Bool(*v)),
            _ => Err(IngestError::WrongType {
                expected: ValueType::Bool,
            }),
        },
        Storage::As(ValueType::Str) => match value {
            MetricValue::StringValue(s) => {
                check_len(s, limits)?;
                Ok(Value::Str(s.clone()))
            }
            _ => Err(IngestError::WrongType {
                expected: ValueType::Str,
            }),
        },
        // Callers check `storage` first; a new ValueType lands here.
        _ => Err(IngestError::UnknownDataType(
            u32::try_from(i32::from(datatype)).unwrap_or(0),
        )),
    }
}

/// An integer metric's raw value (bdSeq).
pub(crate) fn raw_u64(value: Option<&MetricValue>) -> Option<u64> {
    match value {
        Some(MetricValue::IntValue(v)) => Some(u64::from(*v)),
        Some(MetricValue::LongValue(v)) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn conv(d: DataType, v: MetricValue) -> Result<Value, IngestError> {
        convert(d, &v, &IngestLimits::default())
    }

    #[test]
    fn signed_integers_read_their_own_bits() {
        use MetricValue::*;
        // -1 sign-extended to 32 bits, and zero-extended from 8 bits.
        assert_eq!(
            conv(DataType::Int8, IntValue(u32::MAX)).unwrap(),
            Value::I64(-1)
        );
        assert_eq!(
            conv(DataType::Int8, IntValue(0xFF)).unwrap(),
            Value::I64(-1)
        );
        assert_eq!(
            conv(DataType::Int16, IntValue(0x8000)).unwrap(),
            Value::I64(-32_768)
        );
        assert_eq!(
            conv(DataType::Int32, IntValue(0xFFFF_FFFE)).unwrap(),
            Value::I64(-2)
        );
        assert_eq!(
            conv(DataType::Int64, LongValue(u64::MAX)).unwrap(),
            Value::I64(-1)
        );
        assert_eq!(
            conv(DataType::UInt32, LongValue(4_000_000_000)).unwrap(),
            Value::I64(4_000_000_000)
        );
        assert_eq!(
            conv(DataType::UInt32, IntValue(u32::MAX)).unwrap(),
            Value::I64(4_294_967_295)
        );
        assert!(matches!(
            conv(DataType::UInt64, LongValue(u64::MAX)),
            Err(IngestError::IntegerOutOfRange)
        ));
        assert_eq!(
            conv(DataType::DateTime, LongValue(1_700_000_000_000)).unwrap(),
            Value::I64(1_700_000_000_000)
        );
    }

    #[test]
    fn other_types() {
        use MetricValue::*;
        assert_eq!(
            conv(DataType::Float, FloatValue(1.5)).unwrap(),
            Value::F64(1.5)
        );
        assert_eq!(
            conv(DataType::Double, DoubleValue(2.5)).unwrap(),
            Value::F64(2.5)
        );
        assert_eq!(
            conv(DataType::Boolean, BooleanValue(true)).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            conv(DataType::Text, StringValue("x".into())).unwrap(),
            Value::Str("x".into())
        );
        assert!(conv(DataType::Double, IntValue(1)).is_err());
        assert!(conv(DataType::Int32, DoubleValue(1.0)).is_err());
        assert_eq!(storage(DataType::DataSet), Storage::Unsupported);
        assert_eq!(storage(DataType::Bytes), Storage::Unsupported);
        assert!(datatype(0).is_err());
        assert!(datatype(999).is_err());
        assert!(datatype(u32::MAX).is_err());
        assert_eq!(datatype(10).unwrap(), DataType::Double);
    }
}
