//! MQTT over QUIC, as EMQX maps it: ALPN `mqtt`; the client's first bidirectional stream is
//! the control stream (CONNECT, CONNACK, PINGREQ/RESP, DISCONNECT, AUTH) and, in single-stream
//! mode, carries everything; in multi-stream mode the client opens further bidirectional data
//! streams and the broker answers on the stream that carried each request.
//!
//! This module only moves bytes: one task per stream cuts its bytes into whole MQTT packets
//! (by the fixed header alone) and hands them, tagged with the stream, to the shared
//! connection loop through `QuicLink`. A lost datagram therefore holds up only its own stream.
//! The identity comes from the same mutual-TLS verifier as the TLS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use converge_security::certs::EndEntityError;

use crate::connection::{Link, LinkRefusal, Route};
use crate::metrics::Metrics;
use crate::mqtt::codec::reader::peek_varint;
use crate::mqtt::packet::ReasonCode;
use crate::transport::early_data::{self, EarlyData};
use crate::transport::tls::{self, TlsSetupError};
use crate::transport::verify::ClientVerifier;
use crate::transport::PeerIdentity;

/// The ALPN protocol id EMQX and its clients (NanoSDK, emqtt) use for MQTT over QUIC.
pub const ALPN: &[u8] = b"mqtt";

/// Whole packets waiting for the connection loop, over all streams of one connection. When
/// full, the stream tasks stop reading and QUIC flow control slows the client down.
const INBOUND_QUEUE: usize = 64;
/// Most bytes one stream read takes at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long closing waits for the peer to receive what we wrote last (DISCONNECT).
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// QUIC application close code for a normal end (the MQTT reason code otherwise).
const CLOSE_NORMAL: u32 = 0;

/// What the QUIC listener's configuration decides for every connection.
#[derive(Debug, Clone, Copy)]
pub struct QuicSettings {
    /// Data streams a client may have open besides the control stream (its stream credit).
    pub max_streams: u32,
    /// The longest MQTT keep-alive a client may get (`mqtt.max_keep_alive_secs`).
    pub max_keep_alive_secs: u16,
    /// How long the server lets a connection stay quiet before it sends a QUIC PING
    /// (`Duration::ZERO`: never).
    pub keep_alive_interval: Duration,
    /// Resumption tickets kept for 0-RTT; `None`: 0-RTT off.
    pub zero_rtt_tickets: Option<usize>,
}

impl QuicSettings {
    /// The server's QUIC idle timeout: twice the longest MQTT keep-alive, so that for a peer
    /// that stops answering, the MQTT check (1.5 x keep-alive, DISCONNECT 0x8D) comes first
    /// unless the client's own idle timeout is shorter.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.max_keep_alive_secs) * 2)
    }

    /// The interval of the server's QUIC PINGs: as configured, at most half the idle timeout.
    /// A PING answered restarts both sides' idle timers (RFC 9000 §10.1), so while the client's
    /// network works, neither QUIC idle timeout ends the connection: the MQTT keep-alive does.
    pub fn ping_interval(&self) -> Option<Duration> {
        (!self.keep_alive_interval.is_zero())
            .then(|| self.keep_alive_interval.min(self.idle_timeout() / 2))
    }
}

/// The quinn server configuration: TLS 1.3 with the TLS listener's client verification, ALPN
/// `mqtt`, a stream credit of `max_streams` data streams plus the control stream, no
/// unidirectional streams, the idle timeout and PINGs of `QuicSettings`, and 0-RTT only when
/// `zero_rtt_tickets` is set. Every session's early data is recorded (`early_data::Guarded`).
pub fn server_config(
    verifier: Arc<ClientVerifier>,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    settings: &QuicSettings,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let mut tls = tls::mutual_tls(verifier, cert_file, key_file, &[&rustls::version::TLS13])?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if let Some(tickets) = settings.zero_rtt_tickets {
        // QUIC allows only 0 or u32::MAX here (RFC 9001 §4.6.1): flow control bounds it.
        tls.max_early_data_size = u32::MAX;
        // rustls accepts early data only with stateful resumption, and this store hands each
        // ticket out once (`take`): a recorded ClientHello cannot carry 0-RTT a second time in
        // this process, and a restart forgets every ticket. Oldest tickets go first when full.
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(tickets);
    }
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| TlsSetupError::Verifier(format!("QUIC TLS configuration: {e}")))?;
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(early_data::Guarded::new(Arc::new(crypto))));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(settings.max_streams.saturating_add(1)));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(settings.idle_timeout()).ok());
    transport.keep_alive_interval(settings.ping_interval());
    config.transport_config(Arc::new(transport));
    // Devices that change address keep their connection (NAT rebinding, Wi-Fi to cellular).
    config.migration(true);
    Ok(config)
}

/// The server endpoint on a UDP socket bound to `addr`, with a kernel receive buffer of
/// `recv_buffer` bytes for bursts (`listeners.quic.udp_recv_buffer_bytes`).
pub fn endpoint(
    config: quinn::ServerConfig,
    addr: SocketAddr,
    recv_buffer: usize,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), recv_buffer) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC socket's receive buffer");
    }
    // Linux reports twice what it set (the doubling covers its bookkeeping).
    let reported_per_byte = if cfg!(target_os = "linux") { 2 } else { 1 };
    match state
        .recv_buffer_size((&socket).into())
        .map(|r| r / reported_per_byte)
    {
        Ok(granted) if granted < recv_buffer => tracing::warn!(
            asked = recv_buffer,
            granted,
            "the QUIC socket's receive buffer is smaller than listeners.quic.udp_recv_buffer_bytes \
             (raise net.core.rmem_max): a reconnect storm may drop Initials"
        ),
        Ok(granted) => tracing::debug!(granted, "QUIC socket receive buffer"),
        Err(e) => tracing::debug!(error = %e, "cannot read the QUIC socket's receive buffer size"),
    }
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// The identity of a QUIC peer from its verified certificate chain.
pub fn identity(conn: &Connection) -> PeerIdentity {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
    tls::identity_from_chain(chain.as_deref().map(Vec::as_slice))
}

/// A short, stable label for a failed QUIC handshake (metrics and logs). quinn reports the
/// TLS error only as text inside the transport error, so the label comes from that text.
pub fn handshake_failure_reason(err: &quinn::ConnectionError) -> &'static str {
    if matches!(err, quinn::ConnectionError::TimedOut) {
        return "timeout";
    }
    // rustls prints some certificate errors as prose and others by variant name.
    let text = err.to_string().to_lowercase();
    // Our own refusals (transport::verify) start their text with their label.
    if let Some(label) = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find_map(|word| EndEntityError::LABELS.iter().find(|l| **l == word))
    {
        return label;
    }
    let has = |any: &[&str]| any.iter().any(|s| text.contains(s));
    if has(&["expired"]) {
        "cert_expired"
    } else if has(&["not valid yet", "notvalidyet"]) {
        "cert_not_yet_valid"
    } else if has(&["unknownissuer", "unknown issuer"]) {
        "cert_unknown_issuer"
    } else if has(&["unknownrevocationstatus", "unknown revocation status"]) {
        "cert_revocation_unknown"
    } else if has(&["expiredrevocationlist", "revocation list"]) {
        "crl_expired"
    } else if has(&["revoked"]) {
        "cert_revoked"
    } else if has(&["extended key usage", "invalidpurpose"]) {
        "cert_wrong_purpose"
    } else if has(&["badsignature", "bad signature"]) {
        "cert_bad_signature"
    } else if has(&["no certificates", "nocertificatespresented"]) {
        "cert_missing"
    } else if has(&["application protocol"]) {
        "alpn"
    } else {
        "handshake"
    }
}

/// What the stream tasks tell the connection loop.
enum Inbound {
    /// One or more whole packets of one stream.
    Packets(Route, Bytes),
    /// The client opened a data stream; answers for it go to this `SendStream`.
    Opened(Route, SendStream),
    /// A stream's receive side ended: finished (false) or reset (true).
    Ended(Route, bool),
    /// Early data other than one CONNECT: the connection ends with a protocol error.
    EarlyRefused(&'static str),
}

/// The 0-RTT state of a connection accepted before its handshake was confirmed.
pub struct Early {
    /// Which bytes arrived as 0-RTT data, and whether the handshake is confirmed.
    pub data: Arc<EarlyData>,
    /// How the handshake ended (`Link::handshake`).
    pub handshake: watch::Receiver<Option<bool>>,
}

/// The `Link` of one QUIC connection.
pub struct QuicLink {
    conn: Connection,
    control: SendStream,
    data: Vec<(Route, SendStream)>,
    inbound: mpsc::Receiver<Inbound>,
    /// Stream readers and the data-stream acceptor; dropping the link stops them.
    tasks: JoinSet<()>,
    remote: SocketAddr,
    metrics: Arc<Metrics>,
    early: Option<Early>,
}

impl QuicLink {
    /// Starts reading the control stream and accepting data streams. `early`: the connection
    /// may carry 0-RTT data, of which only one CONNECT on the control stream is passed on.
    pub fn new(
        conn: Connection,
        control: (SendStream, RecvStream),
        max_packet_size: u32,
        metrics: Arc<Metrics>,
        early: Option<Early>,
    ) -> QuicLink {
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let mut tasks = JoinSet::new();
        let max = usize::try_from(max_packet_size).unwrap_or(usize::MAX);
        let record = early.as_ref().map(|e| e.data.clone());
        tasks.spawn(read_stream(
            Route::CONTROL,
            control.1,
            tx.clone(),
            max,
            record.clone().map(|data| (data, metrics.clone())),
        ));
        tasks.spawn(accept_data_streams(
            conn.clone(),
            tx,
            max,
            metrics.clone(),
            record,
        ));
        QuicLink {
            remote: conn.remote_address(),
            conn,
            control: control.0,
            data: Vec::new(),
            inbound,
            tasks,
            metrics,
            early,
        }
    }

    /// Counts and logs a change of the client's address. Nothing of ours is keyed by it: the
    /// session and identity belong to the connection, whatever path it takes.
    fn note_migration(&mut self) {
        let now = self.conn.remote_address();
        if now != self.remote {
            self.metrics.quic_migrations.inc();
            tracing::info!(from = %self.remote, to = %now, "QUIC connection migrated");
            self.remote = now;
        }
    }

    fn stream(&mut self, route: Route) -> &mut SendStream {
        if route != Route::CONTROL {
            if let Some(i) = self.data.iter().position(|(r, _)| *r == route) {
                if let Some((_, s)) = self.data.get_mut(i) {
                    return s;
                }
            }
        }
        &mut self.control
    }
}

impl Link for QuicLink {
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<(Route, usize)> {
        loop {
            match self.inbound.recv().await {
                Some(Inbound::Packets(route, bytes)) => {
                    self.note_migration();
                    buf.extend_from_slice(&bytes);
                    return Ok((route, bytes.len()));
                }
                Some(Inbound::Opened(route, send)) => self.data.push((route, send)),
                Some(Inbound::Ended(Route::CONTROL, _)) | None => {
                    // Closing the control stream closes the connection (EMQX).
                    return Ok((Route::CONTROL, 0));
                }
                // A client that finishes its half of a data stream may still read from it
                // (its subscriptions' messages come there); only a reset ends our half.
                Some(Inbound::Ended(_, false)) => {}
                Some(Inbound::Ended(route, true)) => {
                    self.metrics.quic_stream_resets.inc();
                    self.data.retain(|(r, _)| *r != route);
                }
                Some(Inbound::EarlyRefused(why)) => {
                    self.metrics.quic_0rtt_refused.inc();
                    tracing::info!(why, "0-RTT data refused");
                    return Err(std::io::Error::other(LinkRefusal {
                        reason: ReasonCode::PROTOCOL_ERROR,
                        why,
                    }));
                }
            }
        }
    }

    async fn write(&mut self, route: Route, bytes: &[u8]) -> std::io::Result<()> {
        let stream = self.stream(route);
        if stream.write_all(bytes).await.is_ok() {
            return Ok(());
        }
        if route == Route::CONTROL {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        // The client stopped or reset that data stream: its messages continue on control.
        self.data.retain(|(r, _)| *r != route);
        self.control
            .write_all(bytes)
            .await
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }

    async fn close(&mut self, reason: Option<ReasonCode>) {
        let _ = self.control.finish();
        for (_, s) in &mut self.data {
            let _ = s.finish();
        }
        // Until the client has what we wrote (a DISCONNECT with the reason), or gives up.
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.control.stopped()).await;
        let code = reason.map_or(CLOSE_NORMAL, |r| u32::from(r.0));
        let why: &[u8] = if reason.is_some() {
            b"closed by the server"
        } else {
            b""
        };
        self.conn.close(VarInt::from_u32(code), why);
        self.tasks.abort_all();
    }

    fn multi_stream(&self) -> bool {
        true
    }

    fn replayable(&self) -> bool {
        self.early.as_ref().is_some_and(|e| !e.data.confirmed())
    }

    fn handshake(&self) -> watch::Receiver<Option<bool>> {
        match &self.early {
            Some(e) => e.handshake.clone(),
            None => watch::channel(Some(true)).1,
        }
    }
}

/// Accepts the client's data streams (after the control stream) and starts their readers.
async fn accept_data_streams(
    conn: Connection,
    tx: mpsc::Sender<Inbound>,
    max_packet: usize,
    metrics: Arc<Metrics>,
    early: Option<Arc<EarlyData>>,
) {
    let mut readers = JoinSet::new();
    while let Ok((send, recv)) = conn.accept_bi().await {
        // quinn makes a stream acceptable only after the packet that opened it was decrypted,
        // so the record already shows whether that packet was 0-RTT.
        if early.as_ref().is_some_and(|e| e.other_streams()) {
            let _ = tx
                .send(Inbound::EarlyRefused("a data stream opened in 0-RTT"))
                .await;
            return;
        }
        let route = Route(u64::from(recv.id()));
        metrics.quic_data_streams.inc();
        if tx.send(Inbound::Opened(route, send)).await.is_err() {
            return;
        }
        readers.spawn(read_stream(route, recv, tx.clone(), max_packet, None));
        // Reap finished readers so a long-lived connection that opens and closes many
        // streams does not accumulate their handles.
        while readers.try_join_next().is_some() {}
    }
}

/// Reads one stream and passes its whole packets on, in order. A packet whose declared length
/// exceeds the limit, or a malformed length, is passed on as its header alone: the connection
/// loop's decoder then closes the connection with the right reason code (0x95 or 0x81).
/// With `early` (the control stream of a connection that may carry 0-RTT data), a packet with
/// any byte that arrived as 0-RTT data is passed on only if it is the stream's first packet
/// and a CONNECT (`early_rule`).
async fn read_stream(
    route: Route,
    mut recv: RecvStream,
    tx: mpsc::Sender<Inbound>,
    max: usize,
    early: Option<(Arc<EarlyData>, Arc<Metrics>)>,
) {
    let mut buf = BytesMut::with_capacity(512);
    // Stream offset of `buf`'s first byte.
    let mut offset: u64 = 0;
    loop {
        let mut whole = 0;
        let mut stop = false;
        loop {
            let start = whole;
            match frame_len(buf.get(whole..).unwrap_or_default(), max) {
                Frame::Whole(n) => whole += n,
                Frame::Partial => break,
                Frame::Refused(n) => {
                    whole += n;
                    stop = true;
                }
            }
            if let (Some((early, metrics)), Some(&header)) = (&early, buf.get(start)) {
                let at = offset.saturating_add(start as u64);
                let early_end = early.control_end();
                if at == 0 && early_end > 0 && header >> 4 == 1 {
                    metrics.quic_0rtt_connects.inc();
                }
                if let Err(why) = early_rule(at, header, early_end) {
                    // What came before this packet goes on; this one and the rest do not.
                    if start > 0 {
                        let packets = buf.split_to(start).freeze();
                        let _ = tx.send(Inbound::Packets(route, packets)).await;
                    }
                    let _ = tx.send(Inbound::EarlyRefused(why)).await;
                    return;
                }
            }
            if stop {
                break;
            }
        }
        if whole > 0 {
            let packets = buf.split_to(whole).freeze();
            offset = offset.saturating_add(whole as u64);
            if tx.send(Inbound::Packets(route, packets)).await.is_err() {
                return;
            }
        }
        if stop {
            return;
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                let _ = tx.send(Inbound::Ended(route, false)).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(Inbound::Ended(route, true)).await;
                return;
            }
        }
    }
}

/// Whether the control-stream packet that starts at stream offset `start` with fixed-header
/// byte `header` may be passed on, when the stream's first `early_end` bytes arrived as 0-RTT
/// data (a prefix: 0-RTT precedes 1-RTT). Only the first packet may be early, and only a
/// CONNECT; anything more would let a replayed flight act.
fn early_rule(start: u64, header: u8, early_end: u64) -> Result<(), &'static str> {
    if start >= early_end {
        Ok(())
    } else if start > 0 {
        Err("0-RTT data beyond the CONNECT")
    } else if header >> 4 != 1 {
        Err("0-RTT data that is not a CONNECT")
    } else {
        Ok(())
    }
}

enum Frame {
    /// A whole packet of this many bytes.
    Whole(usize),
    /// More bytes are needed.
    Partial,
    /// Pass on this many bytes (a header the decoder will refuse) and stop reading.
    Refused(usize),
}

/// The length of the packet at the start of `bytes`, from its fixed header.
fn frame_len(bytes: &[u8], max: usize) -> Frame {
    let Some(rest) = bytes.get(1..) else {
        return Frame::Partial;
    };
    match peek_varint(rest) {
        Ok(Some((remaining, len_bytes))) => {
            let total = 1 + len_bytes + remaining;
            if total > max {
                Frame::Refused(1 + len_bytes)
            } else if bytes.len() >= total {
                Frame::Whole(total)
            } else {
                Frame::Partial
            }
        }
        Ok(None) => Frame::Partial,
        Err(_) => Frame::Refused(bytes.len().min(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_the_fixed_header() {
        assert!(matches!(frame_len(&[], 100), Frame::Partial));
        assert!(matches!(frame_len(&[0x30], 100), Frame::Partial));
        assert!(matches!(frame_len(&[0xC0, 0x00], 100), Frame::Whole(2)));
        assert!(matches!(
            frame_len(&[0x30, 0x03, 0, 1], 100),
            Frame::Partial
        ));
        assert!(matches!(
            frame_len(&[0x30, 0x03, 0, 1, b'a', 0xC0], 100),
            Frame::Whole(5)
        ));
        // 200 bytes declared, limit 100: only the header goes on, for the decoder to refuse.
        assert!(matches!(
            frame_len(&[0x30, 0xC8, 0x01], 100),
            Frame::Refused(3)
        ));
        // A length that never ends is malformed.
        assert!(matches!(
            frame_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1 << 30),
            Frame::Refused(5)
        ));
    }

    #[test]
    fn the_idle_timeout_outlasts_the_keep_alive_and_pings_come_at_half_of_it() {
        let mut s = QuicSettings {
            max_streams: 16,
            max_keep_alive_secs: 60,
            keep_alive_interval: Duration::from_secs(10),
            zero_rtt_tickets: None,
        };
        // The MQTT check comes at 1.5 x keep-alive (90 s), before QUIC's 120 s.
        assert_eq!(s.idle_timeout(), Duration::from_secs(120));
        assert_eq!(s.ping_interval(), Some(Duration::from_secs(10)));
        s.keep_alive_interval = Duration::from_secs(300);
        assert_eq!(s.ping_interval(), Some(Duration::from_secs(60)), "capped");
        s.keep_alive_interval = Duration::ZERO;
        assert_eq!(s.ping_interval(), None, "0: never");
    }

    #[test]
    fn early_data_is_one_connect_at_most() {
        const CONNECT: u8 = 0x10;
        const PUBLISH: u8 = 0x30;
        // Nothing early: anything goes (the loop itself wants CONNECT first).
        assert_eq!(early_rule(0, PUBLISH, 0), Ok(()));
        // A CONNECT of 20 bytes, all early: passed on.
        assert_eq!(early_rule(0, CONNECT, 20), Ok(()));
        // The packet after it, sent after the handshake: passed on.
        assert_eq!(early_rule(20, PUBLISH, 20), Ok(()));
        // The packet after it, in 0-RTT too (even one byte of it): refused.
        assert!(early_rule(20, PUBLISH, 21).is_err());
        assert!(early_rule(20, CONNECT, 40).is_err(), "a second CONNECT too");
        // A first packet that is not a CONNECT: refused.
        assert!(early_rule(0, PUBLISH, 1).is_err());
        assert!(early_rule(0, 0xC0, 2).is_err(), "PINGREQ");
    }
}
