//! Durable, append-only storage of one audit directory: `audit.jsonl` (one
//! [`Entry`] per line) and `checkpoints.jsonl` (one [`SignedCheckpoint`]
//! per line). Only the writer thread appends; every append is followed by
//! `sync_data` before it counts as written.
//!
//! Opening recovers from a crash: a last line without its newline is a
//! write that was cut short. It is completed if it is a whole valid next
//! record, otherwise truncated, and either way counted in [`Recovery`]
//! (the writer also records an `audit_recovered` event). A complete line
//! that does not continue the chain is never dropped: opening fails.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::checkpoint::{PublicKey, SignedCheckpoint};
use super::digest::Digest;
use super::error::AuditError;
use super::files::{self, CHECKPOINT_FILE, LOG_FILE};
use super::merkle::Frontier;
use super::record::{Entry, Event};

/// Longest line accepted when reading. A record's six text fields are at
/// most 1 KiB each, 6 KiB once every byte is escaped: 64 KiB leaves room
/// and bounds what a damaged or hostile file makes a reader buffer.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// What opening found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Records already in the log.
    pub records: u64,
    /// Checkpoints already in the log.
    pub checkpoints: u64,
    /// Bytes of an incomplete last record line that were removed.
    pub torn_log_bytes: u64,
    /// Bytes of an incomplete last checkpoint line that were removed.
    pub torn_checkpoint_bytes: u64,
    /// The last record line lacked only its newline, which was added.
    pub completed_last_line: bool,
}

pub(crate) struct Store {
    log_path: PathBuf,
    log: File,
    checkpoints_path: PathBuf,
    checkpoints: File,
    /// Sequence number of the next record.
    pub(crate) next_seq: u64,
    /// Hash of the last record (the next record's `prev`).
    pub(crate) head: Digest,
    pub(crate) frontier: Frontier,
    /// Records covered by the last checkpoint.
    pub(crate) checkpointed: u64,
    pub(crate) recovery: Recovery,
}

impl Store {
    /// Opens (creating if needed) the log in `dir` and recovers its tail.
    /// `key` must have signed the last checkpoint, if any.
    pub(crate) fn open(dir: &Path, key: &PublicKey) -> Result<Store, AuditError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        files::create_private_dir(dir).map_err(io_err(dir))?;
        let log_path = dir.join(LOG_FILE);
        let checkpoints_path = dir.join(CHECKPOINT_FILE);
        let (log, _) = files::open_append(&log_path).map_err(io_err(&log_path))?;
        let (checkpoints, _) =
            files::open_append(&checkpoints_path).map_err(io_err(&checkpoints_path))?;
        let mut store = Store {
            log_path,
            log,
            checkpoints_path,
            checkpoints,
            next_seq: 1,
            head: Digest::ZERO,
            frontier: Frontier::default(),
            checkpointed: 0,
            recovery: Recovery::default(),
        };
        store.recover_log()?;
        store.recover_checkpoints(key)?;
        Ok(store)
    }

    /// Numbers and chains the next record in memory; [`Self::append`]
    /// writes it. (After a failed append nothing is written again, so the
    /// in-memory tip running ahead of the file does no harm.)
    pub(crate) fn chain_next(&mut self, ev: Event, now_ms: i64) -> Entry {
        let entry = ev.into_record(self.next_seq, now_ms).chain(self.head);
        self.take(&entry);
        entry
    }

    /// Appends entries and syncs them to disk.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = String::with_capacity(entries.len() * 320);
        for e in entries {
            buf.push_str(&e.encode());
            buf.push('\n');
        }
        // One write per batch: a crash leaves at most one torn line.
        self.log.write_all(buf.as_bytes())?;
        self.log.sync_data()
    }

    /// Appends a checkpoint and syncs it. Called only after the records it
    /// covers are synced, so a checkpoint never covers records not on disk.
    pub(crate) fn append_checkpoint(&mut self, cp: &SignedCheckpoint) -> io::Result<()> {
        let mut line = cp.encode();
        line.push('\n');
        self.checkpoints.write_all(line.as_bytes())?;
        self.checkpoints.sync_data()?;
        self.checkpointed = cp.checkpoint.count;
        Ok(())
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn recover_log(&mut self) -> Result<(), AuditError> {
        let path = self.log_path.clone();
        let damaged = |line: u64, problem: String| AuditError::Damaged {
            path: path.clone(),
            line,
            problem,
        };
        // A second handle (sharing the offset, which appends ignore) so
        // that reading does not borrow `self`.
        let reader = self.log.try_clone().map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let mut lines = Lines::new(BufReader::new(reader));
        let mut torn: Option<(u64, u64, Vec<u8>)> = None;
        while let Some(line) = lines.next_line().map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })? {
            match line.kind {
                LineKind::Complete => {
                    let entry = Entry::decode(lines.bytes())
                        .map_err(|e| damaged(line.number, e.to_string()))?;
                    self.check_next(&entry)
                        .map_err(|p| damaged(line.number, p))?;
                    self.take(&entry);
                }
                LineKind::TooLong => {
                    return Err(damaged(line.number, "the line is too long".into()));
                }
                LineKind::Unterminated => {
                    torn = Some((line.number, line.start, lines.bytes().to_vec()));
                }
            }
        }
        drop(lines);
        if let Some((number, start, bytes)) = torn {
            let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            let whole = Entry::decode(&bytes)
                .ok()
                .filter(|e| self.check_next(e).is_ok());
            let io_err = |source| AuditError::Io {
                path: path.clone(),
                source,
            };
            match whole {
                Some(entry) => {
                    // Only the newline was lost: keep the record.
                    self.log.write_all(b"\n").map_err(io_err)?;
                    self.log.sync_data().map_err(io_err)?;
                    self.take(&entry);
                    self.recovery.completed_last_line = true;
                    tracing::warn!(path = %path.display(), line = number,
                        "audit log: completed the last record, whose newline a crash cut off");
                }
                None => {
                    self.log.set_len(start).map_err(io_err)?;
                    self.log.sync_data().map_err(io_err)?;
                    self.recovery.torn_log_bytes = len;
                    tracing::warn!(path = %path.display(), line = number, bytes = len,
                        "audit log: removed an incomplete last line (a write cut by a crash)");
                }
            }
        }
        self.recovery.records = self.next_seq - 1;
        Ok(())
    }

    fn recover_checkpoints(&mut self, key: &PublicKey) -> Result<(), AuditError> {
        let path = self.checkpoints_path.clone();
        let damaged = |line: u64, problem: String| AuditError::Damaged {
            path: path.clone(),
            line,
            problem,
        };
        let mut lines = Lines::new(BufReader::new(&self.checkpoints));
        let mut last: Option<SignedCheckpoint> = None;
        let mut torn: Option<(u64, u64)> = None;
        let mut count = 0u64;
        while let Some(line) = lines.next_line().map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })? {
            match line.kind {
                LineKind::Complete => {
                    let cp = SignedCheckpoint::decode(lines.bytes())
                        .map_err(|p| damaged(line.number, p))?;
                    if last.is_some_and(|l| l.checkpoint.count > cp.checkpoint.count) {
                        return Err(damaged(line.number, "the count went down".into()));
                    }
                    last = Some(cp);
                    count += 1;
                }
                LineKind::TooLong => {
                    return Err(damaged(line.number, "the line is too long".into()))
                }
                LineKind::Unterminated => {
                    let len = u64::try_from(lines.bytes().len()).unwrap_or(u64::MAX);
                    torn = Some((line.start, len));
                }
            }
        }
        drop(lines);
        if let Some((start, len)) = torn {
            let io_err = |source| AuditError::Io {
                path: path.clone(),
                source,
            };
            // A checkpoint cut short is rewritten by the next one.
            self.checkpoints.set_len(start).map_err(io_err)?;
            self.checkpoints.sync_data().map_err(io_err)?;
            self.recovery.torn_checkpoint_bytes = len;
            tracing::warn!(path = %path.display(), bytes = len,
                "audit log: removed an incomplete last checkpoint line");
        }
        if let Some(cp) = last {
            if !cp.verify(key) {
                return Err(AuditError::ForeignCheckpoint { path });
            }
            let records = self.next_seq - 1;
            if cp.checkpoint.count > records {
                return Err(AuditError::BehindCheckpoint {
                    records,
                    checkpoint_count: cp.checkpoint.count,
                });
            }
            self.checkpointed = cp.checkpoint.count;
        }
        self.recovery.checkpoints = count;
        Ok(())
    }

    fn check_next(&self, e: &Entry) -> Result<(), String> {
        if e.record.seq != self.next_seq {
            return Err(format!(
                "it holds record {} where record {} belongs",
                e.record.seq, self.next_seq
            ));
        }
        if e.prev != self.head {
            return Err("it does not chain to the previous record".into());
        }
        Ok(())
    }

    fn take(&mut self, e: &Entry) {
        self.frontier.push(e.record.leaf_hash());
        self.head = e.hash;
        self.next_seq += 1;
    }
}

/// How a line read by [`Lines`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// Ended by a newline (not included in the bytes).
    Complete,
    /// The file ended first.
    Unterminated,
    /// Longer than [`MAX_LINE_BYTES`]; skipped, bytes empty.
    TooLong,
}

/// Where a line read by [`Lines`] is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineInfo {
    /// 1-based.
    pub(crate) number: u64,
    /// Byte offset of its first byte.
    pub(crate) start: u64,
    pub(crate) kind: LineKind,
}

/// Reads newline-terminated lines with a length bound.
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    number: u64,
    offset: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            number: 0,
            offset: 0,
        }
    }

    /// The next line; its bytes (without the newline) are in [`Self::bytes`].
    pub(crate) fn next_line(&mut self) -> io::Result<Option<LineInfo>> {
        self.buf.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let n = (&mut self.inner)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let start = self.offset;
        let mut len = u64::try_from(n).unwrap_or(u64::MAX);
        let kind = if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            LineKind::Complete
        } else if self.buf.len() > MAX_LINE_BYTES {
            self.buf.clear();
            len += skip_line(&mut self.inner)?;
            LineKind::TooLong
        } else {
            LineKind::Unterminated
        };
        self.offset += len;
        Ok(Some(LineInfo {
            number: self.number,
            start,
            kind,
        }))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Consumes up to and including the next newline; returns the bytes consumed.
fn skip_line<R: BufRead>(r: &mut R) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        r.consume(used);
        total += u64::try_from(used).unwrap_or(u64::MAX);
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn lines_report_kinds_and_offsets() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("a\n{long}\nbc\nd");
        let mut l = Lines::new(text.as_bytes());
        let a = l.next_line().unwrap().unwrap();
        assert_eq!((a.number, a.start, a.kind), (1, 0, LineKind::Complete));
        assert_eq!(l.bytes(), b"a");
        let t = l.next_line().unwrap().unwrap();
        assert_eq!(t.kind, LineKind::TooLong);
        let b = l.next_line().unwrap().unwrap();
        assert_eq!(b.start, 2 + long.len() as u64 + 1);
        assert_eq!((b.kind, l.bytes()), (LineKind::Complete, &b"bc"[..]));
        let d = l.next_line().unwrap().unwrap();
        assert_eq!(
            (d.number, d.kind, l.bytes()),
            (4, LineKind::Unterminated, &b"d"[..])
        );
        assert!(l.next_line().unwrap().is_none());
    }
}
