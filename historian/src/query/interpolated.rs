//! `interpolated`: a tag's values on a regular time grid, as a trend or a
//! report table wants them.

use std::time::Duration;

use crate::encoding::{Point, Timestamp};
use crate::query::numeric::{add, check_intervals, check_range, interval_micros, span};
use crate::query::value_at::{interpolate_between, no_data};
use crate::query::{Interpolation, QueryError, QueryLimits, Source};

/// Values of `tag` at `start`, `start + interval`, … up to and including
/// `end` when it falls on the grid.
///
/// At a recorded point's time, that point (the last written, if several).
/// Between points, numbers are interpolated linearly (or held, with
/// `Interpolation::Step`); bool and string values are held. A linear value
/// with a Bad neighbour is Bad and carries the earlier point's value; an
/// Uncertain neighbour makes it Uncertain. Before the first point and after
/// the last, the value is a "No Data" point (quality `NO_DATA`), as PI
/// returns, so there is always one point per grid time.
///
/// Consecutive grid times between the same two points reuse one pair of
/// seeks, so a fine grid over sparse data and a coarse grid over dense data
/// both cost about one seek pair per distinct bracket.
pub fn interpolated<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    interval: Duration,
    interp: Interpolation,
    limits: &QueryLimits,
) -> Result<Vec<Point>, QueryError> {
    check_range(start, end)?;
    let step = interval_micros(interval)?;
    let count = u128::from(span(start, end) / step) + 1;
    check_intervals(count, limits.max_intervals)?;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut bracket: Option<(Option<Point>, Option<Point>)> = None;
    let mut offset = 0u64;
    while let Some(t) = add(start, offset).filter(|t| *t <= end) {
        let stale = match &bracket {
            // No point lies between prev and next, so the pair brackets
            // every time before next.
            Some((_, next)) => next.as_ref().is_some_and(|n| t >= n.ts),
            None => true,
        };
        if stale {
            bracket = Some((src.before(tag, t, true)?, src.after(tag, t, false)?));
        }
        if let Some((prev, next)) = &bracket {
            let point = interpolate_between(prev.as_ref(), next.as_ref(), t, interp)
                .unwrap_or_else(|| {
                    let known = prev.as_ref().or(next.as_ref());
                    no_data(t, known.map(|p| p.value.value_type()))
                });
            out.push(point);
        }
        match offset.checked_add(step) {
            Some(o) => offset = o,
            None => break,
        }
    }
    Ok(out)
}
