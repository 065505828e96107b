//! Small numeric helpers the calls share: values as numbers, compensated
//! sums, time spans that cannot overflow, and interpolation between two points.

use std::time::Duration;

use crate::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use crate::query::{Interpolation, QueryError};

/// Microseconds in a second: Total is reported in value·seconds.
pub(crate) const MICROS_PER_SECOND: f64 = 1e6;

/// A value as a number: bool is 0/1, integers beyond 2^53 round. `Err`
/// carries the type of a value that is not a number (a string).
pub(crate) fn as_f64(v: &Value) -> Result<f64, ValueType> {
    match v {
        Value::F64(x) => Ok(*x),
        // Rounds beyond 2^53, as any f64 aggregate of integers must.
        #[allow(clippy::cast_precision_loss)]
        Value::I64(x) => Ok(*x as f64),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Str(_) => Err(ValueType::Str),
    }
}

/// `b - a` in microseconds, 0 when `b <= a`. `u64` holds any span of two
/// `i64` timestamps, where `i64` subtraction would overflow.
pub(crate) fn span(a: Timestamp, b: Timestamp) -> u64 {
    let d = i128::from(b.micros()) - i128::from(a.micros());
    u64::try_from(d).unwrap_or(0)
}

/// `t + d`, or `None` past `i64::MAX`.
pub(crate) fn add(t: Timestamp, d: u64) -> Option<Timestamp> {
    let s = i128::from(t.micros()) + i128::from(d);
    i64::try_from(s).ok().map(Timestamp::from_micros)
}

/// An interval in whole microseconds (our timestamps' unit), saturating
/// at `u64::MAX`; under one microsecond is `ZeroInterval`.
pub(crate) fn interval_micros(d: Duration) -> Result<u64, QueryError> {
    match u64::try_from(d.as_micros()).unwrap_or(u64::MAX) {
        0 => Err(QueryError::ZeroInterval),
        us => Ok(us),
    }
}

/// Refuses `end < start`.
pub(crate) fn check_range(start: Timestamp, end: Timestamp) -> Result<(), QueryError> {
    if end < start {
        return Err(QueryError::EndBeforeStart { start, end });
    }
    Ok(())
}

/// Refuses more intervals than the limit, before anything is allocated.
pub(crate) fn check_intervals(requested: u128, limit: u64) -> Result<(), QueryError> {
    if requested > u128::from(limit) {
        return Err(QueryError::TooManyIntervals { requested, limit });
    }
    Ok(())
}

/// `span` as f64 (exact below 2^53 µs, 285 years).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn span_f64(a: Timestamp, b: Timestamp) -> f64 {
    span(a, b) as f64
}

/// Neumaier's compensated sum: long sums of similar values (a year of
/// seconds) keep their low bits, which a plain `+=` loses.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    /// Starts from a value that is already a total.
    pub(crate) fn from_total(total: f64) -> Self {
        Sum {
            sum: total,
            compensation: 0.0,
        }
    }

    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn total(self) -> f64 {
        let t = self.sum + self.compensation;
        // Infinities make the compensation NaN; the plain sum is the answer then.
        if t.is_nan() && !self.sum.is_nan() {
            self.sum
        } else {
            t
        }
    }
}

/// Value at `t` on the straight line from `(t0, v0)` to `(t1, v1)`.
pub(crate) fn lerp(t0: Timestamp, v0: f64, t1: Timestamp, v1: f64, t: Timestamp) -> f64 {
    if v0 == v1 || t <= t0 {
        return v0;
    }
    if t >= t1 {
        return v1;
    }
    let frac = span_f64(t0, t) / span_f64(t0, t1);
    v0 + (v1 - v0) * frac
}

/// The worse of two qualities by severity; `a` on a tie.
pub(crate) fn worse(a: Quality, b: Quality) -> Quality {
    fn rank(q: Quality) -> u8 {
        match q.severity() {
            Severity::Good => 0,
            Severity::Uncertain => 1,
            Severity::Bad => 2,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The value at `t` between `prev` (at or before `t`) and `next` (after
/// `t`). A point at exactly `t` is returned as is. Step, bool and string
/// values take `prev`'s value and quality. Numbers in linear mode are
/// interpolated with the worse quality of the two; if that is Bad, the value
/// is `prev`'s (a bad neighbour's value means nothing) and the quality Bad.
pub(crate) fn interpolate(
    prev: &Point,
    next: &Point,
    t: Timestamp,
    interp: Interpolation,
) -> Point {
    if prev.ts == t {
        return prev.clone();
    }
    let step = Point {
        ts: t,
        value: prev.value.clone(),
        quality: prev.quality,
    };
    if interp == Interpolation::Step {
        return step;
    }
    let quality = worse(prev.quality, next.quality);
    if quality.severity() == Severity::Bad {
        return Point { quality, ..step };
    }
    let value = match (&prev.value, &next.value) {
        (Value::F64(a), Value::F64(b)) => Value::F64(lerp(prev.ts, *a, next.ts, *b, t)),
        (Value::I64(a), Value::I64(b)) => {
            #[allow(clippy::cast_precision_loss)]
            let x = lerp(prev.ts, *a as f64, next.ts, *b as f64, t).round();
            // `as` saturates; x lies between a and b anyway.
            #[allow(clippy::cast_possible_truncation)]
            Value::I64(x as i64)
        }
        // Bool and string (or a type change between points) are step.
        _ => return step,
    };
    Point {
        ts: t,
        value,
        quality,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn span_and_add_survive_extremes() {
        let min = Timestamp::from_micros(i64::MIN);
        let max = Timestamp::from_micros(i64::MAX);
        assert_eq!(span(min, max), u64::MAX);
        assert_eq!(span(max, min), 0);
        assert_eq!(add(max, 1), None);
        assert_eq!(add(min, u64::MAX), Some(max));
    }

    #[test]
    fn compensated_sum_keeps_small_terms() {
        let mut s = Sum::default();
        s.add(1e16);
        for _ in 0..1000 {
            s.add(1.0);
        }
        s.add(-1e16);
        assert_eq!(s.total(), 1000.0);
    }

    #[test]
    fn integer_interpolation_rounds() {
        let a = Point::good(Timestamp::from_micros(0), Value::I64(0));
        let b = Point::good(Timestamp::from_micros(3), Value::I64(2));
        let p = interpolate(&a, &b, Timestamp::from_micros(1), Interpolation::Linear);
        assert_eq!(p.value, Value::I64(1));
        let a = Point::good(Timestamp::from_micros(0), Value::I64(i64::MIN));
        let b = Point::good(Timestamp::from_micros(2), Value::I64(i64::MAX));
        let p = interpolate(&a, &b, Timestamp::from_micros(1), Interpolation::Linear);
        assert!(matches!(p.value, Value::I64(_)));
    }
}
