//! `converge audit export`: records in a SIEM's format, and proofs that an
//! exported copy is a prefix of today's log.
//!
//! Formats, one record per line:
//! - `jsonl`: the stored line with a readable `"time"` first;
//! - `syslog`: RFC 5424, facility 10 (authpriv, "security/authorization
//!   messages" kept private: records name identities and addresses), the
//!   fields as structured data `[converge@32473 …]`;
//! - `cef`: ArcSight Common Event Format 0.
//!
//! Text from peers (identities, topics) ends up here, so every format
//! escapes what its receivers split on and no value can start a new line:
//! a hostile certificate name cannot forge a second event.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::digest::Digest;
use super::files::LOG_FILE;
use super::merkle::{self, ProofError};
use super::record::{Action, Entry, Outcome};
use super::store::{LineKind, Lines};

/// RFC 5424 SD-ID of the audit fields. 32473 is the private enterprise
/// number RFC 5612 reserves for documentation; replace it with Converge's
/// own once registered (receivers match on the whole SD-ID).
pub const SYSLOG_SD_ID: &str = "converge@32473";
/// RFC 5424 facility 10: security/authorization messages (private).
const SYSLOG_FACILITY: u8 = 10;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    Jsonl,
    Syslog,
    Cef,
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "syslog" => Ok(ExportFormat::Syslog),
            "cef" => Ok(ExportFormat::Cef),
            _ => Err(ExportError::UnknownFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Syslog => "syslog",
            ExportFormat::Cef => "cef",
        })
    }
}

/// What to export and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// Only records at or after this time (unix milliseconds).
    pub since: Option<i64>,
    /// Only records before this time (unix milliseconds).
    pub until: Option<i64>,
    /// The syslog HOSTNAME; `-` (nil) when empty.
    pub hostname: String,
}

impl ExportOptions {
    pub fn new(format: ExportFormat) -> Self {
        Self {
            format,
            since: None,
            until: None,
            hostname: String::new(),
        }
    }
}

/// Why an export or a prefix proof failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("writing the export: {0}")]
    Write(io::Error),
    #[error("{LOG_FILE} line {line} is damaged ({problem}); run `converge audit verify`")]
    Damaged { line: u64, problem: String },
    #[error("unknown export format {0:?} (expected jsonl, syslog or cef)")]
    UnknownFormat(String),
    #[error(
        "not a time: {0:?} (expected RFC 3339, e.g. 2024-04-25T10:00:00Z, or unix milliseconds)"
    )]
    BadTime(String),
    #[error("the log holds {records} records, fewer than the {requested} asked for")]
    TooFew { records: u64, requested: u64 },
}

/// Writes the records of the log in `dir` to `out`; returns how many.
pub fn export(
    dir: &Path,
    options: &ExportOptions,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut n = 0u64;
    for_each_entry(dir, |entry| {
        let t = entry.record.time_ms;
        if options.since.is_some_and(|s| t < s) || options.until.is_some_and(|u| t >= u) {
            return Ok(());
        }
        let mut line = render(entry, options.format, &options.hostname);
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(ExportError::Write)?;
        n += 1;
        Ok(())
    })?;
    out.flush().map_err(ExportError::Write)?;
    Ok(n)
}

/// One record in `format`, without the newline.
pub fn render(entry: &Entry, format: ExportFormat, hostname: &str) -> String {
    match format {
        ExportFormat::Jsonl => render_jsonl(entry),
        ExportFormat::Syslog => render_syslog(entry, hostname),
        ExportFormat::Cef => render_cef(entry),
    }
}

/// Parses `--since` and `--until`: RFC 3339 (`2024-04-25T10:00:00Z`, any offset) or
/// unix milliseconds.
pub fn parse_time(s: &str) -> Result<i64, ExportError> {
    let bad = || ExportError::BadTime(s.to_owned());
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|_| bad())
}

/// A proof that the first `old_size` records (tree head `old_root`) are a
/// prefix of the `new_size` records with tree head `new_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Digest,
    pub new_root: Digest,
    /// RFC 9162 §2.1.4 consistency path.
    pub path: Vec<Digest>,
}

impl ConsistencyProof {
    /// Checks the proof against the roots it carries. An auditor compares
    /// `old_root` with the root of their copy (or its signed checkpoint)
    /// and `new_root` with a current signed checkpoint, or calls
    /// [`verify_prefix`] with roots they trust.
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_prefix(
            &self.old_root,
            self.old_size,
            &self.new_root,
            self.new_size,
            &self.path,
        )
    }

    /// One-line JSON, for the CLI.
    pub fn to_json(&self) -> String {
        let path: Vec<String> = self.path.iter().map(|d| format!("\"{d}\"")).collect();
        format!(
            "{{\"old_size\":{},\"old_root\":\"{}\",\"new_size\":{},\"new_root\":\"{}\",\"path\":[{}]}}",
            self.old_size,
            self.old_root,
            self.new_size,
            self.new_root,
            path.join(",")
        )
    }
}

/// Proves that the first `old_size` records of the log in `dir` are a
/// prefix of all its records today.
pub fn prove_prefix(dir: &Path, old_size: u64) -> Result<ConsistencyProof, ExportError> {
    let leaves = leaves(dir)?;
    let records = u64::try_from(leaves.len()).unwrap_or(u64::MAX);
    let too_few = || ExportError::TooFew {
        records,
        requested: old_size,
    };
    let path = merkle::consistency_proof(old_size, &leaves).ok_or_else(too_few)?;
    let old = leaves
        .get(..usize::try_from(old_size).map_err(|_| too_few())?)
        .ok_or_else(too_few)?;
    Ok(ConsistencyProof {
        old_size,
        new_size: records,
        old_root: merkle::root(old),
        new_root: merkle::root(&leaves),
        path,
    })
}

/// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
pub fn verify_prefix(
    old_root: &Digest,
    old_size: u64,
    new_root: &Digest,
    new_size: u64,
    path: &[Digest],
) -> Result<(), ProofError> {
    merkle::verify_consistency(old_size, new_size, old_root, new_root, path)
}

/// The record count and Merkle tree head of the log in `dir` (e.g. an
/// exported copy), over its first `count` records if given.
pub fn tree_head(dir: &Path, count: Option<u64>) -> Result<(u64, Digest), ExportError> {
    let leaves = leaves(dir)?;
    let records = u64::try_from(leaves.len()).unwrap_or(u64::MAX);
    let n = count.unwrap_or(records);
    let too_few = || ExportError::TooFew {
        records,
        requested: n,
    };
    let prefix = leaves
        .get(..usize::try_from(n).map_err(|_| too_few())?)
        .ok_or_else(too_few)?;
    Ok((n, merkle::root(prefix)))
}

/// The leaf hashes of every complete record. The chain is not checked
/// (that is `verify`'s job); a damaged line is an error. An incomplete
/// last line is a write in progress and is left out.
fn leaves(dir: &Path) -> Result<Vec<Digest>, ExportError> {
    let mut out = Vec::new();
    for_each_entry(dir, |e| {
        out.push(e.record.leaf_hash());
        Ok(())
    })?;
    Ok(out)
}

fn for_each_entry(
    dir: &Path,
    mut f: impl FnMut(&Entry) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let path = dir.join(LOG_FILE);
    let io_err = |source| ExportError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io_err)?;
    let mut lines = Lines::new(BufReader::new(file));
    while let Some(info) = lines.next_line().map_err(io_err)? {
        match info.kind {
            LineKind::Complete => {}
            LineKind::Unterminated => break,
            LineKind::TooLong => {
                return Err(ExportError::Damaged {
                    line: info.number,
                    problem: "the line is too long".into(),
                })
            }
        }
        let entry = Entry::decode(lines.bytes()).map_err(|e| ExportError::Damaged {
            line: info.number,
            problem: e.to_string(),
        })?;
        f(&entry)?;
    }
    Ok(())
}

fn render_jsonl(e: &Entry) -> String {
    let stored = e.encode();
    // The stored line starts with `{`; a readable time goes first.
    let rest = stored.strip_prefix('{').unwrap_or(&stored);
    format!("{{\"time\":\"{}\",{rest}", e.record.time_rfc3339())
}

fn render_syslog(e: &Entry, hostname: &str) -> String {
    let r = &e.record;
    let severity: u8 = match r.outcome {
        Outcome::Success => 6, // informational
        Outcome::Denied => 4,  // warning
        Outcome::Failure => 3, // error
    };
    let pri = u16::from(SYSLOG_FACILITY) * 8 + u16::from(severity);
    let host = syslog_hostname(hostname);
    let mut s = format!(
        "<{pri}>1 {} {host} converge - AUDIT [{SYSLOG_SD_ID}",
        r.time_rfc3339()
    );
    let seq = r.seq.to_string();
    let hash = e.hash.to_hex();
    let params: [(&str, Option<&str>); 10] = [
        ("seq", Some(&seq)),
        ("actor", Some(&r.actor)),
        ("zone", r.zone.as_deref()),
        ("source", r.source.as_deref()),
        ("action", Some(r.action.as_str())),
        ("resource", r.resource.as_deref()),
        ("outcome", Some(r.outcome.as_str())),
        ("reason", r.reason.as_deref()),
        ("rule", r.rule.as_deref()),
        ("hash", Some(&hash)),
    ];
    for (name, value) in params {
        if let Some(v) = value {
            let _ = write!(s, " {name}=\"{}\"", sd_escape(v));
        }
    }
    s.push_str("] ");
    let mut msg = format!("{} {} {}", r.actor, r.action, r.outcome);
    if let Some(reason) = &r.reason {
        let _ = write!(msg, ": {reason}");
    }
    s.push_str(&no_controls(&msg));
    s
}

fn render_cef(e: &Entry) -> String {
    let r = &e.record;
    let severity = match r.outcome {
        Outcome::Success => 3,
        Outcome::Denied => 5,
        Outcome::Failure => 6,
    };
    let mut s = format!(
        "CEF:0|Converge|converge|{}|{}|{}|{severity}|",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(r.action.as_str()),
        cef_header(&format!("{}: {}", title(r.action), r.outcome)),
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", r.time_ms.to_string()),
        ("externalId", r.seq.to_string()),
        ("suser", r.actor.clone()),
    ];
    if let Some(src) = &r.source {
        if let Ok(sa) = src.parse::<SocketAddr>() {
            ext.push(("src", sa.ip().to_string()));
            ext.push(("spt", sa.port().to_string()));
        } else if let Ok(ip) = src.parse::<IpAddr>() {
            ext.push(("src", ip.to_string()));
        } else {
            ext.push(("cs5Label", "source".into()));
            ext.push(("cs5", src.clone()));
        }
    }
    ext.push(("act", r.action.as_str().into()));
    ext.push(("outcome", r.outcome.as_str().into()));
    if let Some(v) = &r.reason {
        ext.push(("reason", v.clone()));
    }
    for (label_key, label, key, value) in [
        ("cs1Label", "zone", "cs1", &r.zone),
        ("cs2Label", "resource", "cs2", &r.resource),
        ("cs3Label", "rule", "cs3", &r.rule),
    ] {
        if let Some(v) = value {
            ext.push((label_key, label.into()));
            ext.push((key, v.clone()));
        }
    }
    ext.push(("cs4Label", "hash".into()));
    ext.push(("cs4", e.hash.to_hex()));
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    s.push_str(&ext.join(" "));
    s
}

/// A short human title for CEF's Name field.
fn title(a: Action) -> &'static str {
    match a {
        Action::HandshakeAccepted => "TLS handshake accepted",
        Action::HandshakeRejected => "TLS handshake rejected",
        Action::Connect => "MQTT connect",
        Action::Disconnect => "MQTT disconnect",
        Action::PublishDenied => "Publish denied",
        Action::SubscribeDenied => "Subscribe denied",
        Action::DeliveryDenied => "Delivery denied",
        Action::QuotaExceeded => "Quota exceeded",
        Action::PolicyReload => "Policy reload",
        Action::CertIssued => "Certificate issued",
        Action::CertRevoked => "Certificate revoked",
        Action::AdminCommand => "Admin command",
        Action::HistorianQuery => "Historian query",
        Action::ServerStarted => "Server started",
        Action::ServerStopped => "Server stopped",
        Action::EventsDropped => "Audit events lost",
        Action::AuditRecovered => "Audit log recovered after a crash",
        Action::CrlReload => "CRL reloaded",
    }
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash. Control
/// characters, which the RFC allows, become `\xHH` so that one event stays
/// one line.
fn sd_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' | '\\' | ']' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => {
                let _ = write!(s, "\\x{:02x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s
}

/// RFC 5424 HOSTNAME: 1–255 printable US-ASCII characters, or `-`.
fn syslog_hostname(h: &str) -> String {
    let s: String = h
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The free-text MSG: control characters become spaces.
fn no_controls(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// CEF header field: `\` and `|` escaped; line breaks are not allowed there.
fn cef_header(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' | '|' => {
                s.push('\\');
                s.push(c);
            }
            '\r' | '\n' => s.push(' '),
            c => s.push(c),
        }
    }
    s
}

/// CEF extension value: `\` and `=` escaped, line breaks as `\n` / `\r`.
fn cef_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' | '=' => {
                s.push('\\');
                s.push(c);
            }
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn escaping_per_format() {
        assert_eq!(cef_header("a|b\\c\r\nd"), "a\\|b\\\\c  d");
        assert_eq!(cef_value("a=b\\c|d\ne\rf"), "a\\=b\\\\c|d\\ne\\rf");
        assert_eq!(sd_escape("a\"b\\c]d\te"), "a\\\"b\\\\c\\]d\\x09e");
        assert_eq!(syslog_hostname(" h\u{e9}st\t1 "), "hst1");
        assert_eq!(syslog_hostname(&"h".repeat(300)).len(), 255);
        assert_eq!(no_controls("a\nb\u{7f}c"), "a b c");
    }
}
