//! Reads: time ranges, the point before or after a time, and per-tag
//! statistics. Blocks of a tag never overlap in time, so a read walks the
//! blocks in key order and merges the recent points in (decoded from their
//! chunks, `chunk`); a recent point
//! wins over a sealed point with the same timestamp (it is the newer write).

use std::collections::HashMap;

use rocksdb::DBRawIterator;

use crate::encoding::{
    block_header, decode_block, decode_block_columns, decode_block_window, Point, Timestamp,
};
use crate::storage::chunk;
use crate::storage::keys::{self, CF_BLOCKS, CF_RECENT};
use crate::storage::write::RawBlock;
use crate::storage::{glob_match, Storage, StorageError, TagId};

/// Size and extent of one tag's data.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TagStats {
    /// The tag.
    pub tag: TagId,
    /// Its name.
    pub name: String,
    /// Distinct points (a recent point replacing a sealed point counts once).
    pub points: u64,
    /// Sealed blocks.
    pub blocks: u64,
    /// Bytes of sealed blocks.
    pub block_bytes: u64,
    /// Points in sealed blocks.
    pub block_points: u64,
    /// Points in the recent area.
    pub recent_points: u64,
    /// Bytes of recent chunks (values only).
    pub recent_bytes: u64,
    /// `block_bytes / block_points` (0 when nothing is sealed).
    pub bytes_per_sealed_point: f64,
    /// First and last timestamp.
    pub time_range: Option<(Timestamp, Timestamp)>,
}

impl Storage {
    /// Points of `tag` with `start <= ts <= end`, in time order, at most
    /// `limit` (capped at `config.max_range_points`), the earliest first.
    pub fn range(
        &self,
        tag: TagId,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, StorageError> {
        self.check_tag(tag)?;
        let limit = limit.min(self.config.max_range_points);
        let mut out = Vec::new();
        if start > end || limit == 0 {
            return Ok(out);
        }
        // Recent points are merged block by block, each read bounded by the
        // block's last point (and by one chunk span before `from`): sealing
        // leaves a tombstone in `hist_recent` for every chunk it moves, and
        // an unbounded seek would walk all of them up to the live tail on
        // every page of a long scan.
        // `from`: recent points before it are merged already.
        let mut from = start;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        // The block that may hold `start` begins at or before it.
        it.seek_for_prev(keys::series_key(tag, start));
        if !at_tag(&it, tag) {
            it.seek(keys::series_key(tag, start));
        }
        let end_key = keys::series_key(tag, end);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&keys::tag_prefix(tag)) || k > end_key.as_slice() {
                break;
            }
            let points = decode_window_checked(tag, k, v, start, end)?;
            if let Some(last) = points.last().map(|p| p.ts) {
                let mut recent = RecentCursor::new(self, tag, from, last)?;
                for p in points {
                    while let Some(r) = recent.next_if(|r| r.ts < p.ts)? {
                        out.push(r);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                    match recent.next_if(|r| r.ts == p.ts)? {
                        Some(r) => out.push(r),
                        None => out.push(p),
                    }
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                match last.micros().checked_add(1) {
                    Some(next) => from = Timestamp::from_micros(next),
                    None => return Ok(out),
                }
            }
            it.next();
        }
        it.status()?;
        let mut recent = RecentCursor::new(self, tag, from, end)?;
        while out.len() < limit {
            match recent.next_if(|_| true)? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    /// The last point with `ts < t` (`ts <= t` if `inclusive`).
    pub fn before(
        &self,
        tag: TagId,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, StorageError> {
        self.check_tag(tag)?;
        let bound = if inclusive {
            t
        } else {
            match t.micros().checked_sub(1) {
                Some(b) => Timestamp::from_micros(b),
                None => return Ok(None),
            }
        };
        let mut bit = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        bit.seek_for_prev(keys::series_key(tag, bound));
        let sealed = match (bit.key(), bit.value()) {
            (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => {
                decode_window_checked(tag, k, v, Timestamp::from_micros(i64::MIN), bound)?
                    .into_iter()
                    .last()
            }
            _ => {
                bit.status()?;
                None
            }
        };
        // Only a recent point at or after the sealed candidate can beat it:
        // the lower bound (the earliest start of a chunk that can hold such
        // a point) keeps the seek off the tombstones of older chunks.
        let floor = sealed
            .as_ref()
            .map_or(Timestamp::from_micros(i64::MIN), |s| s.ts);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(keys::series_key(tag, chunk::earliest_start(floor)).to_vec());
        let mut rit = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        rit.seek_for_prev(keys::series_key(tag, bound));
        // The chunk with the greatest start <= bound holds the last recent
        // point <= bound (chunks never overlap).
        let recent = chunk_at(&rit, tag)?.and_then(|pts| pts.into_iter().rfind(|p| p.ts <= bound));
        Ok(match (recent, sealed) {
            (Some(r), Some(s)) => Some(if s.ts > r.ts { s } else { r }),
            (r, s) => r.or(s),
        })
    }

    /// The first point with `ts > t` (`ts >= t` if `inclusive`).
    pub fn after(
        &self,
        tag: TagId,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, StorageError> {
        self.check_tag(tag)?;
        let bound = if inclusive {
            t
        } else {
            match t.micros().checked_add(1) {
                Some(b) => Timestamp::from_micros(b),
                None => return Ok(None),
            }
        };
        let mut bit = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        bit.seek_for_prev(keys::series_key(tag, bound));
        if !at_tag(&bit, tag) {
            bit.seek(keys::series_key(tag, bound));
        }
        let mut sealed = None;
        // At most two blocks: the one holding `bound`, else the next.
        for _ in 0..2 {
            let (Some(k), Some(v)) = (bit.key(), bit.value()) else {
                break;
            };
            if !k.starts_with(&keys::tag_prefix(tag)) {
                break;
            }
            sealed = decode_checked(tag, k, v)?
                .into_iter()
                .find(|p| p.ts >= bound);
            if sealed.is_some() {
                break;
            }
            bit.next();
        }
        bit.status()?;
        // Only a recent point at or before the sealed candidate can beat it.
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(keys::series_key(tag, chunk::earliest_start(bound)).to_vec());
        match sealed.as_ref().and_then(|s| s.ts.micros().checked_add(1)) {
            Some(ceiling) => opts.set_iterate_upper_bound(
                keys::series_key(tag, Timestamp::from_micros(ceiling)).to_vec(),
            ),
            None => opts.set_iterate_upper_bound(keys::series_end(tag)),
        }
        let mut rit = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        // The chunk that starts at or before `bound` may reach past it;
        // otherwise the first chunk after `bound` starts with the answer.
        rit.seek_for_prev(keys::series_key(tag, bound));
        let mut recent =
            chunk_at(&rit, tag)?.and_then(|pts| pts.into_iter().find(|p| p.ts >= bound));
        if recent.is_none() {
            rit.seek(keys::series_key(tag, bound));
            recent = chunk_at(&rit, tag)?.and_then(|pts| pts.into_iter().find(|p| p.ts >= bound));
        }
        Ok(match (recent, sealed) {
            (Some(r), Some(s)) => Some(if s.ts < r.ts { s } else { r }),
            (r, s) => r.or(s),
        })
    }

    /// Statistics of every tag whose name matches the glob `pattern`. Reads
    /// block headers only (no values), plus the recent chunks; a late
    /// point is checked against its block so replaced points count once.
    pub fn stats(&self, pattern: &str) -> Result<Vec<TagStats>, StorageError> {
        let tags: Vec<(TagId, String, Option<Timestamp>)> = self
            .table()
            .by_id
            .iter()
            .filter(|(_, e)| glob_match(pattern, &e.meta.name))
            .map(|(&id, e)| (id, e.meta.name.clone(), e.sealed_last))
            .collect();
        let mut out = Vec::with_capacity(tags.len());
        for (tag, name, sealed_last) in tags {
            out.push(self.tag_stats(tag, name, sealed_last)?);
        }
        Ok(out)
    }

    fn tag_stats(
        &self,
        tag: TagId,
        name: String,
        sealed_last: Option<Timestamp>,
    ) -> Result<TagStats, StorageError> {
        let mut s = TagStats {
            tag,
            name,
            points: 0,
            blocks: 0,
            block_bytes: 0,
            block_points: 0,
            recent_points: 0,
            recent_bytes: 0,
            bytes_per_sealed_point: 0.0,
            time_range: None,
        };
        let mut widen = |a: Timestamp, b: Timestamp| {
            s.time_range = Some(match s.time_range {
                None => (a, b),
                Some((lo, hi)) => (lo.min(a), hi.max(b)),
            });
        };
        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        it.seek(keys::series_start(tag));
        let (mut blocks, mut block_bytes, mut block_points) = (0u64, 0u64, 0u64);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&keys::tag_prefix(tag)) {
                break;
            }
            let h = block_header(v).map_err(|source| StorageError::CorruptBlock {
                tag,
                key: k.to_vec(),
                source,
            })?;
            blocks += 1;
            block_bytes += v.len() as u64;
            block_points += u64::from(h.count);
            widen(h.first_ts, h.last_ts);
            it.next();
        }
        it.status()?;

        let mut rit = self.db.raw_iterator_cf(self.cf(CF_RECENT)?);
        rit.seek(keys::series_start(tag));
        let (mut recent_points, mut recent_bytes, mut shadowed) = (0u64, 0u64, 0u64);
        let mut cache: HashMap<Vec<u8>, Vec<Timestamp>> = HashMap::new();
        while let (Some(k), Some(v)) = (rit.key(), rit.value()) {
            if !k.starts_with(&keys::tag_prefix(tag)) {
                break;
            }
            let points = chunk::decode_chunk(k, v)?;
            recent_points += points.len() as u64;
            recent_bytes += v.len() as u64;
            if let (Some(a), Some(b)) = (points.first(), points.last()) {
                widen(a.ts, b.ts);
            }
            for p in &points {
                if sealed_last.is_some_and(|last| p.ts <= last)
                    && self.in_block(tag, p.ts, &mut cache)?
                {
                    shadowed += 1;
                }
            }
            rit.next();
        }
        rit.status()?;
        s.blocks = blocks;
        s.block_bytes = block_bytes;
        s.block_points = block_points;
        s.recent_points = recent_points;
        s.recent_bytes = recent_bytes;
        s.points = (block_points + recent_points).saturating_sub(shadowed);
        if block_points > 0 {
            s.bytes_per_sealed_point = block_bytes as f64 / block_points as f64;
        }
        Ok(s)
    }

    fn in_block(
        &self,
        tag: TagId,
        ts: Timestamp,
        cache: &mut HashMap<Vec<u8>, Vec<Timestamp>>,
    ) -> Result<bool, StorageError> {
        let Some(RawBlock { key, bytes }) = self.block_at_or_before(tag, ts)? else {
            return Ok(false);
        };
        if !cache.contains_key(&key) {
            let cols =
                decode_block_columns(&bytes).map_err(|source| StorageError::CorruptBlock {
                    tag,
                    key: key.clone(),
                    source,
                })?;
            cache.insert(key.clone(), cols.timestamps);
        }
        Ok(cache
            .get(&key)
            .is_some_and(|t| t.binary_search(&ts).is_ok()))
    }

    fn check_tag(&self, tag: TagId) -> Result<(), StorageError> {
        if self.table().by_id.contains_key(&tag) {
            Ok(())
        } else {
            Err(StorageError::UnknownTagId(tag))
        }
    }
}

/// One tag's recent points in `[start, end]`, one chunk decoded at a time.
pub(crate) struct RecentCursor<'a> {
    it: DBRawIterator<'a>,
    start: Timestamp,
    end: Timestamp,
    /// The rest of the chunk last decoded.
    chunk: std::vec::IntoIter<Point>,
    head: Option<Point>,
}

impl<'a> RecentCursor<'a> {
    pub(crate) fn new(
        storage: &'a Storage,
        tag: TagId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Self, StorageError> {
        let mut opts = rocksdb::ReadOptions::default();
        // Bounded both ways: the chunk that may reach `start` begins at most
        // one chunk span before it, and no chunk after `end` matters.
        opts.set_iterate_lower_bound(keys::series_key(tag, chunk::earliest_start(start)).to_vec());
        match end.micros().checked_add(1) {
            Some(e) => opts
                .set_iterate_upper_bound(keys::series_key(tag, Timestamp::from_micros(e)).to_vec()),
            None => opts.set_iterate_upper_bound(keys::series_end(tag)),
        }
        let mut it = storage.db.raw_iterator_cf_opt(storage.cf(CF_RECENT)?, opts);
        if start <= end {
            it.seek_for_prev(keys::series_key(tag, start));
            if !it.valid() {
                it.status()?;
                it.seek(keys::series_key(tag, start));
            }
        }
        let mut cursor = RecentCursor {
            it,
            start,
            end,
            chunk: Vec::new().into_iter(),
            head: None,
        };
        if start <= end {
            cursor.load()?;
        }
        Ok(cursor)
    }

    /// Moves the next point in `[start, end]` into `head`.
    fn load(&mut self) -> Result<(), StorageError> {
        loop {
            if let Some(p) = self.chunk.next() {
                if p.ts < self.start {
                    continue;
                }
                self.head = (p.ts <= self.end).then_some(p);
                if self.head.is_none() {
                    // Past the end: nothing later can be in range.
                    self.chunk = Vec::new().into_iter();
                }
                return Ok(());
            }
            match (self.it.key(), self.it.value()) {
                (Some(k), Some(v)) => {
                    self.chunk = chunk::decode_chunk(k, v)?.into_iter();
                    self.it.next();
                }
                _ => {
                    self.it.status()?;
                    self.head = None;
                    return Ok(());
                }
            }
        }
    }

    /// The next point if `pred` accepts it.
    pub(crate) fn next_if(
        &mut self,
        pred: impl Fn(&Point) -> bool,
    ) -> Result<Option<Point>, StorageError> {
        if !self.head.as_ref().is_some_and(pred) {
            return Ok(None);
        }
        let p = self.head.take();
        self.load()?;
        Ok(p)
    }
}

fn at_tag(it: &DBRawIterator<'_>, tag: TagId) -> bool {
    it.key()
        .is_some_and(|k| k.starts_with(&keys::tag_prefix(tag)))
}

/// The points of the chunk under the iterator, if it is one of `tag`'s.
fn chunk_at(it: &DBRawIterator<'_>, tag: TagId) -> Result<Option<Vec<Point>>, StorageError> {
    match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => {
            Ok(Some(chunk::decode_chunk(k, v)?))
        }
        _ => {
            it.status()?;
            Ok(None)
        }
    }
}

/// The points of a block within `[from, to]`, decoding only as much as
/// they need (`decode_block_window`), checked like `decode_checked`: the
/// block starts at its key's time and the points returned strictly increase.
pub(crate) fn decode_window_checked(
    tag: TagId,
    key: &[u8],
    bytes: &[u8],
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Point>, StorageError> {
    let corrupt = |source| StorageError::CorruptBlock {
        tag,
        key: key.to_vec(),
        source,
    };
    let header = block_header(bytes).map_err(corrupt)?;
    let points = decode_block_window(bytes, from, to).map_err(corrupt)?;
    let key_ts = keys::parse_series_key(key).map(|(_, ts)| ts);
    let consistent = Some(header.first_ts) == key_ts
        && points.windows(2).all(|w| match w {
            [a, b] => a.ts < b.ts,
            _ => true,
        });
    if !consistent {
        return Err(StorageError::CorruptRecord {
            what: "block (key or order does not match its points)",
            key: key.to_vec(),
        });
    }
    Ok(points)
}

/// Decodes a block and checks it against its key: the first point must be
/// at the key's time and the points strictly increasing.
fn decode_checked(tag: TagId, key: &[u8], bytes: &[u8]) -> Result<Vec<Point>, StorageError> {
    let points = decode_block(bytes).map_err(|source| StorageError::CorruptBlock {
        tag,
        key: key.to_vec(),
        source,
    })?;
    let key_ts = keys::parse_series_key(key).map(|(_, ts)| ts);
    let consistent = points.first().map(|p| p.ts) == key_ts
        && points.windows(2).all(|w| match w {
            [a, b] => a.ts < b.ts,
            _ => true,
        });
    if !consistent {
        return Err(StorageError::CorruptRecord {
            what: "block (key or order does not match its points)",
            key: key.to_vec(),
        });
    }
    Ok(points)
}
