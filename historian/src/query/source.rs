//! The `Source` trait: all the query engine asks of storage, kept small so
//! that storage can answer each method with one iterator seek. `MemSource`
//! implements it over `BTreeMap`s for tests and examples.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::encoding::{Point, Timestamp};
use crate::query::rollup::RollupStream;
use crate::query::{QueryError, Rollup, RollupError, SourceError};

/// Points one `scan` asks of the source at a time: enough to amortise a
/// seek, small enough that a scan holds little memory.
const SCAN_CHUNK: usize = 4_096;

/// Where the query engine reads one tag's points.
///
/// Contract for implementors:
/// * points come in time order; a tag may hold several points with the same
///   timestamp, returned in the order they were written;
/// * ranges are inclusive at both ends (timestamps are integers, so the
///   half-open `[a, b)` is `[a, b - 1]`), and an empty range (`start > end`)
///   is not an error;
/// * an unknown tag is `SourceError::UnknownTag`; a known tag without points
///   answers with nothing.
pub trait Source {
    /// Points of `tag` with `start <= ts <= end`, in time order, at most
    /// `limit` of them (the first `limit`). Callers page by asking again
    /// from the last timestamp they got.
    fn range(
        &self,
        tag: &str,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, SourceError>;

    /// The last point with `ts <= t` (`inclusive`) or `ts < t`.
    fn before(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError>;

    /// The first point with `ts >= t` (`inclusive`) or `ts > t`.
    fn after(&self, tag: &str, t: Timestamp, inclusive: bool)
        -> Result<Option<Point>, SourceError>;

    /// The tag's newest point.
    fn latest(&self, tag: &str) -> Result<Option<Point>, SourceError>;

    /// The rollup resolutions this source keeps; none by default.
    fn rollup_resolutions(&self) -> &[RollupResolution] {
        &[]
    }

    /// Stored rollups of `tag` at `resolution` whose buckets lie within
    /// `[start, end)` (both aligned to the resolution), in time order. Each
    /// is `Rollup::compute` of every point of the tag in its bucket. A
    /// source may leave out any bucket (no points, too few points to be
    /// worth a rollup, or points not final yet): the engine reads a missing
    /// bucket from finer rollups or raw points, so leaving one out costs
    /// time, never correctness. `Ok(None)` when this source keeps no such
    /// rollups for the tag (string tags, say).
    fn rollups(
        &self,
        tag: &str,
        resolution: RollupResolution,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Option<Vec<Rollup>>, SourceError> {
        let _ = (tag, resolution, start, end);
        Ok(None)
    }
}

/// A rollup bucket size. Buckets are aligned to the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RollupResolution {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

impl RollupResolution {
    /// Every resolution, finest first.
    pub const ALL: [RollupResolution; 2] = [RollupResolution::Minute, RollupResolution::Hour];

    /// Bucket length in microseconds.
    pub const fn micros(self) -> u64 {
        match self {
            RollupResolution::Minute => 60_000_000,
            RollupResolution::Hour => 3_600_000_000,
        }
    }
}

/// An in-memory `Source`: one `BTreeMap` per tag. With `with_rollups` it
/// also answers `rollups`, computed on the fly for buckets that hold at
/// least `with_rollup_min_points` points (as storage keeps them), so tests
/// can compare both summary paths.
#[derive(Debug, Default)]
pub struct MemSource {
    tags: BTreeMap<String, BTreeMap<Timestamp, Vec<Point>>>,
    resolutions: Vec<RollupResolution>,
    rollup_min_points: u64,
    points_read: AtomicU64,
    rollups_read: AtomicU64,
}

impl MemSource {
    /// An empty source without rollups.
    pub fn new() -> Self {
        MemSource::default()
    }

    /// Also serve rollups at these resolutions.
    pub fn with_rollups(mut self, resolutions: &[RollupResolution]) -> Self {
        self.resolutions = resolutions.to_vec();
        self
    }

    /// Leave out rollups of buckets with fewer points than `n` (default 1),
    /// as storage leaves out sparse buckets.
    pub fn with_rollup_min_points(mut self, n: u64) -> Self {
        self.rollup_min_points = n;
        self
    }

    /// Makes `tag` known, without points.
    pub fn add_tag(&mut self, tag: &str) {
        self.tags.entry(tag.to_owned()).or_default();
    }

    /// Appends a point to `tag` (after any point with the same timestamp).
    pub fn insert(&mut self, tag: &str, point: Point) {
        self.tags
            .entry(tag.to_owned())
            .or_default()
            .entry(point.ts)
            .or_default()
            .push(point);
    }

    /// Points handed out by `range` so far.
    pub fn points_read(&self) -> u64 {
        self.points_read.load(Ordering::Relaxed)
    }

    /// Rollups handed out by `rollups` so far.
    pub fn rollups_read(&self) -> u64 {
        self.rollups_read.load(Ordering::Relaxed)
    }

    fn series(&self, tag: &str) -> Result<&BTreeMap<Timestamp, Vec<Point>>, SourceError> {
        self.tags
            .get(tag)
            .ok_or_else(|| SourceError::UnknownTag(tag.to_owned()))
    }
}

impl Source for MemSource {
    fn range(
        &self,
        tag: &str,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, SourceError> {
        let series = self.series(tag)?;
        if start > end {
            return Ok(Vec::new());
        }
        let out: Vec<Point> = series
            .range(start..=end)
            .flat_map(|(_, points)| points.iter())
            .take(limit)
            .cloned()
            .collect();
        self.points_read
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn before(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        let upper = if inclusive {
            Bound::Included(t)
        } else {
            Bound::Excluded(t)
        };
        Ok(self
            .series(tag)?
            .range((Bound::Unbounded, upper))
            .next_back()
            .and_then(|(_, points)| points.last().cloned()))
    }

    fn after(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        let lower = if inclusive {
            Bound::Included(t)
        } else {
            Bound::Excluded(t)
        };
        Ok(self
            .series(tag)?
            .range((lower, Bound::Unbounded))
            .next()
            .and_then(|(_, points)| points.first().cloned()))
    }

    fn latest(&self, tag: &str) -> Result<Option<Point>, SourceError> {
        Ok(self
            .series(tag)?
            .last_key_value()
            .and_then(|(_, points)| points.last().cloned()))
    }

    fn rollup_resolutions(&self) -> &[RollupResolution] {
        &self.resolutions
    }

    fn rollups(
        &self,
        tag: &str,
        resolution: RollupResolution,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Option<Vec<Rollup>>, SourceError> {
        let series = self.series(tag)?;
        if !self.resolutions.contains(&resolution) {
            return Ok(None);
        }
        let mut stream = RollupStream::new(resolution.micros());
        let mut out = Vec::new();
        if start < end {
            for p in series.range(start..end).flat_map(|(_, points)| points) {
                match stream.push(p) {
                    Ok(done) => out.extend(done),
                    // Storage keeps no rollups of string tags.
                    Err(RollupError::NotNumeric(_)) => return Ok(None),
                    Err(e) => return Err(SourceError::Storage(e.to_string())),
                }
            }
        }
        out.extend(stream.finish());
        out.retain(|r| r.points() >= self.rollup_min_points);
        self.rollups_read
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(Some(out))
    }
}

/// How many points (and rollups) one call may still read: shared by every
/// read of a call, so a plan of many small reads has the same cap as one scan.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Self {
        Budget { limit, used: 0 }
    }

    /// Accounts for `n` more items; fails once the total passes the limit.
    pub(crate) fn spend(&mut self, n: u64) -> Result<(), QueryError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(QueryError::TooManyPointsScanned { limit: self.limit });
        }
        Ok(())
    }
}

/// Feeds every point of `tag` in `[start, end]` to `visit`, in time order,
/// reading `SCAN_CHUNK` points at a time and charging each to `budget`.
pub(crate) fn scan<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    budget: &mut Budget,
    mut visit: impl FnMut(&Point) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let mut from = start;
    // Points at `from` already visited: the next chunk starts at the last
    // timestamp seen, since more points may share it.
    let mut skip = 0usize;
    loop {
        let want = SCAN_CHUNK.saturating_add(skip);
        let chunk = src.range(tag, from, end, want)?;
        let mut seen = 0;
        for p in &chunk {
            if seen < skip && p.ts == from {
                seen += 1;
                continue;
            }
            budget.spend(1)?;
            visit(p)?;
        }
        if chunk.len() < want {
            return Ok(());
        }
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        skip = chunk.iter().rev().take_while(|p| p.ts == last.ts).count();
        from = last.ts;
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::Value;

    fn p(t: i64, v: i64) -> Point {
        Point::good(Timestamp::from_micros(t), Value::I64(v))
    }

    #[test]
    fn mem_source_follows_the_contract() {
        let mut src = MemSource::new();
        for (t, v) in [(10, 1), (20, 2), (20, 3), (30, 4)] {
            src.insert("a", p(t, v));
        }
        src.add_tag("empty");
        let t = Timestamp::from_micros;
        let vals = |ps: Vec<Point>| ps.into_iter().map(|p| p.value).collect::<Vec<_>>();
        assert_eq!(
            vals(src.range("a", t(10), t(20), 10).unwrap()),
            [Value::I64(1), Value::I64(2), Value::I64(3)]
        );
        assert_eq!(src.range("a", t(10), t(30), 2).unwrap().len(), 2);
        assert!(src.range("a", t(30), t(10), 10).unwrap().is_empty());
        // Several points at one time: "before" sees the last written, "after" the first.
        assert_eq!(src.before("a", t(20), true).unwrap(), Some(p(20, 3)));
        assert_eq!(src.before("a", t(20), false).unwrap(), Some(p(10, 1)));
        assert_eq!(src.after("a", t(20), true).unwrap(), Some(p(20, 2)));
        assert_eq!(src.after("a", t(20), false).unwrap(), Some(p(30, 4)));
        assert_eq!(src.latest("a").unwrap(), Some(p(30, 4)));
        assert_eq!(src.latest("empty").unwrap(), None);
        assert!(matches!(
            src.latest("nope"),
            Err(SourceError::UnknownTag(tag)) if tag == "nope"
        ));
        // No rollups unless asked for.
        assert!(src
            .rollups("a", RollupResolution::Minute, t(0), t(60_000_000))
            .unwrap()
            .is_none());
    }

    #[test]
    fn mem_source_rollups_skip_empty_buckets() {
        let minute = 60_000_000;
        let mut src = MemSource::new().with_rollups(&[RollupResolution::Minute]);
        src.insert("a", p(5, 1));
        src.insert("a", p(2 * minute + 5, 2));
        src.insert("a", p(2 * minute + 7, 4));
        let got = src
            .rollups(
                "a",
                RollupResolution::Minute,
                Timestamp::from_micros(0),
                Timestamp::from_micros(3 * minute),
            )
            .unwrap()
            .unwrap();
        let starts: Vec<i64> = got.iter().map(|r| r.start().micros()).collect();
        assert_eq!(starts, [0, 2 * minute]);
        // Each rollup holds its own bucket's points only.
        assert_eq!(got[1].points(), 2);
        assert_eq!(
            got[1].integral(crate::query::Interpolation::Linear),
            3e-6 * 2.0
        );
        let mut sparse = MemSource::new()
            .with_rollups(&[RollupResolution::Minute])
            .with_rollup_min_points(2);
        for point in [p(5, 1), p(2 * minute + 5, 2), p(2 * minute + 7, 4)] {
            sparse.insert("a", point);
        }
        let got = sparse
            .rollups(
                "a",
                RollupResolution::Minute,
                Timestamp::from_micros(0),
                Timestamp::from_micros(3 * minute),
            )
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
    }
}
