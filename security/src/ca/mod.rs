//! Certificate administration: the plant CA.
//!
//! For admins who run their own CA for devices. Everything lives in one
//! directory, normally `<data_dir>/pki/` ([`default_dir`]), mode 0700. It
//! is the same directory as the development PKI that `converge serve`
//! creates on first start (which uses [`Ca::init`] and [`Ca::issue`] and adds
//! its own server certificate, `server.pem`/`server.key`, and the demo
//! devices in `devices/`), so `converge cert issue/list/revoke` work on a
//! quick-start installation as they are:
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `ca.key` | CA private key, PKCS#8 PEM; never leaves the directory except through [`Ca::export_key`] | 0600 |
//! | `ca.pem` | CA certificate (the TLS server's client-CA) | 0644 |
//! | `crl.pem` | current CRL, replaced atomically on every revocation and renewal | 0644 |
//! | `index.jsonl` | one [`Entry`] per issued certificate | 0644 |
//! | `state.toml` | CRL number, CRL lifetime, URN namespace | 0644 |
//! | `lock` | present while a command changes the directory | |
//!
//! The CLI is a thin wrapper (clap in the broker binary); each command is
//! one call here and prints the returned value:
//!
//! ```text
//! converge ca init [--name N] [--org O] [--urn-namespace NS] [--days N] [--crl-days N] [--key-alg A] [--force]
//!     Ca::init(&default_dir(data_dir), InitOptions { .. })
//! converge ca crl                      Ca::open(dir)?.renew_crl()       (from a daily timer)
//! converge ca export-key FILE          Ca::open(dir)?.export_key(FILE)
//! converge cert issue --device D --zone Z [--profile P] [--days N] [--san-uri U].. [--san-dns H]..
//!                     [--policy-oid O].. [--csr FILE [--csr-sans]] [--out DIR] [--overwrite] [--policy FILE]
//!     let req = IssueRequest { profile, days, .. IssueRequest::new(D, Z) };
//!     let issued = match policy {                       // --policy FILE, or the server's policy
//!         Some(p) => ca.issue_for_policy(req, &p)?,     // encodes as the profile reads, checks
//!         None => ca.issue(req)?,
//!     };
//!     issued.write_files(out_dir, overwrite)?           // <D>.pem, <D>.key (0600)
//! converge cert list                   format_table(&ca.list()?, SystemTime::now())
//! converge cert revoke SERIAL --reason R
//!                                      ca.revoke(SERIAL, R.parse::<RevocationReason>()?)
//! converge cert inspect FILE [--policy FILE]
//!                                      ca.inspect(&bytes, &policy, now)?.to_string()
//!                                      (or ca::inspect without a CA directory)
//! ```
//!
//! Time-dependent operations have `_at(.., now)` forms for tests; the plain
//! forms read the system clock. docs/SECURITY.md, "Certificate
//! administration", describes the files, the encoding and the CRL.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod crl;
mod der;
mod encode;
mod files;
mod index;
mod inspect;
mod issue;
mod time_fmt;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::certs::identity::hex;
use crate::policy::compile::CompiledPolicy;
use crate::policy::model::DeviceSource;
use crate::{resolve, CertAttributes, CertError, IdentityError};

pub use encode::{check_name, MAX_NAME_LEN};
pub use files::{CERT_FILE, CRL_FILE, INDEX_FILE, KEY_FILE, LOCK_FILE, STATE_FILE};
pub use index::{format_table, Entry, Revocation, RevocationReason, Status};
pub use inspect::{inspect, Grant, Inspection, CLIENT_ID_PLACEHOLDER};
pub use issue::{
    IssueRequest, Issued, IssuedFiles, BACKDATE, DEFAULT_DAYS, MAX_CSR_BYTES, MAX_DAYS,
};
pub use time_fmt::datetime;

/// Default lifetime of the CA certificate: ten years, about a plant's
/// hardware refresh cycle.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default CRL lifetime. A verifier that enforces nextUpdate refuses every
/// client once the CRL is stale, so renew it well inside this (daily).
pub const DEFAULT_CRL_DAYS: u32 = 7;
/// Longest CRL lifetime accepted: a stale CRL hides revocations from
/// verifiers that cache it.
pub const MAX_CRL_DAYS: u32 = 366;

/// The CA directory under a data directory: `<data_dir>/pki`, shared with
/// the broker's development PKI.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a CA already exists in {0}; use --force to replace it (the old files are kept with a .old suffix)")]
    AlreadyExists(PathBuf),
    #[error("no CA in {0}: run `converge ca init` first")]
    NotFound(PathBuf),
    #[error("{0} already exists; remove it or overwrite explicitly")]
    FileExists(PathBuf),
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600` on it")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "another converge ca/cert command is running ({0} exists); if none is, remove that file"
    )]
    Locked(PathBuf),
    #[error("invalid {kind} {value:?}: {why}")]
    BadName {
        kind: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid {kind} {value:?}: {why}")]
    BadValue {
        kind: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{kind} of {days} days is out of range (1 to {max})")]
    DaysOutOfRange {
        kind: &'static str,
        days: u32,
        max: u32,
    },
    #[error("the certificate would expire after the CA ({0}); ask for fewer days or renew the CA")]
    OutlivesCa(String),
    #[error("unusable CSR: {0}")]
    BadCsr(String),
    #[error("no certificate with serial {0} in the index (see `converge cert list`)")]
    UnknownSerial(String),
    #[error("certificate {serial} is already revoked ({reason})")]
    AlreadyRevoked {
        serial: String,
        reason: RevocationReason,
    },
    #[error("unknown revocation reason {0:?}; use one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise")]
    UnknownReason(String),
    #[error("unknown key algorithm {0:?}; use ecdsa-p256, ecdsa-p384 or ed25519")]
    UnknownKeyAlgorithm(String),
    #[error("profile {0:?} is not in the policy")]
    UnknownProfile(String),
    #[error("cannot issue for profile {profile:?}: {why}")]
    ProfileCannotEncode { profile: String, why: String },
    #[error("the policy would refuse the certificate: {error}{hint}")]
    PolicyRefuses { error: IdentityError, hint: String },
    #[error("under the policy the certificate would be {got}, not {wanted}")]
    PolicyMismatch { got: String, wanted: String },
    #[error("not a certificate: {0}")]
    NotACertificate(String),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    Random,
}

/// Key algorithm of the CA and of generated device keys. RSA is absent:
/// ring cannot generate RSA keys, and ECDSA suits constrained devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl FromStr for KeyAlgorithm {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, CaError> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa-p256" | "p256" | "p-256" | "ec" => Ok(Self::EcdsaP256),
            "ecdsa-p384" | "p384" | "p-384" => Ok(Self::EcdsaP384),
            "ed25519" => Ok(Self::Ed25519),
            _ => Err(CaError::UnknownKeyAlgorithm(s.to_owned())),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
        })
    }
}

/// Options of [`Ca::init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// CA common name, e.g. `Plant1 Device CA`. The policy's `[[ca]]`
    /// `subject` names it (`CN=Plant1 Device CA, O=ACME Plant1`).
    pub name: String,
    /// Organization (O) of the CA, also written into device subjects.
    pub organization: Option<String>,
    /// With a namespace, certificates without other SAN URIs get
    /// `urn:dev:<namespace>:<zone>:<device>`.
    pub urn_namespace: Option<String>,
    /// CA lifetime in days.
    pub days: u32,
    /// CRL lifetime (nextUpdate − thisUpdate) in days.
    pub crl_days: u32,
    pub key_algorithm: KeyAlgorithm,
    /// Replace an existing CA; its files are renamed with a `.old` suffix.
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            name: "Converge Plant CA".to_owned(),
            organization: None,
            urn_namespace: None,
            days: DEFAULT_CA_DAYS,
            crl_days: DEFAULT_CRL_DAYS,
            key_algorithm: KeyAlgorithm::default(),
            force: false,
        }
    }
}

/// The result of a revocation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Revoked {
    /// The updated index entry.
    pub entry: Entry,
    /// The number of the CRL now in `crl.pem`.
    pub crl_number: u64,
}

/// An open CA directory. Holds the CA key in memory; every change to the
/// directory takes the lock and re-reads the index, so two processes never
/// lose each other's entries.
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    subject: String,
    organization: Option<String>,
    key_id: Vec<u8>,
    not_after: i64,
}

/// `state.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Number of the last CRL written.
    crl_number: u64,
    crl_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    urn_namespace: Option<String>,
}

impl Ca {
    /// Creates a CA in `dir`: key, self-signed certificate, empty index and
    /// an empty CRL (so the server has one to load from the start).
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Self, CaError> {
        Self::init_at(dir, opts, SystemTime::now())
    }

    /// [`Ca::init`] at `now`.
    pub fn init_at(dir: &Path, opts: &InitOptions, now: SystemTime) -> Result<Self, CaError> {
        check_dn_value("CA name", &opts.name)?;
        if let Some(o) = &opts.organization {
            check_dn_value("organization", o)?;
        }
        if let Some(ns) = &opts.urn_namespace {
            check_name("URN namespace", ns)?;
            if ns.contains(':') {
                return Err(CaError::BadName {
                    kind: "URN namespace",
                    value: ns.clone(),
                    why: "it contains ':'",
                });
            }
        }
        check_days("CA lifetime", opts.days, MAX_DAYS)?;
        check_days("CRL lifetime", opts.crl_days, MAX_CRL_DAYS)?;

        files::create_private_dir(dir)?;
        let _lock = files::Lock::acquire(dir)?;
        let existing = [KEY_FILE, CERT_FILE].iter().any(|f| dir.join(f).exists());
        if existing {
            if !opts.force {
                return Err(CaError::AlreadyExists(dir.to_path_buf()));
            }
            for f in [KEY_FILE, CERT_FILE, INDEX_FILE, CRL_FILE, STATE_FILE] {
                let path = dir.join(f);
                if path.exists() {
                    let old = dir.join(format!("{f}.old"));
                    std::fs::rename(&path, &old).map_err(files::io_err(&old))?;
                }
            }
        }

        let now = OffsetDateTime::from(now);
        let key = KeyPair::generate_for(opts.key_algorithm.rcgen())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, opts.name.as_str());
        if let Some(o) = &opts.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        // Path length 0: this CA signs devices, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        // cRLSign: webpki refuses a CRL from an issuer whose key usage lacks it.
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(&issue::fresh_serial(&[])?));
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(opts.days));
        let cert = params.self_signed(&key)?;

        files::write_new(
            &dir.join(KEY_FILE),
            key.serialize_pem().as_bytes(),
            files::PRIVATE,
        )?;
        files::write_atomic(&dir.join(CERT_FILE), cert.pem().as_bytes(), files::PUBLIC)?;
        index::write(&dir.join(INDEX_FILE), &[])?;
        write_state(
            dir,
            &State {
                crl_number: 0,
                crl_days: opts.crl_days,
                urn_namespace: opts.urn_namespace.clone(),
            },
        )?;
        let ca = Self::open(dir)?;
        ca.write_crl_locked(&[], now)?;
        Ok(ca)
    }

    /// Opens the CA in `dir`. Refuses a `ca.key` that others can read and a
    /// key that does not match `ca.pem`.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        if !key_path.exists() || !cert_path.exists() {
            return Err(CaError::NotFound(dir.to_path_buf()));
        }
        files::check_private(&key_path)?;
        let corrupt = |path: &Path, why: String| CaError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let key = KeyPair::from_pem(&files::read_to_string(&key_path)?)
            .map_err(|e| corrupt(&key_path, format!("not a usable private key: {e}")))?;
        let cert_pem = files::read_to_string(&cert_path)?;
        let der = inspect::certificate_der(cert_pem.as_bytes())
            .map_err(|e| corrupt(&cert_path, e.to_string()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| corrupt(&cert_path, e.to_string()))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(corrupt(
                &cert_path,
                format!("the certificate does not belong to the key in {KEY_FILE}"),
            ));
        }
        let key_id = x509
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .ok_or_else(|| corrupt(&cert_path, "no subject key identifier".to_owned()))?;
        let subject = x509.subject().to_string();
        let organization = x509
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_owned);
        let not_after = x509.validity().not_after.timestamp();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer,
            cert_pem,
            subject,
            organization,
            key_id,
            not_after,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `ca.pem`: what the TLS server trusts for client certificates.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }
    /// `crl.pem`: what the TLS server loads (and reloads) as its CRL.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL_FILE)
    }
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    /// The CA subject, e.g. `CN=Plant1 Device CA, O=ACME Plant1`: the
    /// `subject` of the policy's `[[ca]]` entry.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The CA's subject key identifier, hex: usable as the `[[ca]]` `key_id`.
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id)
    }

    /// Issues a certificate with the default encoding (module `encode`:
    /// `CN=<device>, OU=<zone>, O=<organization>` and the URN SAN) and
    /// records it.
    pub fn issue(&self, req: IssueRequest) -> Result<Issued, CaError> {
        self.issue_at(req, SystemTime::now())
    }

    /// [`Ca::issue`] at `now`.
    pub fn issue_at(&self, req: IssueRequest, now: SystemTime) -> Result<Issued, CaError> {
        self.issue_inner(req, None, now)
    }

    /// Issues a certificate that `policy` resolves to `req.device` in
    /// `req.zone` (and to `req.profile` if given): with a profile, the
    /// device and zone are encoded as that profile reads them and its policy
    /// OID is added. The certificate is resolved before it is recorded; a
    /// mismatch records nothing. With no profile given, the profile it
    /// resolves to is recorded.
    pub fn issue_for_policy(
        &self,
        req: IssueRequest,
        policy: &CompiledPolicy,
    ) -> Result<Issued, CaError> {
        self.issue_for_policy_at(req, policy, SystemTime::now())
    }

    /// [`Ca::issue_for_policy`] at `now`.
    pub fn issue_for_policy_at(
        &self,
        req: IssueRequest,
        policy: &CompiledPolicy,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        self.issue_inner(req, Some(policy), now)
    }

    /// Every issued certificate, in issue order.
    pub fn list(&self) -> Result<Vec<Entry>, CaError> {
        index::read(&self.dir.join(INDEX_FILE))
    }

    /// Revokes the certificate with `serial` (hex, any case, `:` allowed)
    /// and rewrites the CRL with the next CRL number.
    pub fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<Revoked, CaError> {
        self.revoke_at(serial, reason, SystemTime::now())
    }

    /// [`Ca::revoke`] at `now`.
    pub fn revoke_at(
        &self,
        serial: &str,
        reason: RevocationReason,
        now: SystemTime,
    ) -> Result<Revoked, CaError> {
        let wanted = normalize_serial(serial)?;
        let _lock = files::Lock::acquire(&self.dir)?;
        let mut entries = self.list()?;
        let entry = entries
            .iter_mut()
            .find(|e| e.serial == wanted)
            .ok_or_else(|| CaError::UnknownSerial(serial.to_owned()))?;
        if let Some(r) = entry.revoked {
            return Err(CaError::AlreadyRevoked {
                serial: entry.serial.clone(),
                reason: r.reason,
            });
        }
        entry.revoked = Some(Revocation {
            at: unix_seconds(now),
            reason,
        });
        let entry = entry.clone();
        // The index is the truth; the CRL is derived from it right after.
        index::write(&self.dir.join(INDEX_FILE), &entries)?;
        let crl_number = self.write_crl_locked(&entries, OffsetDateTime::from(now))?;
        Ok(Revoked { entry, crl_number })
    }

    /// Writes a fresh CRL (same entries, next number, new nextUpdate).
    /// Run it daily so the CRL never goes stale; returns the CRL number.
    pub fn renew_crl(&self) -> Result<u64, CaError> {
        self.renew_crl_at(SystemTime::now())
    }

    /// [`Ca::renew_crl`] at `now`.
    pub fn renew_crl_at(&self, now: SystemTime) -> Result<u64, CaError> {
        let _lock = files::Lock::acquire(&self.dir)?;
        let entries = self.list()?;
        self.write_crl_locked(&entries, OffsetDateTime::from(now))
    }

    /// Copies the CA key to `dest` (mode 0600, must not exist): the one way
    /// the key leaves the CA directory, for backup or an offline CA host.
    pub fn export_key(&self, dest: &Path) -> Result<(), CaError> {
        files::write_new(
            dest,
            self.issuer.key().serialize_pem().as_bytes(),
            files::PRIVATE,
        )
    }

    /// [`inspect`] plus the certificate's status in this CA's index when
    /// this CA issued it (matched by fingerprint).
    pub fn inspect(
        &self,
        cert: &[u8],
        policy: &CompiledPolicy,
        now: SystemTime,
    ) -> Result<Inspection, CaError> {
        let mut found = inspect(cert, policy, now)?;
        found.index_status = self
            .list()?
            .iter()
            .find(|e| e.fingerprint == found.fingerprint)
            .map(|e| e.status(now));
        Ok(found)
    }

    fn issue_inner(
        &self,
        req: IssueRequest,
        policy: Option<&CompiledPolicy>,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        check_name("device", &req.device)?;
        check_name("zone", &req.zone)?;
        if let Some(p) = &req.profile {
            check_dn_value("profile", p)?;
        }
        check_days("certificate lifetime", req.days, MAX_DAYS)?;
        for u in &req.san_uris {
            encode::check_san("SAN URI", u)?;
        }
        for d in &req.san_dns {
            encode::check_san("SAN DNS name", d)?;
        }
        let state = read_state(&self.dir)?;
        let key = issue::SubjectKey::for_request(&req)?;
        let (mut uris, mut dns) = (req.san_uris.clone(), req.san_dns.clone());
        if req.csr_sans {
            let (csr_uris, csr_dns) = key.csr_sans();
            for u in &csr_uris {
                encode::check_san("SAN URI in the CSR", u)?;
            }
            for d in &csr_dns {
                encode::check_san("SAN DNS name in the CSR", d)?;
            }
            uris.extend(csr_uris);
            dns.extend(csr_dns);
        }
        let extra = encode::Extra {
            san_uris: &uris,
            san_dns: &dns,
            policy_oids: &req.policy_oids,
        };
        let org = self.organization.as_deref();
        let urn = state.urn_namespace.as_deref();
        let enc = match (policy, &req.profile) {
            (Some(p), Some(name)) => {
                encode::profile_encoding(p, name, &req.device, &req.zone, org, urn, extra)?
            }
            _ => encode::default_encoding(&req.device, &req.zone, org, urn, extra),
        };

        let now_dt = OffsetDateTime::from(now);
        let not_before = now_dt - BACKDATE;
        let not_after = now_dt + Duration::days(i64::from(req.days));
        if not_after.unix_timestamp() > self.not_after {
            return Err(CaError::OutlivesCa(time_fmt::datetime(self.not_after)));
        }

        let _lock = files::Lock::acquire(&self.dir)?;
        let mut entries = self.list()?;
        let serial = issue::fresh_serial(&entries)?;
        let params = issue::leaf_params(&enc, &serial, not_before, not_after)?;
        let cert = match &key {
            issue::SubjectKey::Generated(k) => params.signed_by(k.as_ref(), &self.issuer)?,
            issue::SubjectKey::Csr(csr) => params.signed_by(&csr.public_key, &self.issuer)?,
        };
        let attrs = CertAttributes::from_der(cert.der())?;
        let profile = match policy {
            Some(p) => Some(self.check_resolves(p, &attrs, &req)?),
            None => req.profile.clone(),
        };
        let (_, x509) = x509_parser::parse_x509_certificate(cert.der())
            .map_err(|e| CaError::NotACertificate(e.to_string()))?;
        let entry = Entry {
            serial: hex(&serial),
            subject: x509.subject().to_string(),
            device: req.device.clone(),
            zone: req.zone.clone(),
            profile,
            not_before: attrs.not_before,
            not_after: attrs.not_after,
            fingerprint: attrs.fingerprint_hex(),
            from_csr: req.csr_pem.is_some(),
            revoked: None,
        };
        entries.push(entry.clone());
        index::write(&self.dir.join(INDEX_FILE), &entries)?;
        Ok(Issued {
            serial: entry.serial.clone(),
            cert_pem: cert.pem(),
            key_pem: key.key_pem(),
            fingerprint: entry.fingerprint.clone(),
            entry,
        })
    }

    /// Resolves the new certificate as the broker will; returns the profile id.
    fn check_resolves(
        &self,
        policy: &CompiledPolicy,
        attrs: &CertAttributes,
        req: &IssueRequest,
    ) -> Result<String, CaError> {
        // The device name is a safe value, so it stands in for the client id.
        let subject = resolve(policy, attrs, &req.device).map_err(|error| {
            let hint = match &error {
                IdentityError::NoProfile => format!(
                    " (does a profile list this CA, {:?}, in its issuers, and does the \
                     certificate carry the profile's policy OID? name the profile to add it)",
                    self.subject
                ),
                _ => String::new(),
            };
            CaError::PolicyRefuses { error, hint }
        })?;
        let profile = policy
            .profiles
            .get(subject.profile().at())
            .ok_or_else(|| CaError::UnknownProfile(String::new()))?;
        let device_from_cert = !matches!(profile.device, DeviceSource::Fingerprint);
        let wanted = format!(
            "profile {:?}, zone {:?}, device {:?}",
            req.profile.as_deref().unwrap_or(profile.id()),
            req.zone,
            req.device
        );
        let got = format!(
            "profile {:?}, zone {:?}, device {:?}",
            profile.id(),
            subject.zone_name(),
            subject.device()
        );
        let profile_ok = req.profile.as_deref().is_none_or(|p| p == profile.id());
        let device_ok = !device_from_cert || subject.device() == req.device;
        if !profile_ok || subject.zone_name() != req.zone || !device_ok {
            return Err(CaError::PolicyMismatch { got, wanted });
        }
        Ok(profile.id().to_owned())
    }

    /// Signs and atomically writes the next CRL; the caller holds the lock.
    fn write_crl_locked(&self, entries: &[Entry], now: OffsetDateTime) -> Result<u64, CaError> {
        let mut state = read_state(&self.dir)?;
        state.crl_number = state.crl_number.saturating_add(1);
        // The number is stored before the CRL is written: a crash between
        // the two skips a number, which is allowed; reusing one is not.
        write_state(&self.dir, &state)?;
        let pem = crl::build(
            &self.issuer,
            &self.key_id,
            entries,
            state.crl_number,
            now,
            state.crl_days,
        )?;
        files::write_atomic(&self.dir.join(CRL_FILE), pem.as_bytes(), files::PUBLIC)?;
        Ok(state.crl_number)
    }
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A missing `state.toml` means defaults, so a CA made elsewhere (the
/// broker's development PKI, openssl) can be adopted by putting its
/// `ca.key` and `ca.pem` into a directory.
fn read_state(dir: &Path) -> Result<State, CaError> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                crl_number: 0,
                crl_days: DEFAULT_CRL_DAYS,
                urn_namespace: None,
            })
        }
        Err(e) => return Err(files::io_err(&path)(e)),
    };
    toml::from_str(&text).map_err(|e| CaError::Corrupt {
        path,
        why: e.message().to_owned(),
    })
}

fn write_state(dir: &Path, state: &State) -> Result<(), CaError> {
    let path = dir.join(STATE_FILE);
    let text = toml::to_string(state).map_err(|e| CaError::Corrupt {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let text =
        format!("# Converge plant CA state; crl_days and urn_namespace may be edited.\n{text}");
    files::write_atomic(&path, text.as_bytes(), files::PUBLIC)
}

/// A CA name, organization or profile id: the policy's `[[ca]]` subject
/// syntax has no escapes, so `,` `+` `=` and control characters cannot
/// appear in a value it has to name.
fn check_dn_value(kind: &'static str, value: &str) -> Result<(), CaError> {
    let bad = |why| CaError::BadValue {
        kind,
        value: value.to_owned(),
        why,
    };
    if value.trim().is_empty() || value.trim() != value {
        return Err(bad("it is empty or has leading or trailing spaces"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 64 bytes"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, ',' | '+' | '='))
    {
        return Err(bad("it contains a control character, ',', '+' or '='"));
    }
    Ok(())
}

fn check_days(kind: &'static str, days: u32, max: u32) -> Result<(), CaError> {
    if days == 0 || days > max {
        return Err(CaError::DaysOutOfRange { kind, days, max });
    }
    Ok(())
}

/// `5A:1F:…` or `5a1f…` → `5a1f…`; leading zero octets are dropped (some
/// tools print a `00` that the DER sign needs).
fn normalize_serial(text: &str) -> Result<String, CaError> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || der::unhex(&hex).is_none() {
        return Err(CaError::BadValue {
            kind: "serial",
            value: text.to_owned(),
            why: "not a hex serial number as `converge cert list` prints it",
        });
    }
    let mut rest = hex.as_str();
    while let Some(r) = rest.strip_prefix("00") {
        if r.is_empty() {
            break;
        }
        rest = r;
    }
    Ok(rest.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("5A:1F").unwrap(), "5a1f");
        assert_eq!(normalize_serial("00ff01").unwrap(), "ff01");
        assert_eq!(normalize_serial("00").unwrap(), "00");
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("abc").is_err());
        assert!(normalize_serial("").is_err());
    }

    #[test]
    fn dn_values() {
        check_dn_value("CA name", "Plant1 Device CA").unwrap();
        for bad in ["", " x", "a,b", "a+b", "a=b", "a\nb"] {
            assert!(check_dn_value("CA name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_algorithms_parse() {
        assert_eq!(
            "ECDSA-P384".parse::<KeyAlgorithm>().unwrap(),
            KeyAlgorithm::EcdsaP384
        );
        assert!("rsa".parse::<KeyAlgorithm>().is_err());
    }
}
