//! Errors of the ingest layer: `RuleError` for a bad rule in the server's
//! configuration (found once, at start-up or reload) and `IngestError` for a
//! PUBLISH that cannot be turned into points (found per message, counted).

use crate::encoding::ValueType;

/// A rule in the configuration that cannot be compiled. `rule` is 1-based,
/// in the order the rules appear in the file.
#[derive(Debug, thiserror::Error)]
#[error("historian rule {rule} (filter {filter:?}): {kind}")]
pub struct RuleError {
    /// Position of the rule in the list, counting from 1.
    pub rule: usize,
    /// Its topic filter, as written.
    pub filter: String,
    /// What is wrong with it.
    pub kind: RuleErrorKind,
}

/// What is wrong with one rule.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum RuleErrorKind {
    /// The topic filter is not a valid MQTT filter.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(&'static str),
    /// The tag template is malformed (unbalanced braces, empty).
    #[error("invalid tag template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as written.
        template: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A `{...}` placeholder this decoder does not provide.
    #[error("unknown placeholder {{{placeholder}}} for decoder {decoder}")]
    UnknownPlaceholder {
        /// The text between the braces.
        placeholder: String,
        /// The rule's decoder.
        decoder: &'static str,
    },
    /// A `{n}` placeholder beyond the levels a filter without `#` can match.
    #[error("placeholder {{{level}}} but the filter has only {levels} levels")]
    LevelBeyondFilter {
        /// The 1-based level asked for.
        level: usize,
        /// Levels in the filter.
        levels: usize,
    },
    /// `{name}` without a `name_pointer`.
    #[error("placeholder {{name}} needs name_pointer")]
    NameWithoutPointer,
    /// The retention is not a duration such as "365d".
    #[error("invalid retention {value:?}: {reason}")]
    InvalidDuration {
        /// The value as written.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A JSON pointer that is not RFC 6901 syntax.
    #[error("invalid JSON pointer {key} = {pointer:?}: {reason}")]
    InvalidPointer {
        /// The configuration key.
        key: &'static str,
        /// The pointer as written.
        pointer: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A deadband that is negative or not finite.
    #[error("invalid deadband {0}: must be finite and not negative")]
    InvalidDeadband(f64),
    /// `exc_dev` or `comp_dev` negative or not finite.
    #[error("invalid {key} {value}: must be finite and not negative")]
    InvalidDeviation {
        /// The configuration key.
        key: &'static str,
        /// The value as written.
        value: f64,
    },
    /// `exc_max` or `comp_max` is not a duration such as "10m".
    #[error("invalid {key} {value:?}: {reason}")]
    InvalidTimeLimit {
        /// The configuration key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A key given without the key it qualifies (`exc_max` without `exc_dev`).
    #[error("{key} needs {needs}")]
    KeyNeeds {
        /// The key given.
        key: &'static str,
        /// The key it needs.
        needs: &'static str,
    },
    /// Two keys that cannot be used together.
    #[error("{key} and {other} cannot be used together")]
    KeyConflict {
        /// The first key.
        key: &'static str,
        /// The other key.
        other: &'static str,
    },
    /// A key that means nothing for this rule's decoder.
    #[error("{key} does not apply to decoder {decoder}")]
    KeyNotForDecoder {
        /// The configuration key.
        key: &'static str,
        /// The rule's decoder.
        decoder: &'static str,
    },
}

/// Why one PUBLISH, or one point in it, was not turned into points.
///
/// An error returned by `Ingest::decode` rejects the whole message; the same
/// errors for single points or metrics land in `Decoded::rejected` while the
/// rest of the message is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A text payload (plain, JSON) that is not UTF-8.
    #[error("payload is not UTF-8")]
    InvalidUtf8,
    /// A JSON payload that does not parse.
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// A Sparkplug payload that is not a valid protobuf `Payload`.
    #[error("payload is not a valid Sparkplug B protobuf: {0}")]
    InvalidProtobuf(#[source] prost::DecodeError),
    /// A topic routed to the Sparkplug decoder that is not a Sparkplug topic.
    #[error("not a Sparkplug B topic: {0}")]
    InvalidSparkplugTopic(&'static str),
    /// Nothing at the value pointer.
    #[error("no value at JSON pointer {0:?}")]
    MissingValue(String),
    /// A payload with no value at all (empty plain payload, metric without value).
    #[error("empty value")]
    EmptyValue,
    /// A value of a kind that cannot be stored (JSON object or array).
    #[error("cannot store a JSON {0}")]
    UnsupportedValue(&'static str),
    /// A value that does not have (or parse as) the rule's value type.
    #[error("value is not {expected:?}")]
    WrongType {
        /// The type the rule or the metric's datatype asks for.
        expected: ValueType,
    },
    /// An integer that does not fit an `i64` (e.g. a Sparkplug UInt64 above `i64::MAX`).
    #[error("integer out of range for i64")]
    IntegerOutOfRange,
    /// A timestamp that is malformed or outside the `Timestamp` range.
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(&'static str),
    /// A quality that is not good/uncertain/bad or a 32-bit status code.
    #[error("invalid quality: {0}")]
    InvalidQuality(&'static str),
    /// Nothing, or no string, at the name pointer.
    #[error("no string at name pointer {0:?}")]
    MissingName(String),
    /// A JSON batch or Sparkplug payload with more points than allowed.
    #[error("{count} points in one message, at most {max} allowed")]
    TooManyPoints {
        /// Points in the message.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string value or metric name longer than allowed.
    #[error("string of {len} bytes, at most {max} allowed")]
    StringTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A rendered tag name that is empty or longer than allowed.
    #[error("tag name of {len} bytes, must be 1 to {max}")]
    InvalidTagName {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `{n}` placeholder with fewer levels in the topic.
    #[error("topic has no level {0}")]
    MissingTopicLevel(usize),
    /// A Sparkplug BIRTH metric without a name.
    #[error("Sparkplug BIRTH metric without a name")]
    MissingMetricName,
    /// A Sparkplug BIRTH giving one alias to two metrics (3.0, 6.4.2).
    #[error("Sparkplug alias {0} defined twice")]
    DuplicateAlias(u64),
    /// A Sparkplug datatype this decoder does not know.
    #[error("unknown Sparkplug datatype {0}")]
    UnknownDataType(u32),
    /// A Sparkplug BIRTH that would track more edge nodes, devices or
    /// metrics than allowed.
    #[error("Sparkplug state full: at most {max} {what}")]
    TooManyTracked {
        /// What is full: "edge nodes", "devices per edge node".
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

/// Coarse kinds of `IngestError`, one counter each in `ErrorCounts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bytes that do not parse: UTF-8, JSON, protobuf, Sparkplug topic.
    Malformed,
    /// A value that is missing, of the wrong type or out of range.
    Value,
    /// A bad timestamp.
    Timestamp,
    /// A bad quality.
    Quality,
    /// A bad or missing tag name part (name pointer, topic level, metric name).
    TagName,
    /// A limit was hit.
    Limit,
}

impl ErrorKind {
    /// Its name in metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::Value => "value",
            ErrorKind::Timestamp => "timestamp",
            ErrorKind::Quality => "quality",
            ErrorKind::TagName => "tag_name",
            ErrorKind::Limit => "limit",
        }
    }
}

impl IngestError {
    /// The counter this error is recorded under.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::InvalidUtf8
            | IngestError::InvalidJson(_)
            | IngestError::InvalidProtobuf(_)
            | IngestError::InvalidSparkplugTopic(_)
            | IngestError::DuplicateAlias(_) => ErrorKind::Malformed,
            IngestError::MissingValue(_)
            | IngestError::EmptyValue
            | IngestError::UnsupportedValue(_)
            | IngestError::WrongType { .. }
            | IngestError::IntegerOutOfRange
            | IngestError::UnknownDataType(_) => ErrorKind::Value,
            IngestError::InvalidTimestamp(_) => ErrorKind::Timestamp,
            IngestError::InvalidQuality(_) => ErrorKind::Quality,
            IngestError::MissingName(_)
            | IngestError::InvalidTagName { .. }
            | IngestError::MissingTopicLevel(_)
            | IngestError::MissingMetricName => ErrorKind::TagName,
            IngestError::TooManyPoints { .. }
            | IngestError::StringTooLong { .. }
            | IngestError::TooManyTracked { .. } => ErrorKind::Limit,
        }
    }
}
