//! Prometheus metrics and the loopback HTTP endpoint that serves them.
//!
//! One `Metrics` per server, registered in its own `Registry` (not the global default) so that
//! tests can run several servers in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub connections_total: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub packets_received: IntCounterVec,
    pub packets_sent: IntCounterVec,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub messages_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub messages_dropped: IntCounterVec,
    pub queued_messages: IntGauge,
    pub inflight_messages: IntGauge,
    pub sessions: IntGauge,
    pub subscriptions: IntGauge,
    pub retained_messages: IntGauge,
    pub persist_write_seconds: Histogram,
    pub persist_batch_ops: Histogram,
    pub tls_handshake_failures: IntCounterVec,
    pub crl_reloads: IntCounterVec,
    pub revoked_connections_closed: IntCounter,
    pub protocol_errors: IntCounterVec,
    pub quic_migrations: IntCounter,
    pub quic_retries: IntCounter,
    pub quic_data_streams: IntCounter,
    pub quic_stream_resets: IntCounter,
    pub quic_0rtt_connects: IntCounter,
    pub quic_0rtt_refused: IntCounter,
    pub authorization_denied: IntCounterVec,
    /// The audit writer's totals (`AuditStats`), copied every few seconds.
    pub audit: IntGaugeVec,
    pub historian_points_written: IntCounter,
    pub historian_points_replaced: IntCounter,
    pub historian_points_rejected: IntCounterVec,
    pub historian_blocks_written: IntCounter,
    pub historian_points_compressed: IntCounter,
    pub historian_tags: IntGauge,
    pub historian_stored_points: IntGauge,
    pub historian_stored_bytes: IntGauge,
    pub historian_rebirth_requests: IntCounter,
    /// The decoders' own totals (Sparkplug sequence gaps, deadband drops, ...), copied from
    /// `Ingest::counters` at every scrape.
    pub historian_ingest_events: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("converge".into()), None)
            // Names are constants below, so registration cannot collide.
            .unwrap_or_default();
        let m = Metrics {
            registry,
            connections: IntGauge::new("connections", "Open MQTT connections")
                .unwrap_or_else(|_| unreachable_metric()),
            connections_total: counter_vec(
                "connections_total",
                "Accepted connections by listener",
                &["listener"],
            ),
            connections_rejected: counter_vec(
                "connections_rejected_total",
                "Connections refused before or at CONNECT, by reason",
                &["reason"],
            ),
            packets_received: counter_vec(
                "packets_received_total",
                "MQTT packets received by type",
                &["type"],
            ),
            packets_sent: counter_vec("packets_sent_total", "MQTT packets sent by type", &["type"]),
            bytes_received: counter(
                "bytes_received_total",
                "Bytes received from clients (after TLS)",
            ),
            bytes_sent: counter("bytes_sent_total", "Bytes sent to clients (before TLS)"),
            messages_received: counter(
                "messages_received_total",
                "PUBLISH messages accepted from clients",
            ),
            messages_delivered: counter(
                "messages_delivered_total",
                "PUBLISH messages sent to subscribers",
            ),
            messages_dropped: counter_vec(
                "messages_dropped_total",
                "Messages not delivered, by reason",
                &["reason"],
            ),
            queued_messages: gauge("queued_messages", "Messages waiting in session queues"),
            inflight_messages: gauge(
                "inflight_messages",
                "QoS 1/2 messages sent and not yet acknowledged",
            ),
            sessions: gauge(
                "sessions",
                "Sessions held (connected and persistent offline)",
            ),
            subscriptions: gauge("subscriptions", "Subscriptions in the index"),
            retained_messages: gauge("retained_messages", "Retained messages held"),
            persist_write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "persist_write_seconds",
                    "Latency of one group commit to RocksDB",
                )
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default()),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            persist_batch_ops: Histogram::with_opts(
                HistogramOpts::new("persist_batch_ops", "Writes merged into one group commit")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).unwrap_or_default()),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            tls_handshake_failures: counter_vec(
                "tls_handshake_failures_total",
                "Failed TLS handshakes by reason",
                &["reason"],
            ),
            crl_reloads: counter_vec(
                "crl_reloads_total",
                "Changed CRL files read, by outcome (a failure keeps the previous CRLs)",
                &["outcome"],
            ),
            revoked_connections_closed: counter(
                "revoked_connections_closed_total",
                "Live connections closed because a new CRL revoked their certificate",
            ),
            quic_migrations: counter(
                "quic_migrations_total",
                "QUIC connections that continued from a new client address",
            ),
            quic_retries: counter(
                "quic_retries_total",
                "QUIC handshakes answered with a Retry (address validation)",
            ),
            quic_data_streams: counter(
                "quic_data_streams_total",
                "QUIC data streams opened by clients (multi-stream mode)",
            ),
            quic_stream_resets: counter(
                "quic_stream_resets_total",
                "QUIC data streams reset by clients",
            ),
            quic_0rtt_connects: counter(
                "quic_0rtt_connects_total",
                "CONNECTs received as QUIC 0-RTT early data",
            ),
            quic_0rtt_refused: counter(
                "quic_0rtt_refused_total",
                "QUIC connections closed (0x82) for early data other than one CONNECT",
            ),
            protocol_errors: counter_vec(
                "protocol_errors_total",
                "Connections closed for malformed or illegal packets, by reason code",
                &["reason"],
            ),
            audit: IntGaugeVec::new(
                Opts::new(
                    "audit_events",
                    "Audit log totals since start: written, queued, dropped, critical_overflowed, critical_dropped, checkpoints, spool_ingested, spool_rejected, failed",
                ),
                &["state"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            authorization_denied: counter_vec(
                "authorization_denied_total",
                "Requests the certificate policy refused, by action and MQTT reason code",
                &["action", "reason"],
            ),
            historian_points_written: counter(
                "historian_points_written_total",
                "Points written to the historian (durable with the group commit)",
            ),
            historian_points_replaced: counter(
                "historian_points_replaced_total",
                "Points that replaced a stored point with the same tag and timestamp",
            ),
            historian_points_rejected: counter_vec(
                "historian_points_rejected_total",
                "Points or messages of historized topics not stored, by reason",
                &["reason"],
            ),
            historian_blocks_written: counter(
                "historian_blocks_written_total",
                "Compressed blocks sealed or rewritten",
            ),
            historian_points_compressed: counter(
                "historian_points_compressed_total",
                "Points that swinging-door compression (CompDev) left out of sealed blocks",
            ),
            historian_tags: gauge("historian_tags", "Tags in the historian"),
            historian_stored_points: gauge(
                "historian_stored_points",
                "Points stored, as of the last retention pass (converge historian stats per tag)",
            ),
            historian_stored_bytes: gauge(
                "historian_stored_bytes",
                "Bytes of compressed blocks and recent records, as of the last retention pass",
            ),
            historian_rebirth_requests: counter(
                "historian_rebirth_requests_total",
                "Sparkplug rebirth requests (NCMD) sent to edge nodes with unknown state",
            ),
            historian_ingest_events: counter_vec(
                "historian_ingest_events_total",
                "Historian decoder events since start, by event",
                &["event"],
            ),
        };
        for c in [
            Box::new(m.connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.connections_total.clone()),
            Box::new(m.connections_rejected.clone()),
            Box::new(m.packets_received.clone()),
            Box::new(m.packets_sent.clone()),
            Box::new(m.bytes_received.clone()),
            Box::new(m.bytes_sent.clone()),
            Box::new(m.messages_received.clone()),
            Box::new(m.messages_delivered.clone()),
            Box::new(m.messages_dropped.clone()),
            Box::new(m.queued_messages.clone()),
            Box::new(m.inflight_messages.clone()),
            Box::new(m.sessions.clone()),
            Box::new(m.subscriptions.clone()),
            Box::new(m.retained_messages.clone()),
            Box::new(m.persist_write_seconds.clone()),
            Box::new(m.persist_batch_ops.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.crl_reloads.clone()),
            Box::new(m.revoked_connections_closed.clone()),
            Box::new(m.protocol_errors.clone()),
            Box::new(m.quic_migrations.clone()),
            Box::new(m.quic_retries.clone()),
            Box::new(m.quic_data_streams.clone()),
            Box::new(m.quic_stream_resets.clone()),
            Box::new(m.quic_0rtt_connects.clone()),
            Box::new(m.quic_0rtt_refused.clone()),
            Box::new(m.authorization_denied.clone()),
            Box::new(m.audit.clone()),
            Box::new(m.historian_points_written.clone()),
            Box::new(m.historian_points_replaced.clone()),
            Box::new(m.historian_points_rejected.clone()),
            Box::new(m.historian_blocks_written.clone()),
            Box::new(m.historian_points_compressed.clone()),
            Box::new(m.historian_tags.clone()),
            Box::new(m.historian_stored_points.clone()),
            Box::new(m.historian_stored_bytes.clone()),
            Box::new(m.historian_rebirth_requests.clone()),
            Box::new(m.historian_ingest_events.clone()),
        ] {
            // Distinct constant names: registration cannot fail.
            let _ = m.registry.register(c);
        }
        Arc::new(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

// The constructors below only fail on invalid metric names or label sets, which are constants.
fn unreachable_metric<T>() -> T {
    panic!("invalid constant metric definition")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric())
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
