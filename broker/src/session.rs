//! Session state that outlives a network connection: subscriptions, the queue of messages not
//! yet sent, the QoS 1/2 messages in flight, and the QoS 2 packet ids received.
//!
//! A session is an `Arc<Mutex<SessionState>>` shared by the broker (which routes into its queue)
//! and the connection that currently owns it (which drains the queue and handles acks). The
//! mutex is std, not tokio: it is never held across an await, and critical sections are short.
//! Lock order: the broker's state lock, then a session lock; never the other way round.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use crate::mqtt::packet::{PacketId, ProtocolVersion, ReasonCode, SubscriptionOptions};
use crate::persist::record::{self, SessionRecord, StoredSubscription};
use crate::persist::{Cf, Op};
use crate::router::message::Delivery;
use crate::security::SessionAuth;
use crate::transport::verify::LeafId;

/// One subscription as the session remembers it (the trie holds the matching copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug)]
pub struct SessionState {
    pub client_id: Arc<str>,
    pub protocol: ProtocolVersion,
    /// Seconds the session outlives its connection; 0 = ends with the connection.
    pub expiry_interval: u32,
    /// Keyed by the filter as sent (with `$share/group/` for shared subscriptions).
    pub subscriptions: HashMap<String, Subscription>,
    /// Messages routed to the session and not yet sent.
    pub queue: VecDeque<Delivery>,
    /// QoS 1/2 messages sent and not yet acknowledged, in the order sent.
    pub inflight: VecDeque<Delivery>,
    /// QoS 2 packet ids received and answered with PUBREC, waiting for PUBREL.
    pub inbound_qos2: HashSet<PacketId>,
    next_packet_id: u16,
    pub next_seq: u64,
    /// The connection that owns the session, if any.
    pub owner: Option<u64>,
    /// Wakes the owning connection when the queue gains messages.
    pub waker: Option<Arc<Notify>>,
    /// Tells the owning connection to close with a reason (takeover, overflow, shutdown).
    pub kick: Option<oneshot::Sender<ReasonCode>>,
    /// Bumped at every connect: timers (will delay, session expiry) check it to see whether the
    /// client came back meanwhile.
    pub generation: u64,
    pub disconnected_at_ms: u64,
    /// The policy's view of the client (zone, rights), when a policy is in force; deliveries
    /// to the session are checked against it, also while it is offline.
    pub auth: Option<Arc<SessionAuth>>,
    /// Issuer and serial of the owning connection's certificate: a new CRL that lists it
    /// closes the connection (`Broker::reload_crl`).
    pub cert: Option<LeafId>,
}

pub type SharedSession = Arc<Mutex<SessionState>>;

/// Locks a session, recovering from poisoning: a panic elsewhere must not take every client down
/// (the state is plain data that stays consistent between statements).
pub fn lock(session: &SharedSession) -> MutexGuard<'_, SessionState> {
    session.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionState {
    pub fn new(client_id: Arc<str>, protocol: ProtocolVersion, expiry_interval: u32) -> Self {
        SessionState {
            client_id,
            protocol,
            expiry_interval,
            subscriptions: HashMap::new(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            inbound_qos2: HashSet::new(),
            next_packet_id: 1,
            next_seq: 1,
            owner: None,
            waker: None,
            kick: None,
            generation: 0,
            disconnected_at_ms: 0,
            auth: None,
            cert: None,
        }
    }

    pub fn persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// A packet identifier not used by any message in flight.
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = PacketId::new(self.next_packet_id);
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(pid) = candidate {
                if !self.inflight.iter().any(|d| d.packet_id() == Some(pid)) {
                    return Some(pid);
                }
            }
        }
        None
    }

    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.notify_one();
        }
    }

    /// The session's metadata record.
    pub fn record(&self) -> SessionRecord {
        let mut subscriptions: Vec<StoredSubscription> = self
            .subscriptions
            .iter()
            .map(|(filter, s)| StoredSubscription {
                filter: filter.clone(),
                options: s.options,
                identifier: s.identifier,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionRecord {
            expiry_interval: self.expiry_interval,
            protocol: self.protocol,
            disconnected_at_ms: self.disconnected_at_ms,
            subscriptions,
        }
    }

    pub fn record_op(&self) -> Op {
        Op::Put {
            cf: Cf::Sessions,
            key: record::session_key(&self.client_id),
            value: record::encode_session(&self.record()),
        }
    }
}

/// Every record a session owns, for deletion when it ends or starts clean.
pub fn delete_ops(client_id: &str) -> Vec<Op> {
    vec![
        Op::Delete {
            cf: Cf::Sessions,
            key: record::session_key(client_id),
        },
        Op::DeletePrefix {
            cf: Cf::Queue,
            prefix: record::client_prefix(client_id),
        },
        Op::DeletePrefix {
            cf: Cf::Inbound,
            prefix: record::client_prefix(client_id),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = SessionState::new(Arc::from("c"), ProtocolVersion::V5, 0);
        s.next_packet_id = u16::MAX;
        assert_eq!(s.allocate_packet_id().map(PacketId::get), Some(u16::MAX));
        assert_eq!(s.allocate_packet_id().map(PacketId::get), Some(1));
    }
}
