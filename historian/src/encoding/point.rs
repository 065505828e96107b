//! The data model every codec shares: `Timestamp`, `Quality`, `Value`,
//! `ValueType` and `Point`. No bytes are produced here; the codecs decide
//! the on-disk shape.

use std::fmt;

/// Microseconds since the Unix epoch (1970-01-01T00:00:00Z), UTC, no leap seconds.
///
/// Microseconds rather than nanoseconds: an `i64` of them spans ±292,000 years
/// (nanoseconds stop at 2262), and field devices rarely time-stamp finer than
/// 1 µs. OPC UA's 100 ns ticks are rounded by the adapter that receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }
}

/// The severity half of a quality, as in OPC UA (Part 4, StatusCode bits 30–31).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// The value can be used.
    Good,
    /// The value may be used with care (e.g. last usable value, sensor not accurate).
    Uncertain,
    /// The value is not usable (e.g. sensor failure, not connected).
    Bad,
}

/// Quality of one point: a severity plus a 16-bit substatus whose meaning is
/// the data source's (e.g. the OPC UA sub-code, or a device's QC flag).
///
/// Stored as the 32-bit code `severity << 16 | substatus` with Good = 0,
/// Uncertain = 1, Bad = 2, so the common `Good(0)` is the integer 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quality {
    severity: Severity,
    substatus: u16,
}

impl Quality {
    /// Good, substatus 0: what almost every point carries.
    pub const GOOD: Quality = Quality::new(Severity::Good, 0);
    /// Uncertain, substatus 0.
    pub const UNCERTAIN: Quality = Quality::new(Severity::Uncertain, 0);
    /// Bad, substatus 0.
    pub const BAD: Quality = Quality::new(Severity::Bad, 0);

    /// A quality from its parts.
    pub const fn new(severity: Severity, substatus: u16) -> Self {
        Quality {
            severity,
            substatus,
        }
    }

    /// The severity.
    pub const fn severity(self) -> Severity {
        self.severity
    }

    /// The source-defined substatus.
    pub const fn substatus(self) -> u16 {
        self.substatus
    }

    /// True for `Severity::Good`, whatever the substatus.
    pub const fn is_good(self) -> bool {
        matches!(self.severity, Severity::Good)
    }

    /// The packed 32-bit code used on disk: `severity << 16 | substatus`.
    pub const fn code(self) -> u32 {
        let sev: u32 = match self.severity {
            Severity::Good => 0,
            Severity::Uncertain => 1,
            Severity::Bad => 2,
        };
        (sev << 16) | self.substatus as u32
    }

    /// Inverse of `code`; `None` for a severity above 2.
    pub const fn from_code(code: u32) -> Option<Self> {
        let severity = match code >> 16 {
            0 => Severity::Good,
            1 => Severity::Uncertain,
            2 => Severity::Bad,
            _ => return None,
        };
        // Truncation is the point: the low 16 bits are the substatus.
        #[allow(clippy::cast_possible_truncation)]
        let substatus = (code & 0xFFFF) as u16;
        Some(Quality {
            severity,
            substatus,
        })
    }
}

impl Default for Quality {
    fn default() -> Self {
        Quality::GOOD
    }
}

/// The kind of value a tag carries; a block holds one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// IEEE 754 binary64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Boolean (digital state).
    Bool,
    /// UTF-8 text.
    Str,
}

impl ValueType {
    /// The tag byte used in block headers and recent records.
    pub const fn tag(self) -> u8 {
        match self {
            ValueType::F64 => 0,
            ValueType::I64 => 1,
            ValueType::Bool => 2,
            ValueType::Str => 3,
        }
    }

    /// Inverse of `tag`.
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(ValueType::F64),
            1 => Some(ValueType::I64),
            2 => Some(ValueType::Bool),
            3 => Some(ValueType::Str),
            _ => None,
        }
    }
}

/// One value. Equality is bit-exact for floats: `F64(NaN) == F64(NaN)` when
/// the payloads match, and `F64(0.0) != F64(-0.0)`, because the historian
/// promises to give back exactly the bits it was given.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Value {
    /// Floating point.
    F64(f64),
    /// Integer.
    I64(i64),
    /// Digital.
    Bool(bool),
    /// Text.
    Str(String),
}

impl Value {
    /// Its type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::F64(_) => ValueType::F64,
            Value::I64(_) => ValueType::I64,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::F64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
        }
    }
}

/// One sample of one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// When it was measured.
    pub ts: Timestamp,
    /// What was measured.
    pub value: Value,
    /// How trustworthy it is.
    pub quality: Quality,
}

impl Point {
    /// A point with `Quality::GOOD`.
    pub fn good(ts: Timestamp, value: Value) -> Self {
        Point {
            ts,
            value,
            quality: Quality::GOOD,
        }
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn quality_code_round_trips() {
        for sev in [Severity::Good, Severity::Uncertain, Severity::Bad] {
            for sub in [0, 1, 0x8000, u16::MAX] {
                let q = Quality::new(sev, sub);
                assert_eq!(Quality::from_code(q.code()), Some(q));
            }
        }
        assert_eq!(Quality::GOOD.code(), 0);
        assert_eq!(Quality::from_code(3 << 16), None);
    }

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
        assert_ne!(Value::F64(0.0), Value::F64(-0.0));
        assert_ne!(Value::F64(1.0), Value::I64(1));
    }
}
