//! The stored form of a `Rollup`: a fixed 118-byte record, version 2. The
//! bucket's start is in the record's key and its width is the column
//! family's (docs/FORMAT.md §8), so times inside are µs offsets from the
//! start, which fit a u32 for buckets up to 2^32 µs (71 minutes).
//!
//! All little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 1 | version = 2 |
//! | 1 | 1 | flags: bit 0 good events present, bit 1 first point Good, bit 2 last point Good; others 0 |
//! | 2 | 4 | points, any quality, u32 ≥ 1 |
//! | 6 | 4 | good events, u32 ≤ points |
//! | 10 | 8 | sum of good values, f64 |
//! | 18 | 8 | sum of squared deviations from their mean (Welford's M2), f64 |
//! | 26 | 12 | min good event: offset u32, value f64 |
//! | 38 | 12 | max good event |
//! | 50 | 12 | first good event |
//! | 62 | 12 | last good event |
//! | 74 | 12 | first point, any quality: offset, value |
//! | 86 | 12 | last point, any quality |
//! | 98 | 4 | good time between the first and the last point, µs, u32 |
//! | 102 | 8 | step integral over that good time, value·seconds, f64 |
//! | 110 | 8 | linear integral over that good time, value·seconds, f64 |
//!
//! With no good event, bytes 10..74 are zero. Version 1 was a draft layout
//! that no build ever wrote to disk; it is refused like any unknown version.

use crate::encoding::Timestamp;
use crate::query::aggregate::{EventStats, Sample};
use crate::query::numeric::span;
use crate::query::{Rollup, RollupError};

/// Version byte written by `to_bytes`; the only one `from_bytes` reads.
pub const ROLLUP_VERSION: u8 = 2;

/// Encoded size of a rollup.
pub const ROLLUP_LEN: usize = 118;

/// Longest bucket whose offsets fit the u32 fields.
const MAX_WIDTH: u64 = 1 << 32;

const FLAG_EVENTS: u8 = 1;
const FLAG_FIRST_GOOD: u8 = 2;
const FLAG_LAST_GOOD: u8 = 4;

/// Where the event fields start and end (zero when there is no good event).
const EVENTS_AT: std::ops::Range<usize> = 10..74;

impl Rollup {
    /// The version-2 record (layout in the module comment). Fails only for
    /// a bucket longer than 2^32 µs or more than `u32::MAX` points, which
    /// storage's minute and hour buckets cannot reach.
    pub fn to_bytes(&self) -> Result<[u8; ROLLUP_LEN], RollupError> {
        let width = span(self.start, self.end);
        if width > MAX_WIDTH {
            return Err(RollupError::BucketTooLong);
        }
        let n = |x: u64| u32::try_from(x).map_err(|_| RollupError::TooManyPoints);
        let off = |t: Timestamp| u32::try_from(span(self.start, t)).unwrap_or(u32::MAX);
        let mut flags = 0;
        if self.events.count > 0 {
            flags |= FLAG_EVENTS;
        }
        if self.first_point.good {
            flags |= FLAG_FIRST_GOOD;
        }
        if self.last_point.good {
            flags |= FLAG_LAST_GOOD;
        }
        let mut out = Vec::with_capacity(ROLLUP_LEN);
        out.push(ROLLUP_VERSION);
        out.push(flags);
        out.extend_from_slice(&n(self.points)?.to_le_bytes());
        out.extend_from_slice(&n(self.events.count)?.to_le_bytes());
        out.extend_from_slice(&self.events.sum.to_le_bytes());
        out.extend_from_slice(&self.events.m2.to_le_bytes());
        let e = &self.events;
        let points = [
            (self.first_point.ts, self.first_point.value),
            (self.last_point.ts, self.last_point.value),
        ];
        for (ts, v) in [e.min, e.max, e.first, e.last]
            .into_iter()
            .map(|x| x.unwrap_or((self.start, 0.0)))
            .chain(points)
        {
            out.extend_from_slice(&off(ts).to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&n(self.good_micros)?.to_le_bytes());
        out.extend_from_slice(&self.step_integral.to_le_bytes());
        out.extend_from_slice(&self.linear_integral.to_le_bytes());
        let mut fixed = [0u8; ROLLUP_LEN];
        if out.len() != ROLLUP_LEN {
            // 2 + 4 + 4 + 8 + 8 + 6 × 12 + 4 + 8 + 8: cannot happen.
            return Err(RollupError::Corrupt("encoded length"));
        }
        fixed.copy_from_slice(&out);
        Ok(fixed)
    }

    /// Decodes a record of the bucket `[start, end)`. Never panics: any
    /// input that is not what `to_bytes` writes for such a bucket is an error.
    pub fn from_bytes(
        bytes: &[u8],
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Rollup, RollupError> {
        if bytes.len() < ROLLUP_LEN {
            return Err(RollupError::Truncated { len: bytes.len() });
        }
        if bytes.len() > ROLLUP_LEN {
            return Err(RollupError::TrailingBytes {
                extra: bytes.len() - ROLLUP_LEN,
            });
        }
        if start >= end {
            return Err(RollupError::EmptyBucket);
        }
        let width = span(start, end);
        if width > MAX_WIDTH {
            return Err(RollupError::BucketTooLong);
        }
        let mut r = Fields {
            bytes,
            pos: 0,
            start,
            width,
        };
        let version = r.byte()?;
        if version != ROLLUP_VERSION {
            return Err(RollupError::UnsupportedVersion(version));
        }
        let flags = r.byte()?;
        if flags & !(FLAG_EVENTS | FLAG_FIRST_GOOD | FLAG_LAST_GOOD) != 0 {
            return Err(RollupError::Corrupt("unknown flags"));
        }
        let points = u64::from(r.u32()?);
        let count = u64::from(r.u32()?);
        let sum = r.f64()?;
        let m2 = r.f64()?;
        let [min, max, first, last] = [r.event()?, r.event()?, r.event()?, r.event()?];
        let (first_ts, first_v) = r.event()?;
        let (last_ts, last_v) = r.event()?;
        let good_micros = u64::from(r.u32()?);
        let step_integral = r.f64()?;
        let linear_integral = r.f64()?;

        let has_events = flags & FLAG_EVENTS != 0;
        if points == 0 || count > points || has_events != (count > 0) {
            return Err(RollupError::Corrupt("counts disagree with flags"));
        }
        if first_ts > last_ts || good_micros > span(first_ts, last_ts) {
            return Err(RollupError::Corrupt("first and last point out of order"));
        }
        if has_events {
            let inside = |t: Timestamp| t >= first_ts && t <= last_ts;
            if ![min.0, max.0, first.0, last.0].into_iter().all(inside) || first.0 > last.0 {
                return Err(RollupError::Corrupt("event outside the points"));
            }
        } else if bytes
            .get(EVENTS_AT)
            .is_none_or(|b| b.iter().any(|&x| x != 0))
        {
            return Err(RollupError::Corrupt("absent events not zero"));
        }
        let event = |e: (Timestamp, f64)| has_events.then_some(e);
        Ok(Rollup {
            start,
            end,
            points,
            events: EventStats {
                count,
                sum,
                m2,
                min: event(min),
                max: event(max),
                first: event(first),
                last: event(last),
            },
            first_point: Sample {
                ts: first_ts,
                value: first_v,
                good: flags & FLAG_FIRST_GOOD != 0,
            },
            last_point: Sample {
                ts: last_ts,
                value: last_v,
                good: flags & FLAG_LAST_GOOD != 0,
            },
            good_micros,
            step_integral,
            linear_integral,
        })
    }
}

/// Reads the fixed fields, checking every length (never indexing).
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    start: Timestamp,
    width: u64,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RollupError> {
        let end = self.pos.saturating_add(N);
        let truncated = RollupError::Truncated {
            len: self.bytes.len(),
        };
        let slice = self.bytes.get(self.pos..end).ok_or(truncated.clone())?;
        self.pos = end;
        <[u8; N]>::try_from(slice).map_err(|_| truncated)
    }

    fn byte(&mut self) -> Result<u8, RollupError> {
        let [b] = self.take::<1>()?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, RollupError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn f64(&mut self) -> Result<f64, RollupError> {
        Ok(f64::from_le_bytes(self.take()?))
    }

    /// An offset and a value: a time inside the bucket.
    fn event(&mut self) -> Result<(Timestamp, f64), RollupError> {
        let off = u64::from(self.u32()?);
        let v = self.f64()?;
        if off >= self.width {
            return Err(RollupError::Corrupt("time outside the bucket"));
        }
        let t = i128::from(self.start.micros()) + i128::from(off);
        let t = i64::try_from(t).map_err(|_| RollupError::Corrupt("time outside the bucket"))?;
        Ok((Timestamp::from_micros(t), v))
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::query::rollup::tests::sample;

    /// Version 2 bytes, pinned: rollups are stored, so this layout is a
    /// promise (docs/FORMAT.md §8). A new layout gets a new version and this
    /// test stays. `tests/format_fixtures.rs` reads a committed file too.
    #[test]
    fn version_2_layout() {
        let hex = "0207 04000000 03000000 0000000000003240 0000000000002040\
            40420f00 0000000000001040 e0673500 0000000000002040\
            40420f00 0000000000001040 e0673500 0000000000002040\
            40420f00 0000000000001040 e0673500 0000000000002040\
            60e31600 0000000000001c40 0000000000001e40";
        let hex: String = hex.split_whitespace().collect();
        let want: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let r = sample();
        assert_eq!(r.to_bytes().unwrap().to_vec(), want);
        assert_eq!(Rollup::from_bytes(&want, r.start, r.end), Ok(r));
    }
}
