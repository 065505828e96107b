//! Rollups in storage: one-minute and one-hour `Rollup`s of every numeric
//! tag, kept in `hist_rollup_1m` / `hist_rollup_1h` under the same 12-byte
//! series key as blocks (tag, bucket start), written in the same batch as
//! the points they summarise. docs/FORMAT.md §8 has the layout.
//!
//! **Which buckets are final.** A bucket is rolled up once every point it
//! can hold is sealed: for a tag whose last sealed point is at `s`, the
//! buckets that end at or before `bucket_start(s)` (the *frontier*, kept
//! nowhere: it follows from `sealed_last`, rebuilt at open). Points after
//! `s` are in the recent area, so the bucket holding `s` may still grow;
//! a query reads it raw.
//!
//! **Invariant.** For every bucket below the frontier, the stored rollup is
//! `Rollup::compute` of all the tag's points in it, or there is none (no
//! points, fewer than `rollup_min_points`, or deleted by retention). A
//! missing rollup only sends the query to finer rollups or raw points.
//!
//! **How each write keeps it** (same `WriteBatch`, so a crash keeps both or
//! neither):
//! * the frontier advanced: every minute between the old and new frontier
//!   is rolled up from the points (disk merged with the plan's);
//! * a late point or a replacement below the frontier: its minute is rolled
//!   up again from the points, at most a minute of them;
//! * every hour below the hour frontier that holds such a minute is merged
//!   again from its minutes: the ones just computed, the stored ones, and
//!   raw points for minutes too sparse to be stored.
//!
//! So a point is read about once more when its minute completes, and a late
//! point costs one minute of points plus one hour of minute rollups; the
//! hour never rereads an hour of points unless its minutes are sparse.
//! Rollups depend on their own bucket only (see `query::rollup`), so no
//! neighbour is ever recomputed.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::ReadOptions;

use crate::encoding::{Point, Timestamp, ValueType};
use crate::query::{bucket_end, bucket_start, Rollup, RollupResolution, RollupStream};
use crate::storage::keys::{self, CF_BLOCKS, CF_ROLLUP_1H, CF_ROLLUP_1M};
use crate::storage::read::decode_window_checked;
use crate::storage::write::Op;
use crate::storage::{Storage, StorageError, TagId};

/// Buckets with fewer points keep no rollup. A stored rollup is 118 bytes
/// (plus its key): for 16 points that is about 7 bytes per point on top of
/// ~1–2 compressed, and reading 16 raw points costs little more than one
/// rollup. 1 s data gets minute and hour rollups, 1 min data hour rollups.
pub const DEFAULT_ROLLUP_MIN_POINTS: u64 = 16;

const MINUTE: RollupResolution = RollupResolution::Minute;
const HOUR: RollupResolution = RollupResolution::Hour;

/// The column family of a resolution.
fn cf_of(resolution: RollupResolution) -> &'static str {
    match resolution {
        RollupResolution::Hour => CF_ROLLUP_1H,
        _ => CF_ROLLUP_1M,
    }
}

impl Storage {
    /// The stored rollups of `tag` at `resolution` whose buckets lie within
    /// `[start, end)`, in time order, final buckets only (see the module
    /// docs). Empty for string tags and tags with nothing sealed.
    pub fn rollups(
        &self,
        tag: TagId,
        resolution: RollupResolution,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Rollup>, StorageError> {
        let (value_type, sealed_last) = {
            let table = self.table();
            let e = table
                .by_id
                .get(&tag)
                .ok_or(StorageError::UnknownTagId(tag))?;
            (e.meta.value_type, e.sealed_last)
        };
        let width = resolution.micros();
        let Some(frontier) = sealed_last.map(|s| bucket_start(s, width)) else {
            return Ok(Vec::new());
        };
        let hi = end.min(frontier);
        if value_type == ValueType::Str || start >= hi {
            return Ok(Vec::new());
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::series_key(tag, hi).to_vec());
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(cf_of(resolution))?, opts);
        it.seek(keys::series_key(tag, start));
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            out.push(decode_rollup(tag, k, v, width)?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Operations that keep `tag`'s rollups right once the plan's `points`
    /// are written, the recent points at `removed` are gone (compression
    /// left them out of the blocks) and its sealed range ends at
    /// `new_sealed` (it ended at `old_sealed`). See the module docs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rollup_ops(
        &self,
        tag: TagId,
        value_type: ValueType,
        points: &BTreeMap<Timestamp, Point>,
        removed: &BTreeSet<Timestamp>,
        old_sealed: Option<Timestamp>,
        new_sealed: Option<Timestamp>,
        ops: &mut Vec<Op>,
    ) -> Result<(), StorageError> {
        let Some(new_sealed) = new_sealed else {
            return Ok(());
        };
        if value_type == ValueType::Str {
            return Ok(());
        }
        let (minute, hour) = (MINUTE.micros(), HOUR.micros());
        let frontier = bucket_start(new_sealed, minute);
        // Minutes below `fresh_from` were final before this plan.
        let fresh_from = old_sealed.map_or(Timestamp::from_micros(i64::MIN), |s| {
            bucket_start(s, minute)
        });
        let mut ranges = Ranges::default();
        if fresh_from < frontier {
            ranges.add(fresh_from, frontier);
        }
        // Late points and replacements in minutes that were already final.
        for &ts in points.range(..fresh_from.min(frontier)).map(|(ts, _)| ts) {
            let m = bucket_start(ts, minute);
            ranges.add(m, bucket_end(m, minute));
        }
        if ranges.is_empty() {
            return Ok(());
        }

        let view = Overlay { points, removed };
        let minutes = self.roll_up_ranges(tag, &ranges, &view)?;
        let min_points = self.config.rollup_min_points;
        for (&m, r) in &minutes {
            if r.points() >= min_points {
                ops.push(put_rollup(tag, MINUTE, r)?);
            } else if m < fresh_from {
                // Below the threshold now: drop any rollup an older threshold kept.
                ops.push(delete_rollup(tag, MINUTE, m));
            }
        }

        let hour_frontier = bucket_start(new_sealed, hour);
        let hours_fresh_from =
            old_sealed.map_or(Timestamp::from_micros(i64::MIN), |s| bucket_start(s, hour));
        let hours: BTreeSet<Timestamp> = minutes
            .keys()
            .map(|&m| bucket_start(m, hour))
            .filter(|&h| bucket_end(h, hour) <= hour_frontier)
            .collect();
        for h in hours {
            let end = bucket_end(h, hour);
            let parts = self.hour_parts(tag, h, end, &ranges, &minutes, &view)?;
            match Rollup::combine(h, end, &parts).map_err(|source| StorageError::Rollup {
                tag,
                key: keys::series_key(tag, h).to_vec(),
                source,
            })? {
                Some(r) if r.points() >= min_points => ops.push(put_rollup(tag, HOUR, &r)?),
                _ if h < hours_fresh_from => ops.push(delete_rollup(tag, HOUR, h)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Minute rollups of every minute holding points in `ranges`, read from
    /// the disk merged with `overlay`.
    fn roll_up_ranges(
        &self,
        tag: TagId,
        ranges: &Ranges,
        overlay: &Overlay<'_>,
    ) -> Result<BTreeMap<Timestamp, Rollup>, StorageError> {
        let mut out = BTreeMap::new();
        for (&from, &to) in &ranges.0 {
            let mut stream = RollupStream::new(MINUTE.micros());
            self.for_each_point(tag, from, to, overlay, |p| {
                if let Some(r) = stream.push(p).map_err(|e| rollup_error(tag, p.ts, e))? {
                    out.insert(r.start(), r);
                }
                Ok(())
            })?;
            if let Some(r) = stream.finish() {
                out.insert(r.start(), r);
            }
        }
        Ok(out)
    }

    /// The pieces of hour `[h, end)` in time order: minutes rolled up by
    /// this plan (authoritative inside `ranges`), stored minute rollups
    /// elsewhere, and raw points for the stretches that have neither.
    fn hour_parts(
        &self,
        tag: TagId,
        h: Timestamp,
        end: Timestamp,
        ranges: &Ranges,
        fresh: &BTreeMap<Timestamp, Rollup>,
        overlay: &Overlay<'_>,
    ) -> Result<Vec<Rollup>, StorageError> {
        let minute = MINUTE.micros();
        let stored: BTreeMap<Timestamp, Rollup> = self
            .stored_rollups(tag, MINUTE, h, end)?
            .into_iter()
            .map(|r| (r.start(), r))
            .collect();
        let mut parts = Vec::new();
        let mut gap: Option<Timestamp> = None;
        let mut m = h;
        while m < end {
            let next = bucket_end(m, minute);
            let piece = if ranges.contains(m) {
                Some(fresh.get(&m))
            } else {
                stored.get(&m).map(Some)
            };
            match piece {
                // Neither computed nor stored: part of a stretch read raw.
                None => {
                    gap.get_or_insert(m);
                }
                Some(r) => {
                    if let Some(from) = gap.take() {
                        parts.extend(self.raw_rollup(tag, from, m, overlay)?);
                    }
                    parts.extend(r.cloned());
                }
            }
            m = next;
        }
        if let Some(from) = gap {
            parts.extend(self.raw_rollup(tag, from, end, overlay)?);
        }
        Ok(parts)
    }

    /// The rollup of `[from, to)` straight from the points.
    fn raw_rollup(
        &self,
        tag: TagId,
        from: Timestamp,
        to: Timestamp,
        overlay: &Overlay<'_>,
    ) -> Result<Option<Rollup>, StorageError> {
        let mut points = Vec::new();
        self.for_each_point(tag, from, to, overlay, |p| {
            points.push(p.clone());
            Ok(())
        })?;
        Rollup::compute(&points, from, to).map_err(|e| rollup_error(tag, from, e))
    }

    /// Stored rollups in `[start, end)` regardless of the frontier: the
    /// write path knows which buckets it may trust.
    fn stored_rollups(
        &self,
        tag: TagId,
        resolution: RollupResolution,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<Rollup>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::series_key(tag, end).to_vec());
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(cf_of(resolution))?, opts);
        it.seek(keys::series_key(tag, start));
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            out.push(decode_rollup(tag, k, v, resolution.micros())?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Calls `f` with every point of `tag` in `[from, to)` in time order, as
    /// they will be once `overlay` (a plan's points and removals) is
    /// written: blocks, then recent points, then the overlay's points, the
    /// later winning on equal timestamps, minus the overlay's removals.
    /// Unlike `range`, no limit: the callers bound the range.
    fn for_each_point(
        &self,
        tag: TagId,
        from: Timestamp,
        to: Timestamp,
        overlay: &Overlay<'_>,
        mut f: impl FnMut(&Point) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if from >= to {
            return Ok(());
        }
        let last = Timestamp::from_micros(to.micros().saturating_sub(1));
        // Recent points are at most a seal's worth plus late points: small.
        let mut newer = self.recent_points(tag, from, last)?;
        newer.extend(overlay.points.range(from..to).map(|(&t, p)| (t, p.clone())));
        // Removed points are recent ones (never in a block): dropping them
        // from `newer` removes them from the tag.
        for t in overlay.removed.range(from..to) {
            newer.remove(t);
        }
        let mut newer = newer.into_values().peekable();

        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        it.seek_for_prev(keys::series_key(tag, from));
        if !it
            .key()
            .is_some_and(|k| k.starts_with(&keys::tag_prefix(tag)))
        {
            it.seek(keys::series_key(tag, from));
        }
        let end_key = keys::series_key(tag, last);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&keys::tag_prefix(tag)) || k > end_key.as_slice() {
                break;
            }
            for p in decode_window_checked(tag, k, v, from, last)? {
                while let Some(n) = newer.next_if(|n| n.ts < p.ts) {
                    f(&n)?;
                }
                match newer.next_if(|n| n.ts == p.ts) {
                    Some(n) => f(&n)?,
                    None => f(&p)?,
                }
            }
            it.next();
        }
        it.status()?;
        for n in newer {
            f(&n)?;
        }
        Ok(())
    }
}

/// A plan's effect on a tag's points, before it is written.
struct Overlay<'a> {
    /// Points written (they replace any at the same time).
    points: &'a BTreeMap<Timestamp, Point>,
    /// Recent points removed (compression left them out of a block).
    removed: &'a BTreeSet<Timestamp>,
}

/// Disjoint, sorted `[start, end)` ranges (start → end).
#[derive(Default)]
struct Ranges(BTreeMap<Timestamp, Timestamp>);

impl Ranges {
    /// Adds `[a, b)`, merging with the ranges it touches.
    fn add(&mut self, mut a: Timestamp, mut b: Timestamp) {
        if a >= b {
            return;
        }
        if let Some((&s, &e)) = self.0.range(..=a).next_back() {
            if e >= a {
                a = s;
                b = b.max(e);
            }
        }
        let inside: Vec<(Timestamp, Timestamp)> =
            self.0.range(a..=b).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            b = b.max(e);
            self.0.remove(&s);
        }
        self.0.insert(a, b);
    }

    fn contains(&self, t: Timestamp) -> bool {
        self.0.range(..=t).next_back().is_some_and(|(_, &e)| t < e)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_rollup(tag: TagId, key: &[u8], value: &[u8], width: u64) -> Result<Rollup, StorageError> {
    let corrupt = |source| StorageError::Rollup {
        tag,
        key: key.to_vec(),
        source,
    };
    let (_, start) = keys::parse_series_key(key).ok_or_else(|| StorageError::CorruptRecord {
        what: "rollup key",
        key: key.to_vec(),
    })?;
    Rollup::from_bytes(value, start, bucket_end(start, width)).map_err(corrupt)
}

fn put_rollup(tag: TagId, resolution: RollupResolution, r: &Rollup) -> Result<Op, StorageError> {
    let key = keys::series_key(tag, r.start()).to_vec();
    let value = r.to_bytes().map_err(|source| StorageError::Rollup {
        tag,
        key: key.clone(),
        source,
    })?;
    Ok(Op::Put {
        cf: cf_of(resolution),
        key,
        value: value.to_vec(),
    })
}

fn delete_rollup(tag: TagId, resolution: RollupResolution, start: Timestamp) -> Op {
    Op::Delete {
        cf: cf_of(resolution),
        key: keys::series_key(tag, start).to_vec(),
    }
}

fn rollup_error(tag: TagId, at: Timestamp, source: crate::query::RollupError) -> StorageError {
    StorageError::Rollup {
        tag,
        key: keys::series_key(tag, at).to_vec(),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_contain() {
        let t = Timestamp::from_micros;
        let mut r = Ranges::default();
        r.add(t(10), t(20));
        r.add(t(30), t(40));
        r.add(t(20), t(25));
        r.add(t(5), t(6));
        r.add(t(38), t(50));
        let got: Vec<(i64, i64)> = r.0.iter().map(|(a, b)| (a.micros(), b.micros())).collect();
        assert_eq!(got, [(5, 6), (10, 25), (30, 50)]);
        assert!(r.contains(t(10)) && r.contains(t(24)) && r.contains(t(49)));
        assert!(!r.contains(t(25)) && !r.contains(t(50)) && !r.contains(t(0)));
        r.add(t(0), t(100));
        assert_eq!(r.0.len(), 1);
    }
}
