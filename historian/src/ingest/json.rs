//! The JSON decoder: one object per point, or a top-level array of them (a
//! batch). The rule's JSON pointers (RFC 6901) say where the value, the
//! timestamp, the quality and, optionally, a per-point name are.
//!
//! * value: number (F64, or I64 when the rule says `value_type = "i64"`),
//!   boolean, string (parsed as the rule's `value_type` when that is numeric
//!   or boolean), or `null` (a Bad point, see `NULL_QUALITY`).
//! * timestamp: number = epoch milliseconds (fractions allowed), string =
//!   RFC 3339; missing or `null` = the broker's receive time.
//! * quality: missing or `null` = Good; "good", "uncertain" or "bad" (any
//!   case); or a number, an OPC UA StatusCode (`quality_from_status_code`).
//!
//! In a batch a bad element is dropped and reported in `Decoded::rejected`;
//! the others are kept.

use serde_json::Value as Json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use crate::ingest::deadband::LastValues;
use crate::ingest::plain::parse_text;
use crate::ingest::template::Vars;
use crate::ingest::{
    check_len, millis_to_timestamp, rule_meta, zero, IngestError, IngestLimits, Input, Sink,
    TagPoint, NULL_QUALITY,
};

/// Maps an OPC UA StatusCode (Part 4, 7.39) to a `Quality`.
///
/// Severity is bits 30–31: `00` Good, `01` Uncertain, `10` Bad, and the
/// reserved `11` is taken as Bad. The substatus is the 12-bit sub-code in
/// bits 16–27, the part that names the condition (0x031 for
/// `Bad_NoCommunication` = 0x80310000), so plain Good (0), Uncertain
/// (0x40000000) and Bad (0x80000000) map to `Quality::GOOD`, `UNCERTAIN`
/// and `BAD`. The structure-changed, semantics-changed, info-type and
/// limit bits (28–29, 0–15) are dropped: they describe one delivery, not the
/// value, and `Quality` has no room for them. `(severity << 30) |
/// (substatus << 16)` gives back the code without those bits.
pub fn quality_from_status_code(code: u32) -> Quality {
    let severity = match code >> 30 {
        0 => Severity::Good,
        1 => Severity::Uncertain,
        _ => Severity::Bad,
    };
    let [_, _, low, high] = code.to_le_bytes();
    Quality::new(severity, u16::from_le_bytes([low, high & 0x0F]))
}

pub(crate) fn decode(
    input: &Input<'_>,
    last: &LastValues,
    sink: &mut Sink<'_>,
) -> Result<(), IngestError> {
    let doc: Json = serde_json::from_slice(input.payload).map_err(IngestError::InvalidJson)?;
    match &doc {
        Json::Array(items) => {
            let max = input.limits.max_points_per_message;
            if items.len() > max {
                return Err(IngestError::TooManyPoints {
                    count: items.len(),
                    max,
                });
            }
            for item in items {
                match point(input, item, last) {
                    Ok(tp) => sink.push(tp),
                    Err(e) => sink.rejected.push(e),
                }
            }
        }
        single => sink.push(point(input, single, last)?),
    }
    Ok(())
}

fn point(input: &Input<'_>, item: &Json, last: &LastValues) -> Result<TagPoint, IngestError> {
    let rule = input.rule;
    let pointers = &rule.pointers;
    let name = match &pointers.name {
        Some(p) => {
            let name = item
                .pointer(p)
                .and_then(Json::as_str)
                .ok_or_else(|| IngestError::MissingName(p.clone()))?;
            check_len(name, input.limits)?;
            Some(name)
        }
        None => None,
    };
    let tag = rule.template.render(&Vars {
        topic: input.topic,
        name,
        sparkplug: None,
    })?;
    let ts = timestamp(item.pointer(&pointers.timestamp), input.received)?;
    let quality = quality(item.pointer(&pointers.quality))?;
    let raw = item
        .pointer(&pointers.value)
        .ok_or_else(|| IngestError::MissingValue(pointers.value.clone()))?;
    let (value, quality) = match raw {
        Json::Null => {
            // Keep the tag's type: repeat its last value, else zero.
            let value = last
                .get(&tag)
                .map(|p| p.value.clone())
                .filter(|v| rule.value_type.is_none_or(|t| v.value_type() == t))
                .unwrap_or_else(|| zero(rule.value_type.unwrap_or(ValueType::F64)));
            // A Bad status sent with the null says more than ours.
            let q = if quality.severity() == Severity::Bad {
                quality
            } else {
                NULL_QUALITY
            };
            (value, q)
        }
        other => (json_value(other, rule.value_type, input.limits)?, quality),
    };
    let meta = rule_meta(rule, value.value_type());
    Ok(TagPoint {
        tag,
        point: Point { ts, value, quality },
        meta,
    })
}

fn json_value(
    v: &Json,
    value_type: Option<ValueType>,
    limits: &IngestLimits,
) -> Result<Value, IngestError> {
    let wrong = |expected| IngestError::WrongType { expected };
    match v {
        Json::Number(n) => match value_type {
            None | Some(ValueType::F64) => n.as_f64().map(Value::F64).ok_or(wrong(ValueType::F64)),
            Some(ValueType::I64) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Ok(Value::I64(i)),
                (None, Some(_)) => Err(IngestError::IntegerOutOfRange),
                (None, None) => Err(wrong(ValueType::I64)),
            },
            Some(other) => Err(wrong(other)),
        },
        Json::Bool(b) => match value_type {
            None | Some(ValueType::Bool) => Ok(Value::Bool(*b)),
            Some(other) => Err(wrong(other)),
        },
        Json::String(s) => {
            check_len(s, limits)?;
            match value_type {
                None | Some(ValueType::Str) => Ok(Value::Str(s.clone())),
                // Devices often send numbers as strings.
                typed => parse_text(s.trim(), typed, limits),
            }
        }
        Json::Null => Err(IngestError::EmptyValue),
        Json::Array(_) => Err(IngestError::UnsupportedValue("array")),
        Json::Object(_) => Err(IngestError::UnsupportedValue("object")),
    }
}

fn timestamp(v: Option<&Json>, received: Timestamp) -> Result<Timestamp, IngestError> {
    match v {
        None | Some(Json::Null) => Ok(received),
        Some(Json::Number(n)) => {
            if let Some(ms) = n.as_i64() {
                return millis_to_timestamp(ms);
            }
            let micros = n.as_f64().map(|ms| (ms * 1_000.0).round());
            match micros {
                // The range check makes the cast exact apart from the
                // rounding above; i64::MAX itself is not representable.
                Some(us) if us.is_finite() && us >= i64::MIN as f64 && us < i64::MAX as f64 => {
                    Ok(Timestamp::from_micros(us as i64))
                }
                _ => Err(IngestError::InvalidTimestamp("milliseconds out of range")),
            }
        }
        Some(Json::String(s)) => {
            let t = OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| IngestError::InvalidTimestamp("not RFC 3339"))?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000)
                .map(Timestamp::from_micros)
                .map_err(|_| IngestError::InvalidTimestamp("out of range"))
        }
        Some(_) => Err(IngestError::InvalidTimestamp(
            "must be epoch milliseconds or an RFC 3339 string",
        )),
    }
}

fn quality(v: Option<&Json>) -> Result<Quality, IngestError> {
    match v {
        None | Some(Json::Null) => Ok(Quality::GOOD),
        Some(Json::String(s)) => {
            if s.eq_ignore_ascii_case("good") {
                Ok(Quality::GOOD)
            } else if s.eq_ignore_ascii_case("uncertain") {
                Ok(Quality::UNCERTAIN)
            } else if s.eq_ignore_ascii_case("bad") {
                Ok(Quality::BAD)
            } else {
                Err(IngestError::InvalidQuality(
                    "string must be good, uncertain or bad",
                ))
            }
        }
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .map(quality_from_status_code)
            .ok_or(IngestError::InvalidQuality(
                "number must be a 32-bit OPC UA StatusCode",
            )),
        Some(_) => Err(IngestError::InvalidQuality(
            "must be a string or an OPC UA StatusCode",
        )),
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(quality_from_status_code(0), Quality::GOOD);
        assert_eq!(quality_from_status_code(0x4000_0000), Quality::UNCERTAIN);
        assert_eq!(quality_from_status_code(0x8000_0000), Quality::BAD);
        assert_eq!(
            quality_from_status_code(0x8031_0000),
            Quality::new(Severity::Bad, 0x031)
        );
        // Info bits and reserved bits are dropped; severity 11 is Bad.
        assert_eq!(
            quality_from_status_code(0x4090_03FF),
            Quality::new(Severity::Uncertain, 0x090)
        );
        assert_eq!(quality_from_status_code(0xC000_0000), Quality::BAD);
        assert_eq!(
            quality_from_status_code(0x3FFF_FFFF),
            Quality::new(Severity::Good, 0xFFF)
        );
    }

    #[test]
    fn timestamps() {
        let rx = Timestamp::from_micros(5);
        let ts = |j: &str| timestamp(Some(&serde_json::from_str(j).unwrap()), rx);
        assert_eq!(timestamp(None, rx).unwrap(), rx);
        assert_eq!(ts("null").unwrap(), rx);
        assert_eq!(ts("1700000000123").unwrap().micros(), 1_700_000_000_123_000);
        assert_eq!(ts("1.5").unwrap().micros(), 1_500);
        assert_eq!(ts("-1").unwrap().micros(), -1_000);
        assert_eq!(
            ts(r#""2023-11-14T22:13:20.123456Z""#).unwrap().micros(),
            1_700_000_000_123_456
        );
        assert_eq!(
            ts(r#""2023-11-14T23:13:20+01:00""#).unwrap().micros(),
            1_700_000_000_000_000
        );
        assert!(ts(r#""yesterday""#).is_err());
        assert!(ts("true").is_err());
        assert!(ts("9223372036854775807").is_err());
        assert!(ts("1e300").is_err());
    }

    #[test]
    fn qualities() {
        let q = |j: &str| quality(Some(&serde_json::from_str(j).unwrap()));
        assert_eq!(q(r#""GOOD""#).unwrap(), Quality::GOOD);
        assert_eq!(q(r#""Uncertain""#).unwrap(), Quality::UNCERTAIN);
        assert_eq!(q(r#""bad""#).unwrap(), Quality::BAD);
        assert_eq!(q("2150694912").unwrap(), Quality::new(Severity::Bad, 0x031));
        assert!(q(r#""meh""#).is_err());
        assert!(q("-1").is_err());
        assert!(q("4294967296").is_err());
        assert!(q("1.5").is_err());
        assert!(q("[]").is_err());
    }
}
