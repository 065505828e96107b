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
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use converge_security::certs::EndEntityError;

use crate::connection::{Link, Route};
use crate::metrics::Metrics;
use crate::mqtt::codec::reader::peek_varint;
use crate::mqtt::packet::ReasonCode;
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

/// The quinn server configuration: TLS 1.3 with the TLS listener's client verification, ALPN
/// `mqtt`, no 0-RTT, a stream credit of `max_streams` data streams plus the control stream,
/// no unidirectional streams, and an idle timeout of one and a half times the longest MQTT
/// keep-alive a client may get, so that the MQTT keep-alive check (DISCONNECT 0x8D) always
/// comes first and QUIC's idle timeout is only the backstop for a silent peer.
pub fn server_config(
    verifier: Arc<ClientVerifier>,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    max_streams: u32,
    max_keep_alive_secs: u16,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let mut tls = tls::mutual_tls(verifier, cert_file, key_file, &[&rustls::version::TLS13])?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| TlsSetupError::Verifier(format!("QUIC TLS configuration: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(max_streams.saturating_add(1)));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let idle = Duration::from_millis(u64::from(max_keep_alive_secs) * 1500);
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    config.transport_config(Arc::new(transport));
    // Devices that change address keep their connection (NAT rebinding, Wi-Fi to cellular).
    config.migration(true);
    Ok(config)
}

/// Kernel receive buffer asked for on the UDP socket. A reconnect storm sends thousands of
/// 1,200-byte Initials at once; the default buffer (about 200 KB) drops most of them and
/// each dropped client waits out a retransmission timeout that doubles each time. The
/// kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// The server endpoint on a UDP socket bound to `addr`, with a receive buffer sized for bursts.
pub fn endpoint(config: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), UDP_RECV_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC socket's receive buffer");
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
}

impl QuicLink {
    /// Starts reading the control stream and accepting data streams.
    pub fn new(
        conn: Connection,
        control: (SendStream, RecvStream),
        max_packet_size: u32,
        metrics: Arc<Metrics>,
    ) -> QuicLink {
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let mut tasks = JoinSet::new();
        let max = usize::try_from(max_packet_size).unwrap_or(usize::MAX);
        tasks.spawn(read_stream(Route::CONTROL, control.1, tx.clone(), max));
        tasks.spawn(accept_data_streams(conn.clone(), tx, max, metrics.clone()));
        QuicLink {
            remote: conn.remote_address(),
            conn,
            control: control.0,
            data: Vec::new(),
            inbound,
            tasks,
            metrics,
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
}

/// Accepts the client's data streams (after the control stream) and starts their readers.
async fn accept_data_streams(
    conn: Connection,
    tx: mpsc::Sender<Inbound>,
    max_packet: usize,
    metrics: Arc<Metrics>,
) {
    let mut readers = JoinSet::new();
    while let Ok((send, recv)) = conn.accept_bi().await {
        let route = Route(u64::from(recv.id()));
        metrics.quic_data_streams.inc();
        if tx.send(Inbound::Opened(route, send)).await.is_err() {
            return;
        }
        readers.spawn(read_stream(route, recv, tx.clone(), max_packet));
        // Reap finished readers so a long-lived connection that opens and closes many
        // streams does not accumulate their handles.
        while readers.try_join_next().is_some() {}
    }
}

/// Reads one stream and passes its whole packets on, in order. A packet whose declared length
/// exceeds the limit, or a malformed length, is passed on as its header alone: the connection
/// loop's decoder then closes the connection with the right reason code (0x95 or 0x81).
async fn read_stream(route: Route, mut recv: RecvStream, tx: mpsc::Sender<Inbound>, max: usize) {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let mut whole = 0;
        let mut stop = false;
        loop {
            match frame_len(buf.get(whole..).unwrap_or_default(), max) {
                Frame::Whole(n) => whole += n,
                Frame::Partial => break,
                Frame::Refused(n) => {
                    whole += n;
                    stop = true;
                    break;
                }
            }
        }
        if whole > 0 {
            let packets = buf.split_to(whole).freeze();
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
}
