//! Issuing end-entity certificates: the request, the certificate profile
//! (CA:FALSE, digitalSignature, clientAuth, AKI/SKI), CSR handling, serial
//! numbers and writing the device's files.
//!
//! A CSR contributes its public key and nothing else unless the request
//! opts into its SAN URIs and DNS names: the subject, validity, key usage
//! and every other extension are the CA's. Its self-signature is verified
//! first (proof that the requester holds the key).

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::encode::Encoding;
use super::{der, files, CaError, Entry, KeyAlgorithm};

/// Default lifetime of a device certificate.
pub const DEFAULT_DAYS: u32 = 365;
/// Longest lifetime accepted for any certificate (100 years): a typo guard.
pub const MAX_DAYS: u32 = 36_500;
/// A CSR is a few hundred bytes; bounds parsing of whatever file was passed.
pub const MAX_CSR_BYTES: usize = 64 * 1024;
/// notBefore is set this far in the past: PLC and RTU clocks drift, and a
/// certificate that is "not yet valid" for a minute is a failed commissioning.
pub const BACKDATE: Duration = Duration::hours(1);
/// Random bytes in a serial number (RFC 5280 allows up to 20 octets; CA/B
/// Forum asks for at least 64 random bits).
pub(crate) const SERIAL_BYTES: usize = 16;

/// What to issue. `device` and `zone` are required; see [`IssueRequest::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// Device name (`A-Z a-z 0-9 . _ -`, at most 64 bytes).
    pub device: String,
    /// Zone id as in the policy.
    pub zone: String,
    /// Device profile. Recorded in the index; with
    /// [`Ca::issue_for_policy`](super::Ca::issue_for_policy) it also decides
    /// the encoding and is checked.
    pub profile: Option<String>,
    /// Lifetime in days, 1 to [`MAX_DAYS`].
    pub days: u32,
    /// Extra SAN URIs. With none (and no profile pattern), the CA adds
    /// `urn:dev:<namespace>:<zone>:<device>` if it has a URN namespace.
    pub san_uris: Vec<String>,
    /// SAN DNS names.
    pub san_dns: Vec<String>,
    /// Certificate policy OIDs, dotted (profiles can require one).
    pub policy_oids: Vec<String>,
    /// A PEM CSR: sign its public key instead of generating a key pair.
    pub csr_pem: Option<String>,
    /// Copy the CSR's SAN URIs and DNS names into the certificate. Off by
    /// default: the CA, not the requester, decides the names.
    pub csr_sans: bool,
    /// Algorithm of a generated key pair (ignored with a CSR).
    pub key_algorithm: KeyAlgorithm,
}

impl IssueRequest {
    /// A request for `device` in `zone` with the defaults: 365 days, a new
    /// ECDSA P-256 key, no profile.
    pub fn new(device: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            zone: zone.into(),
            profile: None,
            days: DEFAULT_DAYS,
            san_uris: Vec::new(),
            san_dns: Vec::new(),
            policy_oids: Vec::new(),
            csr_pem: None,
            csr_sans: false,
            key_algorithm: KeyAlgorithm::default(),
        }
    }
}

/// An issued certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Issued {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The new private key, PKCS#8 PEM; `None` when a CSR was signed.
    pub key_pem: Option<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// The index entry recorded for it.
    pub entry: Entry,
}

/// Where [`Issued::write_files`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedFiles {
    /// `<out_dir>/<device>.pem`
    pub cert: PathBuf,
    /// `<out_dir>/<device>.key` (mode 0600), when a key was generated.
    pub key: Option<PathBuf>,
}

impl Issued {
    /// Writes `<device>.pem` and, with a generated key, `<device>.key` (mode
    /// 0600 from creation) into `out_dir`, creating it if needed. Existing
    /// files are an error unless `overwrite` (renewal), which replaces them
    /// atomically. The device name was checked at issue, so it is a plain
    /// file name.
    pub fn write_files(&self, out_dir: &Path, overwrite: bool) -> Result<IssuedFiles, CaError> {
        std::fs::create_dir_all(out_dir).map_err(files::io_err(out_dir))?;
        let cert = out_dir.join(format!("{}.pem", self.entry.device));
        let key = out_dir.join(format!("{}.key", self.entry.device));
        let write = |path: &Path, text: &str, mode| {
            if overwrite {
                files::write_atomic(path, text.as_bytes(), mode)
            } else {
                files::write_new(path, text.as_bytes(), mode)
            }
        };
        if !overwrite {
            // Check both first so that a refusal leaves nothing half-written.
            for path in [&cert, &key] {
                if path.exists() {
                    return Err(CaError::FileExists(path.clone()));
                }
            }
        }
        let key = match &self.key_pem {
            Some(pem) => {
                write(&key, pem, files::PRIVATE)?;
                Some(key)
            }
            None => None,
        };
        write(&cert, &self.cert_pem, files::PUBLIC)?;
        Ok(IssuedFiles { cert, key })
    }
}

/// The subject's public key: a new key pair, or a CSR's key.
pub(crate) enum SubjectKey {
    Generated(Box<KeyPair>),
    Csr(Box<CertificateSigningRequestParams>),
}

impl SubjectKey {
    /// A verified CSR, or a new key of `alg`.
    pub(crate) fn for_request(req: &IssueRequest) -> Result<Self, CaError> {
        let Some(pem) = &req.csr_pem else {
            return Ok(Self::Generated(Box::new(KeyPair::generate_for(
                req.key_algorithm.rcgen(),
            )?)));
        };
        if pem.len() > MAX_CSR_BYTES {
            return Err(CaError::BadCsr(format!(
                "{} bytes; a CSR is at most {MAX_CSR_BYTES}",
                pem.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
            CaError::BadCsr(match e {
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "its signature does not verify (was it altered, or signed with another key?)"
                        .to_owned()
                }
                rcgen::Error::CouldNotParseCertificationRequest => {
                    "not a PEM PKCS#10 certificate request".to_owned()
                }
                rcgen::Error::UnsupportedExtension => {
                    "it requests an extension this CA does not read; request only SAN, key \
                     usage, extended key usage or basic constraints"
                        .to_owned()
                }
                other => other.to_string(),
            })
        })?;
        Ok(Self::Csr(Box::new(csr)))
    }

    /// The CSR's SAN URIs and DNS names.
    pub(crate) fn csr_sans(&self) -> (Vec<String>, Vec<String>) {
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Self::Csr(csr) = self {
            for san in &csr.params.subject_alt_names {
                match san {
                    SanType::URI(u) => uris.push(u.as_str().to_owned()),
                    SanType::DnsName(d) => dns.push(d.as_str().to_owned()),
                    _ => {}
                }
            }
        }
        (uris, dns)
    }

    pub(crate) fn key_pem(&self) -> Option<String> {
        match self {
            Self::Generated(k) => Some(k.serialize_pem()),
            Self::Csr(_) => None,
        }
    }
}

/// The end-entity certificate parameters.
pub(crate) fn leaf_params(
    enc: &Encoding,
    serial: &[u8],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (ty, value) in [
        (DnType::CommonName, &enc.cn),
        (DnType::OrganizationalUnitName, &enc.ou),
        (DnType::OrganizationName, &enc.o),
    ] {
        if let Some(v) = value {
            dn.push(ty, v.as_str());
        }
    }
    params.distinguished_name = dn;
    params.subject_alt_names = enc
        .san_uris
        .iter()
        .map(|u| Ok(SanType::URI(u.as_str().try_into()?)))
        .chain(
            enc.san_dns
                .iter()
                .map(|d| Ok(SanType::DnsName(d.as_str().try_into()?))),
        )
        .collect::<Result<_, rcgen::Error>>()?;
    if !enc.policy_oids.is_empty() {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &der::CERTIFICATE_POLICIES,
                der::certificate_policies(&enc.policy_oids)?,
            ));
    }
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = not_before;
    params.not_after = not_after;
    // basicConstraints CA:FALSE, written explicitly so no verifier has to guess.
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA and Ed25519 keys only sign; keyEncipherment is for RSA key transport.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // Profiles can match the issuer by its key id; the SKI comes with CA:FALSE.
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A random positive serial not in `taken`.
pub(crate) fn fresh_serial(taken: &[Entry]) -> Result<Vec<u8>, CaError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    // Collisions of 127 random bits do not happen; the loop only guards a
    // broken generator from producing a reused serial.
    for _ in 0..8 {
        let mut serial = [0u8; SERIAL_BYTES];
        rng.fill(&mut serial).map_err(|_| CaError::Random)?;
        // Positive, and no leading zero octet, so the DER integer is exactly
        // these bytes and the hex in the index equals what parsers print.
        if let Some(first) = serial.first_mut() {
            *first = (*first & 0x7f).max(1);
        }
        let hex = crate::certs::identity::hex(&serial);
        if !taken.iter().any(|e| e.serial == hex) {
            return Ok(serial.to_vec());
        }
    }
    Err(CaError::Random)
}
