//! The broker's RocksDB database and its group-commit writer.
//!
//! One database under the data dir, one column family per kind of record (see `record.rs`).
//! All writes go through one writer thread: it takes every job waiting in its queue (up to
//! `max_batch`), writes them as one `WriteBatch` with one WAL sync, and then completes each
//! job's `Commit`. So many acknowledgements share one fsync, and the order in which jobs were
//! submitted is the order in which they reach the database (a delete submitted after a put of
//! the same key always wins).
//!
//! The historian's column families live in the same database, and its points (`Op::Historize`)
//! are planned by the writer into the same batch, so they share the acknowledgement's sync.
//!
//! A failed write poisons the store: every later job fails at once, so nothing is acknowledged
//! that is not on disk. Restart to recover.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use converge_historian::ingest::TagPoint;
use converge_historian::storage::{self as hist, Storage, StorageConfig};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use tokio::sync::{mpsc, oneshot};

use crate::config::SyncMode;
use crate::historian::plan_points;
use crate::metrics::Metrics;

/// Column families, one per kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Sessions,
    Queue,
    Retained,
    Inbound,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Sessions, Cf::Queue, Cf::Retained, Cf::Inbound];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Sessions => "sessions",
            Cf::Queue => "queue",
            Cf::Retained => "retained",
            Cf::Inbound => "inbound_qos2",
        }
    }
}

/// One change to the database.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes every key that starts with `prefix` (a client's whole queue, say).
    DeletePrefix {
        cf: Cf,
        prefix: Vec<u8>,
    },
    /// Points for the historian, written in the same batch.
    Historize(Vec<TagPoint>),
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("store is poisoned by an earlier failed write; restart the server")]
    Poisoned,
    #[error("store writer has stopped")]
    Closed,
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

struct Job {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// One key/value pair read back from a column family.
#[derive(Debug)]
pub struct Row {
    pub key: Box<[u8]>,
    pub value: Box<[u8]>,
}

/// Resolves when the job's writes are in the write-ahead log (synced as configured).
pub struct Commit(CommitInner);

enum CommitInner {
    Ready(Result<(), StoreError>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    pub fn ready() -> Commit {
        Commit(CommitInner::Ready(Ok(())))
    }

    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            CommitInner::Ready(r) => r,
            CommitInner::Waiting(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
        }
    }
}

pub struct Store {
    db: Arc<DB>,
    historian: Option<Arc<Storage>>,
    // Unbounded on purpose: jobs are submitted from under the broker's std mutex, where we may
    // not wait. What bounds it is MQTT flow control: each job is an acknowledgement some client
    // is waiting for (at most Receive Maximum per connection) or a delivery already counted
    // against a bounded session queue.
    tx: mpsc::UnboundedSender<Job>,
    poisoned: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Store {
    /// Opens the database; with `historian`, also the historian's storage over it (its column
    /// families are always opened: RocksDB refuses a database whose families are not all named).
    pub fn open(
        path: &Path,
        sync: SyncMode,
        max_batch: usize,
        metrics: Arc<Metrics>,
        historian: Option<StorageConfig>,
    ) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // The broker's records are small and short-lived; a modest memtable keeps RSS low.
        opts.set_write_buffer_size(16 * 1024 * 1024);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()))
            .chain(
                hist::column_families()
                    .into_iter()
                    .map(|(name, o)| ColumnFamilyDescriptor::new(name, o)),
            );
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        let historian = match historian {
            Some(mut config) => {
                // Writes joining the group commit follow `sync`; this covers the storage's own.
                config.sync = sync == SyncMode::Fsync;
                let storage = Storage::open(db.clone(), config)
                    .map_err(|e| StoreError::Db(format!("historian: {e}")))?;
                Some(Arc::new(storage))
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let poisoned = Arc::new(AtomicBool::new(false));
        let writer = {
            let writer = Writer {
                db: db.clone(),
                historian: historian.clone(),
                poisoned: poisoned.clone(),
                metrics,
            };
            std::thread::Builder::new()
                .name("converge-store".into())
                .spawn(move || writer.run(rx, sync, max_batch.max(1)))
                .map_err(|e| StoreError::Db(format!("cannot start writer thread: {e}")))?
        };
        Ok(Store {
            db,
            historian,
            tx,
            poisoned,
            writer: Some(writer),
        })
    }

    /// Queues writes; the returned `Commit` resolves once they are durable.
    pub fn submit(&self, ops: Vec<Op>) -> Commit {
        if ops.is_empty() {
            return Commit::ready();
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Commit(CommitInner::Ready(Err(StoreError::Poisoned)));
        }
        let (done, rx) = oneshot::channel();
        if self
            .tx
            .send(Job {
                ops,
                done: Some(done),
            })
            .is_err()
        {
            return Commit(CommitInner::Ready(Err(StoreError::Closed)));
        }
        Commit(CommitInner::Waiting(rx))
    }

    /// Queues writes nobody waits for (state that is safe to lose the tail of, such as the
    /// deletion of an acknowledged delivery: losing it means one redelivery with DUP set).
    pub fn submit_detached(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let _ = self.tx.send(Job { ops, done: None });
    }

    /// Resolves once everything submitted before it is durable (and fsynced, whatever the
    /// sync mode): used at shutdown.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job {
                ops: Vec::new(),
                done: Some(done),
            })
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))?;
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The historian's storage, when historizing is on.
    pub fn historian(&self) -> Option<&Arc<Storage>> {
        self.historian.as_ref()
    }

    /// Every (key, value) of a column family, in key order.
    pub fn scan(&self, cf: Cf) -> Result<Vec<Row>, StoreError> {
        let handle = self
            .db
            .cf_handle(cf.name())
            .ok_or_else(|| StoreError::Db(format!("missing column family {}", cf.name())))?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(&handle, rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            out.push(Row { key, value });
        }
        Ok(out)
    }

    /// Waits for every submitted write, then stops the writer and flushes memtables.
    pub fn close(mut self) -> Result<(), StoreError> {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.db.flush_wal(true)?;
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<DB>,
    historian: Option<Arc<Storage>>,
    poisoned: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Job>, sync: SyncMode, max_batch: usize) {
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync == SyncMode::Fsync);
        let mut jobs = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            jobs.push(first);
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let result = if self.poisoned.load(Ordering::Acquire) {
                Err(StoreError::Poisoned)
            } else {
                let started = Instant::now();
                let r = self.write_jobs(&jobs, &write_opts);
                self.metrics
                    .persist_write_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.persist_batch_ops.observe(jobs.len() as f64);
                if let Err(e) = &r {
                    tracing::error!(error = %e, "persistence write failed; refusing further writes");
                    self.poisoned.store(true, Ordering::Release);
                }
                r
            };
            for job in jobs.drain(..) {
                if let Some(done) = job.done {
                    let _ = done.send(result.clone());
                }
            }
        }
    }

    fn write_jobs(&self, jobs: &[Job], opts: &WriteOptions) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let historize = jobs
            .iter()
            .flat_map(|j| j.ops.iter())
            .any(|op| matches!(op, Op::Historize(p) if !p.is_empty()));
        // The plan holds the historian's write lock until we know the outcome of this write.
        let mut plan = match (&self.historian, historize) {
            (Some(storage), true) => Some(storage.begin().map_err(historian_error)?),
            _ => None,
        };
        for op in jobs.iter().flat_map(|j| j.ops.iter()) {
            let name = match op {
                Op::Put { cf, .. } | Op::Delete { cf, .. } | Op::DeletePrefix { cf, .. } => {
                    cf.name()
                }
                Op::Historize(points) => {
                    if let Some(plan) = plan.as_mut() {
                        plan_points(plan, points, &self.metrics);
                    }
                    continue;
                }
            };
            let cf = self
                .db
                .cf_handle(name)
                .ok_or_else(|| StoreError::Db(format!("missing column family {name}")))?;
            match op {
                Op::Put { key, value, .. } => batch.put_cf(&cf, key, value),
                Op::Delete { key, .. } => batch.delete_cf(&cf, key),
                Op::DeletePrefix { prefix, .. } => {
                    // Every key under a client prefix has at most 8 more bytes, so
                    // prefix ‖ FF×9 is past all of them.
                    let mut end = prefix.clone();
                    end.extend_from_slice(&[0xFF; 9]);
                    batch.delete_range_cf(&cf, prefix, &end);
                }
                Op::Historize(_) => {}
            }
        }
        if let Some(p) = plan.as_mut() {
            if let Err(e) = p.append_to(&mut batch) {
                // The store is poisoned by this error; so is the historian.
                if let Some(p) = plan.take() {
                    p.failed();
                }
                return Err(historian_error(e));
            }
        }
        match self.db.write_opt(batch, opts) {
            Ok(()) => {
                if let Some(plan) = plan {
                    let summary = plan.committed();
                    let m = &self.metrics;
                    m.historian_points_written.inc_by(summary.points);
                    m.historian_points_replaced.inc_by(summary.replaced);
                    m.historian_blocks_written.inc_by(summary.blocks_written);
                    m.historian_points_compressed.inc_by(summary.compressed_out);
                    m.historian_tags.add(summary.tags_created as i64);
                }
                Ok(())
            }
            Err(e) => {
                if let Some(plan) = plan {
                    plan.failed();
                }
                Err(e.into())
            }
        }
    }
}

/// The historian's storage over the database opened read-only, which works while a server has
/// it open (for `converge historian stats`). It sees what was written when it opened.
pub fn open_historian_read_only(path: &Path) -> Result<Storage, StoreError> {
    let opts = Options::default();
    let names = DB::list_cf(&opts, path)?;
    let db = DB::open_cf_for_read_only(&opts, path, names, false)?;
    Storage::open(Arc::new(db), StorageConfig::default()).map_err(historian_error)
}

fn historian_error(e: hist::StorageError) -> StoreError {
    StoreError::Db(format!("historian: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_visible_after_commit_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let store = Store::open(dir.path(), SyncMode::Os, 16, metrics.clone(), None).unwrap();
        let mut commits = Vec::new();
        for i in 0u8..50 {
            commits.push(store.submit(vec![Op::Put {
                cf: Cf::Queue,
                key: vec![0, 1, b'a', i],
                value: vec![i],
            }]));
        }
        for c in commits {
            c.wait().await.unwrap();
        }
        store
            .submit(vec![
                Op::Delete {
                    cf: Cf::Queue,
                    key: vec![0, 1, b'a', 3],
                },
                Op::DeletePrefix {
                    cf: Cf::Queue,
                    prefix: vec![0, 1, b'b'],
                },
            ])
            .wait()
            .await
            .unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path(), SyncMode::Os, 16, metrics, None).unwrap();
        let rows = store.scan(Cf::Queue).unwrap();
        assert_eq!(rows.len(), 49);
        assert!(rows.iter().all(|r| r.key[3] != 3));
    }

    #[tokio::test]
    async fn prefix_delete_spares_other_clients() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SyncMode::Os, 16, Metrics::new(), None).unwrap();
        let a = crate::persist::record::queue_key("a", 1);
        let ab = crate::persist::record::queue_key("ab", 1);
        store
            .submit(vec![
                Op::Put {
                    cf: Cf::Queue,
                    key: a.clone(),
                    value: vec![],
                },
                Op::Put {
                    cf: Cf::Queue,
                    key: ab.clone(),
                    value: vec![],
                },
            ])
            .wait()
            .await
            .unwrap();
        store
            .submit(vec![Op::DeletePrefix {
                cf: Cf::Queue,
                prefix: crate::persist::record::client_prefix("a"),
            }])
            .wait()
            .await
            .unwrap();
        let rows = store.scan(Cf::Queue).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(&*rows[0].key, &ab[..]);
    }
}
