//! `summary`: aggregates of one tag per interval, from raw points or, when
//! the intervals line up with them, from stored rollups.

use std::time::Duration;

use crate::encoding::{Point, Timestamp};
use crate::query::aggregate::{Accumulator, Aggregate, Sample};
use crate::query::numeric::{add, check_intervals, check_range, interval_micros, span};
use crate::query::rollup::bucket_end;
use crate::query::source::{scan, Budget};
use crate::query::{Interpolation, QueryError, QueryLimits, Rollup, RollupResolution, Source};

/// Buckets asked of the source per `rollups` call: a long interval is read
/// in pieces, so the rollups held at once stay bounded whatever the range.
const ROLLUP_CHUNK: u64 = 4_096;

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
/// When the source keeps rollups and the intervals are at least as long as
/// the finest, each interval is read as the coarsest stored rollups inside
/// it, finer rollups where those are missing or at its edges, and raw
/// points for the rest, all fed in time order to the same accumulator the
/// raw path uses (rollups carry their first and last point, so the segments
/// between pieces are integrated exactly as between two points, in either
/// weighting). A year of 1 s data in 1,000 intervals reads about 8,760
/// hourly rollups, up to 118,000 minute rollups and up to 118,000 points,
/// not 31.5 M points. All reads of one call, points and rollups, count
/// against `max_points_scanned`.
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
    let held = src
        .before(tag, start, false)?
        .as_ref()
        .map(sample)
        .transpose()?;
    let mut fold = Fold {
        acc: Accumulator::new(grid.bound(0), grid.bound(1), held, weighting),
        grid: &grid,
        count,
        k: 0,
        rows: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
        kinds,
        weighting,
    };
    let mut budget = Budget::new(limits.max_points_scanned);
    let mut levels = src.rollup_resolutions().to_vec();
    levels.sort_by_key(|r| r.micros());
    levels.dedup();
    match levels.first() {
        Some(finest) if step >= finest.micros() => {
            let mut plan = Plan {
                src,
                tag,
                budget: &mut budget,
                pending: None,
                cache: Vec::new(),
                all_levels: &levels,
            };
            for k in 0..count {
                let (a, b) = (grid.bound(k), grid.bound(k.saturating_add(1)));
                if a < b {
                    plan.tile(a, b, &levels, &mut fold)?;
                }
            }
            plan.flush(&mut fold)?;
        }
        // Short intervals: one streaming scan beats one plan per interval.
        _ => {
            // [start, end) as an inclusive range: end > start, so end - 1 exists.
            let last = Timestamp::from_micros(end.micros().saturating_sub(1));
            scan(src, tag, start, last, &mut budget, |p| fold.point(p))?;
        }
    }
    // Linear weighting interpolates towards the first point after the range.
    let next = match weighting {
        Interpolation::Linear => src
            .after(tag, end, true)?
            .as_ref()
            .map(sample)
            .transpose()?,
        Interpolation::Step => None,
    };
    Ok(fold.finish(next))
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

/// Turns the stream of points and rollups, in time order, into rows: an
/// interval is closed when the first piece after it arrives, which is also
/// the point linear weighting interpolates towards.
struct Fold<'a> {
    acc: Accumulator,
    grid: &'a Grid,
    count: u64,
    /// Index of the interval `acc` accumulates.
    k: u64,
    rows: Vec<SummaryRow>,
    kinds: &'a [SummaryKind],
    weighting: Interpolation,
}

impl Fold<'_> {
    fn point(&mut self, p: &Point) -> Result<(), QueryError> {
        // A source that strays out of range must not walk us past the last interval.
        if p.ts < self.grid.start || p.ts >= self.grid.end {
            return Ok(());
        }
        let s = sample(p)?;
        self.advance(s);
        self.acc.push(s);
        Ok(())
    }

    fn rollup(&mut self, r: &Rollup) -> Result<(), QueryError> {
        if r.start() < self.grid.start || r.end() > self.grid.end {
            return Err(QueryError::InconsistentRollups("rollup outside the range"));
        }
        self.advance(r.first_point());
        self.acc.absorb(r)
    }

    /// Closes every interval that ends at or before `next`.
    fn advance(&mut self, next: Sample) {
        while next.ts >= self.acc.end() && self.k.saturating_add(1) < self.count {
            self.close(Some(next));
        }
    }

    /// Finishes the current interval into a row and starts the next one
    /// from its held value.
    fn close(&mut self, next: Option<Sample>) {
        let agg = self.acc.finish(next);
        self.rows.push(row(&agg, self.kinds));
        self.k = self.k.saturating_add(1);
        self.acc = Accumulator::new(
            self.grid.bound(self.k),
            self.grid.bound(self.k.saturating_add(1)),
            agg.held,
            self.weighting,
        );
    }

    fn finish(mut self, next: Option<Sample>) -> Vec<SummaryRow> {
        while self.k < self.count {
            self.close(next);
        }
        self.rows
    }
}

/// Reads one interval at a time: the coarsest stored rollups that fit in
/// it, then finer levels for the gaps and edges, then raw points. Adjacent
/// raw stretches are read together: the end of one interval and the start
/// of the next usually lie in the same minute, hence the same block, and a
/// block is decoded whole on every read.
struct Plan<'a, S: ?Sized> {
    src: &'a S,
    tag: &'a str,
    budget: &'a mut Budget,
    /// A raw stretch `[a, b)` not read yet.
    pending: Option<(Timestamp, Timestamp)>,
    /// Per resolution, the last rollups fetched and the range they cover.
    cache: Vec<Fetched>,
    /// Every resolution in use, finest first.
    all_levels: &'a [RollupResolution],
}

/// Rollups of one resolution covering `[start, end)`.
struct Fetched {
    resolution: RollupResolution,
    start: Timestamp,
    end: Timestamp,
    rollups: Vec<Rollup>,
}

impl<S: Source + ?Sized> Plan<'_, S> {
    /// Feeds `[a, b)` (non-empty) to `fold` from `levels` (finest first)
    /// and raw points.
    fn tile(
        &mut self,
        a: Timestamp,
        b: Timestamp,
        levels: &[RollupResolution],
        fold: &mut Fold<'_>,
    ) -> Result<(), QueryError> {
        let Some((&coarsest, finer)) = levels.split_last() else {
            return self.raw(a, b, fold);
        };
        let width = coarsest.micros();
        let inner = align_up(a, width).zip(align_down(b, width));
        let Some((x, y)) = inner.filter(|(x, y)| x < y) else {
            return self.tile(a, b, finer, fold);
        };
        if a < x {
            self.tile(a, x, finer, fold)?;
        }
        let mut cursor = x;
        while cursor < y {
            let chunk_end = add(cursor, width.saturating_mul(ROLLUP_CHUNK)).map_or(y, |e| e.min(y));
            let Some(stored) = self.fetch(coarsest, cursor, chunk_end)? else {
                // Not kept for this tag: the finer levels (or raw points) serve.
                break;
            };
            for r in &stored {
                let aligned = align_down(r.start(), width) == Some(r.start());
                if !aligned || r.start() < cursor || r.end() != bucket_end(r.start(), width) {
                    return Err(QueryError::InconsistentRollups("rollup out of place"));
                }
                if r.end() > chunk_end {
                    return Err(QueryError::InconsistentRollups("rollup outside the range"));
                }
                if cursor < r.start() {
                    self.tile(cursor, r.start(), finer, fold)?;
                }
                self.flush(fold)?;
                self.budget.spend(1)?;
                fold.rollup(r)?;
                cursor = r.end();
            }
            if cursor < chunk_end {
                // Buckets the source left out: read them finer.
                self.tile(cursor, chunk_end, finer, fold)?;
                cursor = chunk_end;
            }
        }
        if cursor < y {
            self.tile(cursor, y, finer, fold)?;
        }
        if y < b {
            self.tile(y, b, finer, fold)?;
        }
        Ok(())
    }

    /// The stored rollups of `[x, y)`. Below the coarsest resolution the
    /// read reaches on to the next coarser boundary and is kept: the two
    /// edges around an interval boundary need the minutes of the same hour,
    /// so they cost one read instead of two.
    fn fetch(
        &mut self,
        resolution: RollupResolution,
        x: Timestamp,
        y: Timestamp,
    ) -> Result<Option<Vec<Rollup>>, QueryError> {
        let hit = self
            .cache
            .iter()
            .find(|f| f.resolution == resolution && f.start <= x && y <= f.end);
        if let Some(f) = hit {
            let inside = f
                .rollups
                .iter()
                .filter(|r| r.start() >= x && r.end() <= y)
                .cloned()
                .collect();
            return Ok(Some(inside));
        }
        let coarser = self
            .all_levels
            .iter()
            .map(|l| l.micros())
            .find(|&w| w > resolution.micros());
        let end = match coarser {
            Some(w) => align_up(add(y, 1).unwrap_or(y), w).map_or(y, |e| e.max(y)),
            None => y,
        };
        let Some(got) = self.src.rollups(self.tag, resolution, x, end)? else {
            return Ok(None);
        };
        let inside = got
            .iter()
            .filter(|r| r.start() < y)
            .cloned()
            .collect::<Vec<_>>();
        if end > y {
            self.cache.retain(|f| f.resolution != resolution);
            self.cache.push(Fetched {
                resolution,
                start: x,
                end,
                rollups: got,
            });
        }
        Ok(Some(inside))
    }

    /// `[a, b)` from raw points: joined to the pending stretch if it
    /// continues it, else read after it.
    fn raw(&mut self, a: Timestamp, b: Timestamp, fold: &mut Fold<'_>) -> Result<(), QueryError> {
        match self.pending {
            Some((pa, pb)) if pb == a => self.pending = Some((pa, b)),
            _ => {
                self.flush(fold)?;
                self.pending = Some((a, b));
            }
        }
        Ok(())
    }

    /// Reads the pending raw stretch into `fold`.
    fn flush(&mut self, fold: &mut Fold<'_>) -> Result<(), QueryError> {
        let Some((a, b)) = self.pending.take() else {
            return Ok(());
        };
        let last = Timestamp::from_micros(b.micros().saturating_sub(1));
        scan(self.src, self.tag, a, last, self.budget, |p| fold.point(p))
    }
}

fn sample(p: &Point) -> Result<Sample, QueryError> {
    Sample::of(p).map_err(|found| QueryError::WrongValueType { found })
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
fn row(r: &Aggregate, kinds: &[SummaryKind]) -> SummaryRow {
    let e = &r.events;
    let event = |x: Option<(Timestamp, f64)>| (x.map(|(_, v)| v), x.map(|(t, _)| t));
    let values = kinds
        .iter()
        .map(|&kind| {
            let (value, ts) = match kind {
                SummaryKind::Min => event(e.min),
                SummaryKind::Max => event(e.max),
                SummaryKind::First => event(e.first),
                SummaryKind::Last => event(e.last),
                SummaryKind::Average => (e.mean(), None),
                SummaryKind::TimeWeightedAverage => (r.time_weighted_average(), None),
                #[allow(clippy::cast_precision_loss)]
                SummaryKind::Count => (Some(e.count as f64), None),
                SummaryKind::Total => ((r.good_micros > 0).then_some(r.integral), None),
                SummaryKind::Range => (e.max.zip(e.min).map(|(mx, mn)| mx.1 - mn.1), None),
                SummaryKind::StdDev => (e.std_dev(), None),
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
