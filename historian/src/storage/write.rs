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

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use rocksdb::{ReadOptions, WriteBatch, WriteOptions};

use crate::encoding::lossy::{self, LossyConfig};
use crate::encoding::{
    decode_block, decode_block_columns, encode_block, Point, Timestamp, ValueType,
};
use crate::storage::chunk;
use crate::storage::keys::{self, CF_BLOCKS, CF_RECENT, CF_TAGS};
use crate::storage::meta::{self, Tag, TagId, TagMeta};
use crate::storage::read::RecentCursor;
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
    /// Points that swinging-door compression left out of the blocks it
    /// sealed (tags with `CompDev` only; they were durable until then).
    pub compressed_out: u64,
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
    /// New metadata for existing tags (`set_lossy`).
    meta_updates: BTreeMap<TagId, TagMeta>,
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
    /// Latest point on disk before this plan (`latest_after` adds the plan's).
    latest: Option<Point>,
    /// Latest timestamp on disk before this plan: later points are fresh
    /// (nothing can exist there) and go to new chunks.
    disk_latest: Option<Timestamp>,
    sealed_last: Option<Timestamp>,
    /// Timestamps of blocks read to detect replacements, by block key.
    block_ts: HashMap<Vec<u8>, Vec<Timestamp>>,
    /// Recent chunks read for late points, by first timestamp. Every late
    /// point's lookup went through here, so the chunk a late point merges
    /// into is the greatest one within a span before it (`chunk`).
    chunks: BTreeMap<Timestamp, Vec<Point>>,
}

impl Staged {
    /// The tag's latest point once the plan is written: the plan's last
    /// point unless the disk holds a later one (the plan wins on a tie).
    fn latest_after(mut self) -> Option<Point> {
        match self.points.pop_last() {
            Some((ts, p)) if self.latest.as_ref().is_none_or(|l| ts >= l.ts) => Some(p),
            _ => self.latest,
        }
    }
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
            meta_updates: BTreeMap::new(),
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

impl Storage {
    /// Gives an existing tag these exception and compression settings, in
    /// its own batch (see `WriteSet::set_lossy`).
    pub fn set_lossy(&self, id: TagId, lossy: LossyConfig) -> Result<(), StorageError> {
        let mut ws = self.begin()?;
        ws.set_lossy(id, lossy)?;
        ws.commit_self()?;
        Ok(())
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

    /// Gives the tag `id` these exception and compression settings from
    /// this plan on (a new metadata record in the same batch); nothing
    /// happens when they are the tag's already. Compression applies to the
    /// blocks sealed from then on; sealed blocks stay as they are.
    pub fn set_lossy(&mut self, id: TagId, lossy: LossyConfig) -> Result<(), StorageError> {
        self.check_can_add()?;
        if let Some(tag) = self.new_tags.iter_mut().find(|t| t.id == id) {
            let meta = TagMeta {
                lossy,
                ..tag.meta.clone()
            };
            meta.validate()?;
            tag.meta = meta;
            return Ok(());
        }
        let current = match self.meta_updates.get(&id) {
            Some(m) => m.clone(),
            None => self
                .storage
                .table()
                .by_id
                .get(&id)
                .map(|e| e.meta.clone())
                .ok_or(StorageError::UnknownTagId(id))?,
        };
        if current.lossy == lossy {
            return Ok(());
        }
        let meta = TagMeta { lossy, ..current };
        meta.validate()?;
        self.meta_updates.insert(id, meta);
        Ok(())
    }

    /// Adds points to the plan. Either all are accepted or none (the error
    /// says why: unknown tag, type mismatch, invalid name).
    pub fn add(&mut self, points: &[(TagRef<'_>, Point)]) -> Result<(), StorageError> {
        self.check_can_add()?;
        // Pass 1, no mutation: resolve every tag and check every type.
        let mut created: HashMap<&str, ValueType> = HashMap::new();
        // Points usually come grouped by tag: resolve an id once per run.
        let mut last_id: Option<(TagId, ValueType)> = None;
        for (tag, p) in points {
            let found = p.value.value_type();
            let (id, expected) = match *tag {
                TagRef::Id(id) => match last_id {
                    Some((last, vt)) if last == id => (Some(id), vt),
                    _ => {
                        let vt = self.resolve_id(id)?;
                        last_id = Some((id, vt));
                        (Some(id), vt)
                    }
                },
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
        for (id, meta) in std::mem::take(&mut self.meta_updates) {
            if let Some(e) = table.by_id.get_mut(&id) {
                e.meta = meta;
            }
        }
        for (id, st) in std::mem::take(&mut self.staged) {
            if let Some(e) = table.by_id.get_mut(&id) {
                e.recent_count = st.recent_count;
                e.sealed_last = st.sealed_last;
                e.latest = st.latest_after();
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
                disk_latest: None,
                sealed_last: None,
                block_ts: HashMap::new(),
                chunks: BTreeMap::new(),
            },
        );
        self.new_tags.push(Tag { id, meta });
        self.summary.tags_created += 1;
        Ok(id)
    }

    fn stage_point(&mut self, id: TagId, p: Point) -> Result<(), StorageError> {
        let storage = self.storage;
        let st = match self.staged.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(slot) => {
                let table = storage.table();
                let e = table.by_id.get(&id).ok_or(StorageError::UnknownTagId(id))?;
                slot.insert(Staged {
                    value_type: e.meta.value_type,
                    points: BTreeMap::new(),
                    recent_count: e.recent_count,
                    latest: e.latest.clone(),
                    disk_latest: e.latest.as_ref().map(|p| p.ts),
                    sealed_last: e.sealed_last,
                    block_ts: HashMap::new(),
                    chunks: BTreeMap::new(),
                })
            }
        };
        let replaced = if st.points.contains_key(&p.ts) {
            true
        } else if st.disk_latest.is_none_or(|l| p.ts > l) {
            // After everything on disk: nothing can exist there, no read.
            st.recent_count += 1;
            false
        } else if storage.recent_contains(id, st, p.ts)? {
            true
        } else {
            st.recent_count += 1;
            storage.sealed_contains(id, st, p.ts)?
        };
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
        for (&id, meta) in &self.meta_updates {
            ops.push(Op::Put {
                cf: CF_TAGS,
                key: keys::id_key(keys::TAGS_META, id).to_vec(),
                value: meta::encode_meta(id, meta)?,
            });
        }
        let threshold = self.storage.config.seal_threshold;
        for (&id, st) in self.staged.iter_mut() {
            let sealed_before = st.sealed_last;
            let mut compressed_out = BTreeSet::new();
            if usize::try_from(st.recent_count).map_or(true, |n| n >= threshold) {
                let compression = match self.meta_updates.get(&id) {
                    Some(m) => m.lossy.compression,
                    None => match self.new_tags.iter().find(|t| t.id == id) {
                        Some(t) => t.meta.lossy.compression,
                        None => self
                            .storage
                            .table()
                            .by_id
                            .get(&id)
                            .and_then(|e| e.meta.lossy.compression),
                    },
                };
                let sealed = self.storage.seal(id, st, compression.as_ref(), &mut ops)?;
                self.summary.blocks_written += sealed.blocks;
                self.summary.compressed_out += sealed.compressed_out.len() as u64;
                compressed_out = sealed.compressed_out;
            } else {
                recent_ops(id, st, &mut ops)?;
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
                &compressed_out,
                sealed_before,
                st.sealed_last,
                &mut ops,
            )?;
        }
        Ok(ops)
    }
}

impl Storage {
    /// Whether a recent point exists at (tag, ts). Reads the chunk that
    /// may hold it (the greatest start <= ts, at most a span before) into
    /// the plan's cache, unless a cached chunk already covers `ts`.
    fn recent_contains(
        &self,
        tag: TagId,
        st: &mut Staged,
        ts: Timestamp,
    ) -> Result<bool, StorageError> {
        let holds = |pts: &[Point]| pts.binary_search_by_key(&ts, |p| p.ts).is_ok();
        if let Some((_, pts)) = st.chunks.range(..=ts).next_back() {
            if pts.last().is_some_and(|l| l.ts >= ts) {
                return Ok(holds(pts));
            }
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(keys::series_key(tag, chunk::earliest_start(ts)).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        it.seek_for_prev(keys::series_key(tag, ts));
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            it.status()?;
            return Ok(false);
        };
        let (_, first) = keys::parse_series_key(k).ok_or_else(|| StorageError::CorruptRecord {
            what: "recent key",
            key: k.to_vec(),
        })?;
        let points = match st.chunks.entry(first) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(chunk::decode_chunk(k, v)?),
        };
        Ok(holds(points))
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

    /// The recent points of `tag` in `[start, end_inclusive]`, by time.
    pub(crate) fn recent_points(
        &self,
        tag: TagId,
        start: Timestamp,
        end_inclusive: Timestamp,
    ) -> Result<BTreeMap<Timestamp, Point>, StorageError> {
        let mut cursor = RecentCursor::new(self, tag, start, end_inclusive)?;
        let mut out = BTreeMap::new();
        while let Some(p) = cursor.next_if(|_| true)? {
            out.insert(p.ts, p);
        }
        Ok(out)
    }

    /// Every recent chunk of `tag`: its key and points.
    fn recent_chunks(&self, tag: TagId) -> Result<Vec<KeyedChunk>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::series_end(tag));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        it.seek(keys::series_start(tag));
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            out.push((k.to_vec(), chunk::decode_chunk(k, v)?));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Seals `tag`: late recent points (at or before the sealed end) are
    /// merged into the blocks they fall in; then the oldest of the others
    /// become blocks of `seal_threshold` points while that many remain,
    /// each through swinging-door `compression` if the tag has it (late
    /// points are merged as they are). All of the tag's recent chunks are
    /// read and deleted (a handful of keys) and the points left are put
    /// back as chunks.
    fn seal(
        &self,
        tag: TagId,
        st: &mut Staged,
        compression: Option<&lossy::CompressionConfig>,
        ops: &mut Vec<Op>,
    ) -> Result<Sealed, StorageError> {
        let threshold = self.config.seal_threshold;
        let mut all = BTreeMap::new();
        let mut disk_keys = Vec::new();
        for (key, points) in self.recent_chunks(tag)? {
            all.extend(points.into_iter().map(|p| (p.ts, p)));
            disk_keys.push(key);
        }
        // The plan's points replace what is on disk.
        all.extend(st.points.iter().map(|(&ts, p)| (ts, p.clone())));

        // Late points with no block to go to stay recent.
        let mut kept = Vec::new();
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
                kept.push(p);
                continue;
            };
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

        // Fresh points: the oldest whole blocks. Compression keeps each
        // chunk's first and last point, so the sealed range ends where it
        // would without it and every dropped point lies between kept ones.
        let fresh: Vec<Point> = fresh.into_values().collect();
        let whole = fresh.len() / threshold * threshold;
        let (to_seal, _) = fresh.split_at(whole.min(fresh.len()));
        let mut compressed_out = BTreeSet::new();
        for chunk in to_seal.chunks(threshold) {
            match compression {
                Some(config) => {
                    let kept = lossy::compress(chunk.iter().cloned(), config);
                    let mut kept_ts = kept.iter().map(|p| p.ts).peekable();
                    for p in chunk {
                        if kept_ts.next_if_eq(&p.ts).is_none() {
                            compressed_out.insert(p.ts);
                        }
                    }
                    blocks += self.put_block(tag, &kept, ops)?;
                    if let Some(last) = kept.last() {
                        st.sealed_last = Some(last.ts);
                    }
                }
                None => {
                    blocks += self.put_block(tag, chunk, ops)?;
                    if let Some(last) = chunk.last() {
                        st.sealed_last = Some(last.ts);
                    }
                }
            }
        }

        // Recent chunks: all of the tag's are deleted and what was not sealed
        // is put back (after the deletes, so a reused key keeps the put).
        // Every point left is in `kept` (earlier) or the fresh tail.
        for key in disk_keys {
            ops.push(Op::Delete { cf: CF_RECENT, key });
        }
        let rest = fresh.get(whole..).unwrap_or_default();
        let left = kept.len() + rest.len();
        st.recent_count = left as u64;
        chunk::encode_runs(kept.iter().chain(rest), left, |first, value| {
            ops.push(Op::Put {
                cf: CF_RECENT,
                key: keys::series_key(tag, first).to_vec(),
                value,
            });
        })?;
        st.block_ts.clear();
        st.chunks.clear();
        Ok(Sealed {
            blocks,
            compressed_out,
        })
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

/// What one `seal` did.
struct Sealed {
    /// Blocks written.
    blocks: u64,
    /// Timestamps that compression left out of the new blocks.
    compressed_out: BTreeSet<Timestamp>,
}

/// A recent chunk's key and points.
type KeyedChunk = (Vec<u8>, Vec<Point>);

/// A block as stored: its key and bytes.
pub(crate) struct RawBlock {
    pub(crate) key: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
}

/// The recent-area operations of a plan that does not seal `tag`: its
/// points after everything on disk become new chunks (one per write, unless
/// they span more than a chunk may); each late point is merged into the
/// chunk that starts at most a span before it (read-modify-write, the plan
/// winning on equal times), or, if there is none, into new chunks of late
/// points. Chunks stay disjoint: a late point `p` merged into chunk `c` has
/// no other chunk starting in `(c, p]`, and new late chunks start where no
/// chunk starts within a span before them.
fn recent_ops(tag: TagId, st: &Staged, ops: &mut Vec<Op>) -> Result<(), StorageError> {
    let fresh_from = st.disk_latest.map(|l| l.micros().checked_add(1));
    let (late, fresh) = match fresh_from {
        None => (None, Some(st.points.range(..))),
        Some(None) => (Some(st.points.range(..)), None),
        Some(Some(f)) => {
            let f = Timestamp::from_micros(f);
            (Some(st.points.range(..f)), Some(st.points.range(f..)))
        }
    };
    let mut put = |first: Timestamp, value: Vec<u8>| {
        ops.push(Op::Put {
            cf: CF_RECENT,
            key: keys::series_key(tag, first).to_vec(),
            value,
        });
    };
    let mut merges: BTreeMap<Timestamp, Vec<&Point>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for (&ts, p) in late.into_iter().flatten() {
        match st.chunks.range(chunk::earliest_start(ts)..=ts).next_back() {
            Some((&first, _)) => merges.entry(first).or_default().push(p),
            None => orphans.push(p),
        }
    }
    for (first, points) in merges {
        let mut merged: BTreeMap<Timestamp, &Point> = BTreeMap::new();
        if let Some(old) = st.chunks.get(&first) {
            merged.extend(old.iter().map(|p| (p.ts, p)));
        }
        merged.extend(points.into_iter().map(|p| (p.ts, p)));
        put(first, chunk::encode_chunk(merged.into_values())?);
    }
    chunk::encode_runs(orphans.iter().copied(), orphans.len(), &mut put)?;
    let fresh = fresh.into_iter().flatten().map(|(_, p)| p);
    chunk::encode_runs(fresh, st.points.len(), &mut put)?;
    Ok(())
}
