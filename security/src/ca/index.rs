//! The index of issued certificates (`index.jsonl`, one JSON object a
//! line), revocation reasons, status at a given time and the `cert list`
//! table.
//!
//! The index is the source of truth: the CRL is always regenerated from it,
//! never edited. Timestamps are Unix seconds.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{files, time_fmt, unix_seconds, CaError};

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// Subject DN as written in the certificate, e.g. `CN=press-01, OU=cell-a, O=ACME Plant1`.
    pub subject: String,
    /// Device name requested at issue.
    pub device: String,
    /// Zone requested at issue.
    pub zone: String,
    /// Device profile, when one was named at issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// The key came from a CSR (the CA never saw the private key).
    #[serde(default)]
    pub from_csr: bool,
    /// Set once the certificate is revoked; revocation is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Revocation {
    /// Revocation time, Unix seconds (the CRL's revocationDate).
    pub at: i64,
    /// The reason code put in the CRL entry.
    pub reason: RevocationReason,
}

/// CRL reason codes of RFC 5280 §5.3.1.
///
/// `removeFromCRL` (8) is left out: it only has a meaning in delta CRLs,
/// which this CA does not issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RevocationReason {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "certificateHold")]
    CertificateHold,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

/// A certificate's state at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    Valid,
    NotYetValid,
    Expired,
    Revoked(RevocationReason),
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 9] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::CertificateHold,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Self::Unspecified => R::Unspecified,
            Self::KeyCompromise => R::KeyCompromise,
            Self::CaCompromise => R::CaCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
            Self::CertificateHold => R::CertificateHold,
            Self::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
            Self::AaCompromise => R::AaCompromise,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;

    /// Accepts the RFC name in any case, with or without `-`/`_`
    /// (`keyCompromise`, `key-compromise`, `KEY_COMPROMISE`).
    fn from_str(s: &str) -> Result<Self, CaError> {
        let wanted: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_ascii_lowercase() == wanted)
            .ok_or_else(|| CaError::UnknownReason(s.to_owned()))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Valid => f.write_str("valid"),
            Self::NotYetValid => f.write_str("not yet valid"),
            Self::Expired => f.write_str("expired"),
            Self::Revoked(r) => write!(f, "revoked ({r})"),
        }
    }
}

impl Entry {
    /// The status at `now`; revocation wins over expiry.
    pub fn status(&self, now: SystemTime) -> Status {
        let now = unix_seconds(now);
        match self.revoked {
            Some(r) => Status::Revoked(r.reason),
            None if now < self.not_before => Status::NotYetValid,
            None if now > self.not_after => Status::Expired,
            None => Status::Valid,
        }
    }
}

/// The `cert list` table: serial, subject, zone, expiry date and status at `now`.
pub fn format_table(entries: &[Entry], now: SystemTime) -> String {
    let header = ["SERIAL", "SUBJECT", "ZONE", "EXPIRES", "STATUS"];
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.serial.clone(),
                e.subject.clone(),
                e.zone.clone(),
                time_fmt::date(e.not_after),
                e.status(now).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

/// Reads the index; a missing file is an empty index.
pub(crate) fn read(path: &Path) -> Result<Vec<Entry>, CaError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(files::io_err(path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| CaError::Corrupt {
                path: path.to_path_buf(),
                why: format!("line {}: {e}", n + 1),
            })
        })
        .collect()
}

/// Rewrites the whole index atomically.
pub(crate) fn write(path: &Path, entries: &[Entry]) -> Result<(), CaError> {
    let mut text = String::new();
    for e in entries {
        let line = serde_json::to_string(e).map_err(|e| CaError::Corrupt {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    files::write_atomic(path, text.as_bytes(), files::PUBLIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_in_any_spelling() {
        for r in RevocationReason::ALL {
            assert_eq!(r.name().parse::<RevocationReason>().unwrap(), r);
        }
        assert_eq!(
            "key-compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            "CESSATION_OF_OPERATION"
                .parse::<RevocationReason>()
                .unwrap(),
            RevocationReason::CessationOfOperation
        );
        assert!(matches!(
            "removeFromCRL".parse::<RevocationReason>(),
            Err(CaError::UnknownReason(_))
        ));
    }

    #[test]
    fn reasons_serialize_as_rfc_names() {
        let r = Revocation {
            at: 1,
            reason: RevocationReason::CaCompromise,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"at":1,"reason":"cACompromise"}"#
        );
    }
}
