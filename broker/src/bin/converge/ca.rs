//! `converge ca init | crl | export-key`: the plant CA in `<data_dir>/pki/`, thin wrappers over
//! `converge_security::ca` (its module doc has the mapping).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use converge_security::ca::{Ca, InitOptions, KeyAlgorithm, DEFAULT_CA_DAYS, DEFAULT_CRL_DAYS};

use crate::admin_audit;
use crate::args::ServerArgs;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the plant CA in <data_dir>/pki/ (key 0600, certificate, empty index, empty CRL).
    /// A CA already there (the development PKI's, or an earlier `ca init`) is kept unless --force.
    Init {
        /// The CA's common name; the policy's [[ca]] `subject` names it.
        #[arg(long, default_value = "Converge Plant CA")]
        name: String,
        /// Organization (O) of the CA, also written into device subjects.
        #[arg(long)]
        org: Option<String>,
        /// Give certificates the SAN URI urn:dev:<NS>:<zone>:<device> unless --san-uri is given.
        #[arg(long)]
        urn_namespace: Option<String>,
        /// CA lifetime in days.
        #[arg(long, default_value_t = DEFAULT_CA_DAYS)]
        days: u32,
        /// CRL lifetime in days (renew it daily with `converge ca crl`).
        #[arg(long, default_value_t = DEFAULT_CRL_DAYS)]
        crl_days: u32,
        /// ecdsa-p256, ecdsa-p384 or ed25519.
        #[arg(long, default_value = "ecdsa-p256")]
        key_alg: String,
        /// Replace an existing CA (its files are kept with a .old suffix).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Re-sign the CRL with a new nextUpdate and the next CRL number: run it daily.
    Crl {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Copy the CA private key to FILE (mode 0600; FILE must not exist), for a backup or an
    /// offline CA host. The only way the key leaves the CA directory.
    ExportKey {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            name,
            org,
            urn_namespace,
            days,
            crl_days,
            key_alg,
            force,
            server,
        } => {
            let config = server.load()?;
            let dir = config.pki_dir();
            let key_algorithm: KeyAlgorithm = key_alg.parse()?;
            let opts = InitOptions {
                name,
                organization: org,
                urn_namespace,
                days,
                crl_days,
                key_algorithm,
                force,
            };
            let ca = admin_audit::run(&config, |_| {
                let ca = Ca::init(&dir, &opts)?;
                let summary = format!("created CA {:?} in {}", ca.subject(), dir.display());
                Ok((ca, summary))
            })?;
            println!("created the CA in {}", dir.display());
            println!("  subject     {}", ca.subject());
            println!("  key id      {}", ca.key_id_hex());
            println!("  certificate {}", ca.cert_path().display());
            println!("  CRL         {}", ca.crl_path().display());
            println!(
                "In a policy, name it with [[ca]] subject = \"{}\"; issue device certificates with\n`converge cert issue --device NAME --zone ZONE`.",
                ca.subject()
            );
            if force && dir.join("server.pem").exists() {
                println!(
                    "The development server and demo device certificates in {} belong to the old CA;\n`converge serve` issues them again at its next start.",
                    dir.display()
                );
            }
            Ok(())
        }
        CaCommand::Crl { server } => {
            let config = server.load()?;
            let dir = config.pki_dir();
            let number = admin_audit::run(&config, |_| {
                let n = Ca::open(&dir)?.renew_crl()?;
                Ok((n, format!("CRL number {n} written")))
            })?;
            println!(
                "{}: CRL number {number} written",
                dir.join(converge_security::ca::CRL_FILE).display()
            );
            Ok(())
        }
        CaCommand::ExportKey { file, server } => {
            let config = server.load()?;
            let dir = config.pki_dir();
            admin_audit::run(&config, |_| {
                let ca = Ca::open(&dir)?;
                ca.export_key(&file)
                    .with_context(|| format!("cannot export the CA key to {}", file.display()))?;
                let summary = format!(
                    "the key of CA {:?} (key id {}) copied to {}",
                    ca.subject(),
                    ca.key_id_hex(),
                    file.display()
                );
                Ok(((), summary))
            })?;
            println!(
                "{}: the CA key (mode 0600). Keep it offline; anyone holding it can issue certificates.",
                file.display()
            );
            Ok(())
        }
    }
}
