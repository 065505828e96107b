//! The router: sessions by client id, the subscription trie, retained messages, and the one
//! function that fans a PUBLISH out to every matching session (`Broker::publish`).
//!
//! All of it sits behind one std mutex (`BrokerState`); routing a message holds it for the
//! trie lookup and the pushes into session queues, never across an await or an IO. Writes the
//! routing creates (copies for persistent sessions, retained messages) are returned as `Op`s and
//! committed by the caller, who acknowledges the PUBLISH only when they are durable.

pub mod message;
mod revocation;
pub mod trie;

pub use revocation::RevocationSummary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;

use converge_historian::ingest::RebirthRequest;

use crate::config::Config;
use crate::historian::Historian;
use crate::metrics::Metrics;
use crate::mqtt::packet::{
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};
use crate::mqtt::topic;
use crate::persist::record::{self, DeliveryState, StoredDelivery, StoredRetained};
use crate::persist::store::Row;
use crate::persist::{Cf, Op, Store, StoreError};
use crate::security::{PolicyLoadError, PolicyStore};
use crate::session::{self, SessionState, SharedSession, Subscription};
use crate::transport::verify::ClientVerifier;
use converge_security::audit::{Action, AuditLog, Event, Outcome};
use message::{Clock, Delivery, Message};
use trie::{SubEntry, SubscriptionTrie};

/// Everything the router guards with its one lock.
#[derive(Default)]
pub struct BrokerState {
    pub sessions: HashMap<Arc<str>, SharedSession>,
    pub trie: SubscriptionTrie,
    pub retained: HashMap<String, Arc<Message>>,
    next_connection: u64,
}

pub struct Broker {
    state: Mutex<BrokerState>,
    /// Will-delay and session-expiry timers; they end early when `stopping` turns true.
    timers: Mutex<JoinSet<()>>,
    stopping: watch::Sender<bool>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub started: std::time::Instant,
    /// Clock of message and session expiry.
    pub clock: Clock,
    /// Decodes historized topics; `None` when `[historian] enabled = false`.
    pub historian: Option<Arc<Historian>>,
    /// The certificate policy, when `[security] policy_file` is set.
    pub policy: Option<PolicyStore>,
    /// The tamper-evident audit log, when `[audit] enabled`.
    pub audit: Option<AuditLog>,
    /// The client-certificate verifier of the TLS and QUIC listeners (CRLs in force).
    verifier: Option<Arc<ClientVerifier>>,
}

/// What `Broker::connect` hands to the connection that now owns a session.
pub struct Attached {
    pub session: SharedSession,
    pub session_present: bool,
    pub connection_id: u64,
    pub waker: Arc<Notify>,
    pub kicked: oneshot::Receiver<ReasonCode>,
    /// Records to make durable before CONNACK.
    pub ops: Vec<Op>,
}

/// Outcome of routing one PUBLISH.
pub struct Routed {
    /// Writes to commit before the PUBLISH is acknowledged.
    pub ops: Vec<Op>,
    /// At least one session received a copy (MQTT 5 PUBACK 0x10 otherwise).
    pub matched: bool,
}

/// What a policy reload did to the sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: usize,
    pub disconnected: usize,
    pub subscriptions_removed: usize,
}

/// A will message waiting for its delay.
#[derive(Debug, Clone)]
pub struct PendingWill {
    pub publish: Publish,
    pub delay_secs: u32,
}

impl Broker {
    pub fn new(config: Config, store: Store, metrics: Arc<Metrics>) -> Broker {
        Broker {
            state: Mutex::new(BrokerState::default()),
            timers: Mutex::new(JoinSet::new()),
            stopping: watch::channel(false).0,
            store,
            metrics,
            config,
            started: std::time::Instant::now(),
            clock: Clock::default(),
            historian: None,
            policy: None,
            audit: None,
            verifier: None,
        }
    }

    /// Records security events in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Broker {
        self.audit = Some(audit);
        self
    }

    /// Appends an event to the audit log (never blocks; see `converge_security::audit`).
    pub fn audit(&self, event: Event) {
        if let Some(a) = &self.audit {
            a.record(event);
        }
    }

    /// Appends an event that must not be lost silently (accepted connections).
    pub fn audit_critical(&self, event: Event) {
        if let Some(a) = &self.audit {
            a.record_critical(event);
        }
    }

    /// A failed TLS or QUIC handshake: counted by reason and audited.
    pub fn handshake_failed(&self, transport: &str, reason: &str, remote: std::net::SocketAddr) {
        self.metrics
            .tls_handshake_failures
            .with_label_values(&[reason])
            .inc();
        self.audit(
            Event::new(Action::HandshakeRejected, Outcome::Failure)
                .source(remote)
                .resource(transport)
                .reason(reason),
        );
    }

    /// Decides every CONNECT, PUBLISH, SUBSCRIBE and delivery with `policy`.
    pub fn with_policy(mut self, policy: PolicyStore) -> Broker {
        self.policy = Some(policy);
        self
    }

    /// Compiles the policy file again and applies it to every session: a client the new policy
    /// refuses is disconnected (0x87), subscriptions it no longer allows are removed, and the
    /// others carry on with their new rights. A file that does not compile changes nothing.
    pub fn reload_policy(&self) -> Result<ReloadSummary, PolicyLoadError> {
        let Some(store) = &self.policy else {
            return Ok(ReloadSummary::default());
        };
        let policy = match store.reload() {
            Ok(p) => p,
            Err(e) => {
                self.audit(
                    Event::new(Action::PolicyReload, Outcome::Failure)
                        .resource(store.path().display().to_string())
                        .reason(e.to_string()),
                );
                return Err(e);
            }
        };
        let mut summary = ReloadSummary::default();
        let mut persist = Vec::new();
        let mut st = self.lock();
        let st = &mut *st;
        for session in st.sessions.values() {
            let mut s = session::lock(session);
            let Some(auth) = s.auth.clone() else { continue };
            match auth.reresolve(policy.clone()) {
                Ok(fresh) => {
                    let refused: Vec<String> = s
                        .subscriptions
                        .iter()
                        .filter(|(filter, sub)| {
                            !fresh
                                .check(&converge_security::Request::Subscribe {
                                    filter,
                                    qos: sub.options.qos as u8,
                                    active_subscriptions: 0,
                                })
                                .is_allowed()
                        })
                        .map(|(f, _)| f.clone())
                        .collect();
                    for filter in &refused {
                        s.subscriptions.remove(filter);
                        remove_from_trie(&mut st.trie, filter, &s.client_id);
                        tracing::info!(client_id = %s.client_id, %filter, "policy reload: subscription removed");
                    }
                    if !refused.is_empty() && s.persistent() {
                        persist.push(s.record_op());
                    }
                    summary.subscriptions_removed += refused.len();
                    s.auth = Some(Arc::new(fresh));
                    summary.kept += 1;
                }
                Err(denied) => {
                    tracing::info!(client_id = %s.client_id, why = %denied.why, "policy reload: client no longer allowed; disconnecting");
                    s.auth = None;
                    if let Some(kick) = s.kick.take() {
                        let _ = kick.send(denied.reason);
                    }
                    summary.disconnected += 1;
                }
            }
        }
        self.metrics.subscriptions.set(st.trie.len() as i64);
        self.store.submit_detached(persist);
        self.audit(
            Event::new(Action::PolicyReload, Outcome::Success)
                .resource(store.path().display().to_string())
                .reason(format!(
                    "generation {}: {} sessions kept, {} disconnected, {} subscriptions removed",
                    policy.generation(),
                    summary.kept,
                    summary.disconnected,
                    summary.subscriptions_removed
                )),
        );
        Ok(summary)
    }

    /// Historizes what the historian's rules select.
    pub fn with_historian(mut self, historian: Arc<Historian>) -> Broker {
        self.historian = Some(historian);
        self
    }

    fn lock(&self) -> MutexGuard<'_, BrokerState> {
        // A panic while routing must not stop the broker: the state stays structurally valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restores persistent sessions and retained messages from the store. Sessions that expired
    /// while the server was down are deleted.
    pub fn restore(&self) -> Result<RestoreSummary, StoreError> {
        let now = self.clock.now_ms();
        let mut summary = RestoreSummary::default();
        let mut expired_ops = Vec::new();
        let mut st = self.lock();
        for Row { key, value } in self.store.scan(Cf::Sessions)? {
            let Ok(client_id) = std::str::from_utf8(&key) else {
                tracing::warn!("skipping session record with a non-UTF-8 key");
                continue;
            };
            let rec = match record::decode_session(&value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(client_id, error = %e, "skipping unreadable session record");
                    continue;
                }
            };
            if rec.disconnected_at_ms != 0
                && rec.expiry_interval != u32::MAX
                && rec.disconnected_at_ms + u64::from(rec.expiry_interval) * 1000 <= now
            {
                expired_ops.extend(session::delete_ops(client_id));
                summary.expired += 1;
                continue;
            }
            let id: Arc<str> = Arc::from(client_id);
            let mut s = SessionState::new(id.clone(), rec.protocol, rec.expiry_interval);
            // The server was down: count the downtime as disconnected time.
            s.disconnected_at_ms = if rec.disconnected_at_ms == 0 {
                now
            } else {
                rec.disconnected_at_ms
            };
            for sub in rec.subscriptions {
                let (group, filter) = split_shared(&sub.filter);
                let entry = SubEntry {
                    options: sub.options,
                    identifier: sub.identifier,
                };
                st.trie.insert(filter, group, &id, entry);
                s.subscriptions.insert(
                    sub.filter,
                    Subscription {
                        options: sub.options,
                        identifier: sub.identifier,
                    },
                );
            }
            st.sessions.insert(id, Arc::new(Mutex::new(s)));
            summary.sessions += 1;
        }
        for Row { key, value } in self.store.scan(Cf::Queue)? {
            let Ok((client_id, tail)) = record::split_client_key(&key) else {
                continue;
            };
            let (Ok(seq), Some(sess)) = (record::seq_from_tail(tail), st.sessions.get(client_id))
            else {
                continue;
            };
            let Ok(d) = record::decode_delivery(&value) else {
                tracing::warn!(client_id, seq, "skipping unreadable queued message");
                continue;
            };
            let mut s = session::lock(sess);
            let delivery = Delivery {
                qos: d.publish.qos,
                retain: d.publish.retain,
                subscription_ids: d.publish.properties.subscription_identifiers.clone(),
                msg: Arc::new(Message::from_stored(d.publish, d.expires_at_ms)),
                seq: Some(seq),
                state: d.state,
            };
            s.next_seq = s.next_seq.max(seq + 1);
            match d.state {
                DeliveryState::Queued => {
                    s.queue.push_back(delivery);
                    self.metrics.queued_messages.inc();
                }
                _ => {
                    s.inflight.push_back(delivery);
                    self.metrics.inflight_messages.inc();
                }
            }
            summary.queued += 1;
        }
        for Row { key, .. } in self.store.scan(Cf::Inbound)? {
            let Ok((client_id, tail)) = record::split_client_key(&key) else {
                continue;
            };
            if let (Ok(pid), Some(sess)) = (
                record::packet_id_from_tail(tail),
                st.sessions.get(client_id),
            ) {
                session::lock(sess).inbound_qos2.insert(pid);
            }
        }
        for Row { key, value } in self.store.scan(Cf::Retained)? {
            let (Ok(topic), Ok(r)) = (std::str::from_utf8(&key), record::decode_retained(&value))
            else {
                continue;
            };
            if r.expires_at_ms != 0 && r.expires_at_ms <= now {
                expired_ops.push(Op::Delete {
                    cf: Cf::Retained,
                    key: key.to_vec(),
                });
                continue;
            }
            st.retained.insert(
                topic.to_string(),
                Arc::new(Message::from_stored(r.publish, r.expires_at_ms)),
            );
            summary.retained += 1;
        }
        self.update_gauges(&st);
        drop(st);
        self.store.submit_detached(expired_ops);
        Ok(summary)
    }

    /// Spawns the expiry timers of the restored offline sessions. Needs a tokio runtime.
    pub fn arm_restored_expiry(self: &Arc<Self>) {
        let sessions: Vec<(SharedSession, u32, u64, u64)> = self
            .lock()
            .sessions
            .values()
            .map(|s| {
                let g = session::lock(s);
                (
                    s.clone(),
                    g.expiry_interval,
                    g.disconnected_at_ms,
                    g.generation,
                )
            })
            .collect();
        let now = self.clock.now_ms();
        for (s, expiry, at, generation) in sessions {
            if expiry == u32::MAX {
                continue;
            }
            let left = (at + u64::from(expiry) * 1000).saturating_sub(now);
            self.schedule_expiry(s, generation, Duration::from_millis(left));
        }
    }

    /// Attaches a connection to the session of `client_id`, creating or resuming it and taking
    /// it over from a connection that still holds it.
    pub fn connect(
        &self,
        client_id: &str,
        protocol: ProtocolVersion,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Attached {
        let mut ops = Vec::new();
        let mut st = self.lock();
        st.next_connection += 1;
        let connection_id = st.next_connection;
        let existing = st.sessions.get(client_id).cloned();
        let mut session_present = false;
        let session = match existing {
            Some(sess) => {
                let mut s = session::lock(&sess);
                if let Some(kick) = s.kick.take() {
                    // MQTT-3.1.4-3: the existing connection is closed with 0x8E.
                    let _ = kick.send(ReasonCode::SESSION_TAKEN_OVER);
                }
                s.owner = None;
                s.waker = None;
                if clean_start {
                    self.forget_messages(&s);
                    let filters: Vec<String> = s.subscriptions.keys().cloned().collect();
                    let id = s.client_id.clone();
                    drop(s);
                    for f in filters {
                        remove_from_trie(&mut st.trie, &f, &id);
                    }
                    ops.extend(session::delete_ops(client_id));
                    st.sessions.remove(client_id);
                    None
                } else {
                    session_present = true;
                    drop(s);
                    Some(sess)
                }
            }
            None => None,
        };
        let session = session.unwrap_or_else(|| {
            let id: Arc<str> = Arc::from(client_id);
            let s = Arc::new(Mutex::new(SessionState::new(
                id.clone(),
                protocol,
                expiry_interval,
            )));
            st.sessions.insert(id, s.clone());
            s
        });
        let waker = Arc::new(Notify::new());
        let (kick_tx, kicked) = oneshot::channel();
        {
            let mut s = session::lock(&session);
            let was_persistent = s.persistent();
            s.protocol = protocol;
            s.expiry_interval = expiry_interval;
            s.owner = Some(connection_id);
            s.waker = Some(waker.clone());
            s.kick = Some(kick_tx);
            s.generation += 1;
            s.disconnected_at_ms = 0;
            if s.persistent() {
                ops.push(s.record_op());
            } else if was_persistent {
                ops.extend(session::delete_ops(client_id));
                // A session that is no longer persistent keeps no queue records.
                let st = &mut *s;
                for d in st.queue.iter_mut().chain(st.inflight.iter_mut()) {
                    d.seq = None;
                }
            }
        }
        self.update_gauges(&st);
        Attached {
            session,
            session_present,
            connection_id,
            waker,
            kicked,
            ops,
        }
    }

    /// The connection `connection_id` has closed. Ends or parks its session and takes care of
    /// the will. Returns nothing: all effects are scheduled here.
    pub fn disconnected(
        self: &Arc<Self>,
        session: &SharedSession,
        connection_id: u64,
        will: Option<PendingWill>,
    ) {
        let (still_owner, expiry, generation, client_id) = {
            let mut s = session::lock(session);
            let owner = s.owner == Some(connection_id);
            if owner {
                s.owner = None;
                s.waker = None;
                s.kick = None;
                s.disconnected_at_ms = self.clock.now_ms();
            }
            (owner, s.expiry_interval, s.generation, s.client_id.clone())
        };
        if let Some(will) = will {
            // The will waits for its delay or the end of the session, whichever comes first.
            let delay = if still_owner {
                will.delay_secs.min(expiry)
            } else {
                will.delay_secs
            };
            self.schedule_will(
                session.clone(),
                generation,
                will.publish,
                delay,
                !still_owner,
            );
        }
        if !still_owner {
            return;
        }
        if expiry == 0 {
            self.end_session(&client_id, session, generation);
        } else {
            let op = session::lock(session).record_op();
            self.store.submit_detached(vec![op]);
            if expiry != u32::MAX {
                self.schedule_expiry(
                    session.clone(),
                    generation,
                    Duration::from_secs(u64::from(expiry)),
                );
            }
        }
    }

    fn schedule_expiry(self: &Arc<Self>, session: SharedSession, generation: u64, after: Duration) {
        let broker = self.clone();
        self.spawn_timer(after, move || {
            let client_id = session::lock(&session).client_id.clone();
            broker.end_session(&client_id, &session, generation);
        });
    }

    /// Runs `fire` after `after` unless the server stops first. Finished timers are reaped here,
    /// so the set holds only the ones still waiting.
    fn spawn_timer(&self, after: Duration, fire: impl FnOnce() + Send + 'static) {
        let mut stopping = self.stopping.subscribe();
        let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        while timers.try_join_next().is_some() {}
        timers.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => fire(),
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
    }

    /// Stops every timer (will delay, session expiry) and waits for them to end, so that nothing
    /// but the caller holds the broker any more.
    pub async fn stop_timers(&self) {
        self.stopping.send_replace(true);
        let mut timers =
            std::mem::take(&mut *self.timers.lock().unwrap_or_else(|e| e.into_inner()));
        while timers.join_next().await.is_some() {}
    }

    /// Ends a session unless a client has attached to it since `generation`.
    fn end_session(&self, client_id: &str, session: &SharedSession, generation: u64) {
        let mut st = self.lock();
        let Some(current) = st.sessions.get(client_id) else {
            return;
        };
        if !Arc::ptr_eq(current, session) {
            return;
        }
        let filters: Vec<String> = {
            let s = session::lock(session);
            if s.generation != generation || s.owner.is_some() {
                return;
            }
            self.forget_messages(&s);
            s.subscriptions.keys().cloned().collect()
        };
        for f in filters {
            remove_from_trie(&mut st.trie, &f, client_id);
        }
        st.sessions.remove(client_id);
        self.update_gauges(&st);
        drop(st);
        self.store.submit_detached(session::delete_ops(client_id));
    }

    fn schedule_will(
        self: &Arc<Self>,
        session: SharedSession,
        generation: u64,
        will: Publish,
        delay_secs: u32,
        taken_over: bool,
    ) {
        if delay_secs == 0 {
            self.publish_will(&session, will);
            return;
        }
        if taken_over {
            // A new connection already resumed the session: MQTT-3.1.3-9, no will.
            return;
        }
        let broker = self.clone();
        self.spawn_timer(Duration::from_secs(u64::from(delay_secs)), move || {
            let back = {
                let s = session::lock(&session);
                s.generation != generation || s.owner.is_some()
            };
            if !back {
                broker.publish_will(&session, will);
            }
        });
    }

    /// Publishes a will in its client's zone. Under a policy it is decided again now: a reload
    /// since CONNECT may have taken the right away, or refused the client altogether.
    fn publish_will(&self, session: &SharedSession, will: Publish) {
        let mut zone = None;
        if self.policy.is_some() {
            let (auth, client_id) = {
                let s = session::lock(session);
                (s.auth.clone(), s.client_id.clone())
            };
            let Some(auth) = auth else {
                tracing::info!(%client_id, topic = %will.topic, "will dropped: the policy no longer admits its client");
                return;
            };
            let decision = auth.check(&converge_security::Request::Publish {
                topic: &will.topic,
                qos: will.qos as u8,
                retain: will.retain,
                payload_len: will.payload.len(),
            });
            if !decision.is_allowed() {
                let reason = format!("0x{:02X}", decision.reason_code());
                self.metrics
                    .authorization_denied
                    .with_label_values(&["will", &reason])
                    .inc();
                tracing::info!(%client_id, topic = %will.topic, %reason, "will dropped by the policy");
                self.audit(
                    Event::new(Action::PublishDenied, Outcome::Denied)
                        .actor(&*client_id)
                        .zone(auth.zone())
                        .resource(will.topic.as_str())
                        .reason(reason)
                        .rule(auth.describe(&decision)),
                );
                return;
            }
            zone = Some(auth.shared_zone());
        }
        let routed = self.publish_in(will, None, zone);
        // Nobody waits for a will's acknowledgement, but its copies are still persisted.
        self.store.submit_detached(routed.ops);
    }

    /// Routes a PUBLISH (topic already resolved from any alias) to every matching session.
    ///
    /// Historized topics are decoded here, before the router lock, and their points join the
    /// returned writes, so they are durable before the PUBLISH is acknowledged.
    pub fn publish(&self, publish: Publish, publisher: Option<Arc<str>>) -> Routed {
        self.publish_in(publish, publisher, None)
    }

    /// `publish` by a client in `zone` (under the policy): deliveries check the conduits from it.
    pub fn publish_in(
        &self,
        publish: Publish,
        publisher: Option<Arc<str>>,
        zone: Option<Arc<str>>,
    ) -> Routed {
        let now = self.clock.now_ms();
        let mut ops = Vec::new();
        let mut rebirth = None;
        if let Some(h) = &self.historian {
            if !publish.topic.starts_with('$') {
                let historized = h.decode(&publish.topic, &publish.payload, now);
                if !historized.points.is_empty() {
                    ops.push(Op::Historize(historized.points));
                }
                rebirth = historized.rebirth;
            }
        }
        let mut msg = Message::new(publish, publisher, now);
        msg.publisher_zone = zone;
        let msg = Arc::new(msg);
        self.metrics.messages_received.inc();
        let matched = {
            let mut st = self.lock();
            let st = &mut *st;
            if msg.publish.retain {
                retain(st, &msg, &mut ops, !msg.publish.topic.starts_with('$'));
            }
            let matched = route(st, &msg, &self.config, &self.metrics, &mut ops);
            self.metrics.retained_messages.set(st.retained.len() as i64);
            matched
        };
        if let Some(r) = rebirth {
            self.request_rebirth(&r, now);
        }
        Routed { ops, matched }
    }

    /// Publishes a Sparkplug `Node Control/Rebirth` NCMD to an edge node whose state the
    /// historian lacks (it restarted, or the node skipped its BIRTH).
    fn request_rebirth(&self, r: &RebirthRequest, now_ms: u64) {
        let now = crate::historian::timestamp_ms(now_ms);
        tracing::info!(group = %r.group, edge_node = %r.edge_node, "historian: requesting a Sparkplug rebirth");
        let ncmd = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: r.topic(),
            packet_id: None,
            properties: Default::default(),
            payload: r.payload(now).into(),
        };
        let routed = self.publish(ncmd, None);
        self.store.submit_detached(routed.ops);
    }

    /// Adds or replaces a subscription. Returns whether it existed, plus the retained messages
    /// to send for it (queued into the session by the caller after SUBACK).
    pub fn subscribe(
        &self,
        session: &SharedSession,
        filter: &str,
        sub: Subscription,
    ) -> (bool, Vec<Delivery>) {
        let mut st = self.lock();
        let (group, plain) = split_shared(filter);
        let client_id = session::lock(session).client_id.clone();
        st.trie.insert(
            plain,
            group,
            &client_id,
            SubEntry {
                options: sub.options,
                identifier: sub.identifier,
            },
        );
        let existed = session::lock(session)
            .subscriptions
            .insert(filter.to_string(), sub)
            .is_some();
        self.metrics.subscriptions.set(st.trie.len() as i64);
        // MQTT-3.8.4-4 and retain handling; shared subscriptions get no retained messages.
        let send_retained = group.is_none()
            && match sub.options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
        let mut retained = Vec::new();
        if send_retained {
            let now = self.clock.now_ms();
            for (t, m) in &st.retained {
                if m.expired(now) || !topic::matches(plain, t) {
                    continue;
                }
                retained.push(Delivery {
                    msg: m.clone(),
                    qos: m.publish.qos.min(sub.options.qos),
                    // Retained messages sent for a new subscription always carry RETAIN=1.
                    retain: true,
                    subscription_ids: sub.identifier.into_iter().collect(),
                    seq: None,
                    state: DeliveryState::Queued,
                });
            }
        }
        (existed, retained)
    }

    /// Removes a subscription; true when it existed.
    pub fn unsubscribe(&self, session: &SharedSession, filter: &str) -> bool {
        let mut st = self.lock();
        let mut s = session::lock(session);
        let existed = s.subscriptions.remove(filter).is_some();
        let id = s.client_id.clone();
        drop(s);
        if existed {
            remove_from_trie(&mut st.trie, filter, &id);
        }
        self.metrics.subscriptions.set(st.trie.len() as i64);
        existed
    }

    /// Asks every connected client to close with `reason` (server shutdown).
    pub fn kick_all(&self, reason: ReasonCode) {
        let st = self.lock();
        for s in st.sessions.values() {
            if let Some(kick) = session::lock(s).kick.take() {
                let _ = kick.send(reason);
            }
        }
    }

    /// Statistics for `$SYS/`.
    pub fn stats(&self) -> Stats {
        let st = self.lock();
        let connected = st
            .sessions
            .values()
            .filter(|s| session::lock(s).owner.is_some())
            .count();
        Stats {
            sessions: st.sessions.len(),
            connected,
            subscriptions: st.trie.len(),
            retained: st.retained.len(),
        }
    }

    /// A session's queued and in-flight messages are dropped with it: keep the gauges true.
    fn forget_messages(&self, s: &SessionState) {
        self.metrics.queued_messages.sub(s.queue.len() as i64);
        self.metrics.inflight_messages.sub(s.inflight.len() as i64);
    }

    fn update_gauges(&self, st: &BrokerState) {
        self.metrics.sessions.set(st.sessions.len() as i64);
        self.metrics.subscriptions.set(st.trie.len() as i64);
        self.metrics.retained_messages.set(st.retained.len() as i64);
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreSummary {
    pub sessions: usize,
    pub expired: usize,
    pub queued: usize,
    pub retained: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub sessions: usize,
    pub connected: usize,
    pub subscriptions: usize,
    pub retained: usize,
}

/// A session's filter as the trie keys it: `$share/g/f` is group `g` on filter `f`. Filters
/// reach the session only after validation, so an unparsable `$share` cannot occur here; it
/// would be treated as a plain filter.
fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Ok(Some((group, plain))) => (Some(group), plain),
        _ => (None, filter),
    }
}

fn remove_from_trie(trie: &mut SubscriptionTrie, filter: &str, client_id: &str) {
    let (group, plain) = split_shared(filter);
    trie.remove(plain, group, client_id);
}

/// Stores or (empty payload) deletes the retained message of the topic (MQTT-3.3.1-5/6).
fn retain(st: &mut BrokerState, msg: &Arc<Message>, ops: &mut Vec<Op>, persist: bool) {
    let topic = msg.publish.topic.clone();
    if msg.publish.payload.is_empty() {
        st.retained.remove(&topic);
        if persist {
            ops.push(Op::Delete {
                cf: Cf::Retained,
                key: topic.into_bytes(),
            });
        }
        return;
    }
    st.retained.insert(topic.clone(), msg.clone());
    if persist {
        let stored = StoredRetained {
            expires_at_ms: msg.expires_at_ms.unwrap_or(0),
            publish: msg.publish.clone(),
        };
        if let Ok(value) = record::encode_retained(&stored) {
            ops.push(Op::Put {
                cf: Cf::Retained,
                key: topic.into_bytes(),
                value,
            });
        }
    }
}

/// Per-session aggregate of every subscription that matched: one copy per session carrying the
/// highest granted QoS and every matching subscription identifier (MQTT-3.3.4-3 / 3.3.4-5).
struct Target {
    options: SubscriptionOptions,
    ids: Vec<u32>,
}

fn route(
    st: &mut BrokerState,
    msg: &Arc<Message>,
    config: &Config,
    metrics: &Metrics,
    ops: &mut Vec<Op>,
) -> bool {
    let topic = msg.publish.topic.clone();
    let publisher = msg.publisher.clone();
    let mut targets: HashMap<Arc<str>, Target> = HashMap::new();
    let mut shared_picks: Vec<(Arc<str>, SubEntry)> = Vec::new();
    {
        let sessions = &st.sessions;
        let matches = st.trie.matches(&topic);
        for (client, entry) in matches.subscribers {
            if entry.options.no_local && publisher.as_deref() == Some(&**client) {
                continue; // MQTT-3.8.3-3
            }
            let t = targets.entry(client.clone()).or_insert(Target {
                options: entry.options,
                ids: Vec::new(),
            });
            if entry.options.qos > t.options.qos {
                t.options.qos = entry.options.qos;
            }
            t.options.retain_as_published |= entry.options.retain_as_published;
            if let Some(id) = entry.identifier {
                t.ids.push(id);
            }
        }
        for group in matches.groups {
            if let Some(pick) = pick_shared_member(group, sessions) {
                shared_picks.push(pick);
            }
        }
    }
    let matched = !targets.is_empty() || !shared_picks.is_empty();
    let copies = targets
        .into_iter()
        .map(|(c, t)| (c, t.options, t.ids))
        .chain(
            shared_picks
                .into_iter()
                .map(|(c, e)| (c, e.options, e.identifier.into_iter().collect())),
        );
    for (client, options, ids) in copies {
        let Some(sess) = st.sessions.get(&client) else {
            continue;
        };
        let mut s = session::lock(sess);
        let qos = msg.publish.qos.min(options.qos);
        // MQTT-3.3.1-12/13: the retain flag is kept only for retain-as-published subscriptions.
        let retain = msg.publish.retain && options.retain_as_published;
        enqueue(
            &mut s,
            Delivery {
                msg: msg.clone(),
                qos,
                retain,
                subscription_ids: ids,
                seq: None,
                state: DeliveryState::Queued,
            },
            config,
            metrics,
            ops,
        );
    }
    matched
}

/// Picks the next member of a shared group round robin, preferring connected members.
fn pick_shared_member(
    group: &mut trie::SharedGroup,
    sessions: &HashMap<Arc<str>, SharedSession>,
) -> Option<(Arc<str>, SubEntry)> {
    let n = group.members.len();
    if n == 0 {
        return None;
    }
    let connected = |c: &Arc<str>| {
        sessions
            .get(c)
            .is_some_and(|s| session::lock(s).owner.is_some())
    };
    let start = group.next % n;
    let order = (0..n).map(|i| (start + i) % n);
    let pick = order
        .clone()
        .find(|&i| group.members.get(i).is_some_and(|(c, _)| connected(c)))
        .or(Some(start))?;
    group.next = pick + 1;
    group.members.get(pick).cloned()
}

/// Puts a copy into a session's queue, persisting it when the session is persistent and the
/// copy is QoS 1/2, and applying the queue bound.
pub fn enqueue(
    s: &mut SessionState,
    mut d: Delivery,
    config: &Config,
    metrics: &Metrics,
    ops: &mut Vec<Op>,
) {
    let limit = config.limits.max_queued_messages;
    if s.queue.len() >= limit {
        if d.qos == QoS::AtMostOnce {
            metrics
                .messages_dropped
                .with_label_values(&["qos0_queue_full"])
                .inc();
            return;
        }
        metrics
            .messages_dropped
            .with_label_values(&["queue_full"])
            .inc();
        if s.owner.is_some() {
            // A slow consumer of QoS 1/2: disconnect it rather than grow without bound.
            if let Some(kick) = s.kick.take() {
                let _ = kick.send(ReasonCode::QUOTA_EXCEEDED);
            }
        }
        return;
    }
    if d.qos != QoS::AtMostOnce && s.persistent() {
        let seq = s.next_seq;
        s.next_seq += 1;
        d.seq = Some(seq);
        if let Some(op) = delivery_op(&s.client_id, seq, &d) {
            ops.push(op);
        }
    }
    s.queue.push_back(d);
    metrics.queued_messages.inc();
    s.wake();
}

/// The queue record of a persisted copy in its current state.
pub fn delivery_op(client_id: &str, seq: u64, d: &Delivery) -> Option<Op> {
    let mut publish = d.msg.publish.clone();
    publish.qos = d.qos;
    publish.retain = d.retain;
    publish.properties.subscription_identifiers = d.subscription_ids.clone();
    let value = record::encode_delivery(&StoredDelivery {
        state: d.state,
        expires_at_ms: d.msg.expires_at_ms.unwrap_or(0),
        publish,
    })
    .ok()?;
    Some(Op::Put {
        cf: Cf::Queue,
        key: record::queue_key(client_id, seq),
        value,
    })
}
