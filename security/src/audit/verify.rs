//! `converge audit verify`: re-reads a log and its checkpoints and proves
//! them intact, or names the first record that is not.
//!
//! Per line, in order: the line must be complete and a canonical, self-
//! consistent entry (hash = SHA-256(prev || record)) — any single changed
//! bit fails here, on the line that holds it; then its `seq` must be the
//! next one (else it tells a deletion from a reordering by looking ahead);
//! then its `prev` must be the previous line's hash. Each checkpoint must
//! carry a valid signature and equal the Merkle tree head of the first
//! `count` records, and the log must hold at least the last checkpoint's
//! count. Records after the last checkpoint are protected by the chain
//! only: dropping them from the end goes unnoticed (docs/SECURITY.md).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checkpoint::{Checkpoint, KeyError, PublicKey, SignedCheckpoint};
use super::digest::Digest;
use super::files::{CHECKPOINT_FILE, LOG_FILE, PUBLIC_KEY_FILE};
use super::merkle::Frontier;
use super::record::{format_time_ms, Entry};
use super::store::{LineKind, Lines};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the last checkpoint, protected by the chain only.
    pub unsigned_tail: u64,
    /// Hash of the last record.
    pub head: Digest,
    /// Merkle tree head of all records.
    pub root: Digest,
}

/// The first problem found. Record problems name the record by the
/// sequence number expected on that line and by the 1-based line number.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    PublicKey(#[from] KeyError),
    #[error("record {seq} (line {line}) was modified: {problem}")]
    Modified {
        seq: u64,
        line: u64,
        problem: String,
    },
    #[error("record {seq} (line {line}) does not chain to record {prev}: one of the two was rewritten with a recomputed hash", prev = seq.saturating_sub(1))]
    ChainBroken { seq: u64, line: u64 },
    #[error("{} deleted: line {line} holds record {found_seq}", deleted(*expected_seq, *found_seq))]
    Deleted {
        expected_seq: u64,
        found_seq: u64,
        line: u64,
    },
    #[error("records were reordered: line {line} holds record {found_seq} where record {expected_seq} belongs")]
    Reordered {
        line: u64,
        found_seq: u64,
        expected_seq: u64,
    },
    #[error("record {seq} (line {line}) is incomplete: the file was cut inside it")]
    Incomplete { seq: u64, line: u64 },
    #[error("the log was truncated: it holds {records} records but a signed checkpoint covers {checkpoint_count}")]
    Truncated { records: u64, checkpoint_count: u64 },
    #[error("checkpoint {index} ({CHECKPOINT_FILE} line {index}) is malformed: {problem}")]
    CheckpointMalformed { index: u64, problem: String },
    #[error("checkpoint {index} (of {count} records) has a bad signature: it was altered or signed by another key")]
    CheckpointSignature { index: u64, count: u64 },
    #[error("checkpoint {index} covers {count} records but checkpoint {} before it covers more", index - 1)]
    CheckpointOrder { index: u64, count: u64 },
    #[error("checkpoint {index} does not match records 1..{count}: a record up to {count} was rewritten together with the chain")]
    CheckpointMismatch { index: u64, count: u64 },
}

impl VerifyError {
    /// The line of `audit.jsonl` the problem is on, for record problems.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::Modified { line, .. }
            | VerifyError::ChainBroken { line, .. }
            | VerifyError::Deleted { line, .. }
            | VerifyError::Reordered { line, .. }
            | VerifyError::Incomplete { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Verifies the log in `dir` against `key`.
pub fn verify(dir: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    let log_path = dir.join(LOG_FILE);
    let log = File::open(&log_path).map_err(|source| VerifyError::Io {
        path: log_path.clone(),
        source,
    })?;
    let cp_path = dir.join(CHECKPOINT_FILE);
    // Checkpoints are few (one per thousand records by default): read them
    // whole. A log copied without its checkpoints still has its chain checked.
    let checkpoints = match std::fs::read(&cp_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(VerifyError::Io {
                path: cp_path,
                source,
            })
        }
    };
    verify_streams(BufReader::new(log), checkpoints.as_slice(), key).map_err(|e| match e {
        VerifyError::Io { source, .. } => VerifyError::Io {
            path: log_path,
            source,
        },
        e => e,
    })
}

/// [`verify`] over any two streams (e.g. a copy received by a SIEM).
pub fn verify_streams(
    log: impl BufRead,
    checkpoints: impl BufRead,
    key: &PublicKey,
) -> Result<VerifyReport, VerifyError> {
    let cps = read_checkpoints(checkpoints, key)?;
    let mut pending = cps.iter().zip(1u64..).peekable();
    let mut frontier = Frontier::default();
    let mut head = Digest::ZERO;
    let mut expected = 1u64;
    let mut lines = Lines::new(log);
    check_due(&mut pending, &frontier)?;
    while let Some(info) = lines.next_line().map_err(io_err)? {
        let line = info.number;
        match info.kind {
            LineKind::Complete => {}
            LineKind::Unterminated => {
                return Err(VerifyError::Incomplete {
                    seq: expected,
                    line,
                })
            }
            LineKind::TooLong => {
                return Err(VerifyError::Modified {
                    seq: expected,
                    line,
                    problem: "the line is too long".into(),
                })
            }
        }
        let entry = Entry::decode(lines.bytes()).map_err(|e| VerifyError::Modified {
            seq: expected,
            line,
            problem: e.to_string(),
        })?;
        let found = entry.record.seq;
        if found != expected {
            if found < expected || seq_further_down(&mut lines, expected)? {
                return Err(VerifyError::Reordered {
                    line,
                    found_seq: found,
                    expected_seq: expected,
                });
            }
            return Err(VerifyError::Deleted {
                expected_seq: expected,
                found_seq: found,
                line,
            });
        }
        if entry.prev != head {
            return Err(VerifyError::ChainBroken { seq: found, line });
        }
        head = entry.hash;
        frontier.push(entry.record.leaf_hash());
        expected += 1;
        check_due(&mut pending, &frontier)?;
    }
    let records = expected - 1;
    let last = cps.last().map(|c| c.checkpoint);
    if let Some(last) = last {
        if last.count > records {
            return Err(VerifyError::Truncated {
                records,
                checkpoint_count: last.count,
            });
        }
    }
    Ok(VerifyReport {
        records,
        checkpoints: u64::try_from(cps.len()).unwrap_or(u64::MAX),
        last_checkpoint: last,
        unsigned_tail: records - last.map_or(0, |c| c.count),
        head,
        root: frontier.root(),
    })
}

/// Verifies `dir` with the public key at `public_key`, or `dir/audit.pub`,
/// and returns the text `converge audit verify` prints on success.
pub fn cli_verify(dir: &Path, public_key: Option<&Path>) -> Result<String, VerifyError> {
    let own_key = dir.join(PUBLIC_KEY_FILE);
    let key_path = public_key.unwrap_or(&own_key);
    let key = PublicKey::from_file(key_path)?;
    let r = verify(dir, &key)?;
    let mut out = format!("{}: OK\n", dir.display());
    out += &format!(
        "  records:     {}{}\n",
        r.records,
        if r.records > 0 {
            format!(" (seq 1..{}), head {}", r.records, r.head)
        } else {
            String::new()
        }
    );
    match r.last_checkpoint {
        Some(c) => {
            out += &format!(
                "  checkpoints: {} signed, the last covering {} records, signed {}\n",
                r.checkpoints,
                c.count,
                format_time_ms(c.time_ms)
            );
        }
        None => out += "  checkpoints: none\n",
    }
    out += &format!("  tree head:   {}\n", r.root);
    out += &format!("  public key:  {key} ({})\n", key_path.display());
    if r.unsigned_tail > 0 {
        out += &format!(
            "note: the last {} records are after the last checkpoint: protected by the hash chain only, their removal from the end would not be detected\n",
            r.unsigned_tail
        );
    }
    if public_key.is_none() {
        out += "note: the public key was read from the log's own directory; pass the copy kept elsewhere for a check an intruder cannot defeat\n";
    }
    Ok(out)
}

/// Reads and checks every checkpoint: well formed, signed by `key`,
/// counts not decreasing.
fn read_checkpoints(
    input: impl BufRead,
    key: &PublicKey,
) -> Result<Vec<SignedCheckpoint>, VerifyError> {
    let mut lines = Lines::new(input);
    let mut out: Vec<SignedCheckpoint> = Vec::new();
    while let Some(info) = lines.next_line().map_err(io_err)? {
        let index = info.number;
        let malformed = |problem: String| VerifyError::CheckpointMalformed { index, problem };
        match info.kind {
            LineKind::Complete => {}
            LineKind::Unterminated => return Err(malformed("the file was cut inside it".into())),
            LineKind::TooLong => return Err(malformed("the line is too long".into())),
        }
        let cp = SignedCheckpoint::decode(lines.bytes()).map_err(malformed)?;
        let count = cp.checkpoint.count;
        if !cp.verify(key) {
            return Err(VerifyError::CheckpointSignature { index, count });
        }
        if out.last().is_some_and(|p| p.checkpoint.count > count) {
            return Err(VerifyError::CheckpointOrder { index, count });
        }
        out.push(cp);
    }
    Ok(out)
}

/// Checks every checkpoint whose count the frontier has reached.
fn check_due<'a>(
    pending: &mut std::iter::Peekable<impl Iterator<Item = (&'a SignedCheckpoint, u64)>>,
    frontier: &Frontier,
) -> Result<(), VerifyError> {
    while let Some((cp, index)) = pending.next_if(|(c, _)| c.checkpoint.count == frontier.size()) {
        if cp.checkpoint.root != frontier.root() {
            return Err(VerifyError::CheckpointMismatch {
                index,
                count: cp.checkpoint.count,
            });
        }
    }
    Ok(())
}

/// Whether a later line holds record `seq` (then the log was reordered
/// rather than cut). Lines that do not parse are skipped.
fn seq_further_down(lines: &mut Lines<impl BufRead>, seq: u64) -> Result<bool, VerifyError> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    while let Some(info) = lines.next_line().map_err(io_err)? {
        if info.kind == LineKind::TooLong {
            continue;
        }
        if serde_json::from_slice::<SeqOnly>(lines.bytes()).is_ok_and(|s| s.seq == seq) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn deleted(expected: u64, found: u64) -> String {
    if found > expected + 1 {
        format!("records {expected}..{} were", found - 1)
    } else {
        format!("record {expected} was")
    }
}

/// The path is filled in by [`verify`], which knows it.
fn io_err(source: io::Error) -> VerifyError {
    VerifyError::Io {
        path: PathBuf::new(),
        source,
    }
}
