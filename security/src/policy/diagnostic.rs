//! Compile errors of a policy file, each tied to a line and column.
//!
//! `compile` collects every error it can find (not just the first) so that
//! `converge policy check` reports them all at once. Positions are 1-based;
//! columns count characters, as editors do.

use std::fmt;

use crate::topic::TopicError;

/// One problem in a policy file, with its place.
///
/// Displays as `policy.toml:12:5: conduit "scada-to-dmz" names unknown zone "dmzz"`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The file name as given to `check_file` or `compile`.
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. IO).
    pub line: u32,
    /// 1-based column in characters; 0 with `line == 0`.
    pub column: u32,
    /// What is wrong.
    pub error: PolicyError,
}

impl Diagnostic {
    /// The message without the location.
    pub fn message(&self) -> String {
        self.error.to_string()
    }

    /// `line:column`, as tests and tools compare it.
    pub fn location(&self) -> (u32, u32) {
        (self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.error)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.error
            )
        }
    }
}

impl std::error::Error for Diagnostic {}

/// What is wrong with a policy file. `owner` fields name the item in words,
/// e.g. `conduit "scada-to-dmz"` or `profile "cell-device" publish filter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read policy file: {0}")]
    Io(String),
    #[error("policy file is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    /// TOML syntax, a wrong type, an unknown key or a missing key.
    #[error("{0}")]
    Syntax(String),
    #[error("unsupported policy version {0}; this build reads version 1")]
    UnsupportedVersion(i64),
    #[error("{kind} id {id:?} is not valid: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidId { kind: &'static str, id: String },
    #[error("duplicate {kind} id {id:?}")]
    DuplicateId { kind: &'static str, id: String },
    #[error("the policy has more than {max} {kind}s")]
    TooMany { kind: &'static str, max: usize },
    #[error("{owner} names unknown zone {zone:?}")]
    UnknownZone { owner: String, zone: String },
    #[error("{owner} names unknown CA {ca:?}")]
    UnknownCa { owner: String, ca: String },
    #[error("ca {ca:?} needs `subject` or `key_id` to recognise certificates it issued")]
    CaWithoutIdentity { ca: String },
    #[error(
        "ca {ca:?}: subject {subject:?} is not a distinguished name like \"CN=Plant CA, O=ACME\""
    )]
    InvalidDn { ca: String, subject: String },
    #[error("{owner}: {value:?} is not hex")]
    InvalidHex { owner: String, value: String },
    #[error("{owner}: {value:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    InvalidFingerprint { owner: String, value: String },
    #[error("{owner}: {oid:?} is not a dotted object identifier like \"1.3.6.1.4.1.55555.1\"")]
    InvalidOid { owner: String, oid: String },
    #[error("{owner}: {key} must be between {min} and {max}, not {value}")]
    OutOfRange {
        owner: String,
        key: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{owner}: {key} must not be empty")]
    Empty { owner: String, key: &'static str },
    #[error("{owner}: invalid topic filter {filter:?}: {error}")]
    InvalidFilter {
        owner: String,
        filter: String,
        error: TopicError,
    },
    #[error("{owner}: filter {filter:?} can never match: {why}")]
    NeverMatches {
        owner: String,
        filter: String,
        why: String,
    },
    #[error(
        "zone {zone:?} namespace {filter:?} overlaps zone {other_zone:?} namespace {other_filter:?}"
    )]
    OverlappingNamespaces {
        zone: String,
        filter: String,
        other_zone: String,
        other_filter: String,
    },
    #[error("conduit {conduit:?} leads from zone {zone:?} to itself")]
    ConduitToSelf { conduit: String, zone: String },
    #[error(
        "{owner}: unknown placeholder \"${{{name}}}\"; known are ${{device}}, ${{zone}}, ${{cn}}, ${{client_id}}"
    )]
    UnknownPlaceholder { owner: String, name: String },
    #[error("{owner}: placeholder \"${{{name}}}\" is not allowed here")]
    PlaceholderNotAllowed { owner: String, name: String },
    #[error("{owner}: \"${{\" without a closing \"}}\"")]
    UnterminatedPlaceholder { owner: String },
    #[error("{owner}: pattern {pattern:?} is invalid: {why}")]
    InvalidPattern {
        owner: String,
        pattern: String,
        why: &'static str,
    },
    #[error("profile {profile:?} takes {what} from {key} but has no `{key}` pattern")]
    MissingPattern {
        profile: String,
        what: &'static str,
        key: &'static str,
    },
    #[error("profile {profile:?}: `{key}` pattern {pattern:?} has no {{{capture}}}")]
    PatternLacksCapture {
        profile: String,
        key: &'static str,
        pattern: String,
        capture: &'static str,
    },
    #[error("profile {profile:?}: `{key}` is set but neither device nor zone is taken from {key}")]
    UnusedPattern { profile: String, key: &'static str },
    #[error("profile {profile:?}: identity {identity:?} must contain ${{device}}, or devices would share one identity")]
    IdentityWithoutDevice { profile: String, identity: String },
    #[error("profile {profile:?} can place devices in no zone: {why}")]
    NoZone { profile: String, why: String },
    #[error("{owner}: {burst_key} {burst} is smaller than max_payload {max_payload}, so a largest message could never pass")]
    BurstBelowPayload {
        owner: String,
        burst_key: &'static str,
        burst: i64,
        max_payload: i64,
    },
}

/// Turns a byte offset into a 1-based (line, column in characters).
pub(crate) fn locate(src: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = src.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters() {
        let src = "a = 1\nbé = 2\n\nc";
        assert_eq!(locate(src, 0), (1, 1));
        assert_eq!(locate(src, 4), (1, 5));
        assert_eq!(locate(src, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(locate(src, 6 + 6), (2, 6));
        assert_eq!(locate(src, src.len() - 1), (4, 1));
        assert_eq!(locate(src, 10_000), (4, 2));
    }

    #[test]
    fn display_has_location() {
        let d = Diagnostic {
            file: "policy.toml".into(),
            line: 12,
            column: 5,
            error: PolicyError::UnknownZone {
                owner: "conduit \"scada-to-dmz\"".into(),
                zone: "dmzz".into(),
            },
        };
        assert_eq!(
            d.to_string(),
            "policy.toml:12:5: conduit \"scada-to-dmz\" names unknown zone \"dmzz\""
        );
    }
}
