//! `converge cert issue | list | revoke | inspect`: device certificates of the plant CA in
//! `<data_dir>/pki/`, thin wrappers over `converge_security::ca` (its module doc has the
//! mapping).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Subcommand;
use converge_broker::config::Config;
use converge_security::audit::{Action, Event, Outcome};
use converge_security::ca::{
    self, format_table, Ca, IssueRequest, KeyAlgorithm, RevocationReason, DEFAULT_DAYS,
    MAX_CSR_BYTES,
};
use converge_security::CompiledPolicy;

use crate::admin_audit;
use crate::args::ServerArgs;

/// Largest certificate file `cert inspect` reads: a certificate is a few KiB, a chain a few
/// more; bounds what a wrong file name makes it read.
const MAX_CERT_FILE_BYTES: u64 = 1 << 20;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a device certificate: writes DEVICE.pem and DEVICE.key (0600) into --out, or signs
    /// a CSR (then only DEVICE.pem). With a policy (--policy, or the configuration's [security]
    /// policy_file) the certificate is encoded as --profile reads it and checked against it.
    Issue {
        /// Device name (A-Z a-z 0-9 . _ -).
        #[arg(long)]
        device: String,
        /// Zone id as in the policy.
        #[arg(long)]
        zone: String,
        /// Device profile of the policy.
        #[arg(long)]
        profile: Option<String>,
        /// Lifetime in days.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: u32,
        /// Extra SAN URI (repeatable).
        #[arg(long = "san-uri")]
        san_uri: Vec<String>,
        /// SAN DNS name (repeatable).
        #[arg(long = "san-dns")]
        san_dns: Vec<String>,
        /// Certificate policy OID, dotted (repeatable).
        #[arg(long = "policy-oid")]
        policy_oid: Vec<String>,
        /// Sign this PEM PKCS#10 request instead of generating a key pair.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Copy the CSR's SAN URIs and DNS names into the certificate.
        #[arg(long, requires = "csr")]
        csr_sans: bool,
        /// Key algorithm of a generated key: ecdsa-p256, ecdsa-p384 or ed25519.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: String,
        /// Where to write the files (default <data_dir>/pki/devices).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing files (renewal).
        #[arg(long)]
        overwrite: bool,
        /// Policy file to encode for and check against (default: the configuration's).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Every certificate the CA issued: serial, subject, zone, expiry, status.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a certificate and rewrite the CRL (the server reloads it).
    Revoke {
        /// The serial as `cert list` prints it (upper case and ':' accepted).
        serial: String,
        /// unspecified, keyCompromise, cACompromise, affiliationChanged, superseded,
        /// cessationOfOperation, certificateHold, privilegeWithdrawn or aACompromise.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Which identity, zone and rights the policy gives a certificate (PEM or DER), or why it
    /// refuses it.
    Inspect {
        file: PathBuf,
        /// Policy file (default: the configuration's [security] policy_file).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Issue {
            device,
            zone,
            profile,
            days,
            san_uri,
            san_dns,
            policy_oid,
            csr,
            csr_sans,
            key_alg,
            out,
            overwrite,
            policy,
            server,
        } => {
            let config = server.load()?;
            let dir = config.pki_dir();
            let policy = load_policy(policy.as_deref(), &config)?;
            let key_algorithm: KeyAlgorithm = key_alg.parse()?;
            let csr_pem = csr
                .as_deref()
                .map(|path| {
                    read_bounded(
                        path,
                        u64::try_from(MAX_CSR_BYTES).unwrap_or(u64::MAX),
                        "CSR",
                    )
                })
                .transpose()?
                .map(|bytes| String::from_utf8(bytes).context("the CSR is not PEM text"))
                .transpose()?;
            let out = out.unwrap_or_else(|| dir.join("devices"));
            let generates_key = csr_pem.is_none();
            let mut req = IssueRequest::new(device, zone);
            req.profile = profile;
            req.days = days;
            req.san_uris = san_uri;
            req.san_dns = san_dns;
            req.policy_oids = policy_oid;
            req.csr_pem = csr_pem;
            req.csr_sans = csr_sans;
            req.key_algorithm = key_algorithm;
            let (issued, files) = admin_audit::run(&config, |events| {
                ca::check_name("device", &req.device)?;
                // Refused before anything is issued, so that no certificate is recorded
                // without its files.
                if !overwrite {
                    let cert = out.join(format!("{}.pem", req.device));
                    let key = out.join(format!("{}.key", req.device));
                    if let Some(p) = [Some(cert), generates_key.then_some(key)]
                        .into_iter()
                        .flatten()
                        .find(|p| p.exists())
                    {
                        bail!(
                            "{} already exists: pass --overwrite to replace it (renewal), or --out DIR",
                            p.display()
                        );
                    }
                }
                let ca = Ca::open(&dir)?;
                let issued = match &policy {
                    Some((_, p)) => ca.issue_for_policy(req, p)?,
                    None => ca.issue(req)?,
                };
                let e = &issued.entry;
                events.push(
                    Event::new(Action::CertIssued, Outcome::Success)
                        .zone(e.zone.as_str())
                        .resource(issued.serial.as_str())
                        .reason(format!(
                            "{} (device {}{}), valid until {}, SHA-256 {}",
                            e.subject,
                            e.device,
                            e.profile
                                .as_deref()
                                .map(|p| format!(", profile {p}"))
                                .unwrap_or_default(),
                            converge_security::ca::datetime(e.not_after),
                            issued.fingerprint
                        )),
                );
                // The certificate is in the index from here on: a failure to write its files
                // is reported, and audited, with its serial.
                let files = issued.write_files(&out, overwrite).with_context(|| {
                    format!(
                        "certificate {} was issued and recorded, but its files could not be written to {}",
                        issued.serial,
                        out.display()
                    )
                })?;
                let summary = format!("issued certificate {} for {}", issued.serial, e.subject);
                Ok(((issued, files), summary))
            })?;
            let e = &issued.entry;
            println!("issued certificate {}", issued.serial);
            println!("  subject     {}", e.subject);
            if let Some(p) = &e.profile {
                println!("  profile     {p}");
            }
            println!(
                "  valid until {}",
                converge_security::ca::datetime(e.not_after)
            );
            println!("  SHA-256     {}", issued.fingerprint);
            println!("  certificate {}", files.cert.display());
            if let Some(key) = &files.key {
                println!("  key         {} (mode 0600)", key.display());
            }
            if let Some((path, _)) = &policy {
                println!("  checked against {}", path.display());
            }
            Ok(())
        }
        CertCommand::List { server } => {
            let config = server.load()?;
            let ca = Ca::open(&config.pki_dir())?;
            print!("{}", format_table(&ca.list()?, SystemTime::now()));
            Ok(())
        }
        CertCommand::Revoke {
            serial,
            reason,
            server,
        } => {
            let config = server.load()?;
            let dir = config.pki_dir();
            let revoked = admin_audit::run(&config, |events| {
                let reason: RevocationReason = reason.parse()?;
                let revoked = Ca::open(&dir)?.revoke(&serial, reason)?;
                let e = &revoked.entry;
                events.push(
                    Event::new(Action::CertRevoked, Outcome::Success)
                        .zone(e.zone.as_str())
                        .resource(e.serial.as_str())
                        .reason(format!(
                            "{} revoked ({reason}); CRL number {}",
                            e.subject, revoked.crl_number
                        )),
                );
                let summary = format!("revoked certificate {} ({reason})", e.serial);
                Ok((revoked, summary))
            })?;
            let e = &revoked.entry;
            println!(
                "revoked certificate {} ({}), {}",
                e.serial,
                e.revoked.map(|r| r.reason.to_string()).unwrap_or_default(),
                e.subject
            );
            println!(
                "{}: CRL number {} (a server that loads this CRL refuses the certificate from now on)",
                dir.join(ca::CRL_FILE).display(),
                revoked.crl_number
            );
            Ok(())
        }
        CertCommand::Inspect {
            file,
            policy,
            server,
        } => {
            let config = server.load()?;
            let Some((_, policy)) = load_policy(policy.as_deref(), &config)? else {
                bail!(
                    "no policy to inspect against: pass --policy FILE, or --config with a [security] policy_file \
                     (without a policy the broker admits any certificate of its CA with client id = Common Name)"
                );
            };
            let bytes = read_bounded(&file, MAX_CERT_FILE_BYTES, "certificate")?;
            let now = SystemTime::now();
            // With this data dir's CA at hand the report adds the index status.
            let inspection = match Ca::open(&config.pki_dir()) {
                Ok(ca) => ca.inspect(&bytes, &policy, now),
                Err(_) => ca::inspect(&bytes, &policy, now),
            }
            .with_context(|| file.display().to_string())?;
            print!("{inspection}");
            Ok(())
        }
    }
}

/// The policy of `--policy`, else the configuration's `[security] policy_file`, compiled.
fn load_policy(
    explicit: Option<&Path>,
    config: &Config,
) -> anyhow::Result<Option<(PathBuf, CompiledPolicy)>> {
    let Some(path) = explicit.or(config.security.policy_file.as_deref()) else {
        return Ok(None);
    };
    match converge_security::check_file(path) {
        Ok(policy) => Ok(Some((path.to_path_buf(), policy))),
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            bail!(
                "policy {}: {} error(s) (see `converge policy check`)",
                path.display(),
                diagnostics.len()
            )
        }
    }
}

/// Reads a file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {what} file {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        bail!("{}: larger than {max} bytes: not a {what}", path.display());
    }
    Ok(bytes)
}
