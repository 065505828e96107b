//! Byte layouts of the records the broker keeps in RocksDB, one function pair per record.
//!
//! Keys are built so that RocksDB's byte order is the order we want to read them back in
//! (a session's queued messages by sequence number: big-endian). Values start with a format
//! version byte so that later versions can read what this one wrote.
//! Messages are stored as MQTT 5 PUBLISH packets, so one codec serves wire and disk.

use bytes::{Buf, BufMut, BytesMut};

use crate::mqtt::codec::{self, DecodeLimits};
use crate::mqtt::packet::{
    Packet, PacketId, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};

const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("record corrupt: {0}")]
    Corrupt(&'static str),
    #[error("unsupported record format version {0}")]
    UnsupportedVersion(u8),
}

/// A persistent session's metadata and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub expiry_interval: u32,
    pub protocol: ProtocolVersion,
    /// Wall-clock milliseconds since the epoch when the client went away; 0 while connected.
    pub disconnected_at_ms: u64,
    pub subscriptions: Vec<StoredSubscription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as the client sent it (with `$share/group/` when shared).
    pub filter: String,
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// Where a queued QoS 1/2 message stands in its delivery handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet.
    Queued,
    /// PUBLISH sent with this packet id; waiting for PUBACK/PUBREC.
    Sent(PacketId),
    /// PUBREC received, PUBREL sent; waiting for PUBCOMP. The message itself is not sent again.
    Released(PacketId),
}

/// A message queued for one session (what it will receive: QoS, retain flag and subscription
/// identifiers are already the subscriber's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    pub state: DeliveryState,
    /// Absolute expiry in wall-clock milliseconds; 0 for none.
    pub expires_at_ms: u64,
    pub publish: Publish,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRetained {
    pub expires_at_ms: u64,
    pub publish: Publish,
}

pub fn session_key(client_id: &str) -> Vec<u8> {
    client_id.as_bytes().to_vec()
}

/// `u16 length ‖ client id ‖ u64 sequence (big-endian)`.
pub fn queue_key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `u16 length ‖ client id ‖ u16 packet id`.
pub fn inbound_key(client_id: &str, packet_id: PacketId) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(&packet_id.get().to_be_bytes());
    k
}

/// The prefix shared by all of one client's queue or inbound keys.
pub fn client_prefix(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    // Client ids are bounded by the configured maximum (at most 65535) before they get here.
    let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(2 + id.len() + 8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Splits a queue or inbound key into client id and the trailing number bytes.
pub fn split_client_key(key: &[u8]) -> Result<(&str, &[u8]), RecordError> {
    let mut r = key;
    let len = take_u16(&mut r)? as usize;
    if r.len() < len {
        return Err(RecordError::Truncated);
    }
    let (id, rest) = r.split_at(len);
    let id = std::str::from_utf8(id).map_err(|_| RecordError::Corrupt("client id not UTF-8"))?;
    Ok((id, rest))
}

pub fn seq_from_tail(tail: &[u8]) -> Result<u64, RecordError> {
    let arr: [u8; 8] = tail
        .try_into()
        .map_err(|_| RecordError::Corrupt("sequence"))?;
    Ok(u64::from_be_bytes(arr))
}

pub fn packet_id_from_tail(tail: &[u8]) -> Result<PacketId, RecordError> {
    let arr: [u8; 2] = tail
        .try_into()
        .map_err(|_| RecordError::Corrupt("packet id"))?;
    PacketId::new(u16::from_be_bytes(arr)).ok_or(RecordError::Corrupt("packet id zero"))
}

pub fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(FORMAT_V1);
    b.put_u32(s.expiry_interval);
    b.put_u8(s.protocol.level());
    b.put_u64(s.disconnected_at_ms);
    b.put_u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for sub in &s.subscriptions {
        put_str(&mut b, &sub.filter);
        b.put_u8(options_byte(&sub.options));
        match sub.identifier {
            Some(id) => {
                b.put_u8(1);
                b.put_u32(id);
            }
            None => b.put_u8(0),
        }
    }
    b.to_vec()
}

pub fn decode_session(mut r: &[u8]) -> Result<SessionRecord, RecordError> {
    check_version(&mut r)?;
    let expiry_interval = take_u32(&mut r)?;
    let protocol = match take_u8(&mut r)? {
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        _ => return Err(RecordError::Corrupt("protocol level")),
    };
    let disconnected_at_ms = take_u64(&mut r)?;
    let count = take_u32(&mut r)? as usize;
    // Each subscription takes at least 4 bytes: never allocate more than the record can hold.
    let mut subscriptions = Vec::with_capacity(count.min(r.len() / 4));
    for _ in 0..count {
        let filter = take_str(&mut r)?;
        let options = options_from_byte(take_u8(&mut r)?)?;
        let identifier = match take_u8(&mut r)? {
            0 => None,
            1 => Some(take_u32(&mut r)?),
            _ => return Err(RecordError::Corrupt("identifier flag")),
        };
        subscriptions.push(StoredSubscription {
            filter,
            options,
            identifier,
        });
    }
    Ok(SessionRecord {
        expiry_interval,
        protocol,
        disconnected_at_ms,
        subscriptions,
    })
}

pub fn encode_delivery(d: &StoredDelivery) -> Result<Vec<u8>, RecordError> {
    let mut b = BytesMut::new();
    b.put_u8(FORMAT_V1);
    let (state, pid) = match d.state {
        DeliveryState::Queued => (0, 0),
        DeliveryState::Sent(p) => (1, p.get()),
        DeliveryState::Released(p) => (2, p.get()),
    };
    b.put_u8(state);
    b.put_u16(pid);
    b.put_u64(d.expires_at_ms);
    put_publish(&mut b, &d.publish)?;
    Ok(b.to_vec())
}

pub fn decode_delivery(mut r: &[u8]) -> Result<StoredDelivery, RecordError> {
    check_version(&mut r)?;
    let state = take_u8(&mut r)?;
    let pid = PacketId::new(take_u16(&mut r)?);
    let state = match (state, pid) {
        (0, _) => DeliveryState::Queued,
        (1, Some(p)) => DeliveryState::Sent(p),
        (2, Some(p)) => DeliveryState::Released(p),
        _ => return Err(RecordError::Corrupt("delivery state")),
    };
    let expires_at_ms = take_u64(&mut r)?;
    let publish = take_publish(r)?;
    Ok(StoredDelivery {
        state,
        expires_at_ms,
        publish,
    })
}

pub fn encode_retained(m: &StoredRetained) -> Result<Vec<u8>, RecordError> {
    let mut b = BytesMut::new();
    b.put_u8(FORMAT_V1);
    b.put_u64(m.expires_at_ms);
    put_publish(&mut b, &m.publish)?;
    Ok(b.to_vec())
}

pub fn decode_retained(mut r: &[u8]) -> Result<StoredRetained, RecordError> {
    check_version(&mut r)?;
    let expires_at_ms = take_u64(&mut r)?;
    let publish = take_publish(r)?;
    Ok(StoredRetained {
        expires_at_ms,
        publish,
    })
}

fn put_publish(b: &mut BytesMut, p: &Publish) -> Result<(), RecordError> {
    // Stored at QoS 0 with no packet id: the id belongs to a delivery, not to the message.
    let mut stored = p.clone();
    let qos = stored.qos;
    stored.qos = QoS::AtMostOnce;
    stored.packet_id = None;
    stored.dup = false;
    b.put_u8(qos as u8);
    codec::encode(&Packet::Publish(stored), ProtocolVersion::V5, b)
        .map_err(|_| RecordError::Corrupt("message cannot be encoded"))?;
    Ok(())
}

fn take_publish(mut r: &[u8]) -> Result<Publish, RecordError> {
    let qos = QoS::from_u8(take_u8(&mut r)?).ok_or(RecordError::Corrupt("qos"))?;
    let mut buf = BytesMut::from(r);
    let limits = DecodeLimits {
        max_packet_size: codec::MAX_REMAINING_LENGTH as u32 + 5,
    };
    match codec::decode(&mut buf, Some(ProtocolVersion::V5), &limits) {
        Ok(Some(Packet::Publish(mut p))) if buf.is_empty() => {
            p.qos = qos;
            Ok(p)
        }
        Ok(None) => Err(RecordError::Truncated),
        _ => Err(RecordError::Corrupt("stored message")),
    }
}

pub fn options_byte(o: &SubscriptionOptions) -> u8 {
    let rh = match o.retain_handling {
        RetainHandling::OnSubscribe => 0,
        RetainHandling::OnNewSubscribe => 1,
        RetainHandling::Never => 2,
    };
    (o.qos as u8) | (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3) | (rh << 4)
}

pub fn options_from_byte(b: u8) -> Result<SubscriptionOptions, RecordError> {
    Ok(SubscriptionOptions {
        qos: QoS::from_u8(b & 0x03).ok_or(RecordError::Corrupt("subscription qos"))?,
        no_local: b & 0x04 != 0,
        retain_as_published: b & 0x08 != 0,
        retain_handling: match (b >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(RecordError::Corrupt("retain handling")),
        },
    })
}

fn check_version(r: &mut &[u8]) -> Result<(), RecordError> {
    match take_u8(r)? {
        FORMAT_V1 => Ok(()),
        v => Err(RecordError::UnsupportedVersion(v)),
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Filters are bounded by the topic length limit (at most 65535) before they are stored.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    b.put_u16(len);
    b.put_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
}

fn take_str(r: &mut &[u8]) -> Result<String, RecordError> {
    let len = take_u16(r)? as usize;
    if r.len() < len {
        return Err(RecordError::Truncated);
    }
    let (s, rest) = r.split_at(len);
    *r = rest;
    String::from_utf8(s.to_vec()).map_err(|_| RecordError::Corrupt("string not UTF-8"))
}

fn take_u8(r: &mut &[u8]) -> Result<u8, RecordError> {
    if r.remaining() < 1 {
        return Err(RecordError::Truncated);
    }
    Ok(r.get_u8())
}

fn take_u16(r: &mut &[u8]) -> Result<u16, RecordError> {
    if r.remaining() < 2 {
        return Err(RecordError::Truncated);
    }
    Ok(r.get_u16())
}

fn take_u32(r: &mut &[u8]) -> Result<u32, RecordError> {
    if r.remaining() < 4 {
        return Err(RecordError::Truncated);
    }
    Ok(r.get_u32())
}

fn take_u64(r: &mut &[u8]) -> Result<u64, RecordError> {
    if r.remaining() < 8 {
        return Err(RecordError::Truncated);
    }
    Ok(r.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::packet::Properties;
    use bytes::Bytes;

    fn publish() -> Publish {
        Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "plant/line1/temp".into(),
            packet_id: None,
            properties: Properties {
                message_expiry_interval: Some(30),
                subscription_identifiers: vec![3, 7],
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"21.5"),
        }
    }

    #[test]
    fn session_round_trip() {
        let s = SessionRecord {
            expiry_interval: 3600,
            protocol: ProtocolVersion::V5,
            disconnected_at_ms: 1_700_000_000_000,
            subscriptions: vec![StoredSubscription {
                filter: "$share/g/a/+".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                identifier: Some(42),
            }],
        };
        assert_eq!(decode_session(&encode_session(&s)).unwrap(), s);
    }

    #[test]
    fn delivery_and_retained_round_trip() {
        let d = StoredDelivery {
            state: DeliveryState::Sent(PacketId::new(9).unwrap()),
            expires_at_ms: 5,
            publish: publish(),
        };
        assert_eq!(decode_delivery(&encode_delivery(&d).unwrap()).unwrap(), d);
        let m = StoredRetained {
            expires_at_ms: 0,
            publish: publish(),
        };
        assert_eq!(decode_retained(&encode_retained(&m).unwrap()).unwrap(), m);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let d = encode_delivery(&StoredDelivery {
            state: DeliveryState::Queued,
            expires_at_ms: 0,
            publish: publish(),
        })
        .unwrap();
        for n in 0..d.len() {
            assert!(decode_delivery(&d[..n]).is_err(), "prefix {n}");
        }
        let s = encode_session(&SessionRecord {
            expiry_interval: 1,
            protocol: ProtocolVersion::V311,
            disconnected_at_ms: 0,
            subscriptions: vec![],
        });
        for n in 0..s.len() {
            assert!(decode_session(&s[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn queue_keys_sort_by_client_then_sequence() {
        assert!(queue_key("a", 2) < queue_key("a", 256));
        let k = queue_key("dev-1", 77);
        let (id, tail) = split_client_key(&k).unwrap();
        assert_eq!(id, "dev-1");
        assert_eq!(seq_from_tail(tail).unwrap(), 77);
    }
}
