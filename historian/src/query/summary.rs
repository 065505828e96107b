//! `summary`: aggregates of one tag per interval, from raw points or, when
//! the intervals line up with them, from stored rollups.

use std::time::Duration;

use crate::encoding::{Point, Timestamp};
use crate::query::numeric::{add, check_intervals, check_range, interval_micros, span};
use crate::query::rollup::{held_value, Accumulator};
use crate::query::source::{scan, Budget};
use crate::query::{
    HeldValue, Interpolation, QueryError, QueryLimits, Rollup, RollupResolution, Source,
};

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
/// When the source keeps rollups, the intervals are at least as long as the
/// finest, and the kinds can come from step rollups (all but TWA and Total
/// with linear weighting), each interval is read as the coarsest rollups
/// inside it, finer rollups at its edges and raw points for the rest: a
/// year of 1 s data in 1,000 intervals reads about 8,760 hourly rollups,
/// up to 118,000 minute rollups and up to 118,000 points, not 31.5 M points.
/// All reads of one call, points and rollups, count against
/// `max_points_scanned`.
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
            .and_then(|off| add(self.start, off))
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
    let mut budget = Budget::new(limits.max_points_scanned);
    scan(src, tag, grid.start, last, &mut budget, |p| {
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

/// The rollup plan: each interval is tiled with the coarsest stored rollups
/// that fit inside it, finer rollups for its ragged edges, and raw points
/// for what is left, all merged in time order. `None` when rollups cannot
/// serve: none kept, intervals shorter than the finest, or a linear
/// time-weighted kind (rollups integrate step).
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
    let mut levels = src.rollup_resolutions().to_vec();
    levels.sort_by_key(|r| r.micros());
    levels.dedup();
    match levels.first() {
        Some(finest) if grid.step >= finest.micros() => {}
        // Streaming the points beats one plan per short interval.
        _ => return Ok(None),
    }
    let mut plan = Plan {
        src,
        tag,
        held: src
            .before(tag, grid.start, false)?
            .as_ref()
            .map(held_value)
            .transpose()
            .map_err(|found| QueryError::WrongValueType { found })?,
        budget: Budget::new(limits.max_points_scanned),
    };
    let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for k in 0..count {
        let (a, b) = (grid.bound(k), grid.bound(k.saturating_add(1)));
        if a < b {
            rows.push(row(&plan.tile(a, b, &levels)?, kinds));
        }
    }
    Ok(Some(rows))
}

/// State carried through the pieces of a rollup plan, in time order.
struct Plan<'a, S: ?Sized> {
    src: &'a S,
    tag: &'a str,
    /// The value held at the end of the last piece.
    held: Option<HeldValue>,
    budget: Budget,
}

impl<S: Source + ?Sized> Plan<'_, S> {
    /// `[a, b)` (non-empty) from `levels` (finest first) and raw points.
    fn tile(
        &mut self,
        a: Timestamp,
        b: Timestamp,
        levels: &[RollupResolution],
    ) -> Result<Rollup, QueryError> {
        let Some((coarsest, finer)) = levels.split_last() else {
            return self.raw(a, b);
        };
        let width = coarsest.micros();
        let inner = align_up(a, width).zip(align_down(b, width));
        let Some((x, y)) = inner.filter(|(x, y)| x < y) else {
            return self.tile(a, b, finer);
        };
        let mut out: Option<Rollup> = None;
        if a < x {
            out = Some(self.tile(a, x, finer)?);
        }
        let middle = match self.stored(*coarsest, x, y)? {
            Some(r) => r,
            // Not kept for this tag: the finer levels (or raw points) serve.
            None => self.tile(x, y, finer)?,
        };
        out = Some(join(out, middle)?);
        if y < b {
            out = Some(join(out, self.tile(y, b, finer)?)?);
        }
        out.ok_or(QueryError::InconsistentRollups("empty tile"))
    }

    /// `[a, b)` from raw points, step-weighted like a rollup.
    fn raw(&mut self, a: Timestamp, b: Timestamp) -> Result<Rollup, QueryError> {
        let mut acc = Accumulator::new(a, b, self.held, Interpolation::Step);
        let last = Timestamp::from_micros(b.micros().saturating_sub(1));
        scan(self.src, self.tag, a, last, &mut self.budget, |p| {
            acc.push(p)
                .map_err(|found| QueryError::WrongValueType { found })
        })?;
        let r = acc
            .finish(None)
            .map_err(|found| QueryError::WrongValueType { found })?;
        self.held = r.held;
        Ok(r)
    }

    /// `[x, y)` (aligned to `resolution`) merged from stored rollups, with
    /// missing buckets (no points) carrying the held value; `None` when the
    /// source keeps no such rollups for this tag.
    fn stored(
        &mut self,
        resolution: RollupResolution,
        x: Timestamp,
        y: Timestamp,
    ) -> Result<Option<Rollup>, QueryError> {
        let width = resolution.micros();
        // Charged up front: the loop below visits every bucket, stored or not.
        self.budget.spend(span(x, y) / width)?;
        let Some(stored) = self.src.rollups(self.tag, resolution, x, y)? else {
            return Ok(None);
        };
        let mut stored = stored.into_iter().peekable();
        let mut out: Option<Rollup> = None;
        let mut t = x;
        while t < y {
            let bucket_end = add(t, width).map_or(y, |e| e.min(y));
            if stored.peek().is_some_and(|r| r.start < t) {
                return Err(QueryError::InconsistentRollups("rollup out of order"));
            }
            let bucket = match stored.next_if(|r| r.start == t) {
                Some(r) if r.end == bucket_end => r,
                Some(_) => return Err(QueryError::InconsistentRollups("rollup of wrong length")),
                // No points in this bucket: the held value carries across it.
                None => Accumulator::new(t, bucket_end, self.held, Interpolation::Step)
                    .finish(None)
                    .map_err(|found| QueryError::WrongValueType { found })?,
            };
            self.held = bucket.held.or(self.held);
            out = Some(join(out, bucket)?);
            t = bucket_end;
        }
        if stored.next().is_some() {
            return Err(QueryError::InconsistentRollups("rollup outside the range"));
        }
        Ok(out)
    }
}

/// `prev` followed by `next`.
fn join(prev: Option<Rollup>, next: Rollup) -> Result<Rollup, QueryError> {
    match prev {
        Some(p) => Ok(p.merge(&next)?),
        None => Ok(next),
    }
}

/// The first multiple of `width` (from the epoch) at or after `t`.
fn align_up(t: Timestamp, width: u64) -> Option<Timestamp> {
    let (t, w) = (i128::from(t.micros()), i128::from(width));
    let up = t + (w - t.rem_euclid(w)) % w;
    i64::try_from(up).ok().map(Timestamp::from_micros)
}

/// The last multiple of `width` (from the epoch) at or before `t`.
fn align_down(t: Timestamp, width: u64) -> Option<Timestamp> {
    let (t, w) = (i128::from(t.micros()), i128::from(width));
    i64::try_from(t - t.rem_euclid(w))
        .ok()
        .map(Timestamp::from_micros)
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
