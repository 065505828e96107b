//! QUIC 0-RTT ("early data"): which bytes a client sent before its handshake was confirmed.
//!
//! Early data is replayable: whoever recorded a client's first flight can send it again, and
//! the server cannot tell until the handshake fails to complete. The broker accepts early data
//! only as one CONNECT on the control stream (`quic.rs` enforces that), so it must know exactly
//! which stream bytes arrived in 0-RTT packets, whatever the order in which its tasks run.
//! Time is no guide: a stream task may read 0-RTT bytes after the handshake completed.
//!
//! So the crypto layer keeps the record. `Guarded` wraps quinn's rustls server configuration;
//! for each connection it wraps the 0-RTT packet key, and every 0-RTT packet that key decrypts
//! is scanned for the streams it touches (`scan_frames`, pure) and noted in the connection's
//! `EarlyData` before quinn makes any of its bytes readable. The session wrapper also notes the
//! moment the handshake completes, inside quinn's connection driver, before any 1-RTT packet is
//! read. The record reaches the connection through `Connection::handshake_data` (`of`).
//!
//! Nothing here parses MQTT; it reads QUIC frames (RFC 9000 §19) only to find stream ids and
//! offsets.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use quinn::crypto::{
    CryptoError, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey, ServerConfig,
    Session, UnsupportedVersion,
};
use quinn::{ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;

/// The control stream: the client's first bidirectional stream (RFC 9000 §2.1: id 0).
const CONTROL_STREAM: u64 = 0;

/// What one connection's 0-RTT packets carried, and whether its handshake is confirmed.
#[derive(Debug, Default)]
pub struct EarlyData {
    /// End offset of the control-stream bytes received in 0-RTT packets: bytes before it may be
    /// a replay. The client writes in order and 0-RTT precedes 1-RTT, so they are a prefix.
    control_end: AtomicU64,
    /// A 0-RTT packet opened, reset or wrote to a stream other than the control stream.
    other_streams: AtomicBool,
    /// A 0-RTT packet held a frame we could not read (quinn refuses it too); treated like
    /// `other_streams`: we do not guess what it carried.
    unreadable: AtomicBool,
    /// The handshake completed: the client proved it holds the keys, nothing after this is a
    /// replay.
    confirmed: AtomicBool,
}

impl EarlyData {
    /// How many leading bytes of the control stream arrived as 0-RTT data.
    pub fn control_end(&self) -> u64 {
        self.control_end.load(Ordering::Acquire)
    }

    /// Whether 0-RTT data touched any stream but the control stream (or could not be read).
    pub fn other_streams(&self) -> bool {
        self.other_streams.load(Ordering::Acquire) || self.unreadable.load(Ordering::Acquire)
    }

    /// Whether the handshake is complete (on a server, that is confirmation: RFC 9001 §4.1.2).
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    fn record(&self, payload: &[u8]) {
        match scan_frames(payload) {
            Ok(t) => {
                self.control_end.fetch_max(t.control_end, Ordering::AcqRel);
                if t.other_streams {
                    self.other_streams.store(true, Ordering::Release);
                }
            }
            Err(Unreadable) => self.unreadable.store(true, Ordering::Release),
        }
    }
}

/// The early-data record of a connection accepted through a `Guarded` configuration.
pub fn of(conn: &quinn::Connection) -> Option<Arc<EarlyData>> {
    let data = conn.handshake_data()?;
    data.downcast::<GuardedHandshake>()
        .ok()
        .map(|h| h.early.clone())
}

/// quinn's rustls server configuration, with each session's early data recorded.
pub struct Guarded {
    inner: Arc<dyn ServerConfig>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn ServerConfig>) -> Guarded {
        Guarded { inner }
    }
}

impl ServerConfig for Guarded {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.inner.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.inner.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn Session> {
        Box::new(GuardedSession {
            inner: self.inner.clone().start_session(version, params),
            early: Arc::new(EarlyData::default()),
        })
    }
}

/// What `Connection::handshake_data` returns for a guarded session: rustls' own handshake data
/// plus the early-data record.
pub struct GuardedHandshake {
    /// quinn's `crypto::rustls::HandshakeData`.
    pub tls: Box<dyn Any>,
    early: Arc<EarlyData>,
}

struct GuardedSession {
    inner: Box<dyn Session>,
    early: Arc<EarlyData>,
}

impl Session for GuardedSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let tls = self.inner.handshake_data()?;
        Some(Box::new(GuardedHandshake {
            tls,
            early: self.early.clone(),
        }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        let (header, packet) = self.inner.early_crypto()?;
        let packet: Box<dyn PacketKey> = Box::new(EarlyKey {
            inner: packet,
            early: self.early.clone(),
        });
        Some((header, packet))
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let result = self.inner.read_handshake(buf);
        // quinn declares the connection established on this same predicate, in the same call
        // of its driver, before it reads any 1-RTT packet.
        if result.is_ok() && !self.inner.is_handshaking() {
            self.early.confirmed.store(true, Ordering::Release);
        }
        result
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.inner.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.inner.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

/// The 0-RTT packet key of one server connection: decrypts as before, then records.
struct EarlyKey {
    inner: Box<dyn PacketKey>,
    early: Arc<EarlyData>,
}

impl PacketKey for EarlyKey {
    fn encrypt(&self, packet: u64, buf: &mut [u8], header_len: usize) {
        self.inner.encrypt(packet, buf, header_len);
    }

    fn decrypt(
        &self,
        packet: u64,
        header: &[u8],
        payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        self.inner.decrypt(packet, header, payload)?;
        self.early.record(payload);
        Ok(())
    }

    fn tag_len(&self) -> usize {
        self.inner.tag_len()
    }

    fn confidentiality_limit(&self) -> u64 {
        self.inner.confidentiality_limit()
    }

    fn integrity_limit(&self) -> u64 {
        self.inner.integrity_limit()
    }
}

/// The streams one packet's frames touch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    /// End offset of the control-stream data in the packet (0: none).
    pub control_end: u64,
    /// A frame names a stream other than the control stream.
    pub other_streams: bool,
}

/// A frame that is malformed, or of a type that has no place in a 0-RTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Reads the frames of a decrypted 0-RTT packet payload (RFC 9000 §12.4 Table 3 lists which
/// types may appear in one; §19 their layout). Pure.
pub fn scan_frames(payload: &[u8]) -> Result<Touched, Unreadable> {
    let mut r = Cursor(payload);
    let mut touched = Touched::default();
    let mut stream = |id: u64, end: u64| {
        if id == CONTROL_STREAM {
            touched.control_end = touched.control_end.max(end);
        } else {
            touched.other_streams = true;
        }
    };
    while !r.0.is_empty() {
        match r.varint()? {
            0x00 | 0x01 => {} // PADDING, PING
            0x04 => {
                // RESET_STREAM: id, error code, final size.
                let id = r.varint()?;
                r.varint()?;
                r.varint()?;
                stream(id, 0);
            }
            0x05 | 0x11 | 0x15 => {
                // STOP_SENDING, MAX_STREAM_DATA, STREAM_DATA_BLOCKED: id, one value.
                let id = r.varint()?;
                r.varint()?;
                stream(id, 0);
            }
            ty @ 0x08..=0x0f => {
                // STREAM: id, offset if 0x04, length if 0x02 (else to the end), data.
                let id = r.varint()?;
                let offset = if ty & 0x04 != 0 { r.varint()? } else { 0 };
                let len = if ty & 0x02 != 0 {
                    r.varint()?
                } else {
                    r.0.len() as u64
                };
                r.skip(len)?;
                stream(id, offset.checked_add(len).ok_or(Unreadable)?);
            }
            // MAX_DATA, MAX_STREAMS (bidi, uni), DATA_BLOCKED, STREAMS_BLOCKED (bidi, uni),
            // RETIRE_CONNECTION_ID: one value.
            0x10 | 0x12 | 0x13 | 0x14 | 0x16 | 0x17 | 0x19 => {
                r.varint()?;
            }
            0x18 => {
                // NEW_CONNECTION_ID: sequence, retire prior to, length (1..=20), id, token.
                r.varint()?;
                r.varint()?;
                let len = r.byte()?;
                if !(1..=20).contains(&len) {
                    return Err(Unreadable);
                }
                r.skip(u64::from(len) + 16)?;
            }
            0x1a => r.skip(8)?, // PATH_CHALLENGE
            0x1c => {
                // CONNECTION_CLOSE: code, frame type, reason.
                r.varint()?;
                r.varint()?;
                let len = r.varint()?;
                r.skip(len)?;
            }
            0x1d => {
                // CONNECTION_CLOSE (application): code, reason.
                r.varint()?;
                let len = r.varint()?;
                r.skip(len)?;
            }
            0x1f => {}         // IMMEDIATE_ACK (ack-frequency extension)
            0x30 => r.0 = &[], // DATAGRAM to the end of the packet
            0x31 => {
                let len = r.varint()?;
                r.skip(len)?;
            }
            0xaf => {
                // ACK_FREQUENCY: sequence, threshold, max ack delay, reordering threshold.
                for _ in 0..4 {
                    r.varint()?;
                }
            }
            // ACK, CRYPTO, NEW_TOKEN, PATH_RESPONSE, HANDSHAKE_DONE and unknown types are not
            // allowed in 0-RTT.
            _ => return Err(Unreadable),
        }
    }
    Ok(touched)
}

/// A reader over a packet payload that checks every length first.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Unreadable> {
        let (&b, rest) = self.0.split_first().ok_or(Unreadable)?;
        self.0 = rest;
        Ok(b)
    }

    /// A QUIC variable-length integer (RFC 9000 §16): the top two bits give its length.
    fn varint(&mut self) -> Result<u64, Unreadable> {
        let first = self.byte()?;
        let extra = (1usize << (first >> 6)) - 1;
        let mut value = u64::from(first & 0x3f);
        for _ in 0..extra {
            value = (value << 8) | u64::from(self.byte()?);
        }
        Ok(value)
    }

    fn skip(&mut self, n: u64) -> Result<(), Unreadable> {
        let n = usize::try_from(n).map_err(|_| Unreadable)?;
        self.0 = self.0.get(n..).ok_or(Unreadable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_on_the_control_stream_give_its_early_end() {
        // STREAM with offset and length: id 0, offset 0, 5 bytes.
        let frame = [0x0e, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        assert_eq!(
            scan_frames(&frame),
            Ok(Touched {
                control_end: 5,
                other_streams: false
            })
        );
        // PADDING, PING, then a STREAM to the end of the packet at offset 300 (2-byte varint).
        let frame = [0x00, 0x01, 0x0c, 0x00, 0x41, 0x2c, 9, 9, 9];
        assert_eq!(scan_frames(&frame).map(|t| t.control_end), Ok(303));
    }

    #[test]
    fn any_other_stream_is_noted() {
        // STREAM on stream 4 (the client's second bidirectional stream), no data.
        assert!(scan_frames(&[0x0a, 0x04, 0x00]).unwrap().other_streams);
        // RESET_STREAM and MAX_STREAM_DATA on stream 4 open it too.
        assert!(
            scan_frames(&[0x04, 0x04, 0x00, 0x00])
                .unwrap()
                .other_streams
        );
        assert!(
            scan_frames(&[0x11, 0x04, 0x40, 0x10])
                .unwrap()
                .other_streams
        );
        // MAX_DATA and MAX_STREAM_DATA for the control stream touch nothing.
        let t = scan_frames(&[0x10, 0x44, 0x00, 0x11, 0x00, 0x05]).unwrap();
        assert_eq!(t, Touched::default());
    }

    #[test]
    fn frames_without_streams_are_skipped_by_their_layout() {
        let mut p = vec![0x18, 0x01, 0x00, 0x08];
        p.extend_from_slice(&[7; 8 + 16]); // NEW_CONNECTION_ID: 8-byte id, 16-byte token
        p.extend_from_slice(&[0x1a, 1, 2, 3, 4, 5, 6, 7, 8]); // PATH_CHALLENGE
        p.extend_from_slice(&[0x1d, 0x00, 0x02, b'h', b'i']); // application CONNECTION_CLOSE
        p.extend_from_slice(&[0x0e, 0x00, 0x02, 0x01, 0xAA]); // STREAM 0, offset 2, 1 byte
        assert_eq!(scan_frames(&p).map(|t| t.control_end), Ok(3));
    }

    #[test]
    fn frames_not_allowed_in_0rtt_or_cut_short_are_unreadable() {
        assert_eq!(scan_frames(&[0x06, 0x00, 0x01, 0xAA]), Err(Unreadable)); // CRYPTO
        assert_eq!(
            scan_frames(&[0x02, 0x00, 0x00, 0x00, 0x00]),
            Err(Unreadable)
        ); // ACK
        assert_eq!(scan_frames(&[0x0e, 0x00, 0x00, 0x05, 1]), Err(Unreadable)); // short data
        assert_eq!(scan_frames(&[0x0e, 0x00]), Err(Unreadable)); // cut in the header
        assert_eq!(scan_frames(&[0x18, 0x01, 0x00, 0x15]), Err(Unreadable)); // 21-byte id
        assert_eq!(scan_frames(&[0x40]), Err(Unreadable)); // a 2-byte varint cut short
    }

    #[test]
    fn the_record_keeps_the_furthest_early_byte() {
        let early = EarlyData::default();
        early.record(&[0x0e, 0x00, 0x00, 0x03, 1, 2, 3]);
        early.record(&[0x0e, 0x00, 0x01, 0x01, 2]); // a retransmission further back
        assert_eq!(early.control_end(), 3);
        assert!(!early.other_streams());
        early.record(&[0x06]);
        assert!(
            early.other_streams(),
            "an unreadable packet counts against the connection"
        );
    }
}
