//! The QUIC accept loop: the same connection limit as TLS, plus what UDP needs. A spoofed
//! source address costs a TCP attacker nothing but costs a QUIC server a handshake, so above a
//! configured handshake rate clients must first echo a Retry token (address validation), and
//! handshakes in progress are capped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::{self, ListenerContext};
use crate::router::Broker;
use crate::transport::quic::{self, QuicLink};

/// How long shutdown waits for QUIC close frames to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Handshakes started in the current one-second window.
struct HandshakeRate {
    window: Instant,
    count: u32,
    limit: u32,
}

impl HandshakeRate {
    /// True when this handshake is over the rate and its address is not yet validated.
    fn over(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count > self.limit
    }
}

pub(super) async fn run(
    endpoint: quinn::Endpoint,
    ctx: Arc<ListenerContext>,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = broker.config.listeners.quic.clone();
    let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes_in_flight));
    let mut rate = HandshakeRate {
        window: Instant::now(),
        count: 0,
        limit: cfg.retry_above_handshakes_per_sec,
    };
    loop {
        let incoming = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let remote = incoming.remote_address();
        if !incoming.remote_address_validated() && rate.over(Instant::now()) && incoming.may_retry()
        {
            broker.metrics.quic_retries.inc();
            if let Err(e) = incoming.retry() {
                e.into_incoming().refuse();
            }
            continue;
        }
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            broker
                .metrics
                .connections_rejected
                .with_label_values(&["quic_handshakes_in_flight"])
                .inc();
            // Dropped, not refused: the client retransmits its Initial and gets in once the
            // handshakes ahead of it are done (a reconnect storm drains instead of failing).
            incoming.ignore();
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            broker
                .metrics
                .connections_rejected
                .with_label_values(&["max_connections"])
                .inc();
            tracing::warn!(%remote, "connection limit reached; refusing QUIC connection");
            incoming.refuse();
            continue;
        };
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
        let (ctx, broker, shutdown) = (ctx.clone(), broker.clone(), shutdown.clone());
        tokio::spawn(
            async move {
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(error = %e, "QUIC connection refused");
                        return;
                    }
                };
                let conn = match tokio::time::timeout_at(deadline, connecting).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        let reason = quic::handshake_failure_reason(&e);
                        broker.handshake_failed("quic", reason, remote);
                        tracing::info!(reason, error = %e, "QUIC handshake failed");
                        return;
                    }
                    Err(_) => {
                        broker.handshake_failed("quic", "timeout", remote);
                        tracing::info!("QUIC handshake timed out");
                        return;
                    }
                };
                drop(handshake);
                let control = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
                    Ok(Ok(streams)) => streams,
                    _ => {
                        broker
                            .metrics
                            .connections_rejected
                            .with_label_values(&["connect_timeout"])
                            .inc();
                        tracing::info!("no control stream before the connect timeout; closing");
                        conn.close(0u32.into(), b"no control stream");
                        return;
                    }
                };
                let identity = quic::identity(&conn);
                let link = QuicLink::new(
                    conn,
                    control,
                    broker.config.limits.max_packet_size,
                    broker.metrics.clone(),
                );
                Box::pin(connection::serve(
                    link, identity, remote, ctx, broker, deadline, shutdown,
                ))
                .await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Connections end themselves (DISCONNECT 0x8B and a QUIC close); give their close frames
    // a moment to leave before the socket goes.
    let _ = tokio::time::timeout(CLOSE_GRACE * 5, endpoint.wait_idle()).await;
    endpoint.close(0u32.into(), b"server shutting down");
}
