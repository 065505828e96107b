//! [`AuditLog`]: the handle the broker records events through, and the
//! background thread that numbers, chains, writes, syncs and checkpoints
//! them.
//!
//! `record` never blocks: it hands the event to a bounded channel with
//! `try_send`. When the channel is full the event is dropped, counted and
//! logged, and the writer later appends an `events_dropped` record saying
//! how many were lost, so the loss is visible in the log itself.
//! `record_critical` (accepted connections) falls back to a small bounded
//! overflow list the writer drains; only if that is full too is the event
//! lost, counted apart and logged as an error.
//!
//! The writer holds the directory's writer lock for its whole life, so no
//! second process can append (module `spool` is how other processes get
//! their events in; the writer ingests the spool at start, on a periodic
//! tick, on `flush` and at shutdown).
//!
//! The writer is a std thread, not a tokio task: the security crate has no
//! runtime, and fsync blocks anyway. The overflow list and the test gate
//! use std mutexes held for a push or a check, never across IO.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checkpoint::{Checkpoint, PublicKey, SigningKey};
use super::error::AuditError;
use super::files::{WriterLock, KEY_FILE, LOG_FILE, PUBLIC_KEY_FILE};
use super::record::{Action, Entry, Event, Outcome};
use super::spool::{self, MAX_SPOOL_PER_TICK, REJECTED_DIR, SPOOL_DIR};
use super::store::{Recovery, Store};

/// Events the queue holds before `record` drops. At ~300 bytes an event,
/// 4096 is about 1 MiB, and several seconds of a storm of connects.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Critical events held beyond a full queue before they too are lost.
pub const DEFAULT_OVERFLOW_CAPACITY: usize = 1024;
/// A checkpoint at least every this many records...
pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 1000;
/// ...and at least this often while records arrive.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// How long [`AuditLog::open`] waits for the writer lock: long enough for a
/// CLI command that appends while no server runs, short enough that a
/// second server fails fast.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often the writer looks into the spool for events of CLI commands.
pub const DEFAULT_SPOOL_INTERVAL: Duration = Duration::from_secs(1);
/// Floor of `spool_interval`.
const MIN_SPOOL_INTERVAL: Duration = Duration::from_millis(10);
/// Records per write and fsync at most: bounds the writer's buffer and how
/// long a flush waits behind one batch.
const MAX_BATCH: usize = 1024;

/// Where and how to keep the audit log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditConfig {
    /// The audit directory, e.g. `<data_dir>/audit`.
    pub dir: PathBuf,
    /// The signing key; `<dir>/audit.key` when `None`. Keeping it outside
    /// the log's directory (another mount, an HSM-backed file) helps only a
    /// little: whoever runs as the server can read it.
    pub key_path: Option<PathBuf>,
    pub queue_capacity: usize,
    pub overflow_capacity: usize,
    pub checkpoint_every_records: u64,
    pub checkpoint_interval: Duration,
    /// How long `open` waits while another process holds the writer lock
    /// before it fails with [`AuditError::Locked`].
    pub lock_wait: Duration,
    /// How often the writer ingests the spool (`Duration::MAX`: only at
    /// start, on `flush` and at shutdown).
    pub spool_interval: Duration,
}

impl AuditConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            key_path: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            overflow_capacity: DEFAULT_OVERFLOW_CAPACITY,
            checkpoint_every_records: DEFAULT_CHECKPOINT_RECORDS,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            lock_wait: DEFAULT_LOCK_WAIT,
            spool_interval: DEFAULT_SPOOL_INTERVAL,
        }
    }
}

/// Counters for metrics. All totals since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Accepted by `record`/`record_critical` and not yet taken by the writer.
    pub queued: u64,
    /// Records durably written (including the writer's own notes).
    pub written: u64,
    /// Events lost: queue full, writer stopped or failed.
    pub dropped: u64,
    /// Critical events that went to the overflow list (and were kept).
    pub critical_overflowed: u64,
    /// Critical events lost because the overflow list was full too.
    pub critical_dropped: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Spooled events (from CLI commands) appended to the log.
    pub spool_ingested: u64,
    /// Spool files that were too large or unparsable, moved to `spool/rejected/`.
    pub spool_rejected: u64,
    /// A write or fsync failed; nothing more is written until reopened.
    pub failed: bool,
}

/// The audit log. Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Opens or creates the log in `config.dir`: takes the writer lock
    /// (waiting up to `config.lock_wait`, then [`AuditError::Locked`]),
    /// recovers a torn last line, loads or creates the signing key, and
    /// starts the writer, which first ingests the spool.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let dir = config.dir.clone();
        super::files::create_private_dir(&dir).map_err(|source| AuditError::Io {
            path: dir.clone(),
            source,
        })?;
        // Before the key: two processes must not both create one either.
        let writer_lock = WriterLock::acquire(&dir, config.lock_wait)?;
        let key_path = config
            .key_path
            .clone()
            .unwrap_or_else(|| dir.join(KEY_FILE));
        let key = SigningKey::load_or_create(&key_path, &dir.join(PUBLIC_KEY_FILE))?;
        let public_key = key.public_key();
        let store = Store::open(&dir, &public_key)?;
        let recovery = store.recovery;
        let shared = Arc::new(Shared {
            overflow_capacity: config.overflow_capacity,
            ..Shared::default()
        });
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let mut writer = Writer {
            rx,
            shared: Arc::clone(&shared),
            store,
            key,
            every_records: config.checkpoint_every_records.max(1),
            interval: config.checkpoint_interval,
            last_checkpoint: Instant::now(),
            failed: None,
            noted_drops: 0,
            dir: dir.clone(),
            // A zero interval would spin the writer.
            spool_interval: config.spool_interval.max(MIN_SPOOL_INTERVAL),
            last_spool: Instant::now(),
            _lock: writer_lock,
        };
        // On the caller's thread, so that what opening found is in the log when `open` returns.
        writer.start();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| AuditError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx,
                shared,
                thread: Mutex::new(Some(thread)),
                public_key,
                dir,
                recovery,
            }),
        })
    }

    /// Queues an event; never blocks. If the queue is full the event is
    /// dropped, counted in [`AuditStats::dropped`] and logged.
    pub fn record(&self, event: Event) {
        let shared = &self.inner.shared;
        match self.inner.tx.try_send(Msg::Event(stamp(event))) {
            Ok(()) => {
                shared.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => shared.lost("the audit queue is full"),
            Err(TrySendError::Disconnected(_)) => shared.lost("the audit writer has stopped"),
        }
    }

    /// Like [`record`](Self::record) for events that must not be lost
    /// (accepted connections): when the queue is full the event goes to a
    /// bounded overflow list. Never blocks on IO; may take a short lock.
    pub fn record_critical(&self, event: Event) {
        let shared = &self.inner.shared;
        let event = match self.inner.tx.try_send(Msg::Event(stamp(event))) {
            Ok(()) => {
                shared.enqueued.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(TrySendError::Full(Msg::Event(event))) => event,
            Err(_) => {
                shared.critical_lost("the audit writer has stopped");
                return;
            }
        };
        let mut overflow = lock(&shared.overflow);
        if overflow.len() >= shared.overflow_capacity {
            drop(overflow);
            shared.critical_lost("the audit queue and its overflow are full");
            return;
        }
        overflow.push(event);
        drop(overflow);
        shared.enqueued.fetch_add(1, Ordering::Relaxed);
        let n = shared.critical_overflowed.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                critical_overflowed = n,
                "audit queue full: critical audit event kept in the overflow list"
            );
        }
        // If this fails the queue is full, so the writer will wake and
        // drain the overflow after taking a message.
        let _ = self.inner.tx.try_send(Msg::Wake);
    }

    /// Blocks until every event recorded before this call is written and
    /// synced, and a checkpoint covers it. For shutdown and tests.
    pub fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Flush(tx)).is_err() {
            return Err(AuditError::Closed);
        }
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Failed(e)),
            Err(_) => Err(AuditError::Closed),
        }
    }

    /// Writes everything queued, a final checkpoint, and stops the writer.
    /// Later `record` calls count as dropped. A second call returns `Ok`.
    pub fn shutdown(&self) -> Result<(), AuditError> {
        self.inner.shutdown()
    }

    pub fn stats(&self) -> AuditStats {
        let s = &self.inner.shared;
        let enqueued = s.enqueued.load(Ordering::Relaxed);
        let processed = s.processed.load(Ordering::Relaxed);
        AuditStats {
            queued: enqueued.saturating_sub(processed),
            written: s.written.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            critical_overflowed: s.critical_overflowed.load(Ordering::Relaxed),
            critical_dropped: s.critical_dropped.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            spool_ingested: s.spool_ingested.load(Ordering::Relaxed),
            spool_rejected: s.spool_rejected.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// The key checkpoints are signed with; give auditors a copy.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Test hook: holds the writer before it handles its next message, so
    /// tests can fill the queue without sleeping. Not for production use.
    /// Returns once the writer is parked and the queue is empty.
    #[doc(hidden)]
    pub fn pause_writer_for_test(&self) {
        let shared = &self.inner.shared;
        lock(&shared.paused).requested = true;
        // The writer parks where it takes this message, so nothing sent
        // after it has been taken.
        if self.inner.tx.send(Msg::Park).is_err() {
            return;
        }
        let gate = lock(&shared.paused);
        let _parked = shared
            .resume
            .wait_while(gate, |g| !g.parked)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Test hook: releases [`pause_writer_for_test`](Self::pause_writer_for_test).
    #[doc(hidden)]
    pub fn resume_writer_for_test(&self) {
        self.inner.shared.resume_writer();
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

enum Msg {
    Event(Event),
    /// Something is in the overflow list.
    Wake,
    Flush(SyncSender<Result<(), String>>),
    /// Test hook: wait at the gate until resumed.
    Park,
    Shutdown(SyncSender<Result<(), String>>),
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    public_key: PublicKey,
    dir: PathBuf,
    recovery: Recovery,
}

impl Inner {
    fn shutdown(&self) -> Result<(), AuditError> {
        let Some(handle) = lock(&self.thread).take() else {
            return Ok(());
        };
        // A writer held by the test hook (say, by a test that failed while
        // it was paused) must not turn shutdown into a hang.
        self.shared.resume_writer();
        let (tx, rx) = mpsc::sync_channel(1);
        let result = if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            match rx.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AuditError::Failed(e)),
                Err(_) => Err(AuditError::Closed),
            }
        } else {
            Err(AuditError::Closed)
        };
        if handle.join().is_err() {
            tracing::error!("the audit writer thread panicked");
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: make what was recorded durable.
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "audit log: final flush failed");
        }
    }
}

/// State shared by the handles and the writer.
#[derive(Default)]
struct Shared {
    enqueued: AtomicU64,
    processed: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    critical_overflowed: AtomicU64,
    critical_dropped: AtomicU64,
    checkpoints: AtomicU64,
    spool_ingested: AtomicU64,
    spool_rejected: AtomicU64,
    failed: AtomicBool,
    overflow: Mutex<Vec<Event>>,
    overflow_capacity: usize,
    paused: Mutex<Gate>,
    resume: Condvar,
}

/// The test hook's gate in front of the writer.
#[derive(Default)]
struct Gate {
    requested: bool,
    /// The writer is waiting at the gate.
    parked: bool,
}

impl Shared {
    fn lost(&self, why: &str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Loud at first, then at every power of two, so a storm does not
        // also flood the log; the writer records the exact count.
        if n.is_power_of_two() {
            tracing::error!(dropped_total = n, "{why}: audit event dropped");
        }
    }

    fn critical_lost(&self, why: &str) {
        let n = self.critical_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            critical_dropped_total = n,
            "{why}: CRITICAL audit event lost"
        );
    }

    fn wait_while_paused(&self) {
        let mut gate = lock(&self.paused);
        if !gate.requested {
            return;
        }
        gate.parked = true;
        self.resume.notify_all();
        let mut gate = self
            .resume
            .wait_while(gate, |g| g.requested)
            .unwrap_or_else(PoisonError::into_inner);
        gate.parked = false;
    }

    fn resume_writer(&self) {
        lock(&self.paused).requested = false;
        self.resume.notify_all();
    }
}

/// The writer thread's state; owns the store and the key.
struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    store: Store,
    key: SigningKey,
    every_records: u64,
    interval: Duration,
    last_checkpoint: Instant,
    /// Set by the first failed write or fsync.
    failed: Option<String>,
    /// `dropped + critical_dropped` already noted in the log.
    noted_drops: u64,
    /// The audit directory (for the spool).
    dir: PathBuf,
    spool_interval: Duration,
    last_spool: Instant,
    /// Held until the writer stops; dropping it lets the next writer in.
    _lock: WriterLock,
}

#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    flushes: Vec<SyncSender<Result<(), String>>>,
    shutdown: Option<SyncSender<Result<(), String>>>,
}

impl Batch {
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Event(e) => self.events.push(e),
            Msg::Wake | Msg::Park => {}
            Msg::Flush(r) => self.flushes.push(r),
            Msg::Shutdown(r) => self.shutdown = Some(r),
        }
    }
}

impl Writer {
    /// Notes a repaired torn line and ingests the first spool files.
    fn start(&mut self) {
        let r = self.store.recovery;
        if r.torn_log_bytes > 0 {
            let note = Event::new(Action::AuditRecovered, Outcome::Failure)
                .resource(LOG_FILE)
                .reason(format!(
                    "removed {} bytes of an incomplete last line after record {} (a write cut by a crash)",
                    r.torn_log_bytes, r.records
                ));
            self.write(vec![note], 0);
        }
        self.ingest_spool();
    }

    fn run(mut self) {
        loop {
            let mut batch = Batch::default();
            let mut disconnected = false;
            match self.next_message() {
                Ok(m) => self.take(&mut batch, m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            while batch.events.len() < MAX_BATCH && batch.shutdown.is_none() {
                match self.rx.try_recv() {
                    Ok(m) => self.take(&mut batch, m),
                    Err(_) => break,
                }
            }
            let finishing = disconnected || batch.shutdown.is_some();
            if finishing {
                while let Ok(m) = self.rx.try_recv() {
                    batch.take(m);
                }
            }
            let mut events = batch.events;
            events.append(&mut lock(&self.shared.overflow));
            let taken = u64::try_from(events.len()).unwrap_or(u64::MAX);
            self.write(events, taken);
            if finishing || !batch.flushes.is_empty() || self.spool_due() {
                self.ingest_spool();
            }
            if finishing || !batch.flushes.is_empty() || self.checkpoint_due_by_time() {
                self.checkpoint();
            }
            let result = match &self.failed {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            };
            for f in batch.flushes {
                let _ = f.send(result.clone());
            }
            if let Some(s) = batch.shutdown {
                let _ = s.send(result);
                return;
            }
            if disconnected {
                return;
            }
        }
    }

    fn take(&self, batch: &mut Batch, m: Msg) {
        if let Msg::Park = m {
            self.shared.wait_while_paused();
        }
        batch.take(m);
    }

    /// Blocks for the next message, but not past the next time checkpoint
    /// or spool tick.
    fn next_message(&self) -> Result<Msg, RecvTimeoutError> {
        // An interval too large to add (`Duration::MAX`) means no timer.
        let checkpoint = self
            .last_checkpoint
            .checked_add(self.interval)
            .filter(|_| self.unchecked() > 0);
        let spool = self.last_spool.checked_add(self.spool_interval);
        let deadline = match (checkpoint, spool) {
            _ if self.failed.is_some() => None,
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(d) => self
                .rx
                .recv_timeout(d.saturating_duration_since(Instant::now())),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    }

    fn spool_due(&self) -> bool {
        self.last_spool.elapsed() >= self.spool_interval
    }

    /// Appends up to [`MAX_SPOOL_PER_TICK`] spooled events, then deletes
    /// their files; unusable files are noted in the log. Once the writer
    /// has failed, files stay for the next start.
    fn ingest_spool(&mut self) {
        self.last_spool = Instant::now();
        if self.failed.is_some() {
            return;
        }
        let taken = spool::take(&self.dir, MAX_SPOOL_PER_TICK);
        if taken.events.is_empty() && taken.rejected.is_empty() {
            return;
        }
        let mut events = taken.events;
        let ingested = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let rejected = u64::try_from(taken.rejected.len()).unwrap_or(u64::MAX);
        for (name, why) in taken.rejected {
            tracing::error!(file = %name, problem = %why,
                "unusable audit spool file moved to {SPOOL_DIR}/{REJECTED_DIR}/; its event is not in the log");
            events.push(
                Event::new(Action::EventsDropped, Outcome::Failure)
                    .resource(format!("{SPOOL_DIR}/{name}"))
                    .reason(format!(
                        "unusable spooled audit event ({why}); moved to {SPOOL_DIR}/{REJECTED_DIR}/"
                    )),
            );
        }
        self.shared
            .spool_rejected
            .fetch_add(rejected, Ordering::Relaxed);
        self.write(events, 0);
        if self.failed.is_none() {
            spool::remove(&taken.files);
            self.shared
                .spool_ingested
                .fetch_add(ingested, Ordering::Relaxed);
        }
    }

    /// Numbers, chains and writes `events` (`taken` of them came from the
    /// handles), plus a note of any drops since the last note. Checkpoints
    /// every `every_records`, splitting the batch there.
    fn write(&mut self, mut events: Vec<Event>, taken: u64) {
        self.shared.processed.fetch_add(taken, Ordering::Relaxed);
        if let Some(note) = self.drop_note() {
            events.push(note);
        }
        if events.is_empty() {
            return;
        }
        let now = now_ms();
        let mut chunk: Vec<Entry> = Vec::with_capacity(events.len().min(MAX_BATCH));
        for ev in events {
            chunk.push(self.store.chain_next(ev, now));
            let full = chunk.len() >= MAX_BATCH;
            let due = self.unchecked() >= self.every_records;
            if full || due {
                self.commit(&mut chunk);
            }
            if due {
                self.checkpoint();
            }
        }
        self.commit(&mut chunk);
    }

    fn commit(&mut self, chunk: &mut Vec<Entry>) {
        if chunk.is_empty() {
            return;
        }
        let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        if self.failed.is_some() {
            self.shared.dropped.fetch_add(n, Ordering::Relaxed);
        } else if let Err(e) = self.store.append(chunk) {
            self.fail(format!("{}: {e}", self.store.log_path().display()));
            self.shared.dropped.fetch_add(n, Ordering::Relaxed);
        } else {
            self.shared.written.fetch_add(n, Ordering::Relaxed);
        }
        chunk.clear();
    }

    fn checkpoint(&mut self) {
        if self.failed.is_some() || self.unchecked() == 0 {
            return;
        }
        let count = self.store.next_seq - 1;
        let cp = self
            .key
            .sign(Checkpoint::new(count, self.store.frontier.root(), now_ms()));
        match self.store.append_checkpoint(&cp) {
            Ok(()) => {
                self.shared.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.last_checkpoint = Instant::now();
            }
            Err(e) => self.fail(format!("checkpoint: {e}")),
        }
    }

    fn checkpoint_due_by_time(&self) -> bool {
        self.unchecked() > 0 && self.last_checkpoint.elapsed() >= self.interval
    }

    /// Records written (or chained) and not yet covered by a checkpoint.
    fn unchecked(&self) -> u64 {
        (self.store.next_seq - 1).saturating_sub(self.store.checkpointed)
    }

    fn drop_note(&mut self) -> Option<Event> {
        if self.failed.is_some() {
            return None;
        }
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let critical = self.shared.critical_dropped.load(Ordering::Relaxed);
        let total = dropped + critical;
        if total <= self.noted_drops {
            return None;
        }
        let new = total - self.noted_drops;
        self.noted_drops = total;
        tracing::warn!(
            lost = new,
            total,
            critical,
            "audit events were lost to a full queue; recorded in the audit log"
        );
        Some(
            Event::new(Action::EventsDropped, Outcome::Failure)
                .resource(new.to_string())
                .reason(format!(
                    "{new} audit events lost because the queue was full ({total} since start, {critical} of them critical)"
                )),
        )
    }

    fn fail(&mut self, e: String) {
        tracing::error!(error = %e, "audit log write failed: no more audit records until restart");
        self.shared.failed.store(true, Ordering::Relaxed);
        self.failed = Some(e);
    }
}

/// Gives an event its time at the moment it is reported.
fn stamp(mut e: Event) -> Event {
    if e.time_ms.is_none() {
        e.time_ms = Some(now_ms());
    }
    e
}

pub(crate) fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// Locks a std mutex, ignoring poisoning: the data (a list of events, a
/// flag) is valid whatever a panicking holder was doing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
