//! Audit records: what the broker reports ([`Event`]), what is stored
//! ([`Record`], chained into an [`Entry`]) and the one byte encoding both
//! the hash chain and the Merkle tree are computed over.
//!
//! The canonical bytes of a record are a single-line JSON object with the
//! fields in a fixed order, `null` for absent values and a fixed string
//! escaping (docs/FORMAT.md §9). A stored line is those bytes with `prev`
//! and `hash` appended. Decoding re-encodes what it parsed and insists on
//! identical bytes, so every stored line has exactly one valid spelling and
//! any edit, even one that JSON would consider equivalent, is detected.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::Deserialize;

use super::digest::Digest;

/// Longest actor, zone, source, resource, reason or rule kept, in bytes.
/// Identities and topics come from peers' certificates and packets; this
/// bounds every line and the memory a full queue can hold.
pub const MAX_FIELD_BYTES: usize = 1024;

/// What happened. The names ([`Action::as_str`]) are stable: they are
/// stored, hashed and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// TLS/QUIC handshake completed with a client certificate.
    HandshakeAccepted,
    /// Handshake failed; the reason says why (unknown CA, expired, ...).
    HandshakeRejected,
    /// MQTT CONNECT decided (outcome `success` or `denied`).
    Connect,
    /// Session ended.
    Disconnect,
    PublishDenied,
    SubscribeDenied,
    /// A message was not delivered to a subscriber by policy.
    DeliveryDenied,
    QuotaExceeded,
    PolicyReload,
    CertIssued,
    CertRevoked,
    AdminCommand,
    /// A historian query by an IT client.
    HistorianQuery,
    ServerStarted,
    ServerStopped,
    /// Written by the audit writer itself: events were lost to a full queue.
    EventsDropped,
    /// Written by the audit writer itself: an incomplete last line (a write
    /// cut by a crash) was removed on open.
    AuditRecovered,
    /// The server read a changed CRL file (revoked certificates, connections closed).
    CrlReload,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: &'static [Action] = &[
        Action::HandshakeAccepted,
        Action::HandshakeRejected,
        Action::Connect,
        Action::Disconnect,
        Action::PublishDenied,
        Action::SubscribeDenied,
        Action::DeliveryDenied,
        Action::QuotaExceeded,
        Action::PolicyReload,
        Action::CertIssued,
        Action::CertRevoked,
        Action::AdminCommand,
        Action::HistorianQuery,
        Action::ServerStarted,
        Action::ServerStopped,
        Action::EventsDropped,
        Action::AuditRecovered,
        Action::CrlReload,
    ];

    /// The stored snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::HandshakeAccepted => "handshake_accepted",
            Action::HandshakeRejected => "handshake_rejected",
            Action::Connect => "connect",
            Action::Disconnect => "disconnect",
            Action::PublishDenied => "publish_denied",
            Action::SubscribeDenied => "subscribe_denied",
            Action::DeliveryDenied => "delivery_denied",
            Action::QuotaExceeded => "quota_exceeded",
            Action::PolicyReload => "policy_reload",
            Action::CertIssued => "cert_issued",
            Action::CertRevoked => "cert_revoked",
            Action::AdminCommand => "admin_command",
            Action::HistorianQuery => "historian_query",
            Action::ServerStarted => "server_started",
            Action::ServerStopped => "server_stopped",
            Action::EventsDropped => "events_dropped",
            Action::AuditRecovered => "audit_recovered",
            Action::CrlReload => "crl_reload",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`Action`] or [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    Success,
    /// Failed for a reason other than policy (bad certificate, IO, ...).
    Failure,
    /// Refused by policy; `rule` says which rule.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Outcome::Success, Outcome::Failure, Outcome::Denied]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// What the broker reports; the writer turns it into a [`Record`] by
/// giving it the next sequence number.
///
/// ```
/// use converge_security::audit::{Action, Event, Outcome};
/// let ev = Event::new(Action::Connect, Outcome::Denied)
///     .actor("cell-a.press-01")
///     .zone("cell-a")
///     .source("10.1.2.3:50122")
///     .reason("not authorized")
///     .rule("NoProfile");
/// assert_eq!(ev.actor, "cell-a.press-01");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Unix milliseconds; `None` takes the time at [`AuditLog::record`](super::AuditLog::record).
    pub time_ms: Option<i64>,
    /// The identity acting, or `-` when there is none yet.
    pub actor: String,
    pub zone: Option<String>,
    /// Peer address, `ip:port`.
    pub source: Option<String>,
    pub action: Action,
    /// Topic, certificate serial, tag pattern, command line...
    pub resource: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// The policy rule that decided.
    pub rule: Option<String>,
}

impl Event {
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            time_ms: None,
            actor: "-".to_owned(),
            zone: None,
            source: None,
            action,
            resource: None,
            outcome,
            reason: None,
            rule: None,
        }
    }

    pub fn at(mut self, time_ms: i64) -> Self {
        self.time_ms = Some(time_ms);
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = bounded(actor.into());
        self
    }

    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(bounded(zone.into()));
        self
    }

    pub fn source(mut self, source: impl fmt::Display) -> Self {
        self.source = Some(bounded(source.to_string()));
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(bounded(resource.into()));
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(bounded(reason.into()));
        self
    }

    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(bounded(rule.into()));
        self
    }

    /// The record this event becomes as number `seq`. Fields set directly
    /// (they are public) are bounded here too.
    pub fn into_record(self, seq: u64, now_ms: i64) -> Record {
        Record {
            seq,
            time_ms: self.time_ms.unwrap_or(now_ms),
            actor: bounded(self.actor),
            zone: self.zone.map(bounded),
            source: self.source.map(bounded),
            action: self.action,
            resource: self.resource.map(bounded),
            outcome: self.outcome,
            reason: self.reason.map(bounded),
            rule: self.rule.map(bounded),
        }
    }
}

/// One audit record as stored and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// 1 for the first record of a log, then +1 each.
    pub seq: u64,
    /// Unix milliseconds, UTC.
    pub time_ms: i64,
    pub actor: String,
    pub zone: Option<String>,
    pub source: Option<String>,
    pub action: Action,
    pub resource: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub rule: Option<String>,
}

impl Record {
    /// The bytes hashed into the chain and the Merkle tree.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut s = self.fields();
        s.push('}');
        s.into_bytes()
    }

    /// RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 || canonical bytes).
    pub fn leaf_hash(&self) -> Digest {
        Digest::of(&[&[0x00], &self.canonical_bytes()])
    }

    /// Chains this record after `prev`: hash = SHA-256(prev || canonical bytes).
    pub fn chain(self, prev: Digest) -> Entry {
        let hash = Digest::of(&[&prev.0, &self.canonical_bytes()]);
        Entry {
            record: self,
            prev,
            hash,
        }
    }

    /// The time as RFC 3339 UTC with milliseconds.
    pub fn time_rfc3339(&self) -> String {
        format_time_ms(self.time_ms)
    }

    /// `{"seq":…,"rule":…` without the closing brace.
    fn fields(&self) -> String {
        let mut s = String::with_capacity(256);
        // Writing to a String cannot fail.
        let _ = write!(s, "{{\"seq\":{},\"time_ms\":{}", self.seq, self.time_ms);
        s.push_str(",\"actor\":");
        json_string(&mut s, &self.actor);
        json_opt(&mut s, "zone", self.zone.as_deref());
        json_opt(&mut s, "source", self.source.as_deref());
        let _ = write!(s, ",\"action\":\"{}\"", self.action.as_str());
        json_opt(&mut s, "resource", self.resource.as_deref());
        let _ = write!(s, ",\"outcome\":\"{}\"", self.outcome.as_str());
        json_opt(&mut s, "reason", self.reason.as_deref());
        json_opt(&mut s, "rule", self.rule.as_deref());
        s
    }
}

/// A stored record: the record, the hash it chains to and its own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    pub record: Record,
    pub prev: Digest,
    pub hash: Digest,
}

/// Why a stored line is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("it is not a valid record ({0})")]
    Malformed(String),
    #[error("it is not in canonical form (edited)")]
    NotCanonical,
    #[error("its hash does not match its contents")]
    HashMismatch,
}

impl Entry {
    /// The stored line, without the newline.
    pub fn encode(&self) -> String {
        let mut s = self.record.fields();
        let _ = write!(
            s,
            ",\"prev\":\"{}\",\"hash\":\"{}\"}}",
            self.prev, self.hash
        );
        s
    }

    /// Parses one stored line (without its newline) and checks that it is
    /// canonical and that `hash` = SHA-256(prev || canonical bytes). It does
    /// not check the chain to the previous line: that is the caller's job.
    pub fn decode(line: &[u8]) -> Result<Entry, LineError> {
        let raw: Line =
            serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
        let prev: Digest = raw
            .prev
            .parse()
            .map_err(|_| LineError::Malformed("prev is not a hash".into()))?;
        let hash: Digest = raw
            .hash
            .parse()
            .map_err(|_| LineError::Malformed("hash is not a hash".into()))?;
        let record = Record {
            seq: raw.seq,
            time_ms: raw.time_ms,
            actor: raw.actor,
            zone: raw.zone,
            source: raw.source,
            action: raw
                .action
                .parse()
                .map_err(|e: UnknownName| LineError::Malformed(format!("action: {e}")))?,
            resource: raw.resource,
            outcome: raw
                .outcome
                .parse()
                .map_err(|e: UnknownName| LineError::Malformed(format!("outcome: {e}")))?,
            reason: raw.reason,
            rule: raw.rule,
        };
        let entry = Entry { record, prev, hash };
        if entry.encode().as_bytes() != line {
            return Err(LineError::NotCanonical);
        }
        if Digest::of(&[&prev.0, &entry.record.canonical_bytes()]) != hash {
            return Err(LineError::HashMismatch);
        }
        Ok(entry)
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-04-25T10:00:00.123Z`.
pub fn format_time_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Outside years -9999..=9999: keep the raw value rather than fail an export.
        Err(_) => format!("@{ms}ms"),
    }
}

/// Cuts `s` to at most [`MAX_FIELD_BYTES`] on a character boundary, marking the cut.
fn bounded(mut s: String) -> String {
    if s.len() <= MAX_FIELD_BYTES {
        return s;
    }
    let mut end = MAX_FIELD_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

fn json_opt(s: &mut String, key: &str, value: Option<&str>) {
    let _ = write!(s, ",\"{key}\":");
    match value {
        Some(v) => json_string(s, v),
        None => s.push_str("null"),
    }
}

/// JSON string with the escaping of docs/FORMAT.md §9: `"` and `\`
/// backslashed, `\b \f \n \r \t` short, other controls below 0x20 as
/// `\u00xx`, everything else (including non-ASCII) as is.
fn json_string(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// The stored line as parsed; converted and re-encoded by [`Entry::decode`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    time_ms: i64,
    actor: String,
    zone: Option<String>,
    source: Option<String>,
    action: String,
    resource: Option<String>,
    outcome: String,
    reason: Option<String>,
    rule: Option<String>,
    prev: String,
    hash: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Event::new(Action::PublishDenied, Outcome::Denied)
            .actor("cell-a.press-01")
            .zone("cell-a")
            .source("10.0.0.7:51000")
            .resource("plant1/cell-b/\"x\"\\y\n")
            .reason("no conduit")
            .rule("NoConduit")
            .at(1_714_039_200_123)
            .into_record(7, 0)
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        assert_eq!(
            String::from_utf8(sample().canonical_bytes()).unwrap(),
            r#"{"seq":7,"time_ms":1714039200123,"actor":"cell-a.press-01","zone":"cell-a","source":"10.0.0.7:51000","action":"publish_denied","resource":"plant1/cell-b/\"x\"\\y\n","outcome":"denied","reason":"no conduit","rule":"NoConduit"}"#
        );
    }

    #[test]
    fn decode_round_trips_and_checks() {
        let e = sample().chain(Digest::ZERO);
        let line = e.encode();
        assert_eq!(Entry::decode(line.as_bytes()), Ok(e.clone()));
        // Equivalent JSON, other spelling: rejected.
        let other = line.replace("\\n", "\\u000a");
        assert_eq!(
            Entry::decode(other.as_bytes()),
            Err(LineError::NotCanonical)
        );
        let edited = line.replace("press-01", "press-02");
        assert_eq!(
            Entry::decode(edited.as_bytes()),
            Err(LineError::HashMismatch)
        );
        assert!(matches!(
            Entry::decode(b"{\"seq\":1}"),
            Err(LineError::Malformed(_))
        ));
    }

    #[test]
    fn control_characters_round_trip() {
        let mut r = sample();
        r.actor = "a\u{1}\u{8}\u{7f}é\u{c}".into();
        let e = r.chain(Digest::ZERO);
        assert!(e.encode().contains(r#""a\u0001\b"#));
        assert_eq!(Entry::decode(e.encode().as_bytes()), Ok(e));
    }

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
        }
        assert!("nope".parse::<Action>().is_err());
    }

    #[test]
    fn long_fields_are_bounded() {
        let ev = Event::new(Action::Connect, Outcome::Success).actor("é".repeat(1000));
        assert!(ev.actor.len() <= MAX_FIELD_BYTES);
        assert!(ev.actor.ends_with('…'));
        assert_eq!(
            format_time_ms(1_714_039_200_123),
            "2024-04-25T10:00:00.123Z"
        );
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
