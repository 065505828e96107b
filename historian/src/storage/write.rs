//! The write path. A `WriteSet` turns points into RocksDB operations
//! without writing them, so the broker's group-commit writer can put them in
//! the same `WriteBatch` (and WAL sync) as the acknowledgement they belong to:
//!
//! ```text
//! let mut ws = storage.begin()?;           // takes the historian write lock
//! ws.add(&job_a_points)?;                  // per job: all or nothing
//! ws.add(&job_b_points)?;
//! ws.append_to(&mut batch)?;               // seals full tags, emits puts/deletes
//! db.write_opt(batch, &opts)?;             // the broker's one write + sync
//! ws.committed();                          // memory follows the disk
//! ```
//!
//! Why a lock held across the commit: sealing and late-point checks read
//! the database, so a plan must see every earlier plan on disk. Holding the
//! lock from `begin` until `committed`/`failed`/drop makes that a property
//! of the types instead of a convention. The broker's writer thread is the
//! natural holder (it is one thread, and it writes right after planning).
//!
//! Operations are also available as a list of `Op` (CF name, key, optional
//! value) for inspection and for writers that build batches themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use rocksdb::{ReadOptions, WriteBatch, WriteOptions};

use crate::encoding::{
    decode_block, decode_block_columns, decode_recent_point, encode_block, encode_recent_point,
    Point, Timestamp, ValueType,
};
use crate::storage::keys::{self, CF_BLOCKS, CF_RECENT, CF_TAGS};
use crate::storage::meta::{self, Tag, TagId, TagMeta};
use crate::storage::{Storage, StorageError, TagEntry, WriterState};

/// Which tag a point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagRef<'a> {
    /// By id.
    Id(TagId),
    /// By name; created on first use if `auto_create_tags` is set.
    Name(&'a str),
}

/// One RocksDB operation of a `WriteSet`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Put `value` under `key` in column family `cf`.
    Put {
        /// Column family name (one of `column_families()`).
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete `key` in `cf`.
    Delete {
        /// Column family name.
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
    },
}

/// What a write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteSummary {
    /// Points accepted.
    pub points: u64,
    /// Points that replaced one with the same tag and timestamp.
    pub replaced: u64,
    /// Tags created.
    pub tags_created: u64,
    /// Blocks written (new or rewritten).
    pub blocks_written: u64,
}

/// Planned historian writes, holding the write lock until `committed`,
/// `failed` or drop (see the module docs). Dropping it without `committed`
/// discards the plan; that is only correct if nothing of it was written.
pub struct WriteSet<'s> {
    storage: &'s Storage,
    lock: MutexGuard<'s, WriterState>,
    next_id: u32,
    new_tags: Vec<Tag>,
    new_names: HashMap<String, TagId>,
    staged: BTreeMap<TagId, Staged>,
    summary: WriteSummary,
    ops: Option<Vec<Op>>,
    /// An `add` failed half way: the plan is unusable.
    broken: bool,
}

/// One tag's part of a plan: its points and its state as it will be once
/// the plan is committed.
struct Staged {
    value_type: ValueType,
    points: BTreeMap<Timestamp, Point>,
    recent_count: u64,
    latest: Option<Point>,
    sealed_last: Option<Timestamp>,
    /// Timestamps of blocks read to detect replacements, by block key.
    block_ts: HashMap<Vec<u8>, Vec<Timestamp>>,
}

impl Storage {
    /// Starts a plan. Blocks while another `WriteSet` is alive.
    pub fn begin(&self) -> Result<WriteSet<'_>, StorageError> {
        let lock = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(WriteSet {
            storage: self,
            next_id: lock.next_id,
            lock,
            new_tags: Vec::new(),
            new_names: HashMap::new(),
            staged: BTreeMap::new(),
            summary: WriteSummary::default(),
            ops: None,
            broken: false,
        })
    }

    /// `begin` plus one `add`.
    pub fn plan(&self, points: &[(TagRef<'_>, Point)]) -> Result<WriteSet<'_>, StorageError> {
        let mut ws = self.begin()?;
        ws.add(points)?;
        Ok(ws)
    }

    /// Plans and commits `points` in one write, synced if `config.sync`.
    pub fn write(&self, points: &[(TagRef<'_>, Point)]) -> Result<WriteSummary, StorageError> {
        let ws = self.plan(points)?;
        ws.commit_self()
    }

    /// The tag named `meta.name`, created (durably, with `config.sync`) if
    /// missing. An existing tag keeps its metadata; a different value type
    /// is `TagTypeConflict`.
    pub fn ensure_tag(&self, meta: TagMeta) -> Result<TagId, StorageError> {
        let mut ws = self.begin()?;
        let id = ws.ensure_tag(meta)?;
        ws.commit_self()?;
        Ok(id)
    }
}

impl<'s> WriteSet<'s> {
    /// Creates the tag in this plan unless it exists; see `Storage::ensure_tag`.
    pub fn ensure_tag(&mut self, meta: TagMeta) -> Result<TagId, StorageError> {
        self.check_can_add()?;
        if let Some((id, vt)) = self.resolve_name(&meta.name) {
            if vt != meta.value_type {
                return Err(StorageError::TagTypeConflict {
                    name: meta.name,
                    existing: vt,
                    requested: meta.value_type,
                });
            }
            return Ok(id);
        }
        meta.validate()?;
        self.create(meta)
    }

    /// Adds points to the plan. Either all are accepted or none (the error
    /// says why: unknown tag, type mismatch, invalid name).
    pub fn add(&mut self, points: &[(TagRef<'_>, Point)]) -> Result<(), StorageError> {
        self.check_can_add()?;
        // Pass 1, no mutation: resolve every tag and check every type.
        let mut created: HashMap<&str, ValueType> = HashMap::new();
        for (tag, p) in points {
            let found = p.value.value_type();
            let (id, expected) = match *tag {
                TagRef::Id(id) => (Some(id), self.resolve_id(id)?),
                TagRef::Name(name) => match self.resolve_name(name) {
                    Some((id, vt)) => (Some(id), vt),
                    None if !self.storage.config.auto_create_tags => {
                        return Err(StorageError::UnknownTagName(name.to_owned()))
                    }
                    None => {
                        TagMeta::new(name, found).validate()?;
                        (None, *created.entry(name).or_insert(found))
                    }
                },
            };
            if found != expected {
                return Err(StorageError::TypeMismatch {
                    tag: id.unwrap_or(TagId(self.next_id)),
                    expected,
                    found,
                });
            }
        }
        // Pass 2: stage. A database error here leaves the plan half-built.
        self.broken = true;
        for (tag, p) in points {
            let id = match *tag {
                TagRef::Id(id) => id,
                TagRef::Name(name) => match self.resolve_name(name) {
                    Some((id, _)) => id,
                    None => {
                        let mut meta = TagMeta::new(name, p.value.value_type());
                        meta.retention = self.storage.config.default_retention;
                        self.create(meta)?
                    }
                },
            };
            self.stage_point(id, p.clone())?;
        }
        self.broken = false;
        Ok(())
    }

    /// The operations of this plan, sealing tags that reached the threshold.
    /// Built once; later calls return the same list.
    pub fn ops(&mut self) -> Result<&[Op], StorageError> {
        self.check_open()?;
        if self.ops.is_none() {
            self.broken = true;
            let ops = self.build_ops()?;
            self.ops = Some(ops);
            self.broken = false;
        }
        Ok(self.ops.as_deref().unwrap_or_default())
    }

    /// Appends the operations to a batch of the same database.
    pub fn append_to(&mut self, batch: &mut WriteBatch) -> Result<(), StorageError> {
        let storage = self.storage;
        for op in self.ops()? {
            match op {
                Op::Put { cf, key, value } => batch.put_cf(storage.cf(cf)?, key, value),
                Op::Delete { cf, key } => batch.delete_cf(storage.cf(cf)?, key),
            }
        }
        Ok(())
    }

    /// The batch was written: in-memory state now follows it. If `ops` or
    /// `append_to` was never called nothing was written, and nothing changes.
    pub fn committed(mut self) -> WriteSummary {
        if self.ops.is_none() {
            return WriteSummary::default();
        }
        let mut table = self
            .storage
            .tags
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for tag in self.new_tags.drain(..) {
            table.by_name.insert(tag.meta.name.clone(), tag.id);
            table.by_id.insert(
                tag.id,
                TagEntry {
                    meta: tag.meta,
                    recent_count: 0,
                    latest: None,
                    sealed_last: None,
                },
            );
        }
        for (id, st) in std::mem::take(&mut self.staged) {
            if let Some(e) = table.by_id.get_mut(&id) {
                e.recent_count = st.recent_count;
                e.latest = st.latest;
                e.sealed_last = st.sealed_last;
            }
        }
        drop(table);
        self.storage
            .replacements
            .fetch_add(self.summary.replaced, Ordering::Relaxed);
        self.lock.next_id = self.next_id;
        std::mem::take(&mut self.summary)
    }

    /// The batch write failed or its outcome is unknown: the storage refuses
    /// further writes until reopened (memory may no longer match the disk).
    pub fn failed(self) {
        self.storage.poisoned.store(true, Ordering::Release);
    }

    /// What the plan does so far.
    pub fn summary(&self) -> &WriteSummary {
        &self.summary
    }

    /// Writes the plan in its own batch (`Storage::write`, `ensure_tag`).
    fn commit_self(mut self) -> Result<WriteSummary, StorageError> {
        let mut batch = WriteBatch::default();
        self.append_to(&mut batch)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(self.storage.config.sync);
        match self.storage.db.write_opt(batch, &opts) {
            Ok(()) => Ok(self.committed()),
            Err(e) => {
                self.failed();
                Err(e.into())
            }
        }
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.broken || self.storage.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    fn check_can_add(&self) -> Result<(), StorageError> {
        self.check_open()?;
        if self.ops.is_some() {
            // Points added after the batch was built would be silently lost.
            return Err(StorageError::AlreadyBuilt);
        }
        Ok(())
    }

    fn resolve_name(&self, name: &str) -> Option<(TagId, ValueType)> {
        if let Some(&id) = self.new_names.get(name) {
            return self.staged.get(&id).map(|s| (id, s.value_type));
        }
        let table = self.storage.table();
        let id = *table.by_name.get(name)?;
        table.by_id.get(&id).map(|e| (id, e.meta.value_type))
    }

    fn resolve_id(&self, id: TagId) -> Result<ValueType, StorageError> {
        if let Some(s) = self.staged.get(&id) {
            return Ok(s.value_type);
        }
        self.storage
            .table()
            .by_id
            .get(&id)
            .map(|e| e.meta.value_type)
            .ok_or(StorageError::UnknownTagId(id))
    }

    fn create(&mut self, meta: TagMeta) -> Result<TagId, StorageError> {
        let id = TagId(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(StorageError::TagIdsExhausted)?;
        self.new_names.insert(meta.name.clone(), id);
        self.staged.insert(
            id,
            Staged {
                value_type: meta.value_type,
                points: BTreeMap::new(),
                recent_count: 0,
                latest: None,
                sealed_last: None,
                block_ts: HashMap::new(),
            },
        );
        self.new_tags.push(Tag { id, meta });
        self.summary.tags_created += 1;
        Ok(id)
    }

    fn stage_point(&mut self, id: TagId, p: Point) -> Result<(), StorageError> {
        if !self.staged.contains_key(&id) {
            let table = self.storage.table();
            let e = table.by_id.get(&id).ok_or(StorageError::UnknownTagId(id))?;
            let st = Staged {
                value_type: e.meta.value_type,
                points: BTreeMap::new(),
                recent_count: e.recent_count,
                latest: e.latest.clone(),
                sealed_last: e.sealed_last,
                block_ts: HashMap::new(),
            };
            drop(table);
            self.staged.insert(id, st);
        }
        let storage = self.storage;
        let st = self
            .staged
            .get_mut(&id)
            .ok_or(StorageError::UnknownTagId(id))?;
        let replaced = if st.points.contains_key(&p.ts) {
            true
        } else if st.latest.as_ref().is_none_or(|l| p.ts > l.ts) {
            // In order: nothing can exist at this time, no read needed.
            st.recent_count += 1;
            false
        } else if storage.recent_exists(id, p.ts)? {
            true
        } else {
            st.recent_count += 1;
            storage.sealed_contains(id, st, p.ts)?
        };
        if st.latest.as_ref().is_none_or(|l| p.ts >= l.ts) {
            st.latest = Some(p.clone());
        }
        st.points.insert(p.ts, p);
        self.summary.points += 1;
        if replaced {
            self.summary.replaced += 1;
        }
        Ok(())
    }

    fn build_ops(&mut self) -> Result<Vec<Op>, StorageError> {
        let mut ops = Vec::new();
        for tag in &self.new_tags {
            ops.push(Op::Put {
                cf: CF_TAGS,
                key: keys::name_key(&tag.meta.name),
                value: tag.id.0.to_be_bytes().to_vec(),
            });
            ops.push(Op::Put {
                cf: CF_TAGS,
                key: keys::id_key(keys::TAGS_META, tag.id).to_vec(),
                value: meta::encode_meta(tag.id, &tag.meta)?,
            });
        }
        let threshold = self.storage.config.seal_threshold;
        for (&id, st) in self.staged.iter_mut() {
            let sealed_before = st.sealed_last;
            if usize::try_from(st.recent_count).map_or(true, |n| n >= threshold) {
                self.summary.blocks_written += self.storage.seal(id, st, &mut ops)?;
            } else {
                for p in st.points.values() {
                    ops.push(recent_put(id, p)?);
                }
            }
            ops.push(Op::Put {
                cf: CF_TAGS,
                key: keys::id_key(keys::TAGS_STATE, id).to_vec(),
                value: meta::encode_state(st.recent_count).to_vec(),
            });
            self.storage.rollup_ops(
                id,
                st.value_type,
                &st.points,
                sealed_before,
                st.sealed_last,
                &mut ops,
            )?;
        }
        Ok(ops)
    }
}

impl Storage {
    /// Whether a recent record exists at (tag, ts).
    fn recent_exists(&self, tag: TagId, ts: Timestamp) -> Result<bool, StorageError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_RECENT)?, keys::series_key(tag, ts))?
            .is_some())
    }

    /// Whether a sealed block of `tag` holds a point at `ts`. Decodes at
    /// most one block per late point, cached in the plan.
    fn sealed_contains(
        &self,
        tag: TagId,
        st: &mut Staged,
        ts: Timestamp,
    ) -> Result<bool, StorageError> {
        if st.sealed_last.is_none_or(|last| ts > last) {
            return Ok(false);
        }
        let Some(RawBlock { key, bytes }) = self.block_at_or_before(tag, ts)? else {
            return Ok(false);
        };
        if !st.block_ts.contains_key(&key) {
            let cols =
                decode_block_columns(&bytes).map_err(|source| StorageError::CorruptBlock {
                    tag,
                    key: key.clone(),
                    source,
                })?;
            st.block_ts.insert(key.clone(), cols.timestamps);
        }
        Ok(st
            .block_ts
            .get(&key)
            .is_some_and(|t| t.binary_search(&ts).is_ok()))
    }

    /// The block of `tag` with the greatest start ≤ `ts`.
    pub(crate) fn block_at_or_before(
        &self,
        tag: TagId,
        ts: Timestamp,
    ) -> Result<Option<RawBlock>, StorageError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        it.seek_for_prev(keys::series_key(tag, ts));
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => Ok(Some(RawBlock {
                key: k.to_vec(),
                bytes: v.to_vec(),
            })),
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }

    /// The first block of `tag`.
    fn first_block(&self, tag: TagId) -> Result<Option<RawBlock>, StorageError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS)?);
        it.seek(keys::series_start(tag));
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => Ok(Some(RawBlock {
                key: k.to_vec(),
                bytes: v.to_vec(),
            })),
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }

    /// Every recent record of `tag`, by time.
    pub(crate) fn recent_points(
        &self,
        tag: TagId,
        start: Timestamp,
        end_inclusive: Timestamp,
    ) -> Result<BTreeMap<Timestamp, Point>, StorageError> {
        let mut opts = ReadOptions::default();
        match end_inclusive.micros().checked_add(1) {
            Some(e) => opts
                .set_iterate_upper_bound(keys::series_key(tag, Timestamp::from_micros(e)).to_vec()),
            None => opts.set_iterate_upper_bound(keys::series_end(tag)),
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        it.seek(keys::series_key(tag, start));
        let mut out = BTreeMap::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (p, _) = decode_recent_point(v).map_err(|source| StorageError::CorruptRecent {
                key: k.to_vec(),
                source,
            })?;
            if keys::parse_series_key(k).map(|(_, ts)| ts) != Some(p.ts) {
                return Err(StorageError::CorruptRecord {
                    what: "recent record (key and timestamp differ)",
                    key: k.to_vec(),
                });
            }
            out.insert(p.ts, p);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Seals `tag`: late recent points (at or before the sealed end) are
    /// merged into the blocks they fall in; then the oldest of the others
    /// become blocks of `seal_threshold` points while that many remain.
    /// Returns the number of blocks written.
    fn seal(&self, tag: TagId, st: &mut Staged, ops: &mut Vec<Op>) -> Result<u64, StorageError> {
        let threshold = self.config.seal_threshold;
        let on_disk = self.recent_points(
            tag,
            Timestamp::from_micros(i64::MIN),
            Timestamp::from_micros(i64::MAX),
        )?;
        let disk_keys: BTreeSet<Timestamp> = on_disk.keys().copied().collect();
        let mut all = on_disk;
        // The plan's points replace what is on disk.
        all.extend(st.points.iter().map(|(&ts, p)| (ts, p.clone())));

        let mut sealed: BTreeSet<Timestamp> = BTreeSet::new();
        let mut blocks = 0u64;

        // Late points, grouped by the block they merge into.
        let fresh = match st.sealed_last {
            Some(last) => match last.micros().checked_add(1) {
                Some(next) => all.split_off(&Timestamp::from_micros(next)),
                None => BTreeMap::new(),
            },
            None => std::mem::take(&mut all),
        };
        let late = all;
        let mut groups: BTreeMap<Vec<u8>, (Vec<u8>, Vec<Point>)> = BTreeMap::new();
        for (ts, p) in late {
            let found = match self.block_at_or_before(tag, ts)? {
                Some(b) => Some(b),
                None => self.first_block(tag)?,
            };
            let Some(RawBlock { key, bytes }) = found else {
                // No block at all (cannot happen with sealed_last set): keep it recent.
                continue;
            };
            sealed.insert(ts);
            groups.entry(key).or_insert((bytes, Vec::new())).1.push(p);
        }
        for (key, (bytes, late_points)) in groups {
            let old = decode_block(&bytes).map_err(|source| StorageError::CorruptBlock {
                tag,
                key: key.clone(),
                source,
            })?;
            let mut merged: BTreeMap<Timestamp, Point> =
                old.into_iter().map(|p| (p.ts, p)).collect();
            merged.extend(late_points.into_iter().map(|p| (p.ts, p)));
            let merged: Vec<Point> = merged.into_values().collect();
            ops.push(Op::Delete { cf: CF_BLOCKS, key });
            // A block that grew past twice the target is split evenly.
            let pieces = merged.len().div_ceil(threshold.saturating_mul(2)).max(1);
            let per = merged.len().div_ceil(pieces).max(1);
            for chunk in merged.chunks(per) {
                blocks += self.put_block(tag, chunk, ops)?;
            }
        }

        // Fresh points: the oldest whole blocks.
        let fresh: Vec<Point> = fresh.into_values().collect();
        let whole = fresh.len() / threshold * threshold;
        let (to_seal, _) = fresh.split_at(whole.min(fresh.len()));
        for chunk in to_seal.chunks(threshold) {
            blocks += self.put_block(tag, chunk, ops)?;
            if let Some(last) = chunk.last() {
                st.sealed_last = Some(last.ts);
            }
            sealed.extend(chunk.iter().map(|p| p.ts));
        }

        // Recent records: delete what was sealed, put the plan's other points.
        for ts in &sealed {
            if disk_keys.contains(ts) {
                ops.push(Op::Delete {
                    cf: CF_RECENT,
                    key: keys::series_key(tag, *ts).to_vec(),
                });
            }
        }
        let mut remaining = disk_keys.len() as u64;
        for p in st.points.values() {
            if !disk_keys.contains(&p.ts) {
                remaining += 1;
            }
            if !sealed.contains(&p.ts) {
                ops.push(recent_put(tag, p)?);
            }
        }
        st.recent_count = remaining.saturating_sub(sealed.len() as u64);
        st.block_ts.clear();
        Ok(blocks)
    }

    fn put_block(
        &self,
        tag: TagId,
        points: &[Point],
        ops: &mut Vec<Op>,
    ) -> Result<u64, StorageError> {
        let Some(first) = points.first() else {
            return Ok(0);
        };
        ops.push(Op::Put {
            cf: CF_BLOCKS,
            key: keys::series_key(tag, first.ts).to_vec(),
            value: encode_block(points)?,
        });
        Ok(1)
    }
}

/// A block as stored: its key and bytes.
pub(crate) struct RawBlock {
    pub(crate) key: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
}

fn recent_put(tag: TagId, p: &Point) -> Result<Op, StorageError> {
    let mut value = Vec::with_capacity(24);
    encode_recent_point(p, &mut value)?;
    Ok(Op::Put {
        cf: CF_RECENT,
        key: keys::series_key(tag, p.ts).to_vec(),
        value,
    })
}
