//! The decision function: `evaluate(&CompiledPolicy, &Subject, &Request, now)`.
//!
//! Pure: no IO, no lock, no clock, and for PUBLISH, SUBSCRIBE and delivery no
//! allocation (the rights were expanded into the `Subject` at CONNECT).
//! Default deny: a request is allowed only when a rule says so, and the
//! `Decision` names that rule (or the default-deny reason) for the audit log.
//! Rate quotas are stateful and live in `crate::quota`; the broker applies
//! them next to this check.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::compile::{CompiledPolicy, ConduitId, ProfileId, ZoneId};
use super::reason;
use super::subject::Subject;
use crate::topic;

/// How the client reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Transport {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
    /// MQTT over QUIC.
    Quic,
}

/// A set of transports (bit per variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportSet(u8);

impl TransportSet {
    /// Identity comes from a client certificate, so by default only the
    /// transports that carry one.
    pub(crate) const DEFAULT: Self =
        Self(bit(Transport::Tls) | bit(Transport::Wss) | bit(Transport::Quic));

    pub(crate) fn from_list(list: &[Transport]) -> Self {
        Self(list.iter().fold(0, |acc, &t| acc | bit(t)))
    }

    pub(crate) fn contains(self, t: Transport) -> bool {
        self.0 & bit(t) != 0
    }
}

const fn bit(t: Transport) -> u8 {
    match t {
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 4,
        Transport::Wss => 8,
        Transport::Quic => 16,
    }
}

/// What the subject asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// CONNECT, after the subject was resolved from the certificate.
    Connect {
        client_id: &'a str,
        /// The listener name from the broker configuration.
        listener: &'a str,
        transport: Transport,
    },
    /// An incoming PUBLISH (topic alias already resolved).
    Publish {
        topic: &'a str,
        qos: u8,
        retain: bool,
        payload_len: usize,
    },
    /// One entry of a SUBSCRIBE. `active_subscriptions` is the number the
    /// session already holds, not counting one with this same filter (a
    /// re-subscription replaces it).
    Subscribe {
        filter: &'a str,
        qos: u8,
        active_subscriptions: u32,
    },
    /// Delivery of a message to the subject, who subscribed to it.
    /// `publisher_zone` is the zone id of the publisher's subject (kept with
    /// retained messages); `qos` is the QoS the delivery would use.
    Deliver {
        topic: &'a str,
        publisher_zone: &'a str,
        qos: u8,
        payload_len: usize,
    },
}

/// The outcome of [`evaluate`].
///
/// `reason_code` is the MQTT 5 reason code to send: 0x00 for an allowed
/// CONNECT or PUBLISH; for an allowed SUBSCRIBE or delivery, the granted QoS
/// (0x00–0x02, as SUBACK encodes it); for a denial, the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    reason: u8,
    rule: RuleId,
}

impl Decision {
    pub(crate) fn allow(reason: u8, rule: RuleId) -> Self {
        Self {
            allowed: true,
            reason,
            rule,
        }
    }

    pub(crate) fn deny(reason: u8, rule: RuleId) -> Self {
        Self {
            allowed: false,
            reason,
            rule,
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// MQTT 5 reason code (see the type docs).
    pub fn reason_code(&self) -> u8 {
        self.reason
    }

    /// For allowed SUBSCRIBE and delivery: the QoS to use.
    pub fn granted_qos(&self) -> Option<u8> {
        (self.allowed && self.reason <= 2).then_some(self.reason)
    }

    /// The rule that decided; render it with [`CompiledPolicy::describe`].
    pub fn rule(&self) -> RuleId {
        self.rule
    }
}

/// Which rule decided. Indices refer to the policy that made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleId {
    /// Default deny: no publish or subscribe right of the profile matches.
    NoMatchingRight,
    /// Default deny: the topic is in no zone's namespace.
    TopicOutsideZones,
    /// Default deny: the zones differ and no conduit carries the topic.
    NoConduit,
    /// Default deny: the publisher's zone is not in this policy.
    UnknownZone,
    /// Default deny: no profile matches the certificate.
    NoProfile,
    /// The subject was resolved under another policy; resolve it again.
    StalePolicy,
    /// The certificate's notBefore is in the future.
    CertificateNotYetValid,
    /// The certificate's notAfter is in the past.
    CertificateExpired,
    /// The topic name or filter is malformed.
    InvalidTopic,
    /// A clause of a device profile.
    Profile {
        profile: ProfileId,
        clause: ProfileClause,
    },
    /// Traffic inside one zone.
    Zone { zone: ZoneId },
    /// A clause of a conduit.
    Conduit {
        conduit: ConduitId,
        clause: ConduitClause,
    },
}

/// Part of a profile that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProfileClause {
    /// `publish[i]`
    Publish(u16),
    /// `subscribe[i]`
    Subscribe(u16),
    MaxQos,
    Retain,
    MaxPayload,
    MaxSubscriptions,
    MessageRate,
    ByteRate,
    Listeners,
    Transports,
    /// The client id rule (`danger_allow_any_client_id`, `identity`).
    ClientId,
    /// Identity mapping: which fields give the device and zone.
    Identity,
}

/// Part of a conduit that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConduitClause {
    /// `topics[i]`
    Topic(u16),
    MaxQos,
    MaxPayload,
    MessageRate,
    ByteRate,
}

/// Decides `request` for `subject` under `policy` at wall-clock time `now`
/// (compared with the certificate's validity).
pub fn evaluate(
    policy: &CompiledPolicy,
    subject: &Subject,
    request: &Request<'_>,
    now: SystemTime,
) -> Decision {
    if subject.generation != policy.generation {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::StalePolicy);
    }
    let now = unix_seconds(now);
    if now < subject.not_before {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::CertificateNotYetValid);
    }
    if now > subject.not_after {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::CertificateExpired);
    }
    match *request {
        Request::Connect {
            client_id,
            listener,
            transport,
        } => connect(policy, subject, client_id, listener, transport),
        Request::Publish {
            topic,
            qos,
            retain,
            payload_len,
        } => publish(policy, subject, topic, qos, retain, payload_len),
        Request::Subscribe {
            filter,
            qos,
            active_subscriptions,
        } => subscribe(subject, filter, qos, active_subscriptions),
        Request::Deliver {
            topic,
            publisher_zone,
            qos,
            payload_len,
        } => deliver(policy, subject, topic, publisher_zone, qos, payload_len),
    }
}

impl CompiledPolicy {
    /// Renders a rule for audit logs, e.g.
    /// `profile "cell-device" publish[0] "plant1/${zone}/${device}/#"`.
    pub fn describe(&self, rule: RuleId) -> RuleDescription<'_> {
        RuleDescription { policy: self, rule }
    }
}

/// Display adapter returned by [`CompiledPolicy::describe`].
pub struct RuleDescription<'a> {
    policy: &'a CompiledPolicy,
    rule: RuleId,
}

impl fmt::Display for RuleDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.policy;
        match self.rule {
            RuleId::NoMatchingRight => f.write_str("default deny: no right of the profile matches"),
            RuleId::TopicOutsideZones => f.write_str("default deny: the topic is in no zone"),
            RuleId::NoConduit => f.write_str("default deny: no conduit carries the topic"),
            RuleId::UnknownZone => f.write_str("default deny: unknown publisher zone"),
            RuleId::NoProfile => f.write_str("default deny: no profile matches the certificate"),
            RuleId::StalePolicy => f.write_str("subject resolved under another policy"),
            RuleId::CertificateNotYetValid => f.write_str("certificate not yet valid"),
            RuleId::CertificateExpired => f.write_str("certificate expired"),
            RuleId::InvalidTopic => f.write_str("malformed topic"),
            RuleId::Zone { zone } => match p.zones.get(zone.at()) {
                Some(z) => write!(f, "zone {:?} (same-zone traffic)", z.id),
                None => f.write_str("unknown zone"),
            },
            RuleId::Profile { profile, clause } => {
                let Some(pr) = p.profiles.get(profile.at()) else {
                    return f.write_str("unknown profile");
                };
                write!(f, "profile {:?} ", pr.id)?;
                let indexed = |list: &[super::template::Template], i: u16| {
                    list.get(usize::from(i)).map(|t| t.as_str().to_owned())
                };
                match clause {
                    ProfileClause::Publish(i) => {
                        write!(
                            f,
                            "publish[{i}] {:?}",
                            indexed(&pr.publish, i).unwrap_or_default()
                        )
                    }
                    ProfileClause::Subscribe(i) => write!(
                        f,
                        "subscribe[{i}] {:?}",
                        indexed(&pr.subscribe, i).unwrap_or_default()
                    ),
                    ProfileClause::MaxQos => f.write_str("max_qos"),
                    ProfileClause::Retain => f.write_str("retain"),
                    ProfileClause::MaxPayload => f.write_str("max_payload"),
                    ProfileClause::MaxSubscriptions => f.write_str("max_subscriptions"),
                    ProfileClause::MessageRate => f.write_str("messages_per_second"),
                    ProfileClause::ByteRate => f.write_str("bytes_per_second"),
                    ProfileClause::Listeners => f.write_str("listeners"),
                    ProfileClause::Transports => f.write_str("transports"),
                    ProfileClause::ClientId => f.write_str("client id rule"),
                    ProfileClause::Identity => f.write_str("identity"),
                }
            }
            RuleId::Conduit { conduit, clause } => {
                let Some(c) = p.conduits.get(conduit.at()) else {
                    return f.write_str("unknown conduit");
                };
                write!(f, "conduit {:?} ", c.id)?;
                match clause {
                    ConduitClause::Topic(i) => write!(
                        f,
                        "topics[{i}] {:?}",
                        c.topics.get(usize::from(i)).map_or("", |t| t.as_str())
                    ),
                    ConduitClause::MaxQos => f.write_str("max_qos"),
                    ConduitClause::MaxPayload => f.write_str("max_payload"),
                    ConduitClause::MessageRate => f.write_str("messages_per_second"),
                    ConduitClause::ByteRate => f.write_str("bytes_per_second"),
                }
            }
        }
    }
}

fn connect(
    policy: &CompiledPolicy,
    subject: &Subject,
    client_id: &str,
    listener: &str,
    transport: Transport,
) -> Decision {
    let profile_id = subject.profile;
    let rule = |clause| RuleId::Profile {
        profile: profile_id,
        clause,
    };
    let Some(profile) = policy.profiles.get(profile_id.at()) else {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::StalePolicy);
    };
    // The rights were expanded with this client id; another one would
    // change what `${client_id}` means.
    if client_id != &*subject.client_id {
        return Decision::deny(
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            rule(ProfileClause::ClientId),
        );
    }
    // Binding the client id to the identity stops one device taking over
    // another's session by reusing its client id.
    if !profile.any_client_id && client_id != &*subject.identity {
        return Decision::deny(
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            rule(ProfileClause::ClientId),
        );
    }
    if !profile.transports.contains(transport) {
        return Decision::deny(reason::NOT_AUTHORIZED, rule(ProfileClause::Transports));
    }
    if let Some(listeners) = &profile.listeners {
        if !listeners.iter().any(|l| &**l == listener) {
            return Decision::deny(reason::NOT_AUTHORIZED, rule(ProfileClause::Listeners));
        }
    }
    Decision::allow(reason::SUCCESS, rule(ProfileClause::Identity))
}

fn publish(
    policy: &CompiledPolicy,
    subject: &Subject,
    topic: &str,
    qos: u8,
    retain: bool,
    payload_len: usize,
) -> Decision {
    let rule = |clause| RuleId::Profile {
        profile: subject.profile,
        clause,
    };
    if topic::validate_topic_name(topic).is_err() {
        return Decision::deny(reason::TOPIC_NAME_INVALID, RuleId::InvalidTopic);
    }
    let limits = &subject.rights.limits;
    if qos > limits.max_qos {
        return Decision::deny(reason::QOS_NOT_SUPPORTED, rule(ProfileClause::MaxQos));
    }
    if retain && !limits.retain {
        return Decision::deny(reason::RETAIN_NOT_SUPPORTED, rule(ProfileClause::Retain));
    }
    if payload_len > limits.max_payload {
        return Decision::deny(reason::PACKET_TOO_LARGE, rule(ProfileClause::MaxPayload));
    }
    let Some(right) = subject
        .rights
        .publish
        .iter()
        .find(|r| r.filter.matches(topic))
    else {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::NoMatchingRight);
    };
    let Some(owner) = policy.owner_zone_near(topic, subject.zone) else {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::TopicOutsideZones);
    };
    if owner == subject.zone {
        return Decision::allow(reason::SUCCESS, rule(ProfileClause::Publish(right.index)));
    }
    // Writing into another zone's namespace crosses zones: a conduit must carry it.
    through_conduit(policy, subject.zone, owner, topic, qos, payload_len).map_or(
        Decision::deny(reason::NOT_AUTHORIZED, RuleId::NoConduit),
        |d| {
            if d.allowed {
                Decision::allow(reason::SUCCESS, d.rule)
            } else {
                d
            }
        },
    )
}

fn subscribe(subject: &Subject, filter: &str, qos: u8, active: u32) -> Decision {
    let Ok(inner) = topic::strip_shared(filter) else {
        return Decision::deny(reason::TOPIC_FILTER_INVALID, RuleId::InvalidTopic);
    };
    if topic::validate_filter(inner).is_err() {
        return Decision::deny(reason::TOPIC_FILTER_INVALID, RuleId::InvalidTopic);
    }
    let Some(right) = subject
        .rights
        .subscribe
        .iter()
        .find(|r| r.filter.covers(inner))
    else {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::NoMatchingRight);
    };
    let limits = &subject.rights.limits;
    if active >= limits.max_subscriptions {
        return Decision::deny(
            reason::QUOTA_EXCEEDED,
            RuleId::Profile {
                profile: subject.profile,
                clause: ProfileClause::MaxSubscriptions,
            },
        );
    }
    // MQTT-3.9.3: the server may grant a lower QoS than asked for.
    Decision::allow(
        qos.min(limits.max_qos),
        RuleId::Profile {
            profile: subject.profile,
            clause: ProfileClause::Subscribe(right.index),
        },
    )
}

fn deliver(
    policy: &CompiledPolicy,
    subject: &Subject,
    topic: &str,
    publisher_zone: &str,
    qos: u8,
    payload_len: usize,
) -> Decision {
    let Some(from) = policy.zone(publisher_zone) else {
        return Decision::deny(reason::NOT_AUTHORIZED, RuleId::UnknownZone);
    };
    if from == subject.zone {
        return Decision::allow(qos.min(2), RuleId::Zone { zone: from });
    }
    through_conduit(policy, from, subject.zone, topic, u8::MAX, payload_len)
        .map(|d| {
            if d.allowed {
                // A conduit's max QoS downgrades delivery rather than refusing it.
                Decision::allow(qos.min(d.reason), d.rule)
            } else {
                d
            }
        })
        .unwrap_or(Decision::deny(reason::NOT_AUTHORIZED, RuleId::NoConduit))
}

/// Looks for a conduit `from → to` that carries `topic`. Returns `None` when
/// no conduit's topics match; otherwise the first conduit that accepts the
/// message (allow, reason = the conduit's max QoS), or the first refusal.
/// `qos == u8::MAX` skips the QoS check (delivery downgrades instead).
fn through_conduit(
    policy: &CompiledPolicy,
    from: ZoneId,
    to: ZoneId,
    topic: &str,
    qos: u8,
    payload_len: usize,
) -> Option<Decision> {
    let mut refusal = None;
    for (id, c) in policy.routes(from, to) {
        let Some(i) = c.topics.iter().position(|f| f.matches(topic)) else {
            continue;
        };
        let rule = |clause| RuleId::Conduit {
            conduit: id,
            clause,
        };
        if qos != u8::MAX && qos > c.max_qos {
            refusal.get_or_insert(Decision::deny(
                reason::QOS_NOT_SUPPORTED,
                rule(ConduitClause::MaxQos),
            ));
            continue;
        }
        if payload_len > c.max_payload {
            refusal.get_or_insert(Decision::deny(
                reason::PACKET_TOO_LARGE,
                rule(ConduitClause::MaxPayload),
            ));
            continue;
        }
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        return Some(Decision::allow(
            c.max_qos,
            rule(ConduitClause::Topic(index)),
        ));
    }
    refusal
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
