//! RFC 5280 rules for a device's end-entity certificate that a chain verifier may let pass.
//!
//! webpki (rustls' verifier) checks signatures, validity, EKU, name constraints of the
//! issuers and revocation, but it reads some of the leaf's extensions only when it needs
//! them, and it has no opinion on a leaf that claims CA powers through Key Usage. A device
//! certificate is the device's identity on a control network, so anything RFC 5280 forbids
//! in an end-entity certificate is refused here, before the chain is verified:
//!
//! | check | RFC 5280 |
//! |---|---|
//! | version 3 (extensions need it) | §4.1.2.1 |
//! | serial number at most 20 octets | §4.1.2.2 |
//! | inner and outer signature algorithm equal | §4.1.1.2 |
//! | no extension twice | §4.2 |
//! | every extension we know parses | §4.2 |
//! | Basic Constraints not cA | §4.2.1.9 |
//! | Key Usage without keyCertSign or cRLSign | §4.2.1.3 |
//! | no Name Constraints (CA certificates only) | §4.2.1.10 |
//! | a SAN, when present, has at least one name | §4.2.1.6 |
//! | an empty subject needs a SAN | §4.1.2.6 |
//!
//! And, before any of that is parsed, limits on the chain a peer may send: its depth and its
//! total size ([`ChainLimits`]). Pure functions over bytes: no IO, no clock.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

/// Largest serial number RFC 5280 asks users to accept (§4.1.2.2).
const MAX_SERIAL_OCTETS: usize = 20;

/// How deep and how large a client's chain may be before we parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLimits {
    /// Certificates in the chain, the end-entity certificate included.
    pub max_depth: usize,
    /// Bytes of all the chain's certificates together.
    pub max_bytes: usize,
}

impl Default for ChainLimits {
    /// A device certificate, an intermediate or two and some room: a plant CA is rarely deeper
    /// than three levels, and a 2048-bit RSA certificate is about 1.2 KB.
    fn default() -> Self {
        ChainLimits {
            max_depth: 4,
            max_bytes: 16 * 1024,
        }
    }
}

/// Why a client certificate is refused by these checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndEntityError {
    #[error("the chain has {count} certificates; at most {max} are accepted")]
    ChainTooDeep { count: usize, max: usize },
    #[error("the chain is {bytes} bytes; at most {max} are accepted")]
    ChainTooLarge { bytes: usize, max: usize },
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
    #[error("{0} bytes follow the certificate")]
    TrailingData(usize),
    #[error("a version {0} certificate cannot be a device certificate (version 3 is required)")]
    NotVersion3(u32),
    #[error("the serial number is {0} octets; at most 20 are allowed")]
    SerialTooLong(usize),
    #[error("the signature algorithm inside the certificate differs from the one outside")]
    SignatureAlgorithmMismatch,
    #[error("the extension {0} appears more than once")]
    DuplicateExtension(String),
    #[error("the extension {oid} is malformed: {reason}")]
    MalformedExtension { oid: String, reason: String },
    #[error("the certificate is a CA certificate (Basic Constraints cA), not an end entity")]
    CaCertificate,
    #[error("the Key Usage allows signing certificates or CRLs, which only a CA may do")]
    CaKeyUsage,
    #[error("Name Constraints are only allowed in CA certificates")]
    NameConstraints,
    #[error("the Subject Alternative Name extension has no names")]
    EmptySubjectAltName,
    #[error("the subject is empty and there is no Subject Alternative Name")]
    NoName,
}

impl EndEntityError {
    /// Every label [`EndEntityError::label`] returns.
    pub const LABELS: &'static [&'static str] = &[
        "chain_too_deep",
        "chain_too_large",
        "cert_malformed",
        "cert_not_v3",
        "cert_serial_too_long",
        "cert_signature_mismatch",
        "cert_duplicate_extension",
        "cert_malformed_extension",
        "cert_leaf_is_ca",
        "cert_leaf_ca_key_usage",
        "cert_leaf_name_constraints",
        "cert_no_name",
    ];

    /// A short, stable label (metrics, audit records).
    pub fn label(&self) -> &'static str {
        match self {
            Self::ChainTooDeep { .. } => "chain_too_deep",
            Self::ChainTooLarge { .. } => "chain_too_large",
            Self::Malformed(_) | Self::TrailingData(_) => "cert_malformed",
            Self::NotVersion3(_) => "cert_not_v3",
            Self::SerialTooLong(_) => "cert_serial_too_long",
            Self::SignatureAlgorithmMismatch => "cert_signature_mismatch",
            Self::DuplicateExtension(_) => "cert_duplicate_extension",
            Self::MalformedExtension { .. } => "cert_malformed_extension",
            Self::CaCertificate => "cert_leaf_is_ca",
            Self::CaKeyUsage => "cert_leaf_ca_key_usage",
            Self::NameConstraints => "cert_leaf_name_constraints",
            Self::EmptySubjectAltName | Self::NoName => "cert_no_name",
        }
    }
}

/// The chain's depth and size, checked on lengths alone (nothing is parsed).
pub fn check_chain_limits<C: AsRef<[u8]>>(
    end_entity: &[u8],
    intermediates: &[C],
    limits: ChainLimits,
) -> Result<(), EndEntityError> {
    let count = intermediates.len().saturating_add(1);
    if count > limits.max_depth {
        return Err(EndEntityError::ChainTooDeep {
            count,
            max: limits.max_depth,
        });
    }
    let bytes = intermediates.iter().fold(end_entity.len(), |sum, c| {
        sum.saturating_add(c.as_ref().len())
    });
    if bytes > limits.max_bytes {
        return Err(EndEntityError::ChainTooLarge {
            bytes,
            max: limits.max_bytes,
        });
    }
    Ok(())
}

/// The RFC 5280 end-entity rules above, on a DER certificate.
pub fn check_end_entity(der: &[u8]) -> Result<(), EndEntityError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| EndEntityError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EndEntityError::TrailingData(rest.len()));
    }
    let tbs = &cert.tbs_certificate;
    if tbs.version != X509Version::V3 {
        return Err(EndEntityError::NotVersion3(tbs.version.0.saturating_add(1)));
    }
    if tbs.raw_serial().len() > MAX_SERIAL_OCTETS {
        return Err(EndEntityError::SerialTooLong(tbs.raw_serial().len()));
    }
    if tbs.signature != cert.signature_algorithm {
        return Err(EndEntityError::SignatureAlgorithmMismatch);
    }
    let extensions = tbs.extensions();
    for (i, ext) in extensions.iter().enumerate() {
        if extensions
            .iter()
            .skip(i.saturating_add(1))
            .any(|o| o.oid == ext.oid)
        {
            return Err(EndEntityError::DuplicateExtension(ext.oid.to_id_string()));
        }
    }
    let mut has_names = false;
    for ext in extensions {
        match ext.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                return Err(EndEntityError::MalformedExtension {
                    oid: ext.oid.to_id_string(),
                    reason: error.to_string(),
                })
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(EndEntityError::CaCertificate)
            }
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(EndEntityError::CaKeyUsage)
            }
            ParsedExtension::NameConstraints(_) => return Err(EndEntityError::NameConstraints),
            ParsedExtension::SubjectAlternativeName(san) => {
                if san.general_names.is_empty() {
                    return Err(EndEntityError::EmptySubjectAltName);
                }
                has_names = true;
            }
            _ => {}
        }
    }
    if tbs.subject().iter_attributes().next().is_none() && !has_names {
        return Err(EndEntityError::NoName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_limits_count_the_end_entity_and_every_byte() {
        let limits = ChainLimits {
            max_depth: 2,
            max_bytes: 10,
        };
        assert_eq!(check_chain_limits(&[0; 5], &[[0u8; 5]], limits), Ok(()));
        assert_eq!(
            check_chain_limits(&[0; 5], &[[0u8; 6]], limits),
            Err(EndEntityError::ChainTooLarge { bytes: 11, max: 10 })
        );
        assert_eq!(
            check_chain_limits(&[0; 1], &[[0u8; 1], [0u8; 1]], limits),
            Err(EndEntityError::ChainTooDeep { count: 3, max: 2 })
        );
    }

    #[test]
    fn every_label_is_listed() {
        let all = [
            EndEntityError::ChainTooDeep { count: 0, max: 0 },
            EndEntityError::ChainTooLarge { bytes: 0, max: 0 },
            EndEntityError::Malformed(String::new()),
            EndEntityError::TrailingData(0),
            EndEntityError::NotVersion3(1),
            EndEntityError::SerialTooLong(0),
            EndEntityError::SignatureAlgorithmMismatch,
            EndEntityError::DuplicateExtension(String::new()),
            EndEntityError::MalformedExtension {
                oid: String::new(),
                reason: String::new(),
            },
            EndEntityError::CaCertificate,
            EndEntityError::CaKeyUsage,
            EndEntityError::NameConstraints,
            EndEntityError::EmptySubjectAltName,
            EndEntityError::NoName,
        ];
        for e in all {
            assert!(EndEntityError::LABELS.contains(&e.label()), "{}", e.label());
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bytes in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 64]] {
            assert!(matches!(
                check_end_entity(bytes),
                Err(EndEntityError::Malformed(_))
            ));
        }
    }
}
