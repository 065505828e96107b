//! A message as the router hands it out, and one subscriber's copy of it.
//!
//! A `Message` is shared (`Arc`) by every subscriber that receives it; it caches its encoded
//! QoS 0 frames so that subscribers who receive the very same bytes share one encoding.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::mqtt::codec;
use crate::mqtt::packet::{Packet, PacketId, ProtocolVersion, Publish, QoS};
use crate::persist::record::DeliveryState;

/// The broker's clock for message and session expiry: wall-clock milliseconds (so expiry
/// survives restarts) plus an offset that only `advance` changes, so that tests can let time
/// pass without waiting for it.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests and simulations; never called by the server itself).
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug)]
pub struct Message {
    /// Topic, payload and the properties that travel with the message (never a topic alias
    /// or subscription identifiers: those belong to one hop). `qos` and `retain` are as published.
    pub publish: Publish,
    /// Client id of the publisher (no-local); None for the broker's own messages.
    pub publisher: Option<Arc<str>>,
    /// The publisher's zone under the policy; None without a policy, for the broker's own
    /// messages and for retained messages restored from disk (the topic's owner zone is used).
    pub publisher_zone: Option<Arc<str>>,
    /// Absolute expiry, wall-clock ms; None when the message does not expire.
    pub expires_at_ms: Option<u64>,
    /// Encoded QoS 0 frames without subscription identifiers, alias or expiry rewrite:
    /// [V311 no-retain, V311 retain, V5 no-retain, V5 retain].
    frames: [OnceLock<Bytes>; 4],
}

impl Message {
    pub fn new(mut publish: Publish, publisher: Option<Arc<str>>, now_ms: u64) -> Message {
        publish.dup = false;
        publish.packet_id = None;
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        let expires_at_ms = publish
            .properties
            .message_expiry_interval
            .map(|s| now_ms.saturating_add(u64::from(s) * 1000));
        Message {
            publish,
            publisher,
            publisher_zone: None,
            expires_at_ms,
            frames: Default::default(),
        }
    }

    pub fn from_stored(publish: Publish, expires_at_ms: u64) -> Message {
        Message {
            publish,
            publisher: None,
            publisher_zone: None,
            expires_at_ms: (expires_at_ms != 0).then_some(expires_at_ms),
            frames: Default::default(),
        }
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Seconds left before expiry, rounded up, as forwarded in Message Expiry Interval.
    pub fn remaining_expiry(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms.map(|t| {
            let ms = t.saturating_sub(now_ms);
            u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
        })
    }

    /// The shared QoS 0 frame for this protocol version and retain flag, encoded on first use.
    /// Only valid when the copy carries no subscription identifier, alias or expiry.
    pub fn qos0_frame(&self, version: ProtocolVersion, retain: bool) -> Option<Bytes> {
        let idx = match version {
            ProtocolVersion::V311 => 0,
            ProtocolVersion::V5 => 2,
        } + usize::from(retain);
        let slot = self.frames.get(idx)?;
        if let Some(b) = slot.get() {
            return Some(b.clone());
        }
        let mut p = self.publish.clone();
        p.qos = QoS::AtMostOnce;
        p.retain = retain;
        let mut buf = BytesMut::new();
        codec::encode(&Packet::Publish(p), version, &mut buf).ok()?;
        Some(slot.get_or_init(|| buf.freeze()).clone())
    }
}

/// One subscriber's copy of a message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// Key of the queue record when this copy is persisted (QoS 1/2 to a persistent session).
    pub seq: Option<u64>,
    pub state: DeliveryState,
}

impl Delivery {
    pub fn packet_id(&self) -> Option<PacketId> {
        match self.state {
            DeliveryState::Queued => None,
            DeliveryState::Sent(p) | DeliveryState::Released(p) => Some(p),
        }
    }
}
