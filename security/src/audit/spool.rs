//! The spool: how a process that may not write the log (a `converge` CLI
//! command while the server runs) still gets its events into it.
//!
//! Only the holder of the writer lock appends to `audit.jsonl` (a second
//! appender would fork the hash chain). Anyone else writes each event as a
//! small file into `<audit dir>/spool/`: mode 0600, written to a temporary
//! name, synced, then renamed, so the writer never sees half a file. The
//! lock holder (the server's writer thread at start, on its periodic tick,
//! on `flush` and at shutdown; or a CLI command that found no server) takes
//! at most [`MAX_SPOOL_PER_TICK`] files at a time, appends their events,
//! syncs, and only then deletes the files. A crash between the sync and the
//! delete appends the same event again on the next start: spooled events
//! are delivered at least once, never lost.
//!
//! A file that is too large or does not parse is moved to
//! `spool/rejected/`, counted, logged, and noted in the log as an
//! `events_dropped` record naming the file: never a panic, never silence.
//!
//! [`AuditSink`] is the front end for such a process: it appends directly
//! when it can take the lock, and spools when a server holds it.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::AuditError;
use super::files;
use super::record::{Action, Event, Outcome};
use super::writer::{now_ms, AuditConfig, AuditLog};

/// The spool directory, inside the audit directory.
pub const SPOOL_DIR: &str = "spool";
/// Where unusable spool files are moved, inside the spool directory.
pub const REJECTED_DIR: &str = "rejected";
/// Largest spool file ingested. An event's six text fields are at most
/// 1 KiB each (6 KiB escaped); this bounds what a stray file makes the
/// writer read.
pub const MAX_SPOOL_FILE_BYTES: u64 = 64 * 1024;
/// Spool files ingested per tick at most: bounds the writer's work and
/// memory per wake-up however many files pile up.
pub const MAX_SPOOL_PER_TICK: usize = 256;
/// Directory entries looked at per tick at most, to pick the oldest files
/// among them: bounds memory when the spool is flooded.
const MAX_SPOOL_SCAN: usize = 4096;
/// Suffix of a complete spool file; temporary files end otherwise.
const SPOOL_SUFFIX: &str = ".event";
/// Version of the spool file format.
const SPOOL_VERSION: u32 = 1;

/// Makes spool file names unique within a process.
static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `event` into the spool of the audit directory `audit_dir`
/// (creating the spool 0700 if needed); returns the file's path. The event
/// gets its time now unless it has one.
pub fn spool_event(audit_dir: &Path, event: &Event) -> Result<PathBuf, AuditError> {
    let dir = audit_dir.join(SPOOL_DIR);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    files::create_private_dir(&dir).map_err(io_err(&dir))?;
    let file = SpoolFile::from_event(event);
    // Serializing a struct of strings and integers cannot fail.
    let bytes = serde_json::to_vec(&file).map_err(|e| AuditError::Io {
        path: dir.clone(),
        source: std::io::Error::other(e),
    })?;
    let n = SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed);
    // Zero-padded time first, so that names sort in time order.
    let name = format!(
        "{:016}-{}-{n:08}{SPOOL_SUFFIX}",
        file.time_ms.max(0),
        std::process::id()
    );
    let path = dir.join(name);
    files::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
    Ok(path)
}

/// Where a process that does not know whether a server runs sends its
/// audit events: straight into the log when it can take the writer lock,
/// into the spool when a server holds it.
///
/// ```no_run
/// use converge_security::audit::{Action, AuditConfig, AuditSink, Event, Outcome};
/// # fn main() -> Result<(), converge_security::audit::AuditError> {
/// let mut sink = AuditSink::open(AuditConfig::new("converge-data/audit"))?;
/// // ... do the work ...
/// sink.record(Event::new(Action::AdminCommand, Outcome::Success).resource("cert revoke 5a1f"))?;
/// sink.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub enum AuditSink {
    /// This process holds the writer lock (no server runs).
    Direct(AuditLog),
    /// A server holds the lock; events go to the spool in this audit directory.
    Spool(PathBuf),
}

impl AuditSink {
    /// Takes the writer lock at once, or falls back to the spool when
    /// another process holds it. Any other problem (a damaged log, a
    /// directory that cannot be written) is an error, so that a caller can
    /// refuse to act when it could not audit the action.
    pub fn open(config: AuditConfig) -> Result<AuditSink, AuditError> {
        let dir = config.dir.clone();
        let mut config = config;
        config.lock_wait = Duration::ZERO;
        match AuditLog::open(config) {
            Ok(log) => Ok(AuditSink::Direct(log)),
            Err(AuditError::Locked { .. }) => {
                let spool = dir.join(SPOOL_DIR);
                files::create_private_dir(&spool).map_err(|source| AuditError::Io {
                    path: spool,
                    source,
                })?;
                Ok(AuditSink::Spool(dir))
            }
            Err(e) => Err(e),
        }
    }

    /// Records `event`: queued for this process's writer, or spooled now.
    pub fn record(&self, event: Event) -> Result<(), AuditError> {
        match self {
            AuditSink::Direct(log) => {
                log.record_critical(event);
                Ok(())
            }
            AuditSink::Spool(dir) => spool_event(dir, &event).map(drop),
        }
    }

    /// Whether events go to the spool (a server holds the log).
    pub fn is_spooling(&self) -> bool {
        matches!(self, AuditSink::Spool(_))
    }

    /// Makes every recorded event durable: writes and signs them (direct),
    /// or nothing more to do (spooled files are already synced).
    pub fn close(self) -> Result<(), AuditError> {
        match self {
            AuditSink::Direct(log) => {
                log.shutdown()?;
                let s = log.stats();
                if s.dropped > 0 || s.critical_dropped > 0 {
                    return Err(AuditError::Failed(format!(
                        "{} audit events were not written",
                        s.dropped + s.critical_dropped
                    )));
                }
                Ok(())
            }
            AuditSink::Spool(_) => Ok(()),
        }
    }
}

/// One spool file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    v: u32,
    time_ms: i64,
    actor: String,
    zone: Option<String>,
    source: Option<String>,
    action: String,
    resource: Option<String>,
    outcome: String,
    reason: Option<String>,
    rule: Option<String>,
}

impl SpoolFile {
    fn from_event(e: &Event) -> SpoolFile {
        SpoolFile {
            v: SPOOL_VERSION,
            time_ms: e.time_ms.unwrap_or_else(now_ms),
            actor: e.actor.clone(),
            zone: e.zone.clone(),
            source: e.source.clone(),
            action: e.action.as_str().to_owned(),
            resource: e.resource.clone(),
            outcome: e.outcome.as_str().to_owned(),
            reason: e.reason.clone(),
            rule: e.rule.clone(),
        }
    }

    fn into_event(self) -> Result<Event, String> {
        if self.v != SPOOL_VERSION {
            return Err(format!("unknown spool format version {}", self.v));
        }
        let action: Action = self.action.parse().map_err(|e| format!("action: {e}"))?;
        let outcome: Outcome = self.outcome.parse().map_err(|e| format!("outcome: {e}"))?;
        // Through the builders, so every field is bounded as the writer's own are.
        let mut e = Event::new(action, outcome)
            .at(self.time_ms)
            .actor(self.actor);
        if let Some(v) = self.zone {
            e = e.zone(v);
        }
        if let Some(v) = self.source {
            e = e.source(v);
        }
        if let Some(v) = self.resource {
            e = e.resource(v);
        }
        if let Some(v) = self.reason {
            e = e.reason(v);
        }
        if let Some(v) = self.rule {
            e = e.rule(v);
        }
        Ok(e)
    }
}

/// What one look into the spool found.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// Events to append, with the files to delete once they are synced.
    pub(crate) events: Vec<Event>,
    pub(crate) files: Vec<PathBuf>,
    /// Files moved aside (or removed if they could not be moved), with why.
    pub(crate) rejected: Vec<(String, String)>,
}

/// Reads up to `max` spool files of `audit_dir`, oldest names first.
/// Unusable files are moved to `spool/rejected/` and reported.
pub(crate) fn take(audit_dir: &Path, max: usize) -> Taken {
    let dir = audit_dir.join(SPOOL_DIR);
    let mut taken = Taken::default();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return taken,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the audit spool");
            return taken;
        }
    };
    let mut names: Vec<String> = entries
        .take(MAX_SPOOL_SCAN)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(SPOOL_SUFFIX) && !n.starts_with('.'))
        .collect();
    names.sort_unstable();
    names.truncate(max);
    for name in names {
        let path = dir.join(&name);
        match read_event(&path) {
            Ok(event) => {
                taken.events.push(event);
                taken.files.push(path);
            }
            Err(why) => {
                reject(&dir, &name);
                taken.rejected.push((name, why));
            }
        }
    }
    taken
}

/// Deletes ingested spool files (their events are synced in the log).
pub(crate) fn remove(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = fs::remove_file(f) {
            // It would be ingested again, a duplicate rather than a loss.
            tracing::error!(path = %f.display(), error = %e, "cannot remove an ingested audit spool file");
        }
    }
}

fn read_event(path: &Path) -> Result<Event, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_SPOOL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_SPOOL_FILE_BYTES {
        return Err(format!("larger than {MAX_SPOOL_FILE_BYTES} bytes"));
    }
    let file: SpoolFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    file.into_event()
}

/// Moves an unusable file to `spool/rejected/`, or deletes it if it cannot
/// be moved, so it is not taken again on every tick.
fn reject(spool: &Path, name: &str) {
    let from = spool.join(name);
    let rejected = spool.join(REJECTED_DIR);
    let moved =
        files::create_private_dir(&rejected).and_then(|()| fs::rename(&from, rejected.join(name)));
    if let Err(e) = moved {
        tracing::error!(path = %from.display(), error = %e, "cannot move an unusable audit spool file aside; deleting it");
        let _ = fs::remove_file(&from);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn spool_files_round_trip_and_bad_ones_go_aside() {
        let dir = tempfile::tempdir().unwrap();
        let ev = Event::new(Action::CertRevoked, Outcome::Success)
            .at(1_714_039_200_123)
            .actor("admin")
            .resource("5a1f")
            .reason("keyCompromise");
        let path = spool_event(dir.path(), &ev).unwrap();
        std::fs::write(dir.path().join(SPOOL_DIR).join("0-x.event"), b"{").unwrap();
        let t = take(dir.path(), 10);
        assert_eq!(t.events, vec![ev]);
        assert_eq!(t.files, vec![path]);
        assert_eq!(t.rejected.len(), 1);
        assert!(dir
            .path()
            .join(SPOOL_DIR)
            .join(REJECTED_DIR)
            .join("0-x.event")
            .exists());
    }
}
