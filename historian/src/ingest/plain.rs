//! The plain decoder: the whole payload is one value (a number, `true` or
//! `false`, or text), stamped with the broker's receive time and Good
//! quality. Surrounding whitespace is ignored.

use crate::encoding::{Point, Value, ValueType};
use crate::ingest::template::Vars;
use crate::ingest::{check_len, rule_meta, IngestError, IngestLimits, Input, Sink, TagPoint};

pub(crate) fn decode(input: &Input<'_>, sink: &mut Sink<'_>) -> Result<(), IngestError> {
    let text = std::str::from_utf8(input.payload).map_err(|_| IngestError::InvalidUtf8)?;
    let value = parse_text(text.trim(), input.rule.value_type, input.limits)?;
    let tag = input.rule.template.render(&Vars {
        topic: input.topic,
        ..Vars::default()
    })?;
    let meta = rule_meta(input.rule, value.value_type());
    sink.push(TagPoint {
        tag,
        point: Point::good(input.received, value),
        meta,
    });
    Ok(())
}

/// Reads a trimmed text as a value. With no `value_type`, `true`/`false`
/// are booleans, anything Rust parses as a float is F64, the rest is text.
/// With one, the text must parse as that type (booleans also as `1`/`0`).
pub(crate) fn parse_text(
    text: &str,
    value_type: Option<ValueType>,
    limits: &IngestLimits,
) -> Result<Value, IngestError> {
    check_len(text, limits)?;
    let wrong = |expected| IngestError::WrongType { expected };
    match value_type {
        None => {
            if text.is_empty() {
                return Err(IngestError::EmptyValue);
            }
            Ok(match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                t => match t.parse::<f64>() {
                    Ok(v) => Value::F64(v),
                    Err(_) => Value::Str(t.to_owned()),
                },
            })
        }
        Some(ValueType::I64) => text
            .parse::<i64>()
            .map(Value::I64)
            .map_err(|_| wrong(ValueType::I64)),
        Some(ValueType::Bool) => {
            if text.eq_ignore_ascii_case("true") || text == "1" {
                Ok(Value::Bool(true))
            } else if text.eq_ignore_ascii_case("false") || text == "0" {
                Ok(Value::Bool(false))
            } else {
                Err(wrong(ValueType::Bool))
            }
        }
        Some(ValueType::Str) => Ok(Value::Str(text.to_owned())),
        // F64, and any type added later.
        Some(other) => text
            .parse::<f64>()
            .map(Value::F64)
            .map_err(|_| wrong(other)),
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn parse(text: &str, vt: Option<ValueType>) -> Result<Value, IngestError> {
        parse_text(text, vt, &IngestLimits::default())
    }

    #[test]
    fn auto_detects() {
        assert_eq!(parse("21.5", None).unwrap(), Value::F64(21.5));
        assert_eq!(parse("7", None).unwrap(), Value::F64(7.0));
        assert_eq!(parse("true", None).unwrap(), Value::Bool(true));
        assert_eq!(
            parse("running", None).unwrap(),
            Value::Str("running".into())
        );
        assert!(matches!(parse("", None), Err(IngestError::EmptyValue)));
    }

    #[test]
    fn typed() {
        assert_eq!(parse("-7", Some(ValueType::I64)).unwrap(), Value::I64(-7));
        assert!(parse("7.5", Some(ValueType::I64)).is_err());
        assert!(parse("99999999999999999999", Some(ValueType::I64)).is_err());
        assert_eq!(
            parse("TRUE", Some(ValueType::Bool)).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            parse("0", Some(ValueType::Bool)).unwrap(),
            Value::Bool(false)
        );
        assert!(parse("yes", Some(ValueType::Bool)).is_err());
        assert_eq!(
            parse("12", Some(ValueType::Str)).unwrap(),
            Value::Str("12".into())
        );
        assert_eq!(
            parse("", Some(ValueType::Str)).unwrap(),
            Value::Str(String::new())
        );
        assert!(parse("x", Some(ValueType::F64)).is_err());
    }

    #[test]
    fn long_strings_are_refused() {
        let limits = IngestLimits {
            max_string_len: 3,
            ..IngestLimits::default()
        };
        assert!(matches!(
            parse_text("abcd", None, &limits),
            Err(IngestError::StringTooLong { len: 4, max: 3 })
        ));
    }
}
