//! `converge audit verify | prove | export`: thin wrappers over `converge_security::audit`
//! (`cli_verify`, `verify`, `tree_head`, `prove_prefix`, `verify_prefix`, `export`,
//! `parse_time`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use converge_security::audit::{self, parse_time, ExportFormat, ExportOptions};

use crate::admin_audit;
use crate::args::ServerArgs;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Prove the audit log intact (hash chain, signed checkpoints), or name the first modified,
    /// deleted, reordered or truncated record and exit non-zero. Works beside a running server.
    Verify {
        /// An audit directory (default: the configuration's, <data_dir>/audit), e.g. a copy.
        dir: Option<PathBuf>,
        /// The checkpoint public key kept outside the log's directory (default: DIR/audit.pub,
        /// which an intruder who can write the log can also replace).
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Prove that an earlier copy of the audit log (a copied audit directory, e.g. one handed to
    /// an auditor) is a prefix of the log today: the copy verifies on its own, and an RFC 9162
    /// consistency proof links its Merkle tree head to today's. Exits non-zero otherwise.
    Prove {
        /// The earlier copy (an audit directory).
        copy: PathBuf,
        /// Today's audit directory (default: the configuration's, <data_dir>/audit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The checkpoint public key kept outside the log's directory (default: DIR/audit.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the proof as one JSON line (old and new tree heads and the proof path), for an
        /// auditor who checks it independently.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write records to stdout for a SIEM: jsonl, syslog (RFC 5424) or cef. Does not verify:
    /// run `converge audit verify` first.
    Export {
        /// An audit directory (default: the configuration's, <data_dir>/audit).
        dir: Option<PathBuf>,
        /// Records at or after this time: RFC 3339 (2024-04-25T10:00:00Z) or unix milliseconds.
        #[arg(long)]
        since: String,
        /// Records before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// jsonl, syslog or cef.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// The syslog HOSTNAME field (default nil, "-").
        #[arg(long, default_value = "")]
        hostname: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            dir,
            public_key,
            server,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => server.load()?.audit_dir(),
            };
            let text = audit::cli_verify(&dir, public_key.as_deref())
                .with_context(|| format!("audit log {} is NOT intact", dir.display()))?;
            print!("{text}");
            Ok(())
        }
        AuditCommand::Prove {
            copy,
            dir,
            public_key,
            json,
            server,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => server.load()?.audit_dir(),
            };
            let key_path = public_key.unwrap_or_else(|| dir.join(audit::PUBLIC_KEY_FILE));
            let key = audit::PublicKey::from_file(&key_path)
                .with_context(|| format!("reading the public key {}", key_path.display()))?;
            // The copy must stand on its own (chain and signed checkpoints, today's key), and
            // today's log too: a proof between two damaged logs would prove nothing.
            audit::verify(&copy, &key)
                .with_context(|| format!("the copy {} is NOT intact", copy.display()))?;
            audit::verify(&dir, &key)
                .with_context(|| format!("audit log {} is NOT intact", dir.display()))?;
            let (old_size, old_root) = audit::tree_head(&copy, None)
                .with_context(|| format!("reading {}", copy.display()))?;
            let proof = audit::prove_prefix(&dir, old_size).with_context(|| {
                format!(
                    "{} holds fewer records than the copy's {old_size}",
                    dir.display()
                )
            })?;
            audit::verify_prefix(
                &old_root,
                old_size,
                &proof.new_root,
                proof.new_size,
                &proof.path,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "the copy {} ({old_size} records) is NOT a prefix of {}: {e}",
                    copy.display(),
                    dir.display()
                )
            })?;
            if json {
                println!("{}", proof.to_json());
            } else {
                println!(
                    "{} ({old_size} records, root {old_root}) is a prefix of {} ({} records, root {}): consistency proof of {} hashes verified",
                    copy.display(),
                    dir.display(),
                    proof.new_size,
                    proof.new_root,
                    proof.path.len()
                );
            }
            Ok(())
        }
        AuditCommand::Export {
            dir,
            since,
            until,
            format,
            hostname,
            server,
        } => {
            let config = server.load()?;
            let dir = dir.unwrap_or_else(|| config.audit_dir());
            let mut options = ExportOptions::new(format.parse::<ExportFormat>()?);
            options.since = Some(parse_time(&since)?);
            options.until = until.as_deref().map(parse_time).transpose()?;
            options.hostname = hostname;
            let n = admin_audit::run(&config, |_| {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let n = audit::export(&dir, &options, &mut out)
                    .with_context(|| format!("exporting {}", dir.display()))?;
                out.flush().context("writing the export")?;
                Ok((
                    n,
                    format!("{n} records exported from {} as {format}", dir.display()),
                ))
            })?;
            eprintln!("{n} records exported");
            Ok(())
        }
    }
}
