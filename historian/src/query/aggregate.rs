//! The arithmetic that summaries and rollups share, so that an interval
//! summed from raw points and one summed from stored rollups agree by
//! construction:
//!
//! * `Sample` — a point reduced to what aggregates need (time, number, good);
//! * `Events` — count, compensated sum, Welford M2, min, max, first and last
//!   of the good events, mergeable (Chan et al.);
//! * `segment` — the area and good time of the step from one point towards
//!   the next, clipped to a window, in step or linear weighting;
//! * `Accumulator` — folds points and whole stored rollups, in time order,
//!   into the `Aggregate` of one summary interval.

use crate::encoding::{Point, Timestamp, ValueType};
use crate::query::numeric::{as_f64, lerp, span, span_f64, Sum, MICROS_PER_SECOND};
use crate::query::{Interpolation, QueryError, Rollup};

/// A point as aggregates see it: its time, its value as a number and
/// whether its quality is Good.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Timestamp of the point.
    pub ts: Timestamp,
    /// Its value as a number (bool is 0/1).
    pub value: f64,
    /// Whether its quality is Good.
    pub good: bool,
}

impl Sample {
    /// `p` as a sample; `Err` carries the type of a value that is not a
    /// number (a string).
    pub fn of(p: &Point) -> Result<Sample, ValueType> {
        Ok(Sample {
            ts: p.ts,
            value: as_f64(&p.value)?,
            good: p.quality.is_good(),
        })
    }
}

/// Finished statistics of the good events of a bucket or an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct EventStats {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    pub(crate) m2: f64,
    pub(crate) min: Option<(Timestamp, f64)>,
    pub(crate) max: Option<(Timestamp, f64)>,
    pub(crate) first: Option<(Timestamp, f64)>,
    pub(crate) last: Option<(Timestamp, f64)>,
}

impl EventStats {
    /// Event-weighted mean, if any event.
    pub(crate) fn mean(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Sample standard deviation, if at least two events.
    pub(crate) fn std_dev(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).max(0.0).sqrt())
    }

    /// These events followed by `later`'s.
    pub(crate) fn merge(&self, later: &EventStats) -> EventStats {
        let mut e = Events::from_stats(self);
        e.absorb(later);
        e.stats()
    }
}

/// Good events being accumulated, in time order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Events {
    count: u64,
    sum: Sum,
    mean: f64,
    m2: f64,
    min: Option<(Timestamp, f64)>,
    max: Option<(Timestamp, f64)>,
    first: Option<(Timestamp, f64)>,
    last: Option<(Timestamp, f64)>,
}

impl Events {
    fn from_stats(s: &EventStats) -> Events {
        Events {
            count: s.count,
            sum: Sum::from_total(s.sum),
            mean: s.mean().unwrap_or(0.0),
            m2: s.m2,
            min: s.min,
            max: s.max,
            first: s.first,
            last: s.last,
        }
    }

    /// Welford's update: the mean and M2 stay accurate where the textbook
    /// sum of squares cancels catastrophically (values near 1e6 ± 0.01).
    pub(crate) fn add(&mut self, ts: Timestamp, v: f64) {
        self.count = self.count.saturating_add(1);
        self.sum.add(v);
        let delta = v - self.mean;
        #[allow(clippy::cast_precision_loss)]
        let n = self.count as f64;
        self.mean += delta / n;
        self.m2 += delta * (v - self.mean);
        self.min = pick(self.min, Some((ts, v)), |a, b| b < a);
        self.max = pick(self.max, Some((ts, v)), |a, b| b > a);
        self.first = self.first.or(Some((ts, v)));
        self.last = Some((ts, v));
    }

    /// Appends the events of a later stretch (Chan et al.'s pairwise update of M2).
    pub(crate) fn absorb(&mut self, later: &EventStats) {
        let Some(mb) = later.mean() else {
            return;
        };
        let count = self.count.saturating_add(later.count);
        if self.count == 0 {
            self.mean = mb;
            self.m2 = later.m2;
        } else {
            #[allow(clippy::cast_precision_loss)]
            let (na, nb, n) = (self.count as f64, later.count as f64, count as f64);
            let delta = mb - self.mean;
            self.m2 += later.m2 + delta * delta * (na / n) * nb;
            self.mean += delta * (nb / n);
        }
        self.count = count;
        self.sum.add(later.sum);
        self.min = pick(self.min, later.min, |a, b| b < a);
        self.max = pick(self.max, later.max, |a, b| b > a);
        self.first = self.first.or(later.first);
        self.last = later.last.or(self.last);
    }

    pub(crate) fn stats(&self) -> EventStats {
        EventStats {
            count: self.count,
            sum: self.sum.total(),
            m2: self.m2,
            min: self.min,
            max: self.max,
            first: self.first,
            last: self.last,
        }
    }
}

/// The good time (µs) and area (value·s) of the segment that starts at
/// `from` and runs towards `to` (the next point, if known), clipped to
/// `[lo, hi)`. Bad time adds nothing (`None`). Good time is step, or a
/// trapezoid in linear weighting when the next point is good too (PI: a bad
/// event starts a bad period, so the segment before it is held, not
/// interpolated).
pub(crate) fn segment(
    from: Sample,
    to: Option<Sample>,
    lo: Timestamp,
    hi: Timestamp,
    weighting: Interpolation,
) -> Option<(u64, f64)> {
    let x = from.ts.max(lo);
    if hi <= x || !from.good {
        return None;
    }
    let dt = span(x, hi);
    #[allow(clippy::cast_precision_loss)]
    let seconds = dt as f64 / MICROS_PER_SECOND;
    let area = match to {
        Some(to) if weighting == Interpolation::Linear && to.good && to.ts > from.ts => {
            let vx = lerp(from.ts, from.value, to.ts, to.value, x);
            let vy = lerp(from.ts, from.value, to.ts, to.value, hi);
            // Halves first: the sum of two large values could overflow.
            (0.5 * vx + 0.5 * vy) * seconds
        }
        _ => from.value * seconds,
    };
    Some((dt, area))
}

/// The aggregate of one summary interval `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Aggregate {
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) events: EventStats,
    /// Integral over the good time, value·seconds, in the call's weighting.
    pub(crate) integral: f64,
    pub(crate) good_micros: u64,
    /// The last point at or before the end, any quality: the next interval
    /// starts from it.
    pub(crate) held: Option<Sample>,
}

impl Aggregate {
    pub(crate) fn time_weighted_average(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.good_micros > 0)
            .then(|| self.integral / (self.good_micros as f64 / MICROS_PER_SECOND))
    }

    pub(crate) fn percent_good(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let good = self.good_micros as f64;
        good / span_f64(self.start, self.end) * 100.0
    }
}

/// Builds one interval's aggregate from points and whole stored rollups
/// fed in time order. The value before the first of them comes from `held`.
#[derive(Debug)]
pub(crate) struct Accumulator {
    start: Timestamp,
    end: Timestamp,
    weighting: Interpolation,
    events: Events,
    integral: Sum,
    good_micros: u64,
    held: Option<Sample>,
}

impl Accumulator {
    /// An empty interval `[start, end)` continuing from `held`.
    pub(crate) fn new(
        start: Timestamp,
        end: Timestamp,
        held: Option<Sample>,
        weighting: Interpolation,
    ) -> Self {
        Accumulator {
            start,
            end,
            weighting,
            events: Events::default(),
            integral: Sum::default(),
            good_micros: 0,
            held,
        }
    }

    pub(crate) fn end(&self) -> Timestamp {
        self.end
    }

    /// Adds one point. Points at or after the end, or older than the held
    /// value, are ignored.
    pub(crate) fn push(&mut self, here: Sample) {
        if here.ts >= self.end {
            return;
        }
        if let Some(held) = self.held {
            if here.ts < held.ts {
                return;
            }
            self.integrate(held, Some(here), here.ts);
        }
        if here.ts >= self.start && here.good {
            self.events.add(here.ts, here.value);
        }
        self.held = Some(here);
    }

    /// Adds a stored rollup whose bucket lies inside this interval, after
    /// everything added so far: the segment from the held value to the
    /// rollup's first point, then the rollup's own events and interior.
    pub(crate) fn absorb(&mut self, r: &Rollup) -> Result<(), QueryError> {
        let first = r.first_point();
        if r.start() < self.start || r.end() > self.end {
            return Err(QueryError::InconsistentRollups(
                "rollup outside its interval",
            ));
        }
        if let Some(held) = self.held {
            if first.ts < held.ts {
                return Err(QueryError::InconsistentRollups("rollup out of order"));
            }
            self.integrate(held, Some(first), first.ts);
        }
        self.events.absorb(r.events());
        self.good_micros = self.good_micros.saturating_add(r.good_micros());
        self.integral.add(r.integral(self.weighting));
        self.held = Some(r.last_point());
        Ok(())
    }

    /// Integrates to the interval end and returns the aggregate. `next` is
    /// the first point at or after the end, used in linear weighting only.
    /// Call once per interval: a second call would integrate the tail again.
    pub(crate) fn finish(&mut self, next: Option<Sample>) -> Aggregate {
        if let Some(held) = self.held {
            self.integrate(held, next, self.end);
        }
        Aggregate {
            start: self.start,
            end: self.end,
            events: self.events.stats(),
            integral: self.integral.total(),
            good_micros: self.good_micros,
            held: self.held,
        }
    }

    /// Adds the segment from `from` (towards `to`) up to `until`, clipped
    /// to the interval.
    fn integrate(&mut self, from: Sample, to: Option<Sample>, until: Timestamp) {
        let until = until.min(self.end);
        if let Some((dt, area)) = segment(from, to, self.start, until, self.weighting) {
            self.good_micros = self.good_micros.saturating_add(dt);
            self.integral.add(area);
        }
    }
}

/// `b` when `better(a, b)` says it beats `a`, else `a`; either when the other is absent.
pub(crate) fn pick(
    a: Option<(Timestamp, f64)>,
    b: Option<(Timestamp, f64)>,
    better: impl Fn(f64, f64) -> bool,
) -> Option<(Timestamp, f64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if better(x.1, y.1) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}
