//! The server: opens the database, restores state, binds the listeners and runs the accept
//! loops, the `$SYS/` publisher and the metrics endpoint until shutdown.
//!
//! Accept loops own the connection limit (a semaphore: a socket over the limit is closed at
//! once), the TLS handshake and the connect timeout; everything after the handshake is
//! `connection::serve`. Shutdown stops accepting, tells every client (DISCONNECT 0x8B), waits
//! for their tasks, and makes sure every write is durable before returning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use converge_historian::api::{ApiState, QueryObserver, QueryRecord};
use converge_historian::storage::{Storage, StorageConfig};

use crate::config::Config;
use crate::connection::{self, ListenerContext, StreamLink};
use crate::historian::{timestamp_ms, Historian};
use crate::metrics::{self, Metrics};
use crate::mqtt::packet::{Properties, Publish, QoS, ReasonCode};
use crate::persist::{Store, StoreError};
use crate::pki::DevPki;
use crate::router::{Broker, RestoreSummary};
use crate::security::PolicyStore;
use crate::transport::quic;
use crate::transport::tls::{self, TlsSetupError};
use crate::transport::verify::{ClientVerifier, CrlSettings};
use crate::transport::{ListenerKind, PeerIdentity};
use converge_security::audit::{Action, AuditConfig, AuditLog, Event as AuditEvent, Outcome};
use converge_security::certs::ChainLimits;

mod quic_accept;

/// How long shutdown waits for connections to finish before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("development PKI: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("audit log {dir}: {source} (check it with `converge audit verify`; to start a new log, move the directory aside)")]
    Audit {
        dir: PathBuf,
        source: converge_security::audit::AuditError,
    },
    #[error("security policy: {0}")]
    Policy(#[from] crate::security::PolicyLoadError),
    #[error("historian API: {0}")]
    HistorianApi(#[from] converge_historian::api::ApiError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started server. Drop does not stop it: call `shutdown`.
pub struct Running {
    pub tls_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    pub quic_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The historian's HTTP query API.
    pub api_addr: Option<SocketAddr>,
    /// The development PKI, when the TLS listener uses it.
    pub dev_pki: Option<(DevPki, bool)>,
    pub restored: RestoreSummary,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    connections: Arc<Semaphore>,
    max_connections: u32,
}

/// Opens the data dir and binds every enabled listener; the server runs on the current tokio
/// runtime until `Running::shutdown`.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let metrics = Metrics::new();

    let tls_cfg = &config.listeners.tls;
    let quic_cfg = &config.listeners.quic;
    let mut dev_pki = None;
    let mut quic_server = None;
    let mut verifier = None;
    let mut mqtt_ca = None;
    let acceptor = if tls_cfg.enabled || quic_cfg.enabled {
        let (ca, cert, key, dev_crl) =
            match (&tls_cfg.ca_file, &tls_cfg.cert_file, &tls_cfg.key_file) {
                (Some(ca), Some(cert), Some(key)) => (ca.clone(), cert.clone(), key.clone(), None),
                (ca, cert, key) => {
                    let (pki, created) = DevPki::ensure(&config.pki_dir())?;
                    // The development CA's CRL applies only when that CA is the one trusted.
                    let dev_crl = Some(pki.crl.clone()).filter(|p| ca.is_none() && p.exists());
                    let paths = (
                        ca.clone().unwrap_or_else(|| pki.ca_cert.clone()),
                        cert.clone().unwrap_or_else(|| pki.server_cert.clone()),
                        key.clone().unwrap_or_else(|| pki.server_key.clone()),
                        dev_crl,
                    );
                    dev_pki = Some((pki, created));
                    paths
                }
            };
        let crl = tls_cfg
            .crl_file
            .clone()
            .or(dev_crl)
            .map(|path| CrlSettings {
                path,
                enforce_next_update: tls_cfg.crl_enforce_next_update,
            });
        let limits = ChainLimits {
            max_depth: tls_cfg.max_chain_depth,
            max_bytes: tls_cfg.max_chain_bytes,
        };
        let v = Arc::new(ClientVerifier::new(&ca, crl, limits, tls::provider())?);
        if let Some(path) = v.crl_path() {
            tracing::info!(path = %path.display(), "client certificates checked against the CRL");
        }
        if quic_cfg.enabled {
            let settings = quic::QuicSettings {
                max_streams: quic_cfg.max_streams_per_connection,
                max_keep_alive_secs: config.mqtt.max_keep_alive_secs,
                keep_alive_interval: Duration::from_secs(quic_cfg.keep_alive_interval_secs),
                zero_rtt_tickets: quic_cfg.zero_rtt.then(|| config.zero_rtt_tickets()),
            };
            quic_server = Some(quic::server_config(v.clone(), &cert, &key, &settings)?);
        }
        let acceptor = tls_cfg
            .enabled
            .then(|| tls::server_config(v.clone(), &cert, &key).map(TlsAcceptor::from))
            .transpose()?;
        verifier = Some(v);
        mqtt_ca = Some(ca);
        acceptor
    } else {
        None
    };

    let hist_cfg = &config.historian;
    let storage_config = hist_cfg.enabled.then(|| StorageConfig {
        seal_threshold: hist_cfg.seal_threshold,
        ..StorageConfig::default()
    });
    let store = Store::open(
        &config.db_dir(),
        config.persistence.sync,
        config.persistence.max_batch,
        metrics.clone(),
        storage_config,
    )?;
    let mut broker = Broker::new(config.clone(), store, metrics.clone());
    if let Some(v) = verifier {
        broker = broker.with_verifier(v);
    }
    if config.audit.enabled {
        let dir = config.audit_dir();
        let mut ac = AuditConfig::new(&dir);
        ac.queue_capacity = config.audit.queue_capacity;
        ac.checkpoint_every_records = config.audit.checkpoint_every_records;
        ac.checkpoint_interval = Duration::from_secs(config.audit.checkpoint_interval_secs);
        let log = AuditLog::open(ac).map_err(|source| ServerError::Audit { dir, source })?;
        log.record_critical(AuditEvent::new(Action::ServerStarted, Outcome::Success));
        broker = broker.with_audit(log);
    }
    if let Some(path) = &config.security.policy_file {
        let store = PolicyStore::load(path)?;
        let p = store.current();
        tracing::info!(path = %path.display(), zones = p.zones().len(), conduits = p.conduits().len(), profiles = p.profiles().len(), "certificate policy in force");
        broker = broker.with_policy(store);
    }
    let storage = broker.store.historian().cloned();
    if let Some(storage) = &storage {
        let rules = hist_cfg.compile_rules()?;
        broker = broker.with_historian(Arc::new(Historian::new(
            hist_cfg,
            rules,
            storage.clone(),
            metrics.clone(),
        )));
    }
    let broker = Arc::new(broker);
    let restored = broker.restore()?;
    broker.arm_restored_expiry();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let max_connections = u32::try_from(config.limits.max_connections).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let mut tasks = JoinSet::new();
    let mut running_addrs = (None, None, None, None);

    if let Some(acceptor) = acceptor {
        let listener = bind("TLS listener", tls_cfg.bind).await?;
        running_addrs.0 = listener.local_addr().ok();
        let ctx = Arc::new(ListenerContext {
            kind: ListenerKind::Tls,
            allow_anonymous: false,
            require_client_id_match: tls_cfg.require_client_id_match,
            deny_subscribe: tls_cfg.deny_subscribe.clone(),
        });
        tasks.spawn(accept_loop(
            listener,
            Some(acceptor),
            ctx,
            broker.clone(),
            connections.clone(),
            shutdown_rx.clone(),
        ));
    }
    let tcp_cfg = &config.listeners.tcp;
    if tcp_cfg.enabled {
        let listener = bind("plain TCP listener", tcp_cfg.bind).await?;
        running_addrs.1 = listener.local_addr().ok();
        let ctx = Arc::new(ListenerContext {
            kind: ListenerKind::Tcp,
            allow_anonymous: tcp_cfg.allow_anonymous,
            require_client_id_match: false,
            deny_subscribe: tcp_cfg.deny_subscribe.clone(),
        });
        tasks.spawn(accept_loop(
            listener,
            None,
            ctx,
            broker.clone(),
            connections.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(server_config) = quic_server {
        let endpoint = quic::endpoint(server_config, quic_cfg.bind, quic_cfg.udp_recv_buffer_bytes)
            .map_err(|source| ServerError::Bind {
                what: "QUIC listener",
                addr: quic_cfg.bind,
                source,
            })?;
        running_addrs.3 = endpoint.local_addr().ok();
        let ctx = Arc::new(ListenerContext {
            kind: ListenerKind::Quic,
            allow_anonymous: false,
            require_client_id_match: tls_cfg.require_client_id_match,
            deny_subscribe: tls_cfg.deny_subscribe.clone(),
        });
        tasks.spawn(quic_accept::run(
            endpoint,
            ctx,
            broker.clone(),
            connections.clone(),
            shutdown_rx.clone(),
        ));
    }
    if config.metrics.enabled {
        let listener = bind("metrics endpoint", config.metrics.bind).await?;
        running_addrs.2 = listener.local_addr().ok();
        let mut rx = shutdown_rx.clone();
        let m = metrics.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = metrics::serve(m, listener, stop).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let mut api_addr = None;
    if let Some(storage) = storage {
        if hist_cfg.api.enabled {
            let listener = bind("historian API", hist_cfg.api.bind).await?;
            let mut state = ApiState::new(storage.clone(), storage.clone());
            if let Some(audit) = broker.audit.clone() {
                state = state.with_observer(Arc::new(AuditedQueries {
                    log: audit,
                    queries: config.audit.historian_queries,
                }));
            }
            // IT applications with certificates from the devices' CA get the same checks as
            // devices: its CRL (revocation reaches the API too) and the end-entity rules.
            if let (Some(api_tls), Some(ca), Some(v)) =
                (&hist_cfg.api.tls, &mqtt_ca, broker.client_verifier())
            {
                if same_file(&api_tls.ca_file, ca) {
                    state = state.with_client_verifier(v);
                }
            }
            let api = converge_historian::api::prepare(listener, hist_cfg.api.clone(), state)?;
            api_addr = Some(api.local_addr());
            let mut rx = shutdown_rx.clone();
            tasks.spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = api.run(stop).await {
                    tracing::error!(error = %e, "historian API failed");
                }
            });
        }
        tasks.spawn(retention_loop(
            storage,
            metrics.clone(),
            Duration::from_secs(hist_cfg.retention_interval_secs),
            shutdown_rx.clone(),
        ));
    }
    if broker.config.listeners.tls.enabled || broker.config.listeners.quic.enabled {
        tasks.spawn(crl_loop(
            broker.clone(),
            Duration::from_secs(config.listeners.tls.crl_check_interval_secs),
            shutdown_rx.clone(),
        ));
    }
    if let Some(audit) = broker.audit.clone() {
        tasks.spawn(audit_metrics_loop(
            audit,
            metrics.clone(),
            shutdown_rx.clone(),
        ));
    }
    if config.mqtt.sys_interval_secs > 0 {
        tasks.spawn(sys_loop(
            broker.clone(),
            Duration::from_secs(config.mqtt.sys_interval_secs),
            shutdown_rx.clone(),
        ));
    }

    Ok(Running {
        tls_addr: running_addrs.0,
        tcp_addr: running_addrs.1,
        quic_addr: running_addrs.3,
        metrics_addr: running_addrs.2,
        api_addr,
        dev_pki,
        restored,
        broker,
        shutdown,
        tasks,
        connections,
        max_connections,
    })
}

impl Running {
    /// Stops accepting, disconnects every client with 0x8B, waits for them, and makes every
    /// write durable.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        let _ = self.shutdown.send(true);
        self.broker.kick_all(ReasonCode::SERVER_SHUTTING_DOWN);
        // Every connection holds a permit: having them all back means every task has ended.
        let drained = tokio::time::timeout(
            SHUTDOWN_GRACE,
            self.connections.acquire_many(self.max_connections),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not close within the shutdown grace period");
        }
        while self.tasks.join_next().await.is_some() {}
        self.broker.stop_timers().await;
        self.broker.store.barrier().await?;
        if let Some(audit) = &self.broker.audit {
            audit.record_critical(AuditEvent::new(Action::ServerStopped, Outcome::Success));
            if let Err(e) = audit.shutdown() {
                tracing::error!(error = %e, "audit log: final flush failed");
            }
        }
        // With every task gone the broker is ours alone: close the database now, so that the
        // same process may open it again (tests restart servers in-process).
        match Arc::try_unwrap(self.broker) {
            Ok(broker) => broker.store.close(),
            Err(_) => {
                tracing::warn!(
                    "broker still referenced at shutdown; database closes when released"
                );
                Ok(())
            }
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<ListenerContext>,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        let (socket, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            broker
                .metrics
                .connections_rejected
                .with_label_values(&["max_connections"])
                .inc();
            tracing::warn!(%remote, "connection limit reached; closing new socket");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        broker
            .metrics
            .connections_total
            .with_label_values(&[ctx.kind.name()])
            .inc();
        let span = tracing::info_span!(
            "conn",
            %remote,
            listener = ctx.kind.name(),
            client_id = tracing::field::Empty
        );
        let deadline =
            Instant::now() + Duration::from_secs(broker.config.limits.connect_timeout_secs);
        let (tls, ctx, broker, shutdown) =
            (tls.clone(), ctx.clone(), broker.clone(), shutdown.clone());
        tokio::spawn(
            async move {
                match tls {
                    // Boxed: the task then holds only the future of the path taken, at its own
                    // size (memory per idle connection), not the largest of all of them.
                    None => {
                        Box::pin(connection::serve(
                            StreamLink::new(socket),
                            PeerIdentity::default(),
                            remote,
                            ctx,
                            broker,
                            deadline,
                            shutdown,
                        ))
                        .await
                    }
                    Some(acceptor) => {
                        let handshake =
                            Box::pin(tokio::time::timeout_at(deadline, acceptor.accept(socket)))
                                .await;
                        let stream = match handshake {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                let reason = tls::handshake_failure_reason(&e);
                                broker.handshake_failed("tls", reason, remote);
                                tracing::info!(reason, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                broker.handshake_failed("tls", "timeout", remote);
                                tracing::info!("TLS handshake timed out");
                                return;
                            }
                        };
                        let identity =
                            tls::identity_from_chain(stream.get_ref().1.peer_certificates());
                        Box::pin(connection::serve(
                            StreamLink::new(stream),
                            identity,
                            remote,
                            ctx,
                            broker,
                            deadline,
                            shutdown,
                        ))
                        .await
                    }
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Historian API requests as audit records: who read which tags over which range, and how
/// it ended (when `[audit] historian_queries`); and every HTTPS client refused at the
/// handshake, as for the MQTT listeners.
struct AuditedQueries {
    log: AuditLog,
    queries: bool,
}

impl QueryObserver for AuditedQueries {
    fn handshake_refused(&self, peer: SocketAddr, reason: &'static str, detail: &str) {
        self.log.record(
            AuditEvent::new(Action::HandshakeRejected, Outcome::Failure)
                .source(peer)
                .resource("historian-api")
                .reason(format!("{reason}: {detail}")),
        );
    }

    fn answered(&self, q: &QueryRecord<'_>) {
        if !self.queries {
            return;
        }
        let outcome = match q.status {
            403 => Outcome::Denied,
            s if s >= 400 => Outcome::Failure,
            _ => Outcome::Success,
        };
        let mut event = AuditEvent::new(Action::HistorianQuery, outcome)
            .actor(q.identity)
            .resource(format!("{}?{}", q.endpoint, q.query))
            .reason(q.status.to_string());
        if let Some(peer) = q.peer {
            event = event.source(peer);
        }
        self.log.record(event);
    }
}

/// Checks the CRL file for changes; a change closes the live connections it revokes.
async fn crl_loop(broker: Arc<Broker>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        // Reading and parsing a large CRL is blocking work.
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.reload_crl()).await {
            Ok(Ok(Some(r))) => {
                tracing::info!(
                    crls = r.crls,
                    revoked = r.revoked,
                    closed = r.closed,
                    "CRL reloaded"
                )
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CRL reload failed; the previous CRLs stay in force")
            }
            Err(e) => tracing::error!(error = %e, "CRL reload task failed"),
        }
    }
}

/// Publishes broker statistics under `$SYS/broker/` as retained QoS 0 messages.
async fn sys_loop(broker: Arc<Broker>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let stats = broker.stats();
        let m = &broker.metrics;
        let values: [(&str, String); 10] = [
            ("version", format!("converge {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", broker.started.elapsed().as_secs().to_string()),
            ("clients/connected", stats.connected.to_string()),
            ("clients/total", stats.sessions.to_string()),
            ("subscriptions/count", stats.subscriptions.to_string()),
            ("retained messages/count", stats.retained.to_string()),
            ("messages/received", m.messages_received.get().to_string()),
            ("messages/sent", m.messages_delivered.get().to_string()),
            ("bytes/received", m.bytes_received.get().to_string()),
            ("bytes/sent", m.bytes_sent.get().to_string()),
        ];
        for (name, value) in values {
            let routed = broker.publish(
                Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: true,
                    topic: format!("$SYS/broker/{name}"),
                    packet_id: None,
                    properties: Properties::default(),
                    payload: Bytes::from(value),
                },
                None,
            );
            broker.store.submit_detached(routed.ops);
        }
    }
}

/// Deletes historian data past each tag's retention, on a blocking thread (range deletes, no
/// scans; see the historian's `storage::retention`), then refreshes the storage totals (block
/// headers only). The first pass runs at start.
async fn retention_loop(
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let storage = storage.clone();
        let now = timestamp_ms(crate::router::message::now_ms());
        let pass = tokio::task::spawn_blocking(move || {
            let summary = storage.enforce_retention(now)?;
            let stats = storage.stats("*")?;
            Ok::<_, converge_historian::storage::StorageError>((summary, stats))
        });
        match pass.await {
            Ok(Ok((summary, stats))) => {
                tracing::debug!(?summary, "historian retention enforced");
                let points: u64 = stats.iter().map(|s| s.points).sum();
                let bytes: u64 = stats.iter().map(|s| s.block_bytes + s.recent_bytes).sum();
                metrics.historian_stored_points.set(points as i64);
                metrics.historian_stored_bytes.set(bytes as i64);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "historian retention failed"),
            Err(e) => tracing::warn!(error = %e, "historian retention task failed"),
        }
    }
}

/// Copies the audit writer's totals into metrics; a full queue shows up as `dropped` (and in
/// the server's log, from the writer).
async fn audit_metrics_loop(
    audit: AuditLog,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let s = audit.stats();
        for (state, v) in [
            ("written", s.written),
            ("queued", s.queued),
            ("dropped", s.dropped),
            ("critical_overflowed", s.critical_overflowed),
            ("critical_dropped", s.critical_dropped),
            ("checkpoints", s.checkpoints),
            ("spool_ingested", s.spool_ingested),
            ("spool_rejected", s.spool_rejected),
            ("failed", u64::from(s.failed)),
        ] {
            metrics
                .audit
                .with_label_values(&[state])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
}
