//! The development PKI that `converge serve` creates on first start, so that a fresh machine
//! runs with mutual TLS at once: a CA, a server certificate for localhost/127.0.0.1 and one
//! ready device certificate. Production deployments point the TLS listener at their own CA.
//!
//! Private keys are written with mode 0600 from the moment the file exists (no window in which
//! another user could read them).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The device certificate the quick start publishes with.
pub const DEMO_DEVICE: &str = "demo-device";
/// A second identity, so the quick start can subscribe while `demo-device` publishes (one client
/// id per connection: a second connection with the same id takes the session over).
pub const DEMO_MONITOR: &str = "demo-monitor";

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
}

/// Paths of the development PKI's files.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
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
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            device_cert: devices.join(format!("{DEMO_DEVICE}.pem")),
            device_key: devices.join(format!("{DEMO_DEVICE}.key")),
            monitor_cert: devices.join(format!("{DEMO_MONITOR}.pem")),
            monitor_key: devices.join(format!("{DEMO_MONITOR}.key")),
        }
    }

    /// Creates the PKI unless its CA already exists. Returns true when it was created now.
    pub fn ensure(dir: &Path) -> Result<(DevPki, bool), PkiError> {
        let pki = DevPki::paths(dir);
        if pki.ca_cert.exists() {
            return Ok((pki, false));
        }
        pki.create()?;
        Ok((pki, true))
    }

    fn create(&self) -> Result<(), PkiError> {
        let devices = self.dir.join("devices");
        fs::create_dir_all(&devices).map_err(|source| PkiError::Io {
            path: devices.clone(),
            source,
        })?;

        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params("Converge development CA")?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let server = leaf_params(
            "localhost",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?
        .signed_by(&server_key, &issuer)?;

        let device_key = KeyPair::generate()?;
        let device = leaf_params(DEMO_DEVICE, vec![], ExtendedKeyUsagePurpose::ClientAuth)?
            .signed_by(&device_key, &issuer)?;
        let monitor_key = KeyPair::generate()?;
        let monitor = leaf_params(DEMO_MONITOR, vec![], ExtendedKeyUsagePurpose::ClientAuth)?
            .signed_by(&monitor_key, &issuer)?;

        write_private(&self.ca_key, &issuer.key().serialize_pem())?;
        write_public(&self.ca_cert, &ca_cert.pem())?;
        write_private(&self.server_key, &server_key.serialize_pem())?;
        write_public(&self.server_cert, &server.pem())?;
        write_private(&self.device_key, &device_key.serialize_pem())?;
        write_public(&self.device_cert, &device.pem())?;
        write_private(&self.monitor_key, &monitor_key.serialize_pem())?;
        write_public(&self.monitor_cert, &monitor.pem())?;
        Ok(())
    }
}

/// Parameters of a CA certificate valid for ten years.
pub fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    Ok(params)
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
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, created) = DevPki::ensure(&dir.path().join("pki")).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [
                &pki.ca_key,
                &pki.server_key,
                &pki.device_key,
                &pki.monitor_key,
            ] {
                let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        let before = fs::read(&pki.ca_cert).unwrap();
        let (_, created) = DevPki::ensure(&dir.path().join("pki")).unwrap();
        assert!(!created);
        assert_eq!(before, fs::read(&pki.ca_cert).unwrap());
    }
}
