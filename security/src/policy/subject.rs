//! The authenticated subject of one session and its expanded rights.
//!
//! A `Subject` is built once at CONNECT by `certs::identity::resolve`, which
//! expands the profile's placeholders into concrete filters here. It is tied
//! to the policy generation it was built from: after a reload the broker
//! resolves every session again (keeping the `CertAttributes` and client id),
//! and `evaluate` refuses a subject from another generation.

use super::compile::{Limits, ProfileId, ZoneId};
use crate::topic::TopicFilter;

/// Who is asking: identity, zone and profile, plus the rights expanded for
/// this session.
#[derive(Debug, Clone)]
pub struct Subject {
    pub(crate) generation: u64,
    pub(crate) profile: ProfileId,
    pub(crate) zone: ZoneId,
    pub(crate) zone_name: Box<str>,
    pub(crate) device: Box<str>,
    pub(crate) identity: Box<str>,
    pub(crate) client_id: Box<str>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) rights: SessionRights,
}

impl Subject {
    /// The profile that matched the certificate.
    pub fn profile(&self) -> ProfileId {
        self.profile
    }
    /// The device's zone.
    pub fn zone(&self) -> ZoneId {
        self.zone
    }
    /// The zone id as written in the policy; pass it as `publisher_zone` in
    /// `Request::Deliver` and keep it with retained messages.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }
    /// The device name taken from the certificate.
    pub fn device(&self) -> &str {
        &self.device
    }
    /// The identity (the profile's `identity` template, `${device}` by default).
    pub fn identity(&self) -> &str {
        &self.identity
    }
    /// The client id the rights were expanded with.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// Certificate notAfter, seconds since the Unix epoch: the broker may
    /// arm a timer to disconnect the session then.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
    /// The expanded rights.
    pub fn rights(&self) -> &SessionRights {
        &self.rights
    }
}

/// Concrete publish and subscribe filters and limits for one session.
#[derive(Debug, Clone)]
pub struct SessionRights {
    pub(crate) publish: Box<[Right]>,
    pub(crate) subscribe: Box<[Right]>,
    pub(crate) limits: Limits,
}

impl SessionRights {
    /// Per-device limits (CONNACK can announce Maximum QoS and Retain Available).
    pub fn limits(&self) -> Limits {
        self.limits
    }
    /// The expanded publish filters.
    pub fn publish(&self) -> impl Iterator<Item = &str> {
        self.publish.iter().map(|r| r.filter.as_str())
    }
    /// The expanded subscribe filters.
    pub fn subscribe(&self) -> impl Iterator<Item = &str> {
        self.subscribe.iter().map(|r| r.filter.as_str())
    }
}

/// One expanded filter and the index of the profile entry it came from.
#[derive(Debug, Clone)]
pub(crate) struct Right {
    pub(crate) filter: TopicFilter,
    pub(crate) index: u16,
}
