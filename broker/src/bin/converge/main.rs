//! `converge`: the server binary.

mod admin_audit;
mod args;
mod audit;
mod ca;
mod cert;
mod historian;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use converge_broker::config::Config;
use converge_broker::server;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "converge",
    version,
    about = "Secure industrial MQTT broker and historian"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. With no arguments it runs on embedded defaults: ./converge-data, a
    /// development PKI created on first start, mTLS on 0.0.0.0:8883.
    Serve {
        /// TOML configuration file (every key is in docs/CONFIG.md).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { config: PathBuf },
    /// The historian: CSV import and storage statistics.
    Historian {
        #[command(subcommand)]
        command: historian::HistorianCommand,
    },
    /// Security policies (zones, conduits, device profiles): see docs/SECURITY.md.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The plant CA in <data_dir>/pki/ (the development PKI's CA unless replaced).
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Device certificates of the plant CA: issue, list, revoke, inspect under the policy.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// The tamper-evident audit log: verify it, export it for a SIEM.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; every error is reported with its file:line:column.
    Check { file: PathBuf },
    /// Make the running server load its policy file again (sends it SIGHUP): clients the new
    /// policy refuses are disconnected, the others keep their connections.
    Reload {
        #[command(flatten)]
        server: args::ServerArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, data_dir } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            init_logging(&config.log.level);
            let mut runtime = match config.runtime.worker_threads {
                1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    if n > 1 {
                        b.worker_threads(n);
                    }
                    b
                }
            };
            runtime
                .enable_all()
                .thread_name("converge")
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
        Command::Policy {
            command: PolicyCommand::Reload { server },
        } => {
            let config = server.load()?;
            admin_audit::run(&config, |_| {
                let pid = signal_reload(&config)?;
                Ok((
                    (),
                    format!("asked the server (pid {pid}) to reload its policy"),
                ))
            })
        }
        Command::Ca { command } => ca::run(command),
        Command::Cert { command } => cert::run(command),
        Command::Audit { command } => audit::run(command),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => match converge_security::check_file(&file) {
            Ok(policy) => {
                println!(
                    "{}: OK ({} zones, {} conduits, {} device profiles)",
                    file.display(),
                    policy.zones().len(),
                    policy.conduits().len(),
                    policy.profiles().len()
                );
                Ok(())
            }
            Err(diagnostics) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                anyhow::bail!("{}: {} error(s)", file.display(), diagnostics.len())
            }
        },
        Command::Historian { command } => historian::run(command),
        Command::CheckConfig { config } => {
            let c = Config::load(&config)?;
            println!("{config:?}: OK\n{c:#?}", config = config.display());
            Ok(())
        }
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = server::start(config.clone()).await?;
    let r = running.restored;
    tracing::info!(
        sessions = r.sessions,
        queued = r.queued,
        retained = r.retained,
        expired = r.expired,
        "state restored"
    );
    if let Some(addr) = running.tls_addr {
        tracing::info!(%addr, "MQTT over mutual TLS listening");
    }
    if let Some(addr) = running.quic_addr {
        tracing::info!(%addr, "MQTT over QUIC (ALPN mqtt, mutual TLS) listening");
    }
    if let Some(addr) = running.tcp_addr {
        tracing::warn!(%addr, "plain MQTT (no TLS) listening: for development and testing only");
    }
    if let Some(addr) = running.metrics_addr {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    if let Some(addr) = running.api_addr {
        tracing::info!(%addr, "historian query API on http://{addr}/api/v1 (OpenAPI: /api/openapi.json)");
    }
    if let (Some((pki, created)), Some(addr)) = (&running.dev_pki, running.tls_addr) {
        if *created {
            tracing::info!(dir = %pki.dir.display(), "created a development PKI");
        }
        print_quick_start(pki, addr.port(), running.quic_addr.map(|a| a.port()));
        if let Some(api) = running.api_addr {
            println!(
                "History: Sparkplug B topics (spBv1.0/#) are historized by default; add\n\
                 [[historian.rules]] for JSON or plain topics (docs/CONFIG.md). Query it over HTTP:\n\n  \
                 curl 'http://{api}/api/v1/tags?q=*'\n"
            );
        }
    }
    let pid_file = config.data_dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %pid_file.display(), error = %e, "cannot write the pid file; `converge policy reload` will not find this server");
    }
    wait_for_signal(&running).await;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("shutting down");
    running
        .shutdown()
        .await
        .context("flushing state at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

fn print_quick_start(pki: &converge_broker::pki::DevPki, port: u16, quic_port: Option<u16>) {
    use converge_broker::pki::{DEMO_DEVICE, DEMO_MONITOR};
    let ca = pki.ca_cert.display();
    let (dev_cert, dev_key) = (pki.device_cert.display(), pki.device_key.display());
    let (mon_cert, mon_key) = (pki.monitor_cert.display(), pki.monitor_key.display());
    println!(
        "\nDevices connect with their certificate; the client id must equal its Common Name.\n\
         In one terminal, subscribe:\n\n  \
         mosquitto_sub -h localhost -p {port} -V mqttv5 -i {DEMO_MONITOR} --cafile {ca} --cert {mon_cert} --key {mon_key} -t 'plant/#' -v\n\n\
         In another, publish:\n\n  \
         mosquitto_pub -h localhost -p {port} -V mqttv5 -i {DEMO_DEVICE} --cafile {ca} --cert {dev_cert} --key {dev_key} -t plant/line1/temp -m 21.5 -q 1\n\n\
         (MQTT 3.1.1: -V mqttv311. Stop the server with Ctrl-C.)\n"
    );
    if let Some(quic) = quic_port {
        println!(
            "MQTT over QUIC listens on UDP port {quic} (ALPN \"mqtt\", EMQX's mapping): clients such as\n\
             EMQX's NanoSDK or emqtt connect there with the same CA and device certificates.\n"
        );
    }
}

/// The running server's process id, in the data dir (`converge policy reload` reads it).
const PID_FILE: &str = "converge.pid";

/// Waits for SIGTERM or Ctrl-C; SIGHUP reloads the policy and the CRL meanwhile.
async fn wait_for_signal(running: &server::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup.recv() => {
                    match running.broker.reload_policy() {
                        Ok(r) => tracing::info!(kept = r.kept, disconnected = r.disconnected, subscriptions_removed = r.subscriptions_removed, "policy reloaded"),
                        Err(e) => tracing::error!(error = %e, "policy reload failed; the previous policy stays in force"),
                    }
                    // The CRL is also polled; SIGHUP applies a change at once.
                    match running.broker.reload_crl() {
                        Ok(Some(r)) => tracing::info!(crls = r.crls, revoked = r.revoked, closed = r.closed, "CRL reloaded"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "CRL reload failed; the previous CRLs stay in force"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = running;
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `converge policy reload`: SIGHUP to the server whose pid file is in the data dir. Returns the
/// pid signalled.
fn signal_reload(config: &Config) -> anyhow::Result<i32> {
    let path = config.data_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no running server found ({} unreadable)", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process id", path.display()))?;
    if config.security.policy_file.is_none() {
        anyhow::bail!("this configuration has no [security] policy_file: nothing to reload");
    }
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with a pid read from our own pid file and a constant signal.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            anyhow::bail!(
                "cannot signal process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        println!("asked the server (pid {pid}) to reload its policy; its log says what changed");
        Ok(pid)
    }
    #[cfg(not(unix))]
    {
        anyhow::bail!("policy reload needs a Unix signal (pid {pid})")
    }
}
