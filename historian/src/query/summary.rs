//! `summary`: aggregates of one tag per interval, from raw points or, when
//! the intervals line up with them, from stored rollups.

use std::time::Duration;

use crate::encoding::{Point, Timestamp};
use crate::query::numeric::{check_intervals, check_range, interval_micros, span};
use crate::query::rollup::{held_value, Accumulator};
use crate::query::source::scan;
use crate::query::{Interpolation, QueryError, QueryLimits, Rollup, RollupResolution, Source};

/// One aggregate. Event-weighted kinds use the Good points inside the
/// interval; time-weighted kinds use the value known over the interval
/// (from the last point before it), excluding bad time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SummaryKind {
    /// Smallest good value, with its time.
    Min,
    /// Largest good value, with its time.
    Max,
    /// Event-weighted mean of the good values.
    Average,
    /// Time-weighted mean over the good time.
    TimeWeightedAverage,
    /// Number of good events.
    Count,
    /// First good event.
    First,
    /// Last good event.
    Last,
    /// Integral over the good time, in value·seconds (PI: TWA × duration in
    /// days, extrapolated over bad time; ours is not extrapolated).
    Total,
    /// Max − min.
    Range,
    /// Sample standard deviation (n − 1) of the good values.
    StdDev,
    /// Good time as a percentage of the interval.
    PercentGood,
}

/// One aggregate of one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SummaryValue {
    /// Which aggregate.
    pub kind: SummaryKind,
    /// `None` when the interval has no good data for it.
    pub value: Option<f64>,
    /// The event's time for Min, Max, First and Last.
    pub ts: Option<Timestamp>,
}

/// The aggregates of one interval `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Interval start.
    pub start: Timestamp,
    /// Interval end (exclusive).
    pub end: Timestamp,
    /// Good time as a percentage of the interval, whatever `kinds` asked.
    pub percent_good: f64,
    /// One value per requested kind, in the requested order.
    pub values: Vec<SummaryValue>,
}

/// Aggregates of `tag` over `[start, end)`, one row per `interval` (the
/// last one cut at `end`), or one row when `interval` is `None`.
/// `start == end` gives no rows.
///
/// Numeric tags only: bool counts as 0/1, a string value is
/// `WrongValueType`. Only Good quality counts as good: a point that is not
/// Good starts a period of bad time that lasts until the next point, and is
/// not an event. Before the tag's first point the time is not good either.
/// After its last point the value holds (step) in both weightings.
/// `weighting` shapes TWA and Total: step holds each value until the next
/// point; linear integrates trapezoids between two good points and holds the
/// value before a bad one.
///
/// When the source keeps rollups whose resolution divides `start`, `end`
/// and `interval`, and the kinds can come from step rollups (all but TWA
/// and Total with linear weighting), the rollups are read instead of the
/// points.
// The arguments mirror the PI Web API call one to one.
#[allow(clippy::too_many_arguments)]
pub fn summary<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    interval: Option<Duration>,
    kinds: &[SummaryKind],
    weighting: Interpolation,
    limits: &QueryLimits,
) -> Result<Vec<SummaryRow>, QueryError> {
    check_range(start, end)?;
    if start == end {
        return Ok(Vec::new());
    }
    let total = span(start, end);
    let step = match interval {
        Some(d) => interval_micros(d)?,
        None => total,
    };
    let count = total.div_ceil(step);
    check_intervals(u128::from(count), limits.max_intervals)?;
    let grid = Grid { start, end, step };
    if let Some(rows) = from_rollups(src, tag, &grid, count, kinds, weighting, limits)? {
        return Ok(rows);
    }
    from_points(src, tag, &grid, count, kinds, weighting, limits)
}

/// The intervals `[start + k·step, start + (k+1)·step)`, the last cut at `end`.
struct Grid {
    start: Timestamp,
    end: Timestamp,
    step: u64,
}

impl Grid {
    fn bound(&self, k: u64) -> Timestamp {
        k.checked_mul(self.step)
            .and_then(|off| crate::query::numeric::add(self.start, off))
            .map_or(self.end, |t| t.min(self.end))
    }
}

fn from_points<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    grid: &Grid,
    count: u64,
    kinds: &[SummaryKind],
    weighting: Interpolation,
    limits: &QueryLimits,
) -> Result<Vec<SummaryRow>, QueryError> {
    let held = src
        .before(tag, grid.start, false)?
        .as_ref()
        .map(held_value)
        .transpose()
        .map_err(|found| QueryError::WrongValueType { found })?;
    let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut k = 0u64;
    let mut acc = Accumulator::new(grid.bound(0), grid.bound(1), held, weighting);
    // [start, end) as an inclusive range: end > start, so end - 1 exists.
    let last = Timestamp::from_micros(grid.end.micros().saturating_sub(1));
    scan(src, tag, grid.start, last, limits.max_points_scanned, |p| {
        // A source that strays out of range must not walk us past the last interval.
        if p.ts < grid.start || p.ts >= grid.end {
            return Ok(());
        }
        while p.ts >= acc.end() {
            k += 1;
            close(&mut acc, Some(p), grid, k, kinds, weighting, &mut rows)?;
        }
        acc.push(p)
            .map_err(|found| QueryError::WrongValueType { found })
    })?;
    // Linear weighting interpolates towards the first point after the range.
    let next = match weighting {
        Interpolation::Linear => src.after(tag, grid.end, true)?,
        Interpolation::Step => None,
    };
    while k < count {
        k += 1;
        close(
            &mut acc,
            next.as_ref(),
            grid,
            k,
            kinds,
            weighting,
            &mut rows,
        )?;
    }
    Ok(rows)
}

/// Finishes `acc` into a row and starts interval `k` from its held value.
fn close(
    acc: &mut Accumulator,
    next: Option<&Point>,
    grid: &Grid,
    k: u64,
    kinds: &[SummaryKind],
    weighting: Interpolation,
    rows: &mut Vec<SummaryRow>,
) -> Result<(), QueryError> {
    let rollup = acc
        .finish(next)
        .map_err(|found| QueryError::WrongValueType { found })?;
    rows.push(row(&rollup, kinds));
    *acc = Accumulator::new(
        grid.bound(k),
        grid.bound(k.saturating_add(1)),
        rollup.held,
        weighting,
    );
    Ok(())
}

fn from_rollups<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    grid: &Grid,
    count: u64,
    kinds: &[SummaryKind],
    weighting: Interpolation,
    limits: &QueryLimits,
) -> Result<Option<Vec<SummaryRow>>, QueryError> {
    let time_weighted = kinds
        .iter()
        .any(|k| matches!(k, SummaryKind::TimeWeightedAverage | SummaryKind::Total));
    if time_weighted && weighting == Interpolation::Linear {
        return Ok(None);
    }
    let aligned = |t: Timestamp, r: RollupResolution| {
        i128::from(t.micros()).rem_euclid(i128::from(r.micros())) == 0
    };
    let resolution = src
        .rollup_resolutions()
        .iter()
        .copied()
        .filter(|r| {
            aligned(grid.start, *r)
                && aligned(grid.end, *r)
                && grid.step.checked_rem(r.micros()) == Some(0)
        })
        .max_by_key(|r| r.micros());
    let Some(resolution) = resolution else {
        return Ok(None);
    };
    let width = resolution.micros();
    if span(grid.start, grid.end) / width > limits.max_points_scanned {
        return Ok(None);
    }
    let Some(stored) = src.rollups(tag, resolution, grid.start, grid.end)? else {
        return Ok(None);
    };
    let mut held = src
        .before(tag, grid.start, false)?
        .as_ref()
        .map(held_value)
        .transpose()
        .map_err(|found| QueryError::WrongValueType { found })?;
    let mut stored = stored.into_iter().peekable();
    let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for k in 0..count {
        let (a, b) = (grid.bound(k), grid.bound(k.saturating_add(1)));
        let mut merged: Option<Rollup> = None;
        let mut t = a;
        while t < b {
            let bucket_end = crate::query::numeric::add(t, width).map_or(b, |e| e.min(b));
            if stored.peek().is_some_and(|r| r.start < t) {
                return Err(QueryError::InconsistentRollups("rollup out of order"));
            }
            let bucket = match stored.next_if(|r| r.start == t) {
                Some(r) if r.end == bucket_end => r,
                Some(_) => return Err(QueryError::InconsistentRollups("rollup of wrong length")),
                // No points in this bucket: the held value carries across it.
                None => Accumulator::new(t, bucket_end, held, Interpolation::Step)
                    .finish(None)
                    .map_err(|found| QueryError::WrongValueType { found })?,
            };
            held = bucket.held.or(held);
            merged = Some(match merged {
                Some(m) => m.merge(&bucket)?,
                None => bucket,
            });
            t = bucket_end;
        }
        if let Some(m) = merged {
            rows.push(row(&m, kinds));
        }
    }
    if stored.next().is_some() {
        return Err(QueryError::InconsistentRollups("rollup outside the range"));
    }
    Ok(Some(rows))
}

/// The requested kinds from one interval's aggregate.
fn row(r: &Rollup, kinds: &[SummaryKind]) -> SummaryRow {
    let event = |e: Option<(Timestamp, f64)>| (e.map(|(_, v)| v), e.map(|(t, _)| t));
    let values = kinds
        .iter()
        .map(|&kind| {
            let (value, ts) = match kind {
                SummaryKind::Min => event(r.min),
                SummaryKind::Max => event(r.max),
                SummaryKind::First => event(r.first),
                SummaryKind::Last => event(r.last),
                SummaryKind::Average => (r.mean(), None),
                SummaryKind::TimeWeightedAverage => (r.time_weighted_average(), None),
                #[allow(clippy::cast_precision_loss)]
                SummaryKind::Count => (Some(r.count as f64), None),
                SummaryKind::Total => ((r.good_micros > 0).then_some(r.integral), None),
                SummaryKind::Range => (r.max.zip(r.min).map(|(mx, mn)| mx.1 - mn.1), None),
                SummaryKind::StdDev => (r.std_dev(), None),
                SummaryKind::PercentGood => (Some(r.percent_good()), None),
            };
            SummaryValue { kind, value, ts }
        })
        .collect();
    SummaryRow {
        start: r.start,
        end: r.end,
        percent_good: r.percent_good(),
        values,
    }
}
