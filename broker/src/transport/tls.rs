//! The mutual-TLS transport: builds the rustls server configuration and turns a finished
//! handshake into a `PeerIdentity`. No MQTT here: the connection loop gets a byte stream and
//! the identity, whichever transport carried them.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::verify::{self, ClientVerifier, LeafId};

/// What a transport learned about its peer before the first MQTT byte.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// Common Name of the verified client certificate, if the peer presented one.
    pub common_name: Option<String>,
    /// The verified chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Issuer and serial of the end-entity certificate (revocation of live sessions).
    pub leaf: Option<LeafId>,
    /// notAfter of the end-entity certificate, seconds since the Unix epoch: the connection
    /// ends then.
    pub not_after: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no usable PEM private key: {reason}")]
    BadKey { path: String, reason: String },
    #[error("{path}: bad CA certificate: {reason}")]
    BadCa { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("{path}: bad CRL: {reason}")]
    Crl { path: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsSetupError::BadKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The crypto provider of every listener (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration that demands a client certificate `verifier` accepts (a CA of the
/// listener's, the clientAuth EKU, not revoked, RFC 5280 end-entity rules).
/// TLS 1.2 and 1.3 only, no 0-RTT, no session tickets carrying early data.
pub fn server_config(
    verifier: Arc<ClientVerifier>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    Ok(Arc::new(mutual_tls(
        verifier, cert_file, key_file, versions,
    )?))
}

/// The same client verification for another transport (QUIC: TLS 1.3 only, its own ALPN).
pub fn mutual_tls(
    verifier: Arc<ClientVerifier>,
    cert_file: &Path,
    key_file: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ServerConfig, TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert_file)?, load_key(key_file)?)?;
    // 0-RTT data is replayable: never accept it on a control network.
    config.max_early_data_size = 0;
    Ok(config)
}

/// Identity of a peer from its verified chain (the leaf is parsed once, here).
pub fn identity_from_chain(chain: Option<&[CertificateDer<'static>]>) -> PeerIdentity {
    let Some(chain) = chain else {
        return PeerIdentity::default();
    };
    let parsed = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
        .map(|(_, cert)| cert);
    PeerIdentity {
        common_name: parsed.as_ref().and_then(common_name),
        leaf: parsed.as_ref().map(|cert| LeafId {
            issuer: cert.issuer().as_raw().into(),
            serial: cert.raw_serial().into(),
        }),
        not_after: parsed
            .as_ref()
            .map(|cert| cert.validity().not_after.timestamp()),
        chain: chain.to_vec(),
    }
}

/// The first Common Name of a certificate's subject, if it has one that is valid UTF-8.
fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A short, stable label for a failed handshake (metrics and logs).
pub fn handshake_failure_reason(err: &std::io::Error) -> &'static str {
    let Some(inner) = err.get_ref() else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        };
    };
    let Some(tls) = inner.downcast_ref::<rustls::Error>() else {
        return "io";
    };
    use rustls::{CertificateError as C, Error as E};
    if let Some(label) = verify::refusal_label(tls) {
        return label;
    }
    match tls {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "cert_expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "cert_not_yet_valid"
        }
        E::InvalidCertificate(C::UnknownIssuer) => "cert_unknown_issuer",
        E::InvalidCertificate(C::Revoked) => "cert_revoked",
        E::InvalidCertificate(C::UnknownRevocationStatus) => "cert_revocation_unknown",
        E::InvalidCertificate(
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. },
        ) => "crl_expired",
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "cert_wrong_purpose"
        }
        E::InvalidCertificate(C::BadSignature | C::UnsupportedSignatureAlgorithmContext { .. }) => {
            "cert_bad_signature"
        }
        E::InvalidCertificate(_) => "cert_invalid",
        E::NoCertificatesPresented => "no_client_certificate",
        E::PeerIncompatible(_) => "incompatible",
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => "protocol",
        E::InvalidMessage(_) => "malformed",
        E::AlertReceived(_) => "alert_received",
        _ => "other",
    }
}
