//! `value_at`: one value of a tag at a time, by PI's retrieval modes; and
//! the interpolation at one time that `interpolated` and `recorded` share.

use crate::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use crate::query::numeric::interpolate;
use crate::query::{Interpolation, QueryError, Source};

/// Quality of a "No Data" point: Bad, substatus 0x0100 (PI's "No Data"
/// system state, 248, has no OPC UA equivalent; the substatus is ours).
pub const NO_DATA: Quality = Quality::new(Severity::Bad, 0x0100);

/// Which point `value_at` returns for a time `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetrievalMode {
    /// The last point at or before `t` (PI's default, "AtOrBefore").
    AtOrBefore,
    /// The last point strictly before `t`.
    Before,
    /// The first point at or after `t`.
    AtOrAfter,
    /// The first point strictly after `t`.
    After,
    /// A point at exactly `t`, else nothing.
    Exact,
    /// The recorded point at `t` if there is one, else the value
    /// interpolated between its neighbours (see `interpolated`); nothing
    /// before the first point or after the last.
    Interpolated(Interpolation),
}

/// The value of `tag` at `t` by `mode`; `None` when there is no such point.
/// With several points at one timestamp, "before" modes see the last
/// written and "after" modes the first.
pub fn value_at<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    t: Timestamp,
    mode: RetrievalMode,
) -> Result<Option<Point>, QueryError> {
    let point = match mode {
        RetrievalMode::AtOrBefore => src.before(tag, t, true)?,
        RetrievalMode::Before => src.before(tag, t, false)?,
        RetrievalMode::AtOrAfter => src.after(tag, t, true)?,
        RetrievalMode::After => src.after(tag, t, false)?,
        RetrievalMode::Exact => src.before(tag, t, true)?.filter(|p| p.ts == t),
        RetrievalMode::Interpolated(interp) => {
            let (prev, next) = neighbours(src, tag, t)?;
            interpolate_between(prev.as_ref(), next.as_ref(), t, interp)
        }
    };
    Ok(point)
}

/// The point at or before `t` and the one after it: the two seeks that
/// bracket one interpolation.
pub(crate) fn neighbours<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    t: Timestamp,
) -> Result<(Option<Point>, Option<Point>), QueryError> {
    let prev = src.before(tag, t, true)?;
    let next = match &prev {
        Some(p) if p.ts == t => None,
        _ => src.after(tag, t, false)?,
    };
    Ok((prev, next))
}

/// The value at `t` from its neighbours: `prev` itself when it is at `t`,
/// an interpolation when both exist, `None` otherwise (before the first
/// point or after the last: no data).
pub(crate) fn interpolate_between(
    prev: Option<&Point>,
    next: Option<&Point>,
    t: Timestamp,
    interp: Interpolation,
) -> Option<Point> {
    match (prev, next) {
        (Some(p), _) if p.ts == t => Some(p.clone()),
        (Some(p), Some(n)) => Some(interpolate(p, n, t, interp)),
        _ => None,
    }
}

/// A "No Data" point at `t`, its value the zero of the tag's type (NaN for
/// floats, F64 NaN when the type is unknown); only the quality means anything.
pub(crate) fn no_data(t: Timestamp, value_type: Option<ValueType>) -> Point {
    let value = match value_type {
        Some(ValueType::I64) => Value::I64(0),
        Some(ValueType::Bool) => Value::Bool(false),
        Some(ValueType::Str) => Value::Str(String::new()),
        _ => Value::F64(f64::NAN),
    };
    Point {
        ts: t,
        value,
        quality: NO_DATA,
    }
}
