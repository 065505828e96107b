//! Storage: tag time series in RocksDB column families shared with the
//! broker's database. This module owns the key layout (`keys`), the tag
//! records (`meta`), the write path that can join the broker's group commit
//! (`write`), the minute and hour rollups kept with it (`rollups`), reads
//! (`read`), retention (`retention`) and the query engine's view of it all
//! (`source`). Tag search uses the crate's one pattern matcher
//! (`crate::pattern`). It knows nothing of MQTT or of query semantics
//! (interpolation, summaries): those belong to the ingest decoders and
//! `query`, whose `Rollup` arithmetic it reuses.
//!
//! Memory per tag is small and bounded: metadata, the count of recent
//! points, the latest point and the end of the sealed range. Points
//! themselves live only in RocksDB. docs/FORMAT.md §8 has the design.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod chunk;
mod error;
mod keys;
mod meta;
mod read;
mod retention;
mod rollups;
mod source;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use rocksdb::{ColumnFamily, DBCompressionType, Direction, IteratorMode, Options, DB};

use crate::encoding::{
    block_header, decode_block, Point, Timestamp, MAX_POINTS_PER_BLOCK, TARGET_POINTS_PER_BLOCK,
};

/// The one tag-pattern matcher (`*`, `?`), shared with the API's search and authorization.
pub use crate::pattern::matches as glob_match;
pub use error::StorageError;
pub use keys::{CF_BLOCKS, CF_RECENT, CF_ROLLUP_1H, CF_ROLLUP_1M, CF_TAGS};
pub use meta::{Tag, TagId, TagMeta, MAX_DESCRIPTION_BYTES, MAX_TAG_NAME_BYTES, MAX_UNIT_BYTES};
pub use read::TagStats;
pub use retention::RetentionSummary;
pub use rollups::DEFAULT_ROLLUP_MIN_POINTS;
pub use write::{Op, TagRef, WriteSet, WriteSummary};

/// Most points one `range` call returns, whatever limit the caller asks
/// for: a query's memory is bounded even when a client asks for "all".
pub const MAX_RANGE_POINTS: usize = 1_000_000;

/// Settings of the storage layer.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Whether `write`, `ensure_tag` and `enforce_retention` fsync the WAL.
    /// Writes that join the broker's group commit use the broker's setting.
    pub sync: bool,
    /// Recent points per tag that trigger sealing. Clamped to
    /// 1..=MAX_POINTS_PER_BLOCK / 2 so a merged block always fits.
    pub seal_threshold: usize,
    /// Whether a write naming an unknown tag creates it (value type of its
    /// first point, `default_retention`); otherwise `UnknownTagName`.
    pub auto_create_tags: bool,
    /// Retention given to tags created by a write.
    pub default_retention: Option<Duration>,
    /// Largest `limit` honoured by `range` (at most `MAX_RANGE_POINTS`).
    pub max_range_points: usize,
    /// Minute and hour buckets with fewer points keep no stored rollup
    /// (queries read their points instead); at least 1.
    pub rollup_min_points: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync: true,
            seal_threshold: TARGET_POINTS_PER_BLOCK,
            auto_create_tags: true,
            default_retention: None,
            max_range_points: MAX_RANGE_POINTS,
            rollup_min_points: DEFAULT_ROLLUP_MIN_POINTS,
        }
    }
}

/// The historian's column families with their options, for the broker to
/// pass to `DB::open_cf_descriptors` beside its own.
pub fn column_families() -> Vec<(&'static str, Options)> {
    keys::ALL_CFS
        .iter()
        .map(|&name| {
            let mut opts = Options::default();
            // Blocks are compressed by our own codecs; LZ4 over them only
            // burns CPU. Everything else is small records that LZ4 shrinks.
            opts.set_compression_type(if name == CF_BLOCKS {
                DBCompressionType::None
            } else {
                DBCompressionType::Lz4
            });
            (name, opts)
        })
        .collect()
}

/// Tag time series over a RocksDB database. Share it behind an `Arc`: reads
/// run concurrently; writes are serialised by `begin` (see `WriteSet`).
pub struct Storage {
    db: Arc<DB>,
    config: StorageConfig,
    tags: RwLock<TagTable>,
    /// Held by a `WriteSet` from planning until its outcome is known, so a
    /// plan always sees every earlier plan on disk.
    writer: Mutex<WriterState>,
    poisoned: AtomicBool,
    replacements: AtomicU64,
}

impl Storage {
    /// Storage over a database the caller opened with `column_families()`.
    /// Rebuilds the per-tag memory from `hist_tags` plus one seek per tag
    /// into `hist_recent` and `hist_blocks`.
    pub fn open(db: Arc<DB>, mut config: StorageConfig) -> Result<Storage, StorageError> {
        config.seal_threshold = config.seal_threshold.clamp(1, MAX_POINTS_PER_BLOCK / 2);
        config.max_range_points = config.max_range_points.min(MAX_RANGE_POINTS);
        config.rollup_min_points = config.rollup_min_points.max(1);
        for name in keys::ALL_CFS {
            db.cf_handle(name)
                .ok_or(StorageError::MissingColumnFamily(name))?;
        }
        let table = recover(&db)?;
        let next_id = table
            .by_id
            .keys()
            .next_back()
            .map_or(0, |id| id.0.saturating_add(1));
        Ok(Storage {
            db,
            config,
            tags: RwLock::new(table),
            writer: Mutex::new(WriterState { next_id }),
            poisoned: AtomicBool::new(false),
            replacements: AtomicU64::new(0),
        })
    }

    /// Opens (creating if needed) a database holding only the historian's
    /// column families: for tools, imports and tests.
    pub fn open_standalone(
        path: impl AsRef<Path>,
        config: StorageConfig,
    ) -> Result<Storage, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = column_families()
            .into_iter()
            .map(|(name, o)| rocksdb::ColumnFamilyDescriptor::new(name, o));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Storage::open(Arc::new(db), config)
    }

    /// The database, for a caller that writes `WriteSet` batches itself.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Points that replaced an earlier point of the same tag and timestamp
    /// since this `Storage` was opened.
    pub fn replacements(&self) -> u64 {
        self.replacements.load(Ordering::Relaxed)
    }

    /// Every tag, by id.
    pub fn tags(&self) -> Vec<Tag> {
        self.table()
            .by_id
            .iter()
            .map(|(&id, e)| Tag {
                id,
                meta: e.meta.clone(),
            })
            .collect()
    }

    /// The tag with this name.
    pub fn tag_by_name(&self, name: &str) -> Option<Tag> {
        let table = self.table();
        let id = *table.by_name.get(name)?;
        table.by_id.get(&id).map(|e| Tag {
            id,
            meta: e.meta.clone(),
        })
    }

    /// The tag with this id.
    pub fn tag(&self, id: TagId) -> Option<Tag> {
        self.table().by_id.get(&id).map(|e| Tag {
            id,
            meta: e.meta.clone(),
        })
    }

    /// Tags whose name matches a glob (`*` any run, `?` one character), by id.
    pub fn search(&self, pattern: &str) -> Vec<Tag> {
        self.search_by(|meta| glob_match(pattern, &meta.name))
    }

    /// Tags whose metadata `keep` accepts, by id; only those are copied.
    pub fn search_by(&self, keep: impl Fn(&TagMeta) -> bool) -> Vec<Tag> {
        self.table()
            .by_id
            .iter()
            .filter(|(_, e)| keep(&e.meta))
            .map(|(&id, e)| Tag {
                id,
                meta: e.meta.clone(),
            })
            .collect()
    }

    /// The point with the greatest timestamp, from memory.
    pub fn latest(&self, tag: TagId) -> Result<Option<Point>, StorageError> {
        self.table()
            .by_id
            .get(&tag)
            .map(|e| e.latest.clone())
            .ok_or(StorageError::UnknownTagId(tag))
    }

    /// `latest` of many tags under one lock; `None` for unknown or empty tags.
    pub fn latest_many(&self, tags: &[TagId]) -> Vec<Option<Point>> {
        let table = self.table();
        tags.iter()
            .map(|t| table.by_id.get(t).and_then(|e| e.latest.clone()))
            .collect()
    }

    fn table(&self) -> RwLockReadGuard<'_, TagTable> {
        // A panic while holding the lock cannot leave the table half-updated
        // (updates are single inserts), so a poisoned lock is still usable.
        self.tags.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::MissingColumnFamily(name))
    }
}

/// In-memory state of all tags.
#[derive(Default)]
struct TagTable {
    by_name: HashMap<String, TagId>,
    by_id: BTreeMap<TagId, TagEntry>,
}

/// The bounded per-tag state kept in memory.
#[derive(Clone, Debug)]
struct TagEntry {
    meta: TagMeta,
    /// Points in `hist_recent` (persisted in the tag's state record).
    recent_count: u64,
    /// Point with the greatest timestamp.
    latest: Option<Point>,
    /// Last timestamp of the last sealed block.
    sealed_last: Option<Timestamp>,
}

struct WriterState {
    next_id: u32,
}

/// Rebuilds the tag table: one pass over `hist_tags` (a few records per
/// tag), then per tag a seek to the last recent chunk and the last block.
fn recover(db: &DB) -> Result<TagTable, StorageError> {
    let tags_cf = db
        .cf_handle(CF_TAGS)
        .ok_or(StorageError::MissingColumnFamily(CF_TAGS))?;
    let mut table = TagTable::default();
    let mut states = HashMap::new();
    for item in db.iterator_cf(tags_cf, IteratorMode::Start) {
        let (key, value) = item?;
        match key.first() {
            Some(&keys::TAGS_META) => {
                let (id, meta) = meta::decode_meta(&key, &value)?;
                if keys::parse_id_key(&key) != Some(id) {
                    return Err(StorageError::CorruptRecord {
                        what: "tag metadata id",
                        key: key.to_vec(),
                    });
                }
                table.by_name.insert(meta.name.clone(), id);
                table.by_id.insert(
                    id,
                    TagEntry {
                        meta,
                        recent_count: 0,
                        latest: None,
                        sealed_last: None,
                    },
                );
            }
            Some(&keys::TAGS_STATE) => {
                let id = keys::parse_id_key(&key).ok_or_else(|| StorageError::CorruptRecord {
                    what: "tag state key",
                    key: key.to_vec(),
                })?;
                states.insert(id, meta::decode_state(&key, &value)?);
            }
            // The name index is rebuilt from the metadata records above.
            Some(&keys::TAGS_NAME) => {}
            _ => {
                return Err(StorageError::CorruptRecord {
                    what: "hist_tags key",
                    key: key.to_vec(),
                })
            }
        }
    }
    for (&id, entry) in table.by_id.iter_mut() {
        entry.recent_count = match states.get(&id) {
            Some(&n) => n,
            // Written with the tag; if it is missing, count (≤ a block's worth).
            None => count_recent(db, id)?,
        };
        (entry.latest, entry.sealed_last) = tail_state(db, id)?;
    }
    Ok(table)
}

/// The latest point of `tag` and the end of its sealed range, from one
/// seek into each of `hist_recent` and `hist_blocks`.
fn tail_state(db: &DB, id: TagId) -> Result<(Option<Point>, Option<Timestamp>), StorageError> {
    let last_recent = last_recent(db, id)?;
    let last_block = last_block(db, id)?;
    let sealed_last = last_block.as_ref().map(|(_, last)| *last);
    let latest = match (last_recent, last_block) {
        // Equal timestamps: the recent point replaced the sealed point.
        (Some(r), Some((_, last))) if r.ts >= last => Some(r),
        (Some(r), None) => Some(r),
        (_, Some((block, _))) => {
            let points =
                decode_block(&block.bytes).map_err(|source| StorageError::CorruptBlock {
                    tag: id,
                    key: block.key,
                    source,
                })?;
            points.into_iter().next_back()
        }
        (None, None) => None,
    };
    Ok((latest, sealed_last))
}

fn count_recent(db: &DB, tag: TagId) -> Result<u64, StorageError> {
    let cf = db
        .cf_handle(CF_RECENT)
        .ok_or(StorageError::MissingColumnFamily(CF_RECENT))?;
    let start = keys::series_start(tag);
    let mut n = 0u64;
    for item in db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&keys::tag_prefix(tag)) {
            break;
        }
        n += chunk::decode_chunk(&key, &value)?.len() as u64;
    }
    Ok(n)
}

/// The recent point with the greatest timestamp of `tag`: the last of its
/// last chunk.
fn last_recent(db: &DB, tag: TagId) -> Result<Option<Point>, StorageError> {
    let cf = db
        .cf_handle(CF_RECENT)
        .ok_or(StorageError::MissingColumnFamily(CF_RECENT))?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_for_prev(keys::series_key(tag, Timestamp::from_micros(i64::MAX)));
    match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => {
            Ok(chunk::decode_chunk(k, v)?.pop())
        }
        _ => {
            it.status()?;
            Ok(None)
        }
    }
}

/// The last block of `tag`: its key, last timestamp and bytes.
fn last_block(db: &DB, tag: TagId) -> Result<Option<(write::RawBlock, Timestamp)>, StorageError> {
    let cf = db
        .cf_handle(CF_BLOCKS)
        .ok_or(StorageError::MissingColumnFamily(CF_BLOCKS))?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_for_prev(keys::series_key(tag, Timestamp::from_micros(i64::MAX)));
    match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.starts_with(&keys::tag_prefix(tag)) => {
            let header = block_header(v).map_err(|source| StorageError::CorruptBlock {
                tag,
                key: k.to_vec(),
                source,
            })?;
            Ok(Some((
                write::RawBlock {
                    key: k.to_vec(),
                    bytes: v.to_vec(),
                },
                header.last_ts,
            )))
        }
        _ => {
            it.status()?;
            Ok(None)
        }
    }
}
