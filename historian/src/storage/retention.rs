//! Retention: per tag, data older than `now - retention` is removed with
//! range deletes, never by scanning other tags or newer data.
//!
//! * recent points and rollups before the cutoff: one `delete_range` each
//!   (the recent chunk straddling the cutoff is put back with its newer points);
//! * blocks: every block whose last point is before the cutoff. A block
//!   straddling the cutoff is kept whole until all of it has expired, so a
//!   read may return points up to one block older than the retention
//!   (documented; trimming would rewrite a block on every run).
//!
//! The only keys read are those about to be deleted (to keep the recent
//! count exact) and the one block that may straddle the cutoff.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use rocksdb::{WriteBatch, WriteOptions};

use crate::encoding::{block_header, Point, Timestamp};
use crate::storage::chunk;
use crate::storage::keys::{self, CF_BLOCKS, CF_RECENT, CF_ROLLUP_1H, CF_ROLLUP_1M, CF_TAGS};
use crate::storage::write::RawBlock;
use crate::storage::{meta, tail_state, Storage, StorageError, TagId};

/// What `enforce_retention` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionSummary {
    /// Tags that have a retention.
    pub tags: u64,
    /// Recent points deleted.
    pub recent_deleted: u64,
    /// Blocks deleted.
    pub blocks_deleted: u64,
}

impl Storage {
    /// Deletes, for every tag with a retention, data older than
    /// `now - retention`, in one batch synced as `config.sync`. `now` is a
    /// parameter so callers (and tests) own the clock.
    pub fn enforce_retention(&self, now: Timestamp) -> Result<RetentionSummary, StorageError> {
        // Same lock as writes: the recent counts change under us otherwise.
        let _lock = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let tags: Vec<(TagId, Timestamp, u64)> = self
            .table()
            .by_id
            .iter()
            .filter_map(|(&id, e)| {
                let keep = e.meta.retention?;
                let keep = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
                Some((
                    id,
                    Timestamp::from_micros(now.micros().saturating_sub(keep)),
                    e.recent_count,
                ))
            })
            .collect();
        let mut summary = RetentionSummary {
            tags: tags.len() as u64,
            ..RetentionSummary::default()
        };
        let mut batch = WriteBatch::default();
        let mut counts = Vec::with_capacity(tags.len());
        for &(tag, cutoff, recent_count) in &tags {
            let start = keys::series_start(tag);
            let cut = keys::series_key(tag, cutoff);

            let (expired, survivors) = self.expire_recent(tag, &start, cutoff)?;
            let mut changed = expired > 0;
            batch.delete_range_cf(self.cf(CF_RECENT)?, start, cut);
            // The chunk straddling the cutoff keeps its newer points, under
            // the key of the first of them (after the range delete, so it wins).
            if let Some(first) = survivors.first() {
                batch.put_cf(
                    self.cf(CF_RECENT)?,
                    keys::series_key(tag, first.ts),
                    chunk::encode_chunk(&survivors)?,
                );
            }
            for cf in [CF_ROLLUP_1M, CF_ROLLUP_1H] {
                batch.delete_range_cf(self.cf(cf)?, start, cut);
            }

            // Blocks before the last one starting before the cutoff have
            // expired; that one has too unless it straddles the cutoff.
            if let Some(before) = cutoff.micros().checked_sub(1) {
                if let Some(RawBlock { key, bytes }) =
                    self.block_at_or_before(tag, Timestamp::from_micros(before))?
                {
                    let h = block_header(&bytes).map_err(|source| StorageError::CorruptBlock {
                        tag,
                        key: key.clone(),
                        source,
                    })?;
                    let end = if h.last_ts < cutoff {
                        // Just past this block's key: its start + 1 µs.
                        keys::series_key(
                            tag,
                            Timestamp::from_micros(h.first_ts.micros().saturating_add(1)),
                        )
                        .to_vec()
                    } else {
                        key
                    };
                    let n = self.count_keys(CF_BLOCKS, &start, &end)?;
                    changed |= n > 0;
                    summary.blocks_deleted += n;
                    batch.delete_range_cf(self.cf(CF_BLOCKS)?, start.as_slice(), end.as_slice());
                }
            }

            let remaining = recent_count.saturating_sub(expired);
            summary.recent_deleted += expired;
            batch.put_cf(
                self.cf(CF_TAGS)?,
                keys::id_key(keys::TAGS_STATE, tag),
                meta::encode_state(remaining),
            );
            counts.push((tag, remaining, changed));
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(self.config.sync);
        if let Err(e) = self.db.write_opt(batch, &opts) {
            self.poisoned.store(true, Ordering::Release);
            return Err(e.into());
        }
        for (tag, remaining, changed) in counts {
            // Only a tag that lost data can have lost its latest point or last block.
            let tail = if changed {
                Some(tail_state(&self.db, tag)?)
            } else {
                None
            };
            let mut table = self.tags.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = table.by_id.get_mut(&tag) {
                e.recent_count = remaining;
                if let Some((latest, sealed_last)) = tail {
                    e.latest = latest;
                    e.sealed_last = sealed_last;
                }
            }
        }
        Ok(summary)
    }

    /// The recent points of `tag` before `cutoff` (about to be deleted) and
    /// the points at or after it of the chunk that straddles it. Only the
    /// chunks starting before the cutoff are read.
    fn expire_recent(
        &self,
        tag: TagId,
        start: &[u8],
        cutoff: Timestamp,
    ) -> Result<(u64, Vec<Point>), StorageError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(keys::series_key(tag, cutoff).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_RECENT)?, opts);
        it.seek(start);
        let (mut expired, mut survivors) = (0u64, Vec::new());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let points = chunk::decode_chunk(k, v)?;
            let n = points.partition_point(|p| p.ts < cutoff);
            expired += n as u64;
            // Chunks never overlap: only the last one read can straddle.
            survivors = points.into_iter().skip(n).collect();
            it.next();
        }
        it.status()?;
        Ok((expired, survivors))
    }

    /// Keys in `[from, to)` of `cf`: only ever the keys about to be deleted.
    fn count_keys(&self, cf: &'static str, from: &[u8], to: &[u8]) -> Result<u64, StorageError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        it.seek(from);
        let mut n = 0u64;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }
}
