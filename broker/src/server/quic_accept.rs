//! The QUIC accept loop: the same connection limit as TLS, plus what UDP needs. A spoofed
//! source address costs a TCP attacker nothing but costs a QUIC server a handshake, so above a
//! configured handshake rate clients must first echo a Retry token (address validation), and
//! handshakes in progress are capped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::{self, ListenerContext};
use crate::mqtt::packet::ReasonCode;
use crate::router::Broker;
use crate::transport::early_data::{self, EarlyData};
use crate::transport::quic::{self, Early, QuicLink};

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
    let cfg = &broker.config.listeners.quic;
    let zero_rtt = cfg.zero_rtt;
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
                let shaken = if zero_rtt {
                    early_handshake(connecting, handshake, &broker, remote, deadline).await
                } else {
                    full_handshake(connecting, handshake, &broker, remote, deadline).await
                };
                let Some(Handshaken {
                    conn,
                    control,
                    early,
                }) = shaken
                else {
                    return;
                };
                let identity = quic::identity(&conn);
                let link = QuicLink::new(
                    conn,
                    control,
                    broker.config.limits.max_packet_size,
                    broker.metrics.clone(),
                    early,
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

/// A connection whose client opened its control stream: the parts of its `QuicLink`.
struct Handshaken {
    conn: Connection,
    control: (SendStream, RecvStream),
    early: Option<Early>,
}

/// 1-RTT only: the handshake completes (within `deadline`) before anything is read.
async fn full_handshake(
    connecting: quinn::Connecting,
    handshake: OwnedSemaphorePermit,
    broker: &Broker,
    remote: SocketAddr,
    deadline: Instant,
) -> Option<Handshaken> {
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let reason = quic::handshake_failure_reason(&e);
            broker.handshake_failed("quic", reason, remote);
            tracing::info!(reason, error = %e, "QUIC handshake failed");
            return None;
        }
        Err(_) => {
            broker.handshake_failed("quic", "timeout", remote);
            tracing::info!("QUIC handshake timed out");
            return None;
        }
    };
    drop(handshake);
    let control = control_stream(&conn, broker, deadline).await?;
    Some(Handshaken {
        conn,
        control,
        early: None,
    })
}

/// 0-RTT allowed: the control stream may come before the handshake completes, with the
/// identity of the resumed session. A task watches the handshake to its end (or `deadline`),
/// holding the handshake permit until then, and tells the link how it ended.
async fn early_handshake(
    connecting: quinn::Connecting,
    handshake: OwnedSemaphorePermit,
    broker: &Arc<Broker>,
    remote: SocketAddr,
    deadline: Instant,
) -> Option<Handshaken> {
    let (conn, done) = match connecting.into_0rtt() {
        Ok(pair) => pair,
        // quinn always allows 0.5-RTT on a server; should that change, wait for the handshake.
        Err(connecting) => {
            return full_handshake(connecting, handshake, broker, remote, deadline).await
        }
    };
    let Some(data) = early_data::of(&conn) else {
        tracing::error!("QUIC connection without its early-data record; closing");
        conn.close(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR.0.into(), b"");
        return None;
    };
    let (tx, confirmed) = watch::channel(None);
    tokio::spawn(
        watch_handshake(
            conn.clone(),
            done,
            data.clone(),
            handshake,
            broker.clone(),
            remote,
            deadline,
            tx,
        )
        .in_current_span(),
    );
    let control = control_stream(&conn, broker, deadline).await?;
    Some(Handshaken {
        conn,
        control,
        early: Some(Early {
            data,
            handshake: confirmed,
        }),
    })
}

/// Waits for the end of a handshake that started with 0-RTT allowed.
#[allow(clippy::too_many_arguments)]
async fn watch_handshake(
    conn: Connection,
    done: quinn::ZeroRttAccepted,
    data: Arc<EarlyData>,
    permit: OwnedSemaphorePermit,
    broker: Arc<Broker>,
    remote: SocketAddr,
    deadline: Instant,
    tx: watch::Sender<Option<bool>>,
) {
    let ended = tokio::time::timeout_at(deadline, done).await;
    drop(permit);
    // `done` only says that quinn stopped waiting; the record says whether the client's
    // Finished was verified.
    let confirmed = data.confirmed();
    if !confirmed {
        let reason = match (ended, conn.close_reason()) {
            (Err(_), _) => "timeout",
            (_, Some(e)) => quic::handshake_failure_reason(&e),
            _ => "handshake",
        };
        broker.handshake_failed("quic", reason, remote);
        tracing::info!(reason, "QUIC handshake not completed");
        conn.close(
            ReasonCode::KEEP_ALIVE_TIMEOUT.0.into(),
            b"handshake not completed",
        );
    }
    let _ = tx.send(Some(confirmed));
}

/// The client's first bidirectional stream, within `deadline`. A client that opens none is
/// closed with 0x8D (it stayed silent too long), as one that sends no CONNECT.
async fn control_stream(
    conn: &Connection,
    broker: &Broker,
    deadline: Instant,
) -> Option<(SendStream, RecvStream)> {
    match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => Some(streams),
        // The connection ended first (closed by the client, or its handshake failed).
        Ok(Err(_)) => None,
        Err(_) => {
            broker
                .metrics
                .connections_rejected
                .with_label_values(&["connect_timeout"])
                .inc();
            tracing::info!("no control stream before the connect timeout; closing");
            conn.close(
                ReasonCode::KEEP_ALIVE_TIMEOUT.0.into(),
                b"no control stream",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_rate_counts_per_one_second_window() {
        let t0 = Instant::now();
        let mut rate = HandshakeRate {
            window: t0,
            count: 0,
            limit: 2,
        };
        assert!(!rate.over(t0));
        assert!(!rate.over(t0 + Duration::from_millis(500)));
        assert!(
            rate.over(t0 + Duration::from_millis(999)),
            "third in the window"
        );
        // A new window starts a second after the last one began.
        assert!(!rate.over(t0 + Duration::from_millis(1000)));
        assert!(!rate.over(t0 + Duration::from_millis(1500)));
        assert!(rate.over(t0 + Duration::from_millis(1999)));
        let mut always = HandshakeRate {
            window: t0,
            count: 0,
            limit: 0,
        };
        assert!(always.over(t0), "0: every unvalidated handshake");
    }
}
