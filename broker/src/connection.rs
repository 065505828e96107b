//! The connection loop: one task per client, shared by every transport.
//!
//! A transport hands over a byte stream and the peer's identity; this module reads CONNECT,
//! applies the identity rules, attaches the session, and then runs the loop that decodes
//! packets, answers them, drains the session queue into PUBLISHes and enforces keep-alive.
//! Packet handling (`Conn::handle`) is synchronous and writes into an output buffer; the async
//! loop around it only moves bytes and waits. Acknowledgements that depend on persistence wait
//! in `pending` (FIFO, so QoS 1 PUBACKs keep the order of their PUBLISHes, MQTT-4.6.0-2).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::mqtt::codec::{self, DecodeError, DecodeLimits};
use crate::mqtt::packet::{
    ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp,
    PubRespKind, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::mqtt::topic;
use crate::persist::record::{self, DeliveryState};
use crate::persist::{Cf, Op, StoreError};
use crate::router::message::Delivery;
use crate::router::{self, Broker, PendingWill};
use crate::security::SessionAuth;
use crate::session::{self, SharedSession, Subscription};
use crate::transport::{ListenerKind, PeerIdentity};
use converge_security::audit::{Action, Event as AuditEvent, Outcome};
use converge_security::{Quota, Request};

/// Most QoS 1/2 messages moved from the queue to the socket per wake-up, so one busy session
/// cannot starve the others sharing a worker thread.
const MAX_SENDS_PER_WAKE: usize = 256;
/// Read buffer of a connection that is idle: most devices send small packets rarely, so an idle
/// connection keeps only this much (memory per idle connection is what limits a big plant).
const IDLE_BUFFER: usize = 512;
/// Room made for the next read once a connection is busy.
const READ_CHUNK: usize = 16 * 1024;
/// An output buffer that grew beyond this (a burst of deliveries) is released once written.
const MAX_IDLE_OUT: usize = 64 * 1024;
/// How long a connection we closed keeps reading (and discarding) the client's last bytes.
const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(2);
/// A peer that does not take our bytes for this long is gone (when it has no keep-alive).
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-listener rules the connection loop applies.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    pub kind: ListenerKind,
    pub allow_anonymous: bool,
    pub require_client_id_match: bool,
    pub deny_subscribe: Vec<String>,
}

static ASSIGNED_IDS: AtomicU64 = AtomicU64::new(1);

/// Why the loop ends.
#[derive(Debug)]
enum Close {
    /// We close: tell an MQTT 5 client why with DISCONNECT, then close.
    Reason(ReasonCode, &'static str),
    /// The client sent DISCONNECT; publish the will only for reason 0x04.
    ClientDisconnect { publish_will: bool },
    /// The socket closed or failed: abnormal, the will is published.
    Network,
}

type AckFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A packet to send once its records are durable, and deliveries to queue after it.
struct PendingAck {
    packet: Packet,
    commit: AckFuture,
    then: Vec<Delivery>,
    /// The stream that carried the request: the answer goes back on it.
    route: Route,
}

/// A stream of the connection. TLS and TCP have one; a QUIC connection has its control stream
/// (`Route::CONTROL`) plus the data streams the client opens (EMQX's multi-stream mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route(pub u64);

impl Route {
    /// The connection's first stream: CONNECT, CONNACK, PINGREQ/RESP, DISCONNECT, AUTH.
    pub const CONTROL: Route = Route(0);
}

/// What the connection loop needs of a transport: bytes in, tagged with the stream they came
/// on, and bytes out to a stream. A transport with several streams must hand over whole MQTT
/// packets of one stream per `read`, so that every decoded packet has one route.
pub trait Link: Send {
    /// Appends received bytes to `buf`; returns their stream and how many (0: the connection,
    /// or its control stream, ended). Cancel-safe: it runs inside `select!`.
    fn read(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl Future<Output = std::io::Result<(Route, usize)>> + Send;

    /// Writes all of `bytes` to the stream `route`; a stream that is gone falls back to the
    /// control stream.
    fn write(
        &mut self,
        route: Route,
        bytes: &[u8],
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Ends the connection once what was written is sent. `reason` is why the server closes
    /// (a transport with its own close codes passes it on); None for a normal end.
    fn close(&mut self, reason: Option<ReasonCode>) -> impl Future<Output = ()> + Send;

    /// True when packets may travel on several streams: the loop then answers on the stream
    /// that carried each request and sends messages without topic aliases (a stream may
    /// overtake another, so an alias set up on one could be used before it is known).
    fn multi_stream(&self) -> bool {
        false
    }

    /// True while what was read may be a replay: early data (QUIC 0-RTT) whose handshake is
    /// not yet confirmed. Such a transport passes on nothing but one CONNECT until then.
    fn replayable(&self) -> bool {
        false
    }

    /// How the handshake ends: `Some(true)` once confirmed, `Some(false)` if it failed or timed
    /// out, `None` before. Transports without early data are confirmed from the start.
    fn handshake(&self) -> watch::Receiver<Option<bool>> {
        watch::channel(Some(true)).1
    }
}

/// Waits until the handshake `watch` tells how it ended; a closed channel without an answer
/// counts as failed. Cancel-safe.
async fn confirmed(handshake: &mut watch::Receiver<Option<bool>>) -> bool {
    match handshake.wait_for(Option::is_some).await {
        Ok(v) => *v == Some(true),
        Err(_) => false,
    }
}

/// Records an accepted handshake (`handshake_accepted`) of a client with a certificate. The
/// serial names a certificate without a Common Name.
fn audit_handshake(
    broker: &Broker,
    peer: &PeerIdentity,
    remote: SocketAddr,
    listener: &ListenerContext,
) {
    if let Some(leaf) = &peer.leaf {
        broker.audit(
            AuditEvent::new(Action::HandshakeAccepted, Outcome::Success)
                .actor(peer.common_name.as_deref().unwrap_or("-"))
                .source(remote)
                .resource(listener.kind.name())
                .reason(format!("serial {}", leaf.serial_hex())),
        );
    }
}

/// A transport's refusal of what the client sent (e.g. QUIC early data beyond a CONNECT),
/// carried in the `std::io::Error` of `Link::read`: the loop closes with this reason.
#[derive(Debug, Clone, Copy)]
pub struct LinkRefusal {
    pub reason: ReasonCode,
    pub why: &'static str,
}

impl std::fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.why, self.reason.0)
    }
}

impl std::error::Error for LinkRefusal {}

/// The refusal inside a read error, if the transport refused something.
fn refusal(e: &std::io::Error) -> Option<LinkRefusal> {
    e.get_ref()?.downcast_ref::<LinkRefusal>().copied()
}

/// A `Link` over one byte stream (TCP, TLS).
pub struct StreamLink<S> {
    reader: tokio::io::ReadHalf<S>,
    writer: tokio::io::WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite + Send> StreamLink<S> {
    pub fn new(stream: S) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        StreamLink { reader, writer }
    }
}

impl<S: AsyncRead + AsyncWrite + Send> Link for StreamLink<S> {
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<(Route, usize)> {
        let n = self.reader.read_buf(buf).await?;
        Ok((Route::CONTROL, n))
    }

    async fn write(&mut self, _route: Route, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    async fn close(&mut self, _reason: Option<ReasonCode>) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
    }
}

/// Runs one client connection to its end. `deadline` bounds the time until CONNECT is read.
pub async fn serve<L: Link>(
    mut link: L,
    peer: PeerIdentity,
    remote: SocketAddr,
    listener: Arc<ListenerContext>,
    broker: Arc<Broker>,
    deadline: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = DecodeLimits {
        max_packet_size: broker.config.limits.max_packet_size,
    };
    let mut rbuf = BytesMut::with_capacity(IDLE_BUFFER);
    // Recorded now, not at CONNECT: a client that completes the handshake and then says
    // nothing is in the log too. A connection that may carry 0-RTT data has not completed its
    // handshake yet: its record waits until the handshake is confirmed, and a replay that never
    // confirms leaves none (its watcher records `handshake_rejected` instead).
    let mut handshake_unaudited = link.replayable();
    if !handshake_unaudited {
        audit_handshake(&broker, &peer, remote, &listener);
    }

    // Phase 1: CONNECT, within the connect timeout.
    let connect = loop {
        match codec::decode(&mut rbuf, None, &limits) {
            Ok(Some(Packet::Connect(c))) => break c,
            Ok(Some(_)) => return, // the decoder only yields CONNECT here
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolVersion(level)) => {
                tracing::info!(level, "refused: unsupported protocol version");
                // A level-5 client with a wrong protocol name reads a v5 CONNACK (0x84); any
                // other client gets the 3.1.1 form (return code 0x01).
                let answer = if level == 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                reject_connect(
                    &mut link,
                    &broker,
                    answer,
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                )
                .await;
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "malformed CONNECT; closing");
                broker
                    .metrics
                    .protocol_errors
                    .with_label_values(&[&format!("0x{:02X}", e.reason_code().0)])
                    .inc();
                // No CONNACK (the protocol version is unknown); a transport with close codes
                // still tells the client why (QUIC: 0x81 malformed, 0x95 too large, ...).
                link.close(Some(e.reason_code())).await;
                return;
            }
        }
        prepare_read(&mut rbuf);
        let read = tokio::select! {
            r = link.read(&mut rbuf) => r,
            _ = tokio::time::sleep_until(deadline) => {
                broker.metrics.connections_rejected.with_label_values(&["connect_timeout"]).inc();
                tracing::info!("no CONNECT before the connect timeout; closing");
                // The client stayed silent too long: the keep-alive code says so.
                link.close(Some(ReasonCode::KEEP_ALIVE_TIMEOUT)).await;
                return;
            }
            _ = shutdown.changed() => {
                link.close(Some(ReasonCode::SERVER_SHUTTING_DOWN)).await;
                return;
            }
        };
        match read {
            Ok((_, 0)) => return,
            Err(e) => {
                if let Some(r) = refusal(&e) {
                    tracing::info!(why = r.why, "refused before CONNECT; closing");
                    link.close(Some(r.reason)).await;
                }
                return;
            }
            Ok((_, n)) => broker.metrics.bytes_received.inc_by(n as u64),
        }
    };
    // A CONNECT in early data (QUIC 0-RTT) may be a recorded flight sent again by someone else.
    let mut replayable = link.replayable();
    if handshake_unaudited && !replayable {
        audit_handshake(&broker, &peer, remote, &listener);
        handshake_unaudited = false;
    }
    let mut handshake = link.handshake();
    if replayable {
        // A clean start wipes the session and a will is a message the broker will publish:
        // neither may come from a replay, so both wait until the client has proved itself.
        if connect.clean_start || connect.will.is_some() {
            let ok = tokio::select! {
                ok = tokio::time::timeout_at(deadline, confirmed(&mut handshake)) => ok.unwrap_or(false),
                _ = shutdown.changed() => false,
            };
            if !ok {
                tracing::info!("0-RTT CONNECT whose handshake was never confirmed; dropped");
                link.close(Some(ReasonCode::NOT_AUTHORIZED)).await;
                return;
            }
            replayable = false;
            audit_handshake(&broker, &peer, remote, &listener);
            handshake_unaudited = false;
        }
    }
    broker
        .metrics
        .packets_received
        .with_label_values(&["connect"])
        .inc();
    let version = connect.protocol;
    let refused = |reason: ReasonCode, why: &str| {
        broker.audit(
            AuditEvent::new(Action::Connect, Outcome::Denied)
                .actor(connect.client_id.as_str())
                .source(remote)
                .resource(listener.kind.name())
                .reason(format!("0x{:02X}", reason.0))
                .rule(why),
        );
    };

    let auth = match authorize_connect(&connect, &peer, &listener, &broker) {
        Ok(a) => a,
        Err((reason, why)) => {
            refused(reason, &why);
            broker
                .metrics
                .connections_rejected
                .with_label_values(&[&format!("0x{:02X}", reason.0)])
                .inc();
            reject_connect(&mut link, &broker, version, reason).await;
            return;
        }
    };
    let policy_id = auth.as_ref().map(|a| &*a.client_id);
    let accepted = match accept_connect(&connect, &peer, &listener, &broker, policy_id) {
        Ok(a) => a,
        Err(reason) => {
            refused(reason, "listener rules");
            broker
                .metrics
                .connections_rejected
                .with_label_values(&[&format!("0x{:02X}", reason.0)])
                .inc();
            tracing::info!(client_id = %connect.client_id, reason = format!("0x{:02X}", reason.0), "CONNECT refused");
            reject_connect(&mut link, &broker, version, reason).await;
            return;
        }
    };
    if let (Some(auth), Some(will)) = (&auth, &accepted.will) {
        if let Err((reason, why)) = authorize_will(auth, &will.publish) {
            refused(reason, &why);
            broker
                .metrics
                .connections_rejected
                .with_label_values(&[&format!("0x{:02X}", reason.0)])
                .inc();
            tracing::info!(client_id = %connect.client_id, topic = %will.publish.topic, reason = format!("0x{:02X}", reason.0), %why, "CONNECT refused: the will is not allowed");
            reject_connect(&mut link, &broker, version, reason).await;
            return;
        }
    }
    tracing::Span::current().record("client_id", accepted.client_id.as_str());

    // A resumed TLS session (and so every QUIC 0-RTT CONNECT) carries the certificate that was
    // verified at its first handshake, not checked again: refuse it here if it has since been
    // revoked or has expired, before the session is touched.
    let stale = if peer.not_after.is_some_and(|t| t <= unix_now()) {
        Some("client certificate expired")
    } else if peer
        .leaf
        .as_ref()
        .is_some_and(|leaf| broker.is_revoked(leaf))
    {
        Some("certificate revoked")
    } else {
        None
    };
    if let Some(why) = stale {
        tracing::info!(
            why,
            "CONNECT refused: stale certificate of a resumed session"
        );
        refused(ReasonCode::NOT_AUTHORIZED, why);
        broker
            .metrics
            .connections_rejected
            .with_label_values(&["0x87"])
            .inc();
        reject_connect(&mut link, &broker, version, ReasonCode::NOT_AUTHORIZED).await;
        return;
    }

    let attached = broker.connect(
        &accepted.client_id,
        version,
        connect.clean_start,
        accepted.session_expiry,
    );
    {
        let mut s = session::lock(&attached.session);
        s.auth = auth.clone();
        s.cert = peer.leaf.clone();
    }
    // After recording the certificate in the session: a CRL reload that scanned the sessions
    // before this line is seen here (router::revocation).
    if peer
        .leaf
        .as_ref()
        .is_some_and(|leaf| broker.is_revoked(leaf))
    {
        tracing::info!("certificate revoked while connecting; refusing");
        refused(ReasonCode::NOT_AUTHORIZED, "certificate revoked");
        reject_connect(&mut link, &broker, version, ReasonCode::NOT_AUTHORIZED).await;
        broker.disconnected(&attached.session, attached.connection_id, None);
        return;
    }
    if let Err(e) = broker.store.submit(attached.ops).wait().await {
        tracing::error!(error = %e, "cannot persist session; refusing connection");
        reject_connect(&mut link, &broker, version, ReasonCode::SERVER_UNAVAILABLE).await;
        broker.disconnected(&attached.session, attached.connection_id, None);
        return;
    }
    broker.metrics.connections.inc();
    let mut connected = AuditEvent::new(Action::Connect, Outcome::Success)
        .actor(accepted.client_id.as_str())
        .source(remote)
        .resource(listener.kind.name());
    if replayable {
        connected = connected.reason("0-RTT, handshake not yet confirmed");
    }
    if let Some(a) = &auth {
        connected = connected
            .zone(a.zone())
            .rule(format!("profile {:?}", a.profile_name()));
    }
    broker.audit_critical(connected);
    tracing::info!(%remote, listener = listener.kind.name(), version = version.level(), clean_start = connect.clean_start, session_present = attached.session_present, early = replayable, "connected");

    let connack = accepted.connack(attached.session_present, &broker.config, auth.as_deref());
    let mut conn = Conn {
        broker: broker.clone(),
        listener,
        version,
        client_id: Arc::from(accepted.client_id.as_str()),
        session: attached.session.clone(),
        connection_id: attached.connection_id,
        out: BytesMut::new(),
        multi_stream: link.multi_stream(),
        route: Route::CONTROL,
        segments: Vec::new(),
        sub_routes: Vec::new(),
        pending: VecDeque::new(),
        qos1_pending: 0,
        client_receive_max: accepted.client_receive_max,
        client_max_packet: accepted.client_max_packet,
        client_alias_max: if link.multi_stream() {
            0
        } else {
            accepted.client_alias_max
        },
        in_aliases: HashMap::new(),
        out_aliases: HashMap::new(),
        session_expiry: accepted.session_expiry,
        will: accepted.will,
        waker: attached.waker.clone(),
        remote,
        quota: auth
            .as_ref()
            .map(|a| Quota::new(&a.subject, std::time::Instant::now())),
        auth,
        replayable,
        delivery_denials_audited: Vec::new(),
    };
    conn.send(&Packet::ConnAck(connack));
    // Until a 0-RTT client is confirmed, its session's messages stay queued: a replayed
    // CONNECT must not take them (the CONNACK alone tells nothing a recording did not).
    if !conn.replayable {
        conn.resend_inflight();
        conn.pump();
    }

    let keep_alive = accepted.keep_alive;
    // MQTT-3.1.2-22: one and a half times the keep-alive without a packet ends the connection.
    let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let write_timeout = idle.unwrap_or(DEFAULT_WRITE_TIMEOUT);
    let mut last_packet = Instant::now();
    let mut kicked = attached.kicked;
    // The certificate is the credential: when it expires, so does the connection.
    let cert_expiry = peer.not_after.and_then(expiry_instant);

    let close = 'conn: loop {
        if !conn.out.is_empty() {
            let n = conn.out.len();
            match tokio::time::timeout(write_timeout, conn.flush(&mut link)).await {
                Ok(Ok(())) => broker.metrics.bytes_sent.inc_by(n as u64),
                Ok(Err(_)) => break Close::Network,
                Err(_) => break Close::Reason(ReasonCode::KEEP_ALIVE_TIMEOUT, "write timed out"),
            }
        }
        prepare_read(&mut rbuf);
        let idle_deadline = idle.map(|d| last_packet + d);
        let event = tokio::select! {
            biased;
            r = &mut kicked => Event::Kicked(r.ok()),
            r = front(&mut conn.pending), if !conn.pending.is_empty() => Event::Committed(r),
            _ = conn.waker.notified() => Event::Wake,
            r = link.read(&mut rbuf) => Event::Read(r),
            ok = tokio::time::timeout_at(deadline, confirmed(&mut handshake)), if conn.replayable => {
                Event::Confirmed(ok.unwrap_or(false))
            }
            _ = sleep_until_opt(idle_deadline) => Event::KeepAliveTimeout,
            _ = sleep_until_opt(cert_expiry) => Event::CertificateExpired,
        };
        match event {
            Event::Kicked(reason) => {
                break Close::Reason(
                    reason.unwrap_or(ReasonCode::SESSION_TAKEN_OVER),
                    "closed by the server",
                );
            }
            Event::Committed(result) => {
                let Some(done) = conn.pending.pop_front() else {
                    continue;
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "persistence failed; closing without acknowledging");
                    break Close::Reason(ReasonCode::UNSPECIFIED_ERROR, "persistence failed");
                }
                if matches!(&done.packet, Packet::PubResp(r) if r.kind == PubRespKind::PubAck) {
                    conn.qos1_pending = conn.qos1_pending.saturating_sub(1);
                }
                conn.route = done.route;
                conn.send(&done.packet);
                conn.queue_deliveries(done.then);
            }
            Event::Wake => conn.pump(),
            Event::Confirmed(true) => {
                conn.replayable = false;
                if handshake_unaudited {
                    audit_handshake(&broker, &peer, remote, &conn.listener);
                    handshake_unaudited = false;
                }
                conn.resend_inflight();
                conn.pump();
            }
            Event::Confirmed(false) => {
                // Whoever sent that CONNECT never proved to hold the session's keys.
                break Close::Reason(ReasonCode::NOT_AUTHORIZED, "handshake not confirmed");
            }
            Event::Read(Ok((_, 0))) => break Close::Network,
            Event::Read(Err(e)) => match refusal(&e) {
                Some(r) => break Close::Reason(r.reason, r.why),
                None => break Close::Network,
            },
            Event::Read(Ok((route, n))) => {
                broker.metrics.bytes_received.inc_by(n as u64);
                conn.route = route;
                loop {
                    match codec::decode(&mut rbuf, Some(version), &limits) {
                        Ok(Some(packet)) => {
                            last_packet = Instant::now();
                            broker
                                .metrics
                                .packets_received
                                .with_label_values(&[packet.name()])
                                .inc();
                            if let Err(close) = conn.handle(packet) {
                                break 'conn close;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            broker
                                .metrics
                                .protocol_errors
                                .with_label_values(&[&format!("0x{:02X}", e.reason_code().0)])
                                .inc();
                            tracing::info!(error = %e, "malformed packet; closing");
                            break 'conn Close::Reason(e.reason_code(), "malformed packet");
                        }
                    }
                }
            }
            Event::KeepAliveTimeout => {
                tracing::info!(keep_alive, "keep-alive timeout");
                break Close::Reason(ReasonCode::KEEP_ALIVE_TIMEOUT, "keep-alive timeout");
            }
            Event::CertificateExpired => {
                break Close::Reason(ReasonCode::NOT_AUTHORIZED, "client certificate expired");
            }
        }
    };

    let publish_will = match &close {
        Close::Reason(reason, why) => {
            tracing::info!(
                reason = format!("0x{:02X}", reason.0),
                why,
                "disconnecting client"
            );
            if version == ProtocolVersion::V5 {
                conn.out.clear();
                conn.segments.clear();
                conn.route = Route::CONTROL;
                conn.send(&Packet::Disconnect(Disconnect {
                    reason: *reason,
                    properties: Properties::default(),
                }));
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush(&mut link)).await;
            }
            // A server-initiated close is not a clean client disconnect: the will goes out.
            true
        }
        Close::ClientDisconnect { publish_will } => *publish_will,
        Close::Network => true,
    };
    let close_reason = match &close {
        Close::Reason(reason, _) => Some(*reason),
        _ => None,
    };
    link.close(close_reason).await;
    let will = if publish_will { conn.will.take() } else { None };
    broker.metrics.connections.dec();
    let mut ended = AuditEvent::new(Action::Disconnect, Outcome::Success)
        .actor(&*conn.client_id)
        .source(remote)
        .reason(match &close {
            Close::Reason(r, why) => format!("0x{:02X} {why}", r.0),
            Close::ClientDisconnect { .. } => "client DISCONNECT".to_owned(),
            Close::Network => "network closed".to_owned(),
        });
    if let Some(a) = &conn.auth {
        ended = ended.zone(a.zone());
    }
    broker.audit(ended);
    broker.disconnected(&conn.session, conn.connection_id, will);
    if matches!(close, Close::Reason(..)) {
        // Half-close, then read and discard what the client still sends until it closes: a
        // client writing at that moment (PUBREL, say) would otherwise get a reset and could
        // lose our DISCONNECT. Bounded by DRAIN_AFTER_DISCONNECT.
        let _ = tokio::time::timeout(DRAIN_AFTER_DISCONNECT, async {
            loop {
                rbuf.clear();
                match link.read(&mut rbuf).await {
                    Ok((_, 0)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    tracing::info!("disconnected");
}

enum Event {
    Kicked(Option<ReasonCode>),
    Committed(Result<(), StoreError>),
    Wake,
    Confirmed(bool),
    Read(std::io::Result<(Route, usize)>),
    KeepAliveTimeout,
    CertificateExpired,
}

/// Makes room for the next read: small while the connection is quiet, a full chunk once the
/// small buffer fills up, and back to small when a large buffer has been drained.
fn prepare_read(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > READ_CHUNK {
        *rbuf = BytesMut::with_capacity(IDLE_BUFFER);
    } else if rbuf.capacity() - rbuf.len() < IDLE_BUFFER / 2 {
        rbuf.reserve(READ_CHUNK);
    }
}

async fn front(pending: &mut VecDeque<PendingAck>) -> Result<(), StoreError> {
    match pending.front_mut() {
        Some(p) => p.commit.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn reject_connect<L: Link>(
    link: &mut L,
    broker: &Broker,
    version: ProtocolVersion,
    reason: ReasonCode,
) {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    });
    if codec::encode(&connack, version, &mut out).is_ok() {
        broker
            .metrics
            .packets_sent
            .with_label_values(&["connack"])
            .inc();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), link.write(Route::CONTROL, &out)).await;
    }
    link.close(Some(reason)).await;
}

/// The outcome of checking a CONNECT.
struct Accepted {
    client_id: String,
    assigned_id: bool,
    session_expiry: u32,
    expiry_capped: bool,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    client_alias_max: u16,
    will: Option<PendingWill>,
    version: ProtocolVersion,
}

impl Accepted {
    /// The CONNACK: what this connection negotiated plus what the server announces.
    /// With a policy, the device profile's Maximum QoS and Retain Available are announced too
    /// (MQTT-3.2.2-9/-12: the client must then not exceed them).
    fn connack(
        &self,
        session_present: bool,
        cfg: &crate::config::Config,
        auth: Option<&SessionAuth>,
    ) -> ConnAck {
        let mut properties = Properties::default();
        if self.version == ProtocolVersion::V5 {
            properties.receive_maximum = Some(cfg.limits.receive_maximum);
            properties.topic_alias_maximum = Some(cfg.limits.topic_alias_maximum);
            properties.maximum_packet_size = Some(cfg.limits.max_packet_size);
            let limits = auth.map(|a| a.subject.rights().limits());
            if !cfg.mqtt.retain_available || limits.is_some_and(|l| !l.retain()) {
                properties.retain_available = Some(0);
            }
            if let Some(q) = limits.map(|l| l.max_qos()).filter(|q| *q < 2) {
                properties.maximum_qos = Some(q);
            }
            if self.assigned_id {
                properties.assigned_client_identifier = Some(self.client_id.clone());
            }
            if self.expiry_capped {
                properties.session_expiry_interval = Some(self.session_expiry);
            }
            properties.server_keep_alive = self.server_keep_alive;
        }
        ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        }
    }
}

/// With a policy in force: the client's subject (identity, zone, rights) from its certificate,
/// or the CONNACK reason that refuses it. Without one: `None` (the listener rules apply).
fn authorize_connect(
    c: &Connect,
    peer: &PeerIdentity,
    listener: &ListenerContext,
    broker: &Broker,
) -> Result<Option<Arc<SessionAuth>>, (ReasonCode, String)> {
    let Some(store) = &broker.policy else {
        return Ok(None);
    };
    let leaf = match listener.kind {
        ListenerKind::Tls | ListenerKind::Quic => peer.chain.first(),
        // A plain listener has no certificate, hence no identity the policy could know.
        ListenerKind::Tcp => None,
    };
    let Some(leaf) = leaf else {
        tracing::info!(client_id = %c.client_id, "CONNECT refused: no client certificate for the policy");
        return Err((
            ReasonCode::NOT_AUTHORIZED,
            "no client certificate".to_owned(),
        ));
    };
    match SessionAuth::connect(store.current(), leaf.as_ref(), &c.client_id, listener.kind) {
        Ok(auth) => {
            tracing::info!(
                identity = auth.subject.identity(),
                zone = auth.zone(),
                "policy: identity resolved"
            );
            Ok(Some(Arc::new(auth)))
        }
        Err(denied) => {
            tracing::info!(client_id = %c.client_id, reason = format!("0x{:02X}", denied.reason.0), why = %denied.why, "CONNECT refused by the policy");
            Err((denied.reason, denied.why))
        }
    }
}

/// A will is a PUBLISH the client makes in advance: the policy decides it at CONNECT like any
/// other (rights, zone, QoS, retain, size), so a device cannot leave a message on a topic it
/// may not publish to. It is checked again when it goes out (`Broker::publish_will`).
fn authorize_will(auth: &SessionAuth, will: &Publish) -> Result<(), (ReasonCode, String)> {
    let decision = auth.check(&Request::Publish {
        topic: &will.topic,
        qos: will.qos as u8,
        retain: will.retain,
        payload_len: will.payload.len(),
    });
    if decision.is_allowed() {
        return Ok(());
    }
    Err((ReasonCode(decision.reason_code()), auth.describe(&decision)))
}

/// Applies the listener's identity rules and the limits to a CONNECT.
fn accept_connect(
    c: &Connect,
    peer: &PeerIdentity,
    listener: &ListenerContext,
    broker: &Broker,
    policy_client_id: Option<&str>,
) -> Result<Accepted, ReasonCode> {
    let cfg = &broker.config;
    let v5 = c.protocol == ProtocolVersion::V5;
    if c.properties.authentication_method.is_some() {
        // Enhanced authentication is not offered: the certificate is the identity.
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
    let mut client_id = c.client_id.clone();
    let mut assigned_id = false;
    match (policy_client_id, listener.kind) {
        // The policy decided the identity rules (and gave an empty client id the identity).
        (Some(id), _) => {
            if client_id.is_empty() {
                client_id = id.to_owned();
                assigned_id = true;
            }
        }
        (None, ListenerKind::Tls | ListenerKind::Quic) => {
            let Some(cn) = peer.common_name.as_deref() else {
                return Err(ReasonCode::NOT_AUTHORIZED);
            };
            if client_id.is_empty() {
                client_id = cn.to_string();
                assigned_id = true;
            } else if listener.require_client_id_match && client_id != cn {
                // One device must not pose as another.
                return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
        }
        (None, ListenerKind::Tcp) => {
            if !listener.allow_anonymous {
                return Err(ReasonCode::NOT_AUTHORIZED);
            }
            if client_id.is_empty() {
                if !v5 && !c.clean_start {
                    // MQTT-3.1.3-8: a 3.1.1 client with no id must ask for a clean session.
                    return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
                }
                client_id = format!("converge-{}", ASSIGNED_IDS.fetch_add(1, Ordering::Relaxed));
                assigned_id = true;
            }
        }
    }
    if client_id.len() > cfg.limits.max_client_id_length {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let will = match &c.will {
        None => None,
        Some(w) => {
            if !topic::valid_topic_name(&w.topic)
                || w.topic.len() > cfg.limits.max_topic_length
                || topic::level_count(&w.topic) > cfg.limits.max_topic_levels
            {
                return Err(ReasonCode::TOPIC_NAME_INVALID);
            }
            if w.retain && !cfg.mqtt.retain_available {
                return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
            }
            // `$`-topics are the server's, for a will as for a PUBLISH.
            if w.topic.starts_with('$') {
                return Err(ReasonCode::NOT_AUTHORIZED);
            }
            let mut properties = w.properties.clone();
            let delay_secs = properties.will_delay_interval.take().unwrap_or(0);
            Some(PendingWill {
                publish: Publish {
                    dup: false,
                    qos: w.qos,
                    retain: w.retain,
                    topic: w.topic.clone(),
                    packet_id: None,
                    properties,
                    payload: w.payload.clone(),
                },
                delay_secs,
            })
        }
    };
    let (session_expiry, expiry_capped) = if v5 {
        let asked = c.properties.session_expiry_interval.unwrap_or(0);
        let max = cfg.mqtt.max_session_expiry_secs;
        (asked.min(max), asked > max)
    } else if c.clean_start {
        (0, false)
    } else {
        (cfg.mqtt.max_session_expiry_secs, false)
    };
    let max_ka = cfg.mqtt.max_keep_alive_secs;
    let (keep_alive, server_keep_alive) = if v5 && (c.keep_alive == 0 || c.keep_alive > max_ka) {
        (max_ka, Some(max_ka))
    } else {
        (c.keep_alive, None)
    };
    Ok(Accepted {
        client_id,
        assigned_id,
        session_expiry,
        expiry_capped,
        keep_alive,
        server_keep_alive,
        client_receive_max: c
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(cfg.limits.max_inflight),
        client_max_packet: c.properties.maximum_packet_size,
        client_alias_max: if v5 {
            c.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        will,
        version: c.protocol,
    })
}

/// The connection's protocol state between packets.
struct Conn {
    broker: Arc<Broker>,
    listener: Arc<ListenerContext>,
    version: ProtocolVersion,
    client_id: Arc<str>,
    session: SharedSession,
    connection_id: u64,
    out: BytesMut,
    /// Several streams carry packets (QUIC multi-stream): `out` is then cut into `segments`.
    multi_stream: bool,
    /// The stream that what is sent now belongs to.
    route: Route,
    /// Where in `out` the stream changes: (offset, route); before the first, the control stream.
    segments: Vec<(usize, Route)>,
    /// Subscriptions made on each stream (plain filter, stream), newest last: a message goes
    /// out on the stream of the newest subscription it matches.
    sub_routes: Vec<(String, Route)>,
    pending: VecDeque<PendingAck>,
    /// QoS 1 PUBLISHes received and not yet acknowledged (Receive Maximum accounting).
    qos1_pending: usize,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    client_alias_max: u16,
    in_aliases: HashMap<u16, String>,
    out_aliases: HashMap<String, u16>,
    session_expiry: u32,
    will: Option<PendingWill>,
    waker: Arc<Notify>,
    /// The policy's view of this client; refreshed from the session after a reload.
    auth: Option<Arc<SessionAuth>>,
    /// Per-device message and byte rates (token buckets), from the profile.
    quota: Option<Quota>,
    /// For the audit log.
    remote: SocketAddr,
    /// The CONNECT came as early data and the handshake is not confirmed yet: nothing leaves
    /// the session queue until it is.
    replayable: bool,
    /// Publisher zones whose messages this connection was denied and the audit log was told
    /// about: one record per zone per connection, so a wildcard subscriber facing a zone
    /// boundary does not flood the log (every denial is still counted in the metrics).
    delivery_denials_audited: Vec<Arc<str>>,
}

/// Publisher zones remembered per connection for `delivery_denials_audited`; beyond it,
/// denials are only counted.
const MAX_AUDITED_DENIAL_ZONES: usize = 64;

impl Conn {
    fn v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// Notes that the next bytes of `out` belong to `self.route`.
    fn mark_route(&mut self) {
        if !self.multi_stream {
            return;
        }
        let current = self.segments.last().map_or(Route::CONTROL, |s| s.1);
        if current != self.route {
            self.segments.push((self.out.len(), self.route));
        }
    }

    /// Writes `out` to the link, each segment to its stream, and empties it.
    async fn flush<L: Link>(&mut self, link: &mut L) -> std::io::Result<()> {
        let mut start = 0;
        let mut route = Route::CONTROL;
        for &(end, next) in &self.segments {
            if let Some(bytes) = self.out.get(start..end) {
                if !bytes.is_empty() {
                    link.write(route, bytes).await?;
                }
            }
            start = end;
            route = next;
        }
        if let Some(bytes) = self.out.get(start..) {
            if !bytes.is_empty() {
                link.write(route, bytes).await?;
            }
        }
        self.out.clear();
        self.segments.clear();
        if self.out.capacity() > MAX_IDLE_OUT {
            self.out = BytesMut::new();
        }
        Ok(())
    }

    /// The stream a message for `topic` goes out on: that of the newest matching subscription.
    fn delivery_route(&self, topic: &str) -> Route {
        if !self.multi_stream {
            return Route::CONTROL;
        }
        self.sub_routes
            .iter()
            .rev()
            .find(|(filter, _)| topic::matches(filter, topic))
            .map_or(Route::CONTROL, |(_, route)| *route)
    }

    /// Queues an acknowledgement behind earlier ones, for the stream of the current request.
    fn push_ack(&mut self, packet: Packet, commit: AckFuture, then: Vec<Delivery>) {
        self.pending.push_back(PendingAck {
            packet,
            commit,
            then,
            route: self.route,
        });
    }

    fn send(&mut self, packet: &Packet) {
        self.mark_route();
        match codec::encode(packet, self.version, &mut self.out) {
            Ok(_) => self
                .broker
                .metrics
                .packets_sent
                .with_label_values(&[packet.name()])
                .inc(),
            Err(e) => tracing::warn!(error = %e, packet = packet.name(), "cannot encode packet"),
        }
    }

    fn send_frame(&mut self, frame: &Bytes) {
        self.mark_route();
        self.out.extend_from_slice(frame);
        self.broker
            .metrics
            .packets_sent
            .with_label_values(&["publish"])
            .inc();
    }

    fn ack(&self, kind: PubRespKind, packet_id: PacketId, reason: ReasonCode) -> Packet {
        Packet::PubResp(PubResp {
            kind,
            packet_id,
            reason: if self.v5() {
                reason
            } else {
                ReasonCode::SUCCESS
            },
            properties: Properties::default(),
        })
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubResp(r) => {
                self.on_pub_resp(r);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Connect(_) => Err(Close::Reason(ReasonCode::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Auth(_) => Err(Close::Reason(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Reason(
                    ReasonCode::PROTOCOL_ERROR,
                    "server-to-client packet from a client",
                ))
            }
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Close> {
        let broker = self.broker.clone();
        let cfg = &broker.config;
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > cfg.limits.topic_alias_maximum {
                return Err(Close::Reason(
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                ));
            }
            if p.topic.is_empty() {
                match self.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(Close::Reason(
                            ReasonCode::PROTOCOL_ERROR,
                            "unknown topic alias",
                        ))
                    }
                }
            } else {
                self.in_aliases.insert(alias, p.topic.clone());
            }
        }
        if p.topic.is_empty()
            || p.topic.len() > cfg.limits.max_topic_length
            || topic::level_count(&p.topic) > cfg.limits.max_topic_levels
        {
            return Err(Close::Reason(
                ReasonCode::TOPIC_NAME_INVALID,
                "topic name invalid or too long",
            ));
        }
        if p.retain && !cfg.mqtt.retain_available {
            return Err(Close::Reason(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "retain not available",
            ));
        }
        // `$`-topics belong to the server (`$SYS/`): clients may not publish to them.
        let refused = if p.topic.starts_with('$') {
            Some(ReasonCode::NOT_AUTHORIZED)
        } else {
            self.authorize_publish(&p)
        };
        if let Some(reason) = refused.filter(|r| !allowed_in_puback(*r)) {
            // MQTT-3.2.2-11 / -14 and 3.3.2: above the announced Maximum QoS, retain where it
            // is not available, a payload over the profile's limit: these reason codes exist
            // only for DISCONNECT. A 3.1.1 client is told nothing, as for every refusal.
            if self.version == ProtocolVersion::V5 {
                return Err(Close::Reason(reason, "publish refused by the policy"));
            }
        }
        let zone = self.auth.as_ref().map(|a| a.shared_zone());
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {
                if refused.is_some() {
                    return Ok(());
                }
                let routed = self
                    .broker
                    .publish_in(p, Some(self.client_id.clone()), zone.clone());
                self.broker.store.submit_detached(routed.ops);
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                if self.inbound_unacked() >= usize::from(cfg.limits.receive_maximum) {
                    return Err(Close::Reason(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "receive maximum exceeded",
                    ));
                }
                let (commit, reason) = if let Some(reason) = refused {
                    (commit_ready(), reason)
                } else {
                    let routed =
                        self.broker
                            .publish_in(p, Some(self.client_id.clone()), zone.clone());
                    (
                        boxed(self.broker.store.submit(routed.ops)),
                        matched_reason(routed.matched),
                    )
                };
                self.qos1_pending += 1;
                let packet = self.ack(PubRespKind::PubAck, pid, reason);
                self.push_ack(packet, commit, Vec::new());
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                let (duplicate, persistent) = {
                    let s = session::lock(&self.session);
                    (s.inbound_qos2.contains(&pid), s.persistent())
                };
                if duplicate {
                    // Already routed (method B of MQTT-4.3.3): only answer again.
                    let packet = self.ack(PubRespKind::PubRec, pid, ReasonCode::SUCCESS);
                    self.push_ack(packet, commit_ready(), Vec::new());
                    return Ok(());
                }
                if self.inbound_unacked() >= usize::from(cfg.limits.receive_maximum) {
                    return Err(Close::Reason(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "receive maximum exceeded",
                    ));
                }
                if let Some(reason) = refused {
                    let packet = self.ack(PubRespKind::PubRec, pid, reason);
                    self.push_ack(packet, commit_ready(), Vec::new());
                    return Ok(());
                }
                session::lock(&self.session).inbound_qos2.insert(pid);
                let mut routed =
                    self.broker
                        .publish_in(p, Some(self.client_id.clone()), zone.clone());
                if persistent {
                    routed.ops.push(Op::Put {
                        cf: Cf::Inbound,
                        key: record::inbound_key(&self.client_id, pid),
                        value: Vec::new(),
                    });
                }
                let packet = self.ack(PubRespKind::PubRec, pid, matched_reason(routed.matched));
                let commit = boxed(self.broker.store.submit(routed.ops));
                self.push_ack(packet, commit, Vec::new());
            }
            // The decoder guarantees a packet id for QoS 1/2.
            (_, None) => {
                return Err(Close::Reason(
                    ReasonCode::PROTOCOL_ERROR,
                    "missing packet id",
                ))
            }
        }
        Ok(())
    }

    /// The policy's decision on a PUBLISH (rights, zones and conduits, then the device's rate
    /// quotas): `None` to route it, or the reason to refuse it with. A refused PUBLISH is
    /// counted and dropped; MQTT 5 acknowledges it with the reason, 3.1.1 (which has no negative
    /// acknowledgement) with a plain PUBACK/PUBREC.
    fn authorize_publish(&mut self, p: &Publish) -> Option<ReasonCode> {
        let auth = self.current_auth()?;
        let len = p.payload.len();
        let mut decision = auth.check(&Request::Publish {
            topic: &p.topic,
            qos: p.qos as u8,
            retain: p.retain,
            payload_len: len,
        });
        if decision.is_allowed() {
            if let Some(q) = self.quota.as_mut() {
                decision = q.charge(std::time::Instant::now(), len);
            }
        }
        if decision.is_allowed() {
            return None;
        }
        let reason = ReasonCode(decision.reason_code());
        self.broker
            .metrics
            .authorization_denied
            .with_label_values(&["publish", &format!("0x{:02X}", reason.0)])
            .inc();
        self.broker
            .metrics
            .messages_dropped
            .with_label_values(&["not_authorized"])
            .inc();
        let rule = auth.describe(&decision);
        tracing::info!(topic = %p.topic, reason = format!("0x{:02X}", reason.0), %rule, "PUBLISH refused by the policy");
        let action = if reason == ReasonCode::QUOTA_EXCEEDED {
            Action::QuotaExceeded
        } else {
            Action::PublishDenied
        };
        self.broker.audit(
            AuditEvent::new(action, Outcome::Denied)
                .actor(&*self.client_id)
                .zone(auth.zone())
                .source(self.remote)
                .resource(p.topic.as_str())
                .reason(format!("0x{:02X}", reason.0))
                .rule(rule),
        );
        Some(reason)
    }

    /// Tells the audit log that a message was withheld from this subscriber by the policy, the
    /// first time for each publisher zone on this connection.
    fn audit_delivery_denied(&mut self, auth: Option<&SessionAuth>, d: &Delivery) {
        let from: Arc<str> = d
            .msg
            .publisher_zone
            .clone()
            .unwrap_or_else(|| Arc::from("(topic owner)"));
        if self.delivery_denials_audited.contains(&from)
            || self.delivery_denials_audited.len() >= MAX_AUDITED_DENIAL_ZONES
        {
            return;
        }
        let mut event = AuditEvent::new(Action::DeliveryDenied, Outcome::Denied)
            .actor(&*self.client_id)
            .source(self.remote)
            .resource(d.msg.publish.topic.as_str())
            .reason(format!(
                "0x87: published in zone {from}, which no conduit or right lets this subscriber \
                 receive; later denials of that zone's messages on this connection are only counted"
            ));
        if let Some(a) = auth {
            event = event.zone(a.zone());
        }
        self.broker.audit(event);
        self.delivery_denials_audited.push(from);
    }

    /// This connection's policy view, refreshed from the session when a reload happened since
    /// it was taken (a lock-free generation check per packet).
    fn current_auth(&mut self) -> Option<Arc<SessionAuth>> {
        let auth = self.auth.as_ref()?;
        let in_force = self.broker.policy.as_ref().map(|p| p.generation());
        if in_force != Some(auth.policy.generation()) {
            let fresh = session::lock(&self.session).auth.clone();
            match &fresh {
                Some(a) => self.quota = Some(Quota::new(&a.subject, std::time::Instant::now())),
                // The reload refused this client; it is being disconnected. Refuse meanwhile.
                None => return Some(auth.clone()),
            }
            self.auth = fresh;
        }
        self.auth.clone()
    }

    /// QoS 1/2 PUBLISHes from the client not yet fully acknowledged by us.
    fn inbound_unacked(&self) -> usize {
        self.qos1_pending + session::lock(&self.session).inbound_qos2.len()
    }

    fn on_pub_resp(&mut self, r: PubResp) {
        match r.kind {
            PubRespKind::PubRel => {
                let (existed, persistent) = {
                    let mut s = session::lock(&self.session);
                    (s.inbound_qos2.remove(&r.packet_id), s.persistent())
                };
                if existed && persistent {
                    self.broker.store.submit_detached(vec![Op::Delete {
                        cf: Cf::Inbound,
                        key: record::inbound_key(&self.client_id, r.packet_id),
                    }]);
                }
                let reason = if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                let packet = self.ack(PubRespKind::PubComp, r.packet_id, reason);
                // Behind any PUBREC still waiting for its commit, to keep the flow in order.
                self.push_ack(packet, commit_ready(), Vec::new());
            }
            PubRespKind::PubAck | PubRespKind::PubComp => {
                let want_qos = if r.kind == PubRespKind::PubAck {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                let removed = {
                    let mut s = session::lock(&self.session);
                    if s.owner != Some(self.connection_id) {
                        return;
                    }
                    let pos = s.inflight.iter().position(|d| {
                        d.packet_id() == Some(r.packet_id)
                            && d.qos == want_qos
                            && (want_qos == QoS::AtLeastOnce
                                || matches!(d.state, DeliveryState::Released(_)))
                    });
                    pos.and_then(|i| s.inflight.remove(i))
                };
                if let Some(d) = removed {
                    self.broker.metrics.inflight_messages.dec();
                    if let Some(seq) = d.seq {
                        self.broker.store.submit_detached(vec![Op::Delete {
                            cf: Cf::Queue,
                            key: record::queue_key(&self.client_id, seq),
                        }]);
                    }
                    self.pump();
                }
            }
            PubRespKind::PubRec => {
                let mut ops = Vec::new();
                let mut dropped = false;
                let found = {
                    let mut s = session::lock(&self.session);
                    if s.owner != Some(self.connection_id) {
                        return;
                    }
                    let pos = s.inflight.iter().position(|d| {
                        d.packet_id() == Some(r.packet_id) && d.qos == QoS::ExactlyOnce
                    });
                    match pos {
                        Some(i) if r.reason.is_error() => {
                            // The receiver refused the message: the flow ends here (MQTT-4.3.3).
                            if let Some(d) = s.inflight.remove(i) {
                                if let Some(seq) = d.seq {
                                    ops.push(Op::Delete {
                                        cf: Cf::Queue,
                                        key: record::queue_key(&self.client_id, seq),
                                    });
                                }
                            }
                            dropped = true;
                            true
                        }
                        Some(i) => {
                            let client_id = s.client_id.clone();
                            if let Some(d) = s.inflight.get_mut(i) {
                                d.state = DeliveryState::Released(r.packet_id);
                                if let Some(op) = d
                                    .seq
                                    .and_then(|seq| router::delivery_op(&client_id, seq, d))
                                {
                                    ops.push(op);
                                }
                            }
                            true
                        }
                        None => false,
                    }
                };
                self.broker.store.submit_detached(ops);
                if dropped {
                    self.broker.metrics.inflight_messages.dec();
                    self.pump();
                } else {
                    let reason = if found {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                    };
                    let packet = self.ack(PubRespKind::PubRel, r.packet_id, reason);
                    self.send(&packet);
                }
            }
        }
    }

    fn on_subscribe(&mut self, sub: Subscribe) -> Result<(), Close> {
        let broker = self.broker.clone();
        let limits = &broker.config.limits;
        let identifier = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained = Vec::new();
        let mut changed = false;
        for f in &sub.filters {
            let shared = topic::parse_shared(&f.filter);
            let plain = match shared {
                Ok(Some((_, plain))) => plain,
                Ok(None) => f.filter.as_str(),
                Err(_) => {
                    reasons.push(self.refusal(ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            if matches!(shared, Ok(Some(_))) && f.options.no_local {
                // MQTT-3.8.3-4.
                return Err(Close::Reason(
                    ReasonCode::PROTOCOL_ERROR,
                    "no-local on a shared subscription",
                ));
            }
            if !topic::valid_topic_filter(plain)
                || f.filter.len() > limits.max_topic_length
                || topic::level_count(plain) > limits.max_topic_levels
            {
                reasons.push(self.refusal(ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            }
            if self.denied(&f.filter) {
                tracing::info!(filter = %f.filter, "subscription refused by listener rule");
                reasons.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            let (at_limit, active) = {
                let s = session::lock(&self.session);
                let others =
                    s.subscriptions.len() - usize::from(s.subscriptions.contains_key(&f.filter));
                (
                    !s.subscriptions.contains_key(&f.filter)
                        && s.subscriptions.len() >= limits.max_subscriptions_per_client,
                    u32::try_from(others).unwrap_or(u32::MAX),
                )
            };
            if at_limit {
                reasons.push(self.refusal(ReasonCode::QUOTA_EXCEEDED));
                continue;
            }
            let mut options = f.options;
            if let Some(auth) = self.current_auth() {
                let d = auth.check(&Request::Subscribe {
                    filter: &f.filter,
                    qos: options.qos as u8,
                    active_subscriptions: active,
                });
                match d.granted_qos().and_then(QoS::from_u8) {
                    Some(granted) => options.qos = options.qos.min(granted),
                    None => {
                        let reason = ReasonCode(d.reason_code());
                        self.broker
                            .metrics
                            .authorization_denied
                            .with_label_values(&["subscribe", &format!("0x{:02X}", reason.0)])
                            .inc();
                        let rule = auth.describe(&d);
                        tracing::info!(filter = %f.filter, reason = format!("0x{:02X}", reason.0), %rule, "SUBSCRIBE refused by the policy");
                        self.broker.audit(
                            AuditEvent::new(Action::SubscribeDenied, Outcome::Denied)
                                .actor(&*self.client_id)
                                .zone(auth.zone())
                                .source(self.remote)
                                .resource(f.filter.as_str())
                                .reason(format!("0x{:02X}", reason.0))
                                .rule(rule),
                        );
                        reasons.push(self.refusal(reason));
                        continue;
                    }
                }
            }
            let (_, mut found) = self.broker.subscribe(
                &self.session,
                &f.filter,
                Subscription {
                    options,
                    identifier,
                },
            );
            retained.append(&mut found);
            changed = true;
            if self.multi_stream {
                self.sub_routes.retain(|(f, _)| f != plain);
                self.sub_routes.push((plain.to_owned(), self.route));
            }
            reasons.push(ReasonCode(options.qos as u8));
        }
        let commit = self.persist_session(changed);
        let packet = Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            properties: Properties::default(),
            reasons,
        });
        self.push_ack(packet, commit, retained);
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        let mut changed = false;
        for f in &u.filters {
            let existed = self.broker.unsubscribe(&self.session, f);
            if self.multi_stream {
                let plain = match topic::parse_shared(f) {
                    Ok(Some((_, plain))) => plain,
                    _ => f.as_str(),
                };
                self.sub_routes.retain(|(sf, _)| sf != plain);
            }
            changed |= existed;
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !self.v5() {
            reasons.clear();
        }
        let commit = self.persist_session(changed);
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reasons,
        });
        self.push_ack(packet, commit, Vec::new());
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Close> {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.session_expiry == 0 && expiry != 0 {
                // MQTT-3.14.2-2.
                return Err(Close::Reason(
                    ReasonCode::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 at CONNECT",
                ));
            }
            let expiry = expiry.min(self.broker.config.mqtt.max_session_expiry_secs);
            self.session_expiry = expiry;
            let mut s = session::lock(&self.session);
            s.expiry_interval = expiry;
        }
        Err(Close::ClientDisconnect {
            publish_will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
        })
    }

    /// 3.1.1 has a single failure code for SUBACK.
    fn refusal(&self, reason: ReasonCode) -> ReasonCode {
        if self.v5() {
            reason
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        }
    }

    fn denied(&self, filter: &str) -> bool {
        self.listener
            .deny_subscribe
            .iter()
            .any(|d| d == filter || (topic::valid_topic_name(filter) && topic::matches(d, filter)))
    }

    fn persist_session(&self, changed: bool) -> AckFuture {
        let s = session::lock(&self.session);
        if changed && s.persistent() {
            boxed(self.broker.store.submit(vec![s.record_op()]))
        } else {
            commit_ready()
        }
    }

    /// Puts deliveries (retained messages for a new subscription) into the session's queue.
    fn queue_deliveries(&mut self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        {
            let mut s = session::lock(&self.session);
            for d in deliveries {
                router::enqueue(
                    &mut s,
                    d,
                    &self.broker.config,
                    &self.broker.metrics,
                    &mut ops,
                );
            }
        }
        self.broker.store.submit_detached(ops);
        self.pump();
    }

    /// After a resumed session: send again what was in flight (MQTT-4.4.0-1).
    fn resend_inflight(&mut self) {
        let inflight: Vec<Delivery> = session::lock(&self.session)
            .inflight
            .iter()
            .cloned()
            .collect();
        let now = self.broker.clock.now_ms();
        let saved = self.route;
        for d in inflight {
            self.route = self.delivery_route(&d.msg.publish.topic);
            match d.state {
                DeliveryState::Sent(pid) => {
                    if let Some(p) = self.outgoing_publish(&d, Some(pid), true, now) {
                        self.send(&Packet::Publish(p));
                    }
                }
                DeliveryState::Released(pid) => {
                    let packet = self.ack(PubRespKind::PubRel, pid, ReasonCode::SUCCESS);
                    self.send(&packet);
                }
                DeliveryState::Queued => {}
            }
        }
        self.route = saved;
    }

    /// Moves queued messages to the socket while the client's receive window has room.
    fn pump(&mut self) {
        if self.replayable {
            return;
        }
        let now = self.broker.clock.now_ms();
        let mut detached = Vec::new();
        let mut sent = 0usize;
        let session = self.session.clone();
        let mut s = session::lock(&session);
        if s.owner != Some(self.connection_id) {
            return;
        }
        let saved = self.route;
        // Deliveries are checked against the session's current rights (reloads included).
        let auth = s.auth.clone();
        while sent < MAX_SENDS_PER_WAKE {
            let Some(front) = s.queue.front() else { break };
            if front.qos != QoS::AtMostOnce
                && s.inflight.len() >= usize::from(self.client_receive_max)
            {
                break;
            }
            let Some(mut d) = s.queue.pop_front() else {
                break;
            };
            self.broker.metrics.queued_messages.dec();
            self.route = self.delivery_route(&d.msg.publish.topic);
            if d.msg.expired(now) {
                self.broker
                    .metrics
                    .messages_dropped
                    .with_label_values(&["expired"])
                    .inc();
                if let Some(seq) = d.seq {
                    detached.push(Op::Delete {
                        cf: Cf::Queue,
                        key: record::queue_key(&self.client_id, seq),
                    });
                }
                continue;
            }
            if self.broker.policy.is_some() {
                let allowed = auth.as_ref().and_then(|a| {
                    a.deliver(
                        &d.msg.publish.topic,
                        d.msg.publisher_zone.as_deref(),
                        d.qos as u8,
                        d.msg.publish.payload.len(),
                    )
                });
                match allowed.and_then(QoS::from_u8) {
                    Some(q) => {
                        if q == QoS::AtMostOnce && d.qos != QoS::AtMostOnce {
                            // Downgraded by a conduit: the persisted QoS 1/2 copy goes.
                            if let Some(seq) = d.seq.take() {
                                detached.push(Op::Delete {
                                    cf: Cf::Queue,
                                    key: record::queue_key(&self.client_id, seq),
                                });
                            }
                        }
                        d.qos = d.qos.min(q);
                    }
                    None => {
                        self.broker
                            .metrics
                            .authorization_denied
                            .with_label_values(&["deliver", "0x87"])
                            .inc();
                        self.audit_delivery_denied(auth.as_deref(), &d);
                        self.broker
                            .metrics
                            .messages_dropped
                            .with_label_values(&["not_authorized"])
                            .inc();
                        if let Some(seq) = d.seq {
                            detached.push(Op::Delete {
                                cf: Cf::Queue,
                                key: record::queue_key(&self.client_id, seq),
                            });
                        }
                        continue;
                    }
                }
            }
            if d.qos == QoS::AtMostOnce {
                if let Some(frame) = self.shared_frame(&d) {
                    if self.fits(frame.len()) {
                        self.send_frame(&frame);
                        self.broker.metrics.messages_delivered.inc();
                    } else {
                        self.broker
                            .metrics
                            .messages_dropped
                            .with_label_values(&["packet_too_large"])
                            .inc();
                    }
                } else if let Some(p) = self.outgoing_publish(&d, None, false, now) {
                    self.deliver(p);
                }
                continue;
            }
            let Some(pid) = s.allocate_packet_id() else {
                s.queue.push_front(d);
                break;
            };
            let Some(p) = self.outgoing_publish(&d, Some(pid), false, now) else {
                if let Some(seq) = d.seq {
                    detached.push(Op::Delete {
                        cf: Cf::Queue,
                        key: record::queue_key(&self.client_id, seq),
                    });
                }
                continue;
            };
            d.state = DeliveryState::Sent(pid);
            if d.qos == QoS::ExactlyOnce {
                // Remember the packet id: after a crash the same id goes out again, so the
                // receiver can recognise the duplicate (exactly once across restarts).
                if let Some(op) = d
                    .seq
                    .and_then(|seq| router::delivery_op(&self.client_id, seq, &d))
                {
                    detached.push(op);
                }
            }
            s.inflight.push_back(d);
            self.broker.metrics.inflight_messages.inc();
            self.deliver(p);
            sent += 1;
        }
        let more = !s.queue.is_empty() && sent >= MAX_SENDS_PER_WAKE;
        drop(s);
        self.route = saved;
        self.broker.store.submit_detached(detached);
        if more {
            self.waker.notify_one();
        }
    }

    fn deliver(&mut self, p: Publish) {
        self.send(&Packet::Publish(p));
        self.broker.metrics.messages_delivered.inc();
    }

    fn fits(&self, len: usize) -> bool {
        self.client_max_packet.is_none_or(|max| len <= max as usize)
    }

    /// The message's shared QoS 0 frame, when this copy needs nothing of its own.
    fn shared_frame(&self, d: &Delivery) -> Option<Bytes> {
        let plain = d.subscription_ids.is_empty()
            && d.msg.expires_at_ms.is_none()
            && (self.client_alias_max == 0 || !self.v5());
        if plain {
            d.msg.qos0_frame(self.version, d.retain)
        } else {
            None
        }
    }

    /// This client's copy of a message, or None when it exceeds the client's Maximum Packet
    /// Size (MQTT-3.1.2-24: then it is discarded, as if sent).
    fn outgoing_publish(
        &mut self,
        d: &Delivery,
        packet_id: Option<PacketId>,
        dup: bool,
        now: u64,
    ) -> Option<Publish> {
        let mut p = d.msg.publish.clone();
        p.qos = d.qos;
        p.retain = d.retain;
        p.packet_id = if d.qos == QoS::AtMostOnce {
            None
        } else {
            packet_id
        };
        p.dup = dup && d.qos != QoS::AtMostOnce;
        if self.v5() {
            p.properties.subscription_identifiers = d.subscription_ids.clone();
            p.properties.message_expiry_interval = d.msg.remaining_expiry(now);
            if self.client_alias_max > 0 {
                match self.out_aliases.get(&p.topic) {
                    Some(alias) => {
                        p.properties.topic_alias = Some(*alias);
                        p.topic.clear();
                    }
                    None => {
                        if let Ok(next) = u16::try_from(self.out_aliases.len() + 1) {
                            if next <= self.client_alias_max {
                                p.properties.topic_alias = Some(next);
                            }
                        }
                    }
                }
            }
        } else {
            p.properties = Properties::default();
        }
        let len = codec::encoded_len(&Packet::Publish(p.clone()), self.version).ok()?;
        if !self.fits(len) {
            self.broker
                .metrics
                .messages_dropped
                .with_label_values(&["packet_too_large"])
                .inc();
            return None;
        }
        // A new alias is only established once the packet that carries it is really sent.
        if let (Some(alias), false) = (p.properties.topic_alias, p.topic.is_empty()) {
            self.out_aliases.insert(p.topic.clone(), alias);
        }
        Some(p)
    }
}

/// The monotonic instant of a Unix time (seconds), if it is representable; a time already
/// past is now.
fn expiry_instant(unix_secs: i64) -> Option<Instant> {
    let now = u64::try_from(unix_now()).ok()?;
    let left = u64::try_from(unix_secs).ok()?.saturating_sub(now);
    Instant::now().checked_add(Duration::from_secs(left))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reason codes a PUBACK or PUBREC may carry (MQTT 5, 3.4.2.1 and 3.5.2.1).
fn allowed_in_puback(r: ReasonCode) -> bool {
    matches!(
        r.0,
        0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
    )
}

fn matched_reason(matched: bool) -> ReasonCode {
    if matched {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    }
}

fn commit_ready() -> AckFuture {
    Box::pin(std::future::ready(Ok(())))
}

fn boxed(commit: crate::persist::Commit) -> AckFuture {
    Box::pin(commit.wait())
}
