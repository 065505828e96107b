//! The development PKI that `converge serve` creates on first start, so that a fresh machine
//! runs with mutual TLS at once: a CA, a server certificate for localhost/127.0.0.1 and two
//! ready device certificates. Production deployments point the TLS listener at their own CA.
//!
//! The directory (`<data_dir>/pki/`) is also the plant CA's (`converge_security::ca`): the CA is
//! made by `Ca::init` (so `crl.pem`, `index.jsonl` and `state.toml` exist) and the demo devices
//! are issued by `Ca::issue` (so `converge cert list/revoke` see them). Only the server
//! certificate (serverAuth, not a device) is made here. A CA that an admin created with
//! `converge ca init` before the first start is adopted: only what is missing is created.
//!
//! Private keys are written with mode 0600 from the moment the file exists (no window in which
//! another user could read them); the directory is 0700.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use converge_security::ca::{
    Ca, CaError, InitOptions, IssueRequest, CERT_FILE, CRL_FILE, DEFAULT_DAYS, KEY_FILE,
};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The device certificate the quick start publishes with.
pub const DEMO_DEVICE: &str = "demo-device";
/// A second identity, so the quick start can subscribe while `demo-device` publishes (one client
/// id per connection: a second connection with the same id takes the session over).
pub const DEMO_MONITOR: &str = "demo-monitor";
/// The zone the demo devices are issued in (their OU).
pub const DEMO_ZONE: &str = "demo";
/// Common name of a CA the development PKI creates.
pub const DEV_CA_NAME: &str = "Converge development CA";
/// CRL lifetime of a CA the development PKI creates: a quick start left running for weeks
/// should not find its CRL stale (the CRL is also renewed at each start, see below).
pub const DEV_CRL_DAYS: u32 = 30;
/// At start, a CRL that expires sooner than this is renewed.
const RENEW_CRL_WITHIN: Duration = Duration::from_secs(3 * 24 * 3600);
/// Mode of the PKI directory.
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("development PKI: {0}")]
    Ca(#[from] CaError),
}

/// Paths of the development PKI's files.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The CA's CRL (`converge cert revoke` rewrites it).
    pub crl: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
    pub monitor_cert: PathBuf,
    pub monitor_key: PathBuf,
}

impl DevPki {
    pub fn paths(dir: &Path) -> DevPki {
        let devices = dir.join("devices");
        DevPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join(CERT_FILE),
            ca_key: dir.join(KEY_FILE),
            crl: dir.join(CRL_FILE),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            device_cert: devices.join(format!("{DEMO_DEVICE}.pem")),
            device_key: devices.join(format!("{DEMO_DEVICE}.key")),
            monitor_cert: devices.join(format!("{DEMO_MONITOR}.pem")),
            monitor_key: devices.join(format!("{DEMO_MONITOR}.key")),
        }
    }

    /// Creates what is missing: the CA (unless one exists, which is adopted), its CRL (renewed
    /// when it is about to expire), the server certificate and the two demo devices. Returns
    /// true when anything was created now.
    ///
    /// A directory with a CA certificate but no CA key (a CA kept elsewhere) is left as it is:
    /// the server then needs its certificate and key in place or configured.
    pub fn ensure(dir: &Path) -> Result<(DevPki, bool), PkiError> {
        let pki = DevPki::paths(dir);
        if pki.ca_cert.exists() && !pki.ca_key.exists() {
            return Ok((pki, false));
        }
        let mut created = false;
        let ca = if pki.ca_key.exists() {
            Ca::open(dir)?
        } else {
            created = true;
            Ca::init(
                dir,
                &InitOptions {
                    name: DEV_CA_NAME.to_owned(),
                    organization: Some("Converge".to_owned()),
                    crl_days: DEV_CRL_DAYS,
                    ..InitOptions::default()
                },
            )?
        };
        set_mode(dir, DIR_MODE)?;
        let now = SystemTime::now();
        if crl_needs_renewal(&pki.crl, now) {
            ca.renew_crl_at(now)?;
            created = true;
        }
        let ca_key_id = ca.key_id_hex();
        // A certificate of another CA (`converge ca init --force` since, or a version before the
        // CA was shared) would not chain to ca.pem: made again.
        if !(pki.server_key.exists() && signed_by(&pki.server_cert, &ca_key_id)) {
            pki.create_server_cert()?;
            created = true;
        }
        let devices = dir.join("devices");
        for (name, cert, key) in [
            (DEMO_DEVICE, &pki.device_cert, &pki.device_key),
            (DEMO_MONITOR, &pki.monitor_cert, &pki.monitor_key),
        ] {
            if key.exists() && signed_by(cert, &ca_key_id) {
                continue;
            }
            let mut req = IssueRequest::new(name, DEMO_ZONE);
            req.days = days_within(&pki.ca_cert, now)?;
            // A half-written pair is useless: replace both.
            ca.issue_at(req, now)?.write_files(&devices, true)?;
            created = true;
        }
        Ok((pki, created))
    }

    /// A server certificate for localhost/127.0.0.1 signed by the CA. Not recorded in the CA's
    /// index: it is not a device, and the CRL is for client certificates.
    fn create_server_cert(&self) -> Result<(), PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        let ca_key =
            KeyPair::from_pem(&fs::read_to_string(&self.ca_key).map_err(io(&self.ca_key))?)?;
        let ca_pem = fs::read_to_string(&self.ca_cert).map_err(io(&self.ca_cert))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = leaf_params(
            "localhost",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let days = days_within(&self.ca_cert, SystemTime::now())?;
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days.into());
        // The authority key id tells later starts which CA signed it.
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&self.server_key, &key.serialize_pem())?;
        write_public(&self.server_cert, &cert.pem())
    }
}

/// Whether the certificate in `path` names the CA with key id `ca_key_id` (hex) as its
/// authority key identifier. False when it is missing, unreadable or has no such extension.
fn signed_by(path: &Path, ca_key_id: &str) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&bytes) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&pem.contents) else {
        return false;
    };
    let found = cert.iter_extensions().any(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki
            .key_identifier
            .as_ref()
            .is_some_and(|k| hex(k.0) == ca_key_id),
        _ => false,
    });
    found
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `crl.pem` is missing, unreadable or expires within [`RENEW_CRL_WITHIN`].
fn crl_needs_renewal(path: &Path, now: SystemTime) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return true;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&bytes) else {
        return true;
    };
    let Ok((_, crl)) = x509_parser::parse_x509_crl(&pem.contents) else {
        return true;
    };
    let Some(next) = crl.next_update() else {
        return false;
    };
    let soon = now + RENEW_CRL_WITHIN;
    let soon = soon
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    next.timestamp() < soon
}

/// The default device lifetime, shortened so that a certificate does not outlive the CA (an
/// adopted CA may be short-lived).
fn days_within(ca_cert: &Path, now: SystemTime) -> Result<u32, PkiError> {
    let pem = fs::read(ca_cert).map_err(|source| PkiError::Io {
        path: ca_cert.to_path_buf(),
        source,
    })?;
    let not_after = x509_parser::pem::parse_x509_pem(&pem)
        .ok()
        .and_then(|(_, p)| {
            x509_parser::parse_x509_certificate(&p.contents)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        });
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(match not_after {
        // Whole days left, minus one for the hour of backdating and rounding.
        Some(t) => u32::try_from((t - now_s) / 86_400 - 1)
            .unwrap_or(0)
            .clamp(1, DEFAULT_DAYS),
        None => DEFAULT_DAYS,
    })
}

/// Parameters of an end-entity certificate valid for one year, with one extended key usage.
pub fn leaf_params(
    common_name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name);
    params.subject_alt_names = sans
        .into_iter()
        .map(|s| match s.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Converge");
    dn
}

/// Writes a key file created with mode 0600, so it is never readable by others.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    // A key left by an older version may have been created with other permissions.
    set_mode(path, 0o600)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
            PkiError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_once_with_private_keys_0600_and_lists_the_demo_devices() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let (pki, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        for key in [
            &pki.ca_key,
            &pki.server_key,
            &pki.device_key,
            &pki.monitor_key,
        ] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&pki_dir), 0o700);
        assert!(pki.crl.exists());
        let ca = Ca::open(&pki_dir).unwrap();
        let listed: Vec<String> = ca.list().unwrap().into_iter().map(|e| e.subject).collect();
        assert_eq!(
            listed,
            [
                "CN=demo-device, OU=demo, O=Converge",
                "CN=demo-monitor, OU=demo, O=Converge"
            ]
        );
        let before: Vec<Vec<u8>> = [&pki.ca_cert, &pki.server_cert, &pki.device_cert, &pki.crl]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(!created);
        let after: Vec<Vec<u8>> = [&pki.ca_cert, &pki.server_cert, &pki.device_cert, &pki.crl]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn an_existing_ca_is_adopted_and_only_what_is_missing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let opts = InitOptions {
            name: "Plant1 Device CA".to_owned(),
            organization: Some("ACME Plant1".to_owned()),
            ..InitOptions::default()
        };
        let ca = Ca::init(&pki_dir, &opts).unwrap();
        let ca_pem = ca.cert_pem().to_owned();
        let (pki, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        assert_eq!(fs::read_to_string(&pki.ca_cert).unwrap(), ca_pem);
        let listed = Ca::open(&pki_dir).unwrap().list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].subject, "CN=demo-device, OU=demo, O=ACME Plant1");

        // A device pair removed is issued again; the rest stays.
        let server = fs::read(&pki.server_cert).unwrap();
        fs::remove_file(&pki.monitor_key).unwrap();
        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        assert!(pki.monitor_key.exists());
        assert_eq!(fs::read(&pki.server_cert).unwrap(), server);
        assert_eq!(Ca::open(&pki_dir).unwrap().list().unwrap().len(), 3);

        // A new CA (`converge ca init --force`): the server and demo certificates follow it.
        let forced = InitOptions {
            force: true,
            ..opts.clone()
        };
        let new_ca = Ca::init(&pki_dir, &forced).unwrap();
        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        assert_ne!(fs::read(&pki.server_cert).unwrap(), server);
        assert!(signed_by(&pki.server_cert, &new_ca.key_id_hex()));
        assert!(signed_by(&pki.device_cert, &new_ca.key_id_hex()));
        assert_eq!(new_ca.list().unwrap().len(), 2);
    }

    /// What versions before the shared CA directory wrote: a CA and leaves made with rcgen
    /// directly, no index, no CRL, no authority key ids.
    #[test]
    fn a_development_pki_of_an_earlier_version_is_adopted() {
        use rcgen::BasicConstraints;
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = DevPki::paths(&pki_dir);
        fs::create_dir_all(pki_dir.join("devices")).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name = name(DEV_CA_NAME);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        write_private(&pki.ca_key, &ca_key.serialize_pem()).unwrap();
        write_public(&pki.ca_cert, &ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for (cn, cert, key) in [
            (DEMO_DEVICE, &pki.device_cert, &pki.device_key),
            (DEMO_MONITOR, &pki.monitor_cert, &pki.monitor_key),
        ] {
            let k = KeyPair::generate().unwrap();
            let c = leaf_params(cn, vec![], ExtendedKeyUsagePurpose::ClientAuth)
                .unwrap()
                .signed_by(&k, &issuer)
                .unwrap();
            write_private(key, &k.serialize_pem()).unwrap();
            write_public(cert, &c.pem()).unwrap();
        }

        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        assert_eq!(fs::read_to_string(&pki.ca_cert).unwrap(), ca_cert.pem());
        assert!(pki.crl.exists());
        let ca = Ca::open(&pki_dir).unwrap();
        assert!(signed_by(&pki.server_cert, &ca.key_id_hex()));
        assert!(signed_by(&pki.device_cert, &ca.key_id_hex()));
        assert_eq!(
            ca.list().unwrap().len(),
            2,
            "the demo devices are now listed"
        );
        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(!created);
    }

    #[test]
    fn a_missing_crl_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let (pki, _) = DevPki::ensure(&pki_dir).unwrap();
        fs::remove_file(&pki.crl).unwrap();
        let (_, created) = DevPki::ensure(&pki_dir).unwrap();
        assert!(created);
        let pem = fs::read(&pki.crl).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&p.contents).unwrap();
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        assert!(!crl_needs_renewal(&pki.crl, SystemTime::now()));
        assert!(crl_needs_renewal(
            &pki.crl,
            SystemTime::now() + Duration::from_secs(DEV_CRL_DAYS as u64 * 86_400)
        ));
    }
}
