//! `Rollup`: the aggregate of every point of one tag inside one fixed bucket
//! `[start, end)`, the unit storage keeps per minute and per hour so that a
//! long summary reads thousands of rollups instead of millions of points.
//!
//! A rollup depends on its own bucket's points only. What a summary needs
//! from outside the bucket (the value held before the first point, the
//! point after the last one for linear interpolation) is the bucket's first
//! and last point, which the rollup carries: the engine bridges from one
//! piece to the next exactly as it does between two raw points. So:
//!
//! * a late or replaced point changes only the minute and the hour it falls
//!   in, never a neighbour;
//! * step and linear time weighting both come from the same rollup: it keeps
//!   both integrals over its interior, from its first point to its last;
//! * two rollups merge (`merge`) into the rollup of their union, with or
//!   without empty time between them, which is how storage builds an hour
//!   from its minutes.
//!
//! The stored bytes are in `bytes.rs` and docs/FORMAT.md §8.

mod bytes;

pub use bytes::{ROLLUP_LEN, ROLLUP_VERSION};

use crate::encoding::{Point, Timestamp};
use crate::query::aggregate::{segment, EventStats, Events, Sample};
use crate::query::numeric::Sum;
use crate::query::{Interpolation, RollupError};

/// Aggregate of the points of one bucket `[start, end)`: good events
/// (count, sum, M2, min, max, first, last), the first and last point of any
/// quality, and over the time between those two the good time and the
/// integral in both weightings. Only Good quality counts as good. A rollup
/// always holds at least one point.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollup {
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) points: u64,
    pub(crate) events: EventStats,
    pub(crate) first_point: Sample,
    pub(crate) last_point: Sample,
    pub(crate) good_micros: u64,
    pub(crate) step_integral: f64,
    pub(crate) linear_integral: f64,
}

impl Rollup {
    /// The rollup of the points of `[start, end)`, fed in time order;
    /// points outside the bucket or out of order are ignored. `Ok(None)`
    /// when no point is inside.
    pub fn compute(
        points: &[Point],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Option<Rollup>, RollupError> {
        let mut b = Builder::new(start, end)?;
        for p in points {
            b.push(p)?;
        }
        Ok(b.finish())
    }

    /// This rollup followed by `later`, whose bucket starts at or after this
    /// one's end (time between them holds this rollup's last point). The
    /// result covers `[self.start, later.end)`. Associative up to float
    /// rounding of the sums, and equal (up to that rounding) to `compute`
    /// over the union.
    pub fn merge(&self, later: &Rollup) -> Result<Rollup, RollupError> {
        if later.start < self.end {
            return Err(RollupError::Overlap);
        }
        let (from, to) = (self.last_point, later.first_point);
        let mut good = self.good_micros.saturating_add(later.good_micros);
        let mut step = Sum::from_total(self.step_integral);
        let mut linear = Sum::from_total(self.linear_integral);
        for (weighting, sum) in [
            (Interpolation::Step, &mut step),
            (Interpolation::Linear, &mut linear),
        ] {
            if let Some((dt, area)) = segment(from, Some(to), from.ts, to.ts, weighting) {
                sum.add(area);
                if weighting == Interpolation::Step {
                    good = good.saturating_add(dt);
                }
            }
        }
        step.add(later.step_integral);
        linear.add(later.linear_integral);
        Ok(Rollup {
            start: self.start,
            end: later.end,
            points: self.points.saturating_add(later.points),
            events: self.events.merge(&later.events),
            first_point: self.first_point,
            last_point: later.last_point,
            good_micros: good,
            step_integral: step.total(),
            linear_integral: linear.total(),
        })
    }

    /// The rollup of `[start, end)` from rollups of buckets inside it, in
    /// time order (how storage builds an hour from its minutes and the
    /// stretches of raw points between them). `Ok(None)` when `parts` is empty.
    pub fn combine(
        start: Timestamp,
        end: Timestamp,
        parts: &[Rollup],
    ) -> Result<Option<Rollup>, RollupError> {
        if start >= end {
            return Err(RollupError::EmptyBucket);
        }
        let mut out: Option<Rollup> = None;
        for part in parts {
            if part.start < start || part.end > end {
                return Err(RollupError::Overlap);
            }
            out = Some(match out {
                Some(o) => o.merge(part)?,
                None => part.clone(),
            });
        }
        Ok(out.map(|r| Rollup { start, end, ..r }))
    }

    /// Bucket start.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Bucket end (exclusive).
    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// Points in the bucket, any quality.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Good events in the bucket.
    pub fn count(&self) -> u64 {
        self.events.count
    }

    /// Sum of the good events' values.
    pub fn sum(&self) -> f64 {
        self.events.sum
    }

    /// Event-weighted mean, if any good event.
    pub fn mean(&self) -> Option<f64> {
        self.events.mean()
    }

    /// Sample standard deviation of the good events, if at least two.
    pub fn std_dev(&self) -> Option<f64> {
        self.events.std_dev()
    }

    /// Smallest good value and its time (the earliest on a tie).
    pub fn min(&self) -> Option<(Timestamp, f64)> {
        self.events.min
    }

    /// Largest good value and its time (the earliest on a tie).
    pub fn max(&self) -> Option<(Timestamp, f64)> {
        self.events.max
    }

    /// First good event.
    pub fn first(&self) -> Option<(Timestamp, f64)> {
        self.events.first
    }

    /// Last good event.
    pub fn last(&self) -> Option<(Timestamp, f64)> {
        self.events.last
    }

    /// First point of the bucket, any quality.
    pub fn first_point(&self) -> Sample {
        self.first_point
    }

    /// Last point of the bucket, any quality: its value holds after the bucket.
    pub fn last_point(&self) -> Sample {
        self.last_point
    }

    /// Good time between the first and the last point, in µs.
    pub fn good_micros(&self) -> u64 {
        self.good_micros
    }

    /// Integral (value·seconds) over the good time between the first and the
    /// last point, in the given weighting.
    pub fn integral(&self, weighting: Interpolation) -> f64 {
        match weighting {
            Interpolation::Linear => self.linear_integral,
            Interpolation::Step => self.step_integral,
        }
    }

    pub(crate) fn events(&self) -> &EventStats {
        &self.events
    }
}

/// Folds a bucket's points, in time order, into a `Rollup`.
struct Builder {
    start: Timestamp,
    end: Timestamp,
    points: u64,
    events: Events,
    first: Option<Sample>,
    last: Option<Sample>,
    good_micros: u64,
    step: Sum,
    linear: Sum,
}

impl Builder {
    fn new(start: Timestamp, end: Timestamp) -> Result<Builder, RollupError> {
        if start >= end {
            return Err(RollupError::EmptyBucket);
        }
        Ok(Builder {
            start,
            end,
            points: 0,
            events: Events::default(),
            first: None,
            last: None,
            good_micros: 0,
            step: Sum::default(),
            linear: Sum::default(),
        })
    }

    fn push(&mut self, p: &Point) -> Result<(), RollupError> {
        if p.ts < self.start || p.ts >= self.end {
            return Ok(());
        }
        let here = Sample::of(p).map_err(RollupError::NotNumeric)?;
        if let Some(prev) = self.last {
            if here.ts < prev.ts {
                return Ok(());
            }
            // The whole segment between two points of the bucket: both
            // weightings, unclipped.
            if let Some((dt, area)) =
                segment(prev, Some(here), prev.ts, here.ts, Interpolation::Step)
            {
                self.good_micros = self.good_micros.saturating_add(dt);
                self.step.add(area);
            }
            if let Some((_, area)) =
                segment(prev, Some(here), prev.ts, here.ts, Interpolation::Linear)
            {
                self.linear.add(area);
            }
        }
        if here.good {
            self.events.add(here.ts, here.value);
        }
        self.points = self.points.saturating_add(1);
        self.first = self.first.or(Some(here));
        self.last = Some(here);
        Ok(())
    }

    fn finish(self) -> Option<Rollup> {
        let (first_point, last_point) = self.first.zip(self.last)?;
        Some(Rollup {
            start: self.start,
            end: self.end,
            points: self.points,
            events: self.events.stats(),
            first_point,
            last_point,
            good_micros: self.good_micros,
            step_integral: self.step.total(),
            linear_integral: self.linear.total(),
        })
    }
}

/// Builds the rollups of consecutive buckets of one width from points fed
/// in time order, across bucket boundaries: what storage uses to roll up a
/// run of minutes in one pass.
pub struct RollupStream {
    width: u64,
    current: Option<Builder>,
}

impl RollupStream {
    /// Buckets of `width` µs aligned to the Unix epoch.
    pub fn new(width: u64) -> Self {
        RollupStream {
            width,
            current: None,
        }
    }

    /// Adds a point; returns the rollup of the bucket it closes, if any.
    /// Points must come in time order.
    pub fn push(&mut self, p: &Point) -> Result<Option<Rollup>, RollupError> {
        let start = bucket_start(p.ts, self.width);
        let mut done = None;
        if self.current.as_ref().is_none_or(|b| b.start != start) {
            let end = bucket_end(start, self.width);
            let next = Builder::new(start, end)?;
            done = self.current.replace(next).and_then(Builder::finish);
        }
        if let Some(b) = self.current.as_mut() {
            b.push(p)?;
        }
        Ok(done)
    }

    /// The rollup of the last bucket, if it holds points.
    pub fn finish(self) -> Option<Rollup> {
        self.current.and_then(Builder::finish)
    }
}

/// The start of the `width`-µs bucket (aligned to the epoch) holding `t`.
pub fn bucket_start(t: Timestamp, width: u64) -> Timestamp {
    let (t, w) = (i128::from(t.micros()), i128::from(width.max(1)));
    // t - rem lies in [i64::MIN - w, i64::MAX]: saturate the low end.
    Timestamp::from_micros(i64::try_from(t - t.rem_euclid(w)).unwrap_or(i64::MIN))
}

/// `start + width`, or the end of time.
pub fn bucket_end(start: Timestamp, width: u64) -> Timestamp {
    let e = i128::from(start.micros()) + i128::from(width);
    Timestamp::from_micros(i64::try_from(e).unwrap_or(i64::MAX))
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::{Quality, Value};

    pub(super) fn p(t: i64, v: f64, q: Quality) -> Point {
        Point {
            ts: Timestamp::from_micros(t),
            value: Value::F64(v),
            quality: q,
        }
    }

    pub(super) fn sample() -> Rollup {
        let points = [
            p(1_000_000, 4.0, Quality::GOOD),
            p(2_000_000, 0.0, Quality::BAD),
            p(3_000_000, 6.0, Quality::GOOD),
            p(3_500_000, 8.0, Quality::GOOD),
        ];
        Rollup::compute(
            &points,
            Timestamp::from_micros(0),
            Timestamp::from_micros(4_000_000),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn sample_aggregates() {
        let r = sample();
        assert_eq!((r.points(), r.count()), (4, 3));
        assert_eq!(r.sum(), 18.0);
        assert_eq!(r.mean(), Some(6.0));
        assert_eq!(r.std_dev(), Some(2.0));
        // 4 for 1 s (good, then a bad point: held), bad for 1 s, 6 → 8 for 0.5 s.
        assert_eq!(r.good_micros(), 1_500_000);
        assert_eq!(r.integral(Interpolation::Step), 4.0 + 3.0);
        assert_eq!(r.integral(Interpolation::Linear), 4.0 + 3.5);
        let at = Timestamp::from_micros;
        assert_eq!(
            (r.first_point(), r.last_point()),
            (
                Sample {
                    ts: at(1_000_000),
                    value: 4.0,
                    good: true
                },
                Sample {
                    ts: at(3_500_000),
                    value: 8.0,
                    good: true
                }
            )
        );
    }

    #[test]
    fn merge_bridges_the_gap_between_buckets() {
        let t = Timestamp::from_micros;
        let a = Rollup::compute(&[p(10, 2.0, Quality::GOOD)], t(0), t(100))
            .unwrap()
            .unwrap();
        let b = Rollup::compute(&[p(310, 4.0, Quality::GOOD)], t(300), t(400))
            .unwrap()
            .unwrap();
        let m = a.merge(&b).unwrap();
        assert_eq!((m.start(), m.end(), m.points()), (t(0), t(400), 2));
        assert_eq!(m.good_micros(), 300);
        assert_eq!(m.integral(Interpolation::Step), 2.0 * 300e-6);
        assert_eq!(m.integral(Interpolation::Linear), 3.0 * 300e-6);
        assert_eq!(b.merge(&a), Err(RollupError::Overlap));
        let whole = Rollup::combine(t(0), t(1000), &[a, b]).unwrap().unwrap();
        assert_eq!((whole.start(), whole.end()), (t(0), t(1000)));
    }

    #[test]
    fn stream_cuts_at_bucket_bounds() {
        let mut s = RollupStream::new(10);
        let mut done = Vec::new();
        for t in [-3, 1, 9, 10, 35] {
            done.extend(s.push(&p(t, 1.0, Quality::GOOD)).unwrap());
        }
        done.extend(s.finish());
        let got: Vec<(i64, u64)> = done
            .iter()
            .map(|r| (r.start().micros(), r.points()))
            .collect();
        assert_eq!(got, [(-10, 1), (0, 2), (10, 1), (30, 1)]);
        assert_eq!(
            bucket_start(Timestamp::from_micros(i64::MIN), 7).micros(),
            i64::MIN
        );
    }
}
