//! The tamper-evident audit log (issue 5): every security-relevant event
//! as a structured, hash-chained record, stored durably, with periodic
//! Ed25519-signed checkpoints over an RFC 9162 Merkle tree of the records.
//!
//! How the broker uses it:
//!
//! ```no_run
//! use converge_security::audit::{Action, AuditConfig, AuditLog, Event, Outcome};
//! # fn main() -> Result<(), converge_security::audit::AuditError> {
//! // At startup, with the data directory:
//! let audit = AuditLog::open(AuditConfig::new("/var/lib/converge/audit"))?;
//! // On each event; never blocks. Clone the handle into each task.
//! audit.record(
//!     Event::new(Action::PublishDenied, Outcome::Denied)
//!         .actor("cell-a.press-01")
//!         .zone("cell-a")
//!         .source("10.1.2.3:50122")
//!         .resource("plant1/cell-b/cmd")
//!         .rule("NoConduit"),
//! );
//! // Accepted connections must not be lost silently:
//! audit.record_critical(Event::new(Action::Connect, Outcome::Success).actor("cell-a.press-01"));
//! // For metrics: audit.stats() (queued, written, dropped, critical_dropped, ...).
//! // At shutdown: everything durable, then a final signed checkpoint.
//! audit.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! The CLI is a thin wrapper: `converge audit verify DIR [--public-key F]`
//! prints [`cli_verify`]'s text or its error (exit non-zero);
//! `converge audit export DIR --since T --format jsonl|syslog|cef` calls
//! [`export`] with [`parse_time`] and `ExportFormat::from_str` on the
//! arguments, writing to stdout; a prefix proof is [`prove_prefix`] and
//! [`ConsistencyProof::to_json`].
//!
//! Code map: `record` (what is stored, its canonical bytes), `merkle`
//! (RFC 9162 tree heads and consistency proofs, pure), `checkpoint` (keys,
//! signatures), `store` (files, fsync, crash recovery), `writer` (the
//! non-blocking handle and the writer thread), `verify`, `export`. Only
//! `store`, `checkpoint`'s key files and the readers in `verify`/`export`
//! touch the filesystem. File formats: docs/FORMAT.md §9; threat model:
//! docs/SECURITY.md, "Audit log".

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod checkpoint;
mod digest;
mod error;
mod export;
mod files;
pub mod merkle;
mod record;
mod spool;
mod store;
mod verify;
mod writer;

pub use checkpoint::{Checkpoint, KeyError, PublicKey, SignedCheckpoint, SigningKey};
pub use digest::{BadHex, Digest};
pub use error::AuditError;
pub use export::{
    export, parse_time, prove_prefix, render, tree_head, verify_prefix, ConsistencyProof,
    ExportError, ExportFormat, ExportOptions, SYSLOG_SD_ID,
};
pub use files::{CHECKPOINT_FILE, KEY_FILE, LOG_FILE, PUBLIC_KEY_FILE, WRITER_LOCK_FILE};
pub use merkle::ProofError;
pub use record::{
    format_time_ms, Action, Entry, Event, LineError, Outcome, Record, UnknownName, MAX_FIELD_BYTES,
};
pub use spool::{
    spool_event, AuditSink, MAX_SPOOL_FILE_BYTES, MAX_SPOOL_PER_TICK, REJECTED_DIR, SPOOL_DIR,
};
pub use store::{Recovery, MAX_LINE_BYTES};
pub use verify::{cli_verify, verify, verify_streams, VerifyError, VerifyReport};
pub use writer::{
    AuditConfig, AuditLog, AuditStats, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS,
    DEFAULT_LOCK_WAIT, DEFAULT_OVERFLOW_CAPACITY, DEFAULT_QUEUE_CAPACITY, DEFAULT_SPOOL_INTERVAL,
};
