//! `Rollup`: the partial aggregate of one tag over one fixed bucket
//! `[start, end)`, mergeable with the next bucket's, so storage can keep
//! 1-minute and 1-hour rollups and `summary` can answer a year in ~8,760
//! reads. Also the `Accumulator` that builds one from points, which the raw
//! summary path shares so that both paths agree by construction.
//!
//! Time weighting in a rollup is always step: the linear integral of a
//! bucket depends on the first point after it, unknown when it is written.
//!
//! Storage owns when to (re)compute a rollup: a point written into bucket k
//! changes bucket k and the next bucket that holds points (whose leading
//! segment starts from the held value).
//!
//! Byte layout, version 1, all little-endian, `ROLLUP_LEN` = 138 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | version = 1 |
//! | 1 | 1 | flags: bit 0 has good events (count > 0), bit 1 has a held value, bit 2 held value is good; others 0 |
//! | 2 | 8 | start, i64 µs |
//! | 10 | 8 | end, i64 µs |
//! | 18 | 8 | count of good events, u64 |
//! | 26 | 8 | sum of good values, f64 |
//! | 34 | 8 | sum of squared deviations from the mean (Welford's M2), f64 |
//! | 42 | 16 | min: ts i64, value f64 |
//! | 58 | 16 | max: ts, value |
//! | 74 | 16 | first good event: ts, value |
//! | 90 | 16 | last good event: ts, value |
//! | 106 | 8 | step integral over good time, value·seconds, f64 |
//! | 114 | 8 | good time, u64 µs |
//! | 122 | 16 | held value (last point at or before the end, any quality): ts, value |
//!
//! Fields that flags mark absent are written as zero bytes.

use crate::encoding::{Point, Timestamp, ValueType};
use crate::query::numeric::{as_f64, lerp, span, Sum, MICROS_PER_SECOND};
use crate::query::{Interpolation, RollupError};

/// Version byte written by `to_bytes`; the only one `from_bytes` reads so far.
pub const ROLLUP_VERSION: u8 = 1;

/// Encoded size of a rollup.
pub const ROLLUP_LEN: usize = 138;

const FLAG_EVENTS: u8 = 1;
const FLAG_HELD: u8 = 2;
const FLAG_HELD_GOOD: u8 = 4;

/// The step state at a bucket's end: the last point at or before it, any
/// quality. The next bucket integrates from it until its own first point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldValue {
    /// Timestamp of that point.
    pub ts: Timestamp,
    /// Its value as a number.
    pub value: f64,
    /// Whether its quality is Good.
    pub good: bool,
}

/// Partial aggregate of one bucket `[start, end)`. Events are the good
/// points inside the bucket; time weighting is step from the held value
/// before the bucket. Only Good quality counts as good.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollup {
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) m2: f64,
    pub(crate) min: Option<(Timestamp, f64)>,
    pub(crate) max: Option<(Timestamp, f64)>,
    pub(crate) first: Option<(Timestamp, f64)>,
    pub(crate) last: Option<(Timestamp, f64)>,
    pub(crate) integral: f64,
    pub(crate) good_micros: u64,
    pub(crate) held: Option<HeldValue>,
}

impl Rollup {
    /// The rollup of `[start, end)` from `prev`, the last point before
    /// `start` (its value holds until the first point; ignored if it is not
    /// before `start`), and `points`, the bucket's points in time order.
    /// Points out of order or at or after `end` are ignored.
    pub fn compute(
        prev: Option<&Point>,
        points: &[Point],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Rollup, RollupError> {
        if start >= end {
            return Err(RollupError::EmptyBucket);
        }
        let held = prev
            .map(held_value)
            .transpose()
            .map_err(RollupError::NotNumeric)?;
        let mut acc = Accumulator::new(start, end, held, Interpolation::Step);
        for p in points {
            acc.push(p).map_err(RollupError::NotNumeric)?;
        }
        acc.finish(None).map_err(RollupError::NotNumeric)
    }

    /// This bucket followed by `next`, which must start where this one ends.
    /// Associative up to float rounding of the sums.
    pub fn merge(&self, next: &Rollup) -> Result<Rollup, RollupError> {
        if self.end != next.start {
            return Err(RollupError::NotAdjacent);
        }
        let count = self.count.saturating_add(next.count);
        let mut sum = Sum::from_total(self.sum);
        sum.add(next.sum);
        // Chan et al.'s pairwise update of M2.
        let m2 = match (self.mean(), next.mean()) {
            (Some(ma), Some(mb)) => {
                #[allow(clippy::cast_precision_loss)]
                let (na, nb, n) = (self.count as f64, next.count as f64, count as f64);
                let delta = mb - ma;
                self.m2 + next.m2 + delta * delta * (na / n) * nb
            }
            (Some(_), None) => self.m2,
            _ => next.m2,
        };
        let mut integral = Sum::from_total(self.integral);
        integral.add(next.integral);
        Ok(Rollup {
            start: self.start,
            end: next.end,
            count,
            sum: sum.total(),
            m2,
            min: pick(self.min, next.min, |a, b| b < a),
            max: pick(self.max, next.max, |a, b| b > a),
            first: self.first.or(next.first),
            last: next.last.or(self.last),
            integral: integral.total(),
            good_micros: self.good_micros.saturating_add(next.good_micros),
            held: next.held.or(self.held),
        })
    }

    /// Bucket start.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Bucket end (exclusive).
    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// Good events in the bucket.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the good events' values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Event-weighted mean, if any good event.
    pub fn mean(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Sample standard deviation of the good events, if at least two.
    pub fn std_dev(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).max(0.0).sqrt())
    }

    /// Smallest good value and its time (the earliest on a tie).
    pub fn min(&self) -> Option<(Timestamp, f64)> {
        self.min
    }

    /// Largest good value and its time (the earliest on a tie).
    pub fn max(&self) -> Option<(Timestamp, f64)> {
        self.max
    }

    /// First good event.
    pub fn first(&self) -> Option<(Timestamp, f64)> {
        self.first
    }

    /// Last good event.
    pub fn last(&self) -> Option<(Timestamp, f64)> {
        self.last
    }

    /// Integral of the value over the good time, in value·seconds.
    pub fn integral(&self) -> f64 {
        self.integral
    }

    /// Time in the bucket during which the held value was good, in µs.
    pub fn good_micros(&self) -> u64 {
        self.good_micros
    }

    /// Time-weighted average over the good time, if there was any.
    pub fn time_weighted_average(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.good_micros > 0)
            .then(|| self.integral / (self.good_micros as f64 / MICROS_PER_SECOND))
    }

    /// Good time as a percentage of the bucket.
    pub fn percent_good(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let good = self.good_micros as f64;
        good / crate::query::numeric::span_f64(self.start, self.end) * 100.0
    }

    /// The step state at the bucket end.
    pub fn held(&self) -> Option<HeldValue> {
        self.held
    }

    /// The version-1 encoding (layout in the module comment).
    pub fn to_bytes(&self) -> [u8; ROLLUP_LEN] {
        let mut flags = 0;
        if self.count > 0 {
            flags |= FLAG_EVENTS;
        }
        if let Some(h) = self.held {
            flags |= FLAG_HELD;
            if h.good {
                flags |= FLAG_HELD_GOOD;
            }
        }
        let mut out = Vec::with_capacity(ROLLUP_LEN);
        out.push(ROLLUP_VERSION);
        out.push(flags);
        out.extend_from_slice(&self.start.micros().to_le_bytes());
        out.extend_from_slice(&self.end.micros().to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.sum.to_le_bytes());
        out.extend_from_slice(&self.m2.to_le_bytes());
        for event in [self.min, self.max, self.first, self.last] {
            let (ts, v) = event.unwrap_or((Timestamp::EPOCH, 0.0));
            out.extend_from_slice(&ts.micros().to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.integral.to_le_bytes());
        out.extend_from_slice(&self.good_micros.to_le_bytes());
        let (ts, v) = self
            .held
            .map_or((Timestamp::EPOCH, 0.0), |h| (h.ts, h.value));
        out.extend_from_slice(&ts.micros().to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
        let mut fixed = [0u8; ROLLUP_LEN];
        // `out` is exactly ROLLUP_LEN long: 2 + 17 fields of 8 bytes.
        if let Some(dst) = fixed.get_mut(..out.len()) {
            dst.copy_from_slice(&out);
        }
        fixed
    }

    /// Decodes `to_bytes` output. Never panics: any other input is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Rollup, RollupError> {
        if bytes.len() < ROLLUP_LEN {
            return Err(RollupError::Truncated { len: bytes.len() });
        }
        if bytes.len() > ROLLUP_LEN {
            return Err(RollupError::TrailingBytes {
                extra: bytes.len() - ROLLUP_LEN,
            });
        }
        let mut r = Fields { bytes, pos: 0 };
        let version = r.byte()?;
        if version != ROLLUP_VERSION {
            return Err(RollupError::UnsupportedVersion(version));
        }
        let flags = r.byte()?;
        if flags & !(FLAG_EVENTS | FLAG_HELD | FLAG_HELD_GOOD) != 0 {
            return Err(RollupError::Corrupt("unknown flags"));
        }
        let has_events = flags & FLAG_EVENTS != 0;
        let has_held = flags & FLAG_HELD != 0;
        if flags & FLAG_HELD_GOOD != 0 && !has_held {
            return Err(RollupError::Corrupt("held value good without held value"));
        }
        let start = r.ts()?;
        let end = r.ts()?;
        let count = r.u64()?;
        let sum = r.f64()?;
        let m2 = r.f64()?;
        let mut events = [None; 4];
        for e in &mut events {
            let ev = (r.ts()?, r.f64()?);
            *e = has_events.then_some(ev);
        }
        let [min, max, first, last] = events;
        let integral = r.f64()?;
        let good_micros = r.u64()?;
        let held = (r.ts()?, r.f64()?);
        let held = has_held.then_some(HeldValue {
            ts: held.0,
            value: held.1,
            good: flags & FLAG_HELD_GOOD != 0,
        });
        let rollup = Rollup {
            start,
            end,
            count,
            sum,
            m2,
            min,
            max,
            first,
            last,
            integral,
            good_micros,
            held,
        };
        rollup.check()?;
        Ok(rollup)
    }

    /// The invariants `compute` and `merge` keep, checked on decoded bytes.
    fn check(&self) -> Result<(), RollupError> {
        if self.start >= self.end {
            return Err(RollupError::Corrupt("start not before end"));
        }
        if (self.count > 0) != self.first.is_some() {
            return Err(RollupError::Corrupt("count disagrees with flags"));
        }
        if self.good_micros > span(self.start, self.end) {
            return Err(RollupError::Corrupt("good time exceeds bucket"));
        }
        let inside = |t: Timestamp| t >= self.start && t < self.end;
        if let (Some(min), Some(max), Some(first), Some(last)) =
            (self.min, self.max, self.first, self.last)
        {
            if ![min.0, max.0, first.0, last.0].into_iter().all(inside) || first.0 > last.0 {
                return Err(RollupError::Corrupt("event outside bucket"));
            }
            match self.held {
                Some(h) if h.ts >= last.0 => {}
                _ => return Err(RollupError::Corrupt("held value before last event")),
            }
        }
        if self.held.is_some_and(|h| h.ts >= self.end) {
            return Err(RollupError::Corrupt("held value after bucket"));
        }
        Ok(())
    }
}

/// Builds a bucket's aggregate from points fed in time order. In linear
/// mode the integral uses trapezoids between good points, which needs the
/// first point after the bucket, given to `finish`.
#[derive(Debug)]
pub(crate) struct Accumulator {
    start: Timestamp,
    end: Timestamp,
    weighting: Interpolation,
    count: u64,
    sum: Sum,
    mean: f64,
    m2: f64,
    min: Option<(Timestamp, f64)>,
    max: Option<(Timestamp, f64)>,
    first: Option<(Timestamp, f64)>,
    last: Option<(Timestamp, f64)>,
    integral: Sum,
    good_micros: u64,
    held: Option<HeldValue>,
}

impl Accumulator {
    /// An empty bucket `[start, end)` continuing from `held`.
    pub(crate) fn new(
        start: Timestamp,
        end: Timestamp,
        held: Option<HeldValue>,
        weighting: Interpolation,
    ) -> Self {
        Accumulator {
            start,
            end,
            weighting,
            count: 0,
            sum: Sum::default(),
            mean: 0.0,
            m2: 0.0,
            min: None,
            max: None,
            first: None,
            last: None,
            integral: Sum::default(),
            good_micros: 0,
            held,
        }
    }

    pub(crate) fn end(&self) -> Timestamp {
        self.end
    }

    /// Adds one point. `Err` carries the type of a non-numeric value.
    pub(crate) fn push(&mut self, p: &Point) -> Result<(), ValueType> {
        if p.ts >= self.end {
            return Ok(());
        }
        let here = held_value(p)?;
        if let Some(held) = self.held {
            if p.ts < held.ts {
                return Ok(());
            }
            self.integrate(held, Some(here), p.ts);
        }
        if p.ts >= self.start && here.good {
            self.add_event(p.ts, here.value);
        }
        self.held = Some(here);
        Ok(())
    }

    /// Integrates to the bucket end and returns the aggregate. `next` is the
    /// first point at or after the end, used in linear mode only.
    /// Call once per bucket: a second call would integrate the tail again.
    pub(crate) fn finish(&mut self, next: Option<&Point>) -> Result<Rollup, ValueType> {
        if let Some(held) = self.held {
            let to = match next {
                Some(p) if self.weighting == Interpolation::Linear => Some(held_value(p)?),
                _ => None,
            };
            self.integrate(held, to, self.end);
        }
        Ok(Rollup {
            start: self.start,
            end: self.end,
            count: self.count,
            sum: self.sum.total(),
            m2: self.m2,
            min: self.min,
            max: self.max,
            first: self.first,
            last: self.last,
            integral: self.integral.total(),
            good_micros: self.good_micros,
            held: self.held,
        })
    }

    /// Welford's update: the mean and M2 stay accurate where the textbook
    /// sum of squares cancels catastrophically (values near 1e6 ± 0.01).
    fn add_event(&mut self, ts: Timestamp, v: f64) {
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

    /// Adds the segment from `from` up to `until` (clipped to the bucket).
    /// Bad time adds nothing; good time is step, or a trapezoid in linear
    /// mode when the following point is good too (PI: a bad event starts a
    /// bad period, so the segment before it is held, not interpolated).
    fn integrate(&mut self, from: HeldValue, to: Option<HeldValue>, until: Timestamp) {
        let x = from.ts.max(self.start);
        let until = until.min(self.end);
        if until <= x || !from.good {
            return;
        }
        let dt = span(x, until);
        self.good_micros = self.good_micros.saturating_add(dt);
        #[allow(clippy::cast_precision_loss)]
        let seconds = dt as f64 / MICROS_PER_SECOND;
        let area = match to {
            Some(to) if self.weighting == Interpolation::Linear && to.good && to.ts > from.ts => {
                let vx = lerp(from.ts, from.value, to.ts, to.value, x);
                let vy = lerp(from.ts, from.value, to.ts, to.value, until);
                // Halves first: the sum of two large values could overflow.
                (0.5 * vx + 0.5 * vy) * seconds
            }
            _ => from.value * seconds,
        };
        self.integral.add(area);
    }
}

/// A point as a held value; `Err` for a string.
pub(crate) fn held_value(p: &Point) -> Result<HeldValue, ValueType> {
    Ok(HeldValue {
        ts: p.ts,
        value: as_f64(&p.value)?,
        good: p.quality.is_good(),
    })
}

/// `b` when `better(a, b)` says it beats `a`, else `a`; either when the other is absent.
fn pick(
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

/// Reads the fixed fields, checking every length (never indexing).
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RollupError> {
        let end = self.pos.saturating_add(N);
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(RollupError::Truncated {
                len: self.bytes.len(),
            })?;
        self.pos = end;
        <[u8; N]>::try_from(slice).map_err(|_| RollupError::Truncated {
            len: self.bytes.len(),
        })
    }

    fn byte(&mut self) -> Result<u8, RollupError> {
        let [b] = self.take::<1>()?;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, RollupError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn f64(&mut self) -> Result<f64, RollupError> {
        Ok(f64::from_le_bytes(self.take()?))
    }

    fn ts(&mut self) -> Result<Timestamp, RollupError> {
        Ok(Timestamp::from_micros(i64::from_le_bytes(self.take()?)))
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::{Quality, Value};

    fn sample() -> Rollup {
        let p = |t: i64, v: f64, q: Quality| Point {
            ts: Timestamp::from_micros(t),
            value: Value::F64(v),
            quality: q,
        };
        let prev = p(-1_000_000, 2.0, Quality::GOOD);
        let points = [
            p(1_000_000, 4.0, Quality::GOOD),
            p(2_000_000, 0.0, Quality::BAD),
            p(3_000_000, 6.0, Quality::GOOD),
        ];
        Rollup::compute(
            Some(&prev),
            &points,
            Timestamp::from_micros(0),
            Timestamp::from_micros(4_000_000),
        )
        .unwrap()
    }

    #[test]
    fn sample_aggregates() {
        let r = sample();
        assert_eq!(r.count(), 2);
        assert_eq!(r.sum(), 10.0);
        assert_eq!(r.std_dev(), Some(2f64.sqrt()));
        // 2 for 1 s, 4 for 1 s, bad for 1 s, 6 for 1 s.
        assert_eq!(r.integral(), 12.0);
        assert_eq!(r.good_micros(), 3_000_000);
        assert_eq!(r.time_weighted_average(), Some(4.0));
        assert_eq!(r.percent_good(), 75.0);
    }

    /// Version 1 bytes, pinned: rollups are stored, so this layout is a
    /// promise. A new layout gets a new version and this test stays.
    #[test]
    fn version_1_layout() {
        let hex = "0107\
            0000000000000000 00093d0000000000 0200000000000000 0000000000002440 0000000000000040\
            40420f0000000000 0000000000001040 c0c62d0000000000 0000000000001840\
            40420f0000000000 0000000000001040 c0c62d0000000000 0000000000001840\
            0000000000002840 c0c62d0000000000 c0c62d0000000000 0000000000001840";
        let hex: String = hex.split_whitespace().collect();
        let want: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(sample().to_bytes().to_vec(), want);
        assert_eq!(Rollup::from_bytes(&want), Ok(sample()));
    }
}
