//! Errors of opening and writing an audit log. Verification, export and
//! proofs have their own (`VerifyError`, `ExportError`, `ProofError`).

use std::io;
use std::path::PathBuf;

use super::checkpoint::KeyError;

/// Why the audit log cannot be opened or did not make records durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A complete line that is not a valid continuation of the log. The
    /// writer refuses to append to a log it cannot extend consistently.
    #[error(
        "{}:{line}: {problem}; run `converge audit verify`, then move the audit directory aside to start a new log",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        line: u64,
        problem: String,
    },
    #[error(
        "the audit log holds {records} records but a signed checkpoint covers {checkpoint_count}: records were removed; run `converge audit verify`"
    )]
    BehindCheckpoint { records: u64, checkpoint_count: u64 },
    #[error(
        "{}: the last checkpoint is not signed by the current audit key (was the key replaced?)",
        path.display()
    )]
    ForeignCheckpoint { path: PathBuf },
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A write or fsync failed earlier; the writer accepts nothing more
    /// until the log is reopened (what was written may end in a torn line).
    #[error("the audit writer failed ({0}) and records nothing until restarted")]
    Failed(String),
    #[error("the audit log is shut down")]
    Closed,
    /// Another process writes this audit directory (see `WRITER_LOCK_FILE`).
    #[error(
        "{}: the audit log is being written by another process{}; one converge server per audit directory (CLI commands hand their records to the running server through the spool)",
        dir.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
}
