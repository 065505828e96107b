//! The recent-data record: one point per record, fixed layout, no
//! compression, so appending is a handful of stores and reading needs no
//! block context. Points live here until the storage layer seals them into a
//! block.
//!
//! ```text
//! version u8 = 1 | value type u8 | ts i64 | quality code u32 | value
//! value: F64 = bits u64 | I64 = i64 | Bool = u8 (0/1) | Str = byte length u32 + UTF-8
//! ```
//!
//! All little-endian: 22 bytes for a numeric point. Records concatenate;
//! `decode_recent_point` reports how many bytes it used. There is no checksum
//! here: the container (RocksDB blocks, or a log with its own framing) checks
//! integrity; this decoder only guarantees it never panics or over-allocates.

use crate::encoding::reader::Reader;
use crate::encoding::{DecodeError, EncodeError, Point, Quality, Timestamp, Value, ValueType};

/// Version byte that opens every recent record.
pub const RECENT_VERSION: u8 = 1;

/// Appends one record for `point` to `out`.
pub fn encode_recent_point(point: &Point, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(RECENT_VERSION);
    out.push(point.value.value_type().tag());
    out.extend_from_slice(&point.ts.micros().to_le_bytes());
    out.extend_from_slice(&point.quality.code().to_le_bytes());
    match &point.value {
        Value::F64(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::Str(s) => {
            let len = u32::try_from(s.len())
                .map_err(|_| EncodeError::StringTooLong { bytes: s.len() })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// Decodes the record at the start of `bytes`; returns it and its length.
pub fn decode_recent_point(bytes: &[u8]) -> Result<(Point, usize), DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != RECENT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let tag = r.u8()?;
    let value_type = ValueType::from_tag(tag).ok_or(DecodeError::UnknownValueType(tag))?;
    let ts = Timestamp::from_micros(r.i64_le()?);
    let quality =
        Quality::from_code(r.u32_le()?).ok_or(DecodeError::Corrupt("unknown quality severity"))?;
    let value = match value_type {
        ValueType::F64 => Value::F64(f64::from_bits(r.u64_le()?)),
        ValueType::I64 => Value::I64(r.i64_le()?),
        ValueType::Bool => match r.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(DecodeError::Corrupt("boolean byte not 0 or 1")),
        },
        ValueType::Str => {
            let len = usize::try_from(r.u32_le()?).map_err(|_| DecodeError::Truncated)?;
            // `bytes` checks the length against the input before anything is allocated.
            let s = std::str::from_utf8(r.bytes(len)?)
                .map_err(|_| DecodeError::Corrupt("string not UTF-8"))?;
            Value::Str(s.to_owned())
        }
    };
    Ok((Point { ts, value, quality }, bytes.len() - r.remaining()))
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::Severity;

    #[test]
    fn numeric_record_is_22_bytes() {
        let p = Point::good(Timestamp::from_micros(1), Value::F64(-0.0));
        let mut out = Vec::new();
        encode_recent_point(&p, &mut out).unwrap();
        assert_eq!(out.len(), 22);
        assert_eq!(decode_recent_point(&out).unwrap(), (p, 22));
    }

    #[test]
    fn records_concatenate_and_truncation_is_detected() {
        let points = [
            Point::good(Timestamp::from_micros(i64::MIN), Value::I64(i64::MAX)),
            Point {
                ts: Timestamp::from_micros(5),
                value: Value::Str("héllo".into()),
                quality: Quality::new(Severity::Bad, 9),
            },
            Point::good(Timestamp::from_micros(6), Value::Bool(true)),
        ];
        let mut log = Vec::new();
        for p in &points {
            encode_recent_point(p, &mut log).unwrap();
        }
        let mut at = 0;
        for p in &points {
            let (q, used) = decode_recent_point(&log[at..]).unwrap();
            assert_eq!(&q, p);
            at += used;
        }
        assert_eq!(at, log.len());
        for cut in 0..log.len() {
            let _ = decode_recent_point(&log[..cut]);
        }
        assert_eq!(decode_recent_point(&log[..21]), Err(DecodeError::Truncated));
    }
}
