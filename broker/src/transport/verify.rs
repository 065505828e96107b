//! Client-certificate verification for the TLS and QUIC listeners: one verifier, so a device
//! gets the same answer whichever transport it uses.
//!
//! In order, for every handshake:
//! 1. the chain's depth and total size against `ChainLimits`, on lengths alone, before any
//!    certificate is parsed;
//! 2. the RFC 5280 end-entity rules that webpki does not enforce
//!    (`converge_security::certs::check_end_entity`);
//! 3. webpki: chain to a trusted CA, validity, clientAuth EKU and, when a CRL file is
//!    configured, revocation, with unknown status refused.
//!
//! The CRL file is re-read when it changes (`reload_crl`, polled by the server and on
//! SIGHUP): the webpki verifier is rebuilt and swapped behind a lock that handshakes hold only
//! to clone an `Arc`. The serials the CRLs list are kept as a set so that the broker can close
//! live sessions whose certificate was just revoked (`is_revoked`). A CRL file that cannot be
//! read or parsed leaves the previous CRLs in force.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
};
use x509_parser::prelude::FromDer;

use converge_security::certs::{check_chain_limits, check_end_entity, ChainLimits, EndEntityError};

use super::tls::TlsSetupError;

/// Where revocation information comes from.
#[derive(Debug, Clone)]
pub struct CrlSettings {
    /// PEM (one or more CRLs) or DER (one CRL).
    pub path: PathBuf,
    /// Refuse every certificate once a CRL is past its nextUpdate.
    pub enforce_next_update: bool,
}

/// Issuer and serial number of a certificate: what a CRL entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeafId {
    /// The issuer's distinguished name, DER.
    pub issuer: Box<[u8]>,
    /// The serial number's DER INTEGER content octets.
    pub serial: Box<[u8]>,
}

impl LeafId {
    /// The serial as colon-free lower-case hex, as `converge cert list` prints it.
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a CRL reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlLoaded {
    pub crls: usize,
    pub revoked: usize,
}

/// The verifier both listeners use (see the module comment).
pub struct ClientVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    hints: Vec<DistinguishedName>,
    limits: ChainLimits,
    crl: Option<CrlSettings>,
    current: RwLock<Arc<Current>>,
}

struct Current {
    webpki: Arc<dyn ClientCertVerifier>,
    revoked: HashSet<LeafId>,
    /// The CRL file's bytes the verifier was built from (to see whether it changed).
    crl_bytes: Vec<u8>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("limits", &self.limits)
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

impl ClientVerifier {
    /// Trusts the CAs in `ca_file`. With `crl`, its file must exist and parse: starting without
    /// the revocation list the operator asked for would admit revoked devices.
    pub fn new(
        ca_file: &Path,
        crl: Option<CrlSettings>,
        limits: ChainLimits,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientVerifier, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        for ca in super::tls::load_certs(ca_file)? {
            roots.add(ca).map_err(|e| TlsSetupError::BadCa {
                path: ca_file.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let hints = roots.subjects();
        let crl_bytes = match &crl {
            Some(c) => read_crl_file(&c.path)?,
            None => Vec::new(),
        };
        let current = build(&roots, &provider, crl.as_ref(), crl_bytes)?;
        Ok(ClientVerifier {
            roots,
            provider,
            hints,
            limits,
            crl,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// The CRL file this verifier watches, if any.
    pub fn crl_path(&self) -> Option<&Path> {
        self.crl.as_ref().map(|c| c.path.as_path())
    }

    /// Reads the CRL file again. `Ok(None)`: unchanged (or no CRL configured). `Ok(Some)`: the
    /// new CRLs are in force for every later handshake. `Err`: the old ones stay in force.
    pub fn reload_crl(&self) -> Result<Option<CrlLoaded>, TlsSetupError> {
        let Some(settings) = &self.crl else {
            return Ok(None);
        };
        let bytes = read_crl_file(&settings.path)?;
        if bytes == self.current().crl_bytes {
            return Ok(None);
        }
        let fresh = build(&self.roots, &self.provider, Some(settings), bytes)?;
        let loaded = CrlLoaded {
            crls: crl_count(&fresh.crl_bytes),
            revoked: fresh.revoked.len(),
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(Some(loaded))
    }

    /// Whether the CRLs in force list this certificate.
    pub fn is_revoked(&self, leaf: &LeafId) -> bool {
        self.current().revoked.contains(leaf)
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_chain_limits(end_entity.as_ref(), intermediates, self.limits).map_err(refused)?;
        check_end_entity(end_entity.as_ref()).map_err(refused)?;
        self.current()
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Our refusal inside rustls' error type. Its text starts with the label, so that QUIC (where
/// quinn passes the TLS error on as text) can be labelled as precisely as TLS.
#[derive(Debug)]
pub struct Refused(pub EndEntityError);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.label(), self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(e: EndEntityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(e)))))
}

/// The metrics label of one of our refusals, if `err` is one.
pub fn refusal_label(err: &rustls::Error) -> Option<&'static str> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<Refused>().map(|r| r.0.label())
        }
        _ => None,
    }
}

fn read_crl_file(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The CRLs of a file: every PEM `X509 CRL` block, or the whole file as one DER CRL.
fn split_crls(bytes: &[u8]) -> Vec<CertificateRevocationListDer<'static>> {
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if pem.is_empty() && bytes.first() == Some(&0x30) {
        return vec![CertificateRevocationListDer::from(bytes.to_vec())];
    }
    pem
}

fn crl_count(bytes: &[u8]) -> usize {
    split_crls(bytes).len()
}

fn build(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    settings: Option<&CrlSettings>,
    crl_bytes: Vec<u8>,
) -> Result<Current, TlsSetupError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let mut revoked = HashSet::new();
    if let Some(settings) = settings {
        let crls = split_crls(&crl_bytes);
        let bad = |reason: String| TlsSetupError::Crl {
            path: settings.path.display().to_string(),
            reason,
        };
        if crls.is_empty() {
            return Err(bad(
                "no CRL in the file (PEM `X509 CRL` blocks or one DER CRL)".into(),
            ));
        }
        for crl in &crls {
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
                    .map_err(|e| bad(e.to_string()))?;
            let issuer: Box<[u8]> = parsed.issuer().as_raw().into();
            for entry in parsed.iter_revoked_certificates() {
                revoked.insert(LeafId {
                    issuer: issuer.clone(),
                    serial: entry.raw_serial().into(),
                });
            }
        }
        // Unknown revocation status (no CRL from a certificate's issuer) is refused: that is
        // the builder's default, kept on purpose.
        builder = builder.with_crls(crls);
        if settings.enforce_next_update {
            builder = builder.enforce_revocation_expiration();
        }
    }
    let webpki = builder
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
    Ok(Current {
        webpki,
        revoked,
        crl_bytes,
    })
}
