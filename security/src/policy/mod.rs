//! The policy engine: IEC 62443 zones and conduits plus per-device profiles,
//! compiled from a TOML file into an immutable [`CompiledPolicy`] and
//! evaluated by the pure function [`evaluate`].
//!
//! Data path: `check_file`/`compile` (model → compile) once per (re)load;
//! `certs::identity::resolve` once per CONNECT, which builds a [`Subject`]
//! with expanded rights; `evaluate` for CONNECT, each PUBLISH, SUBSCRIBE and
//! delivery. Nothing here does IO except `check_file`, takes a lock, or
//! reads a clock.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub(crate) mod compile;
mod diagnostic;
mod eval;
pub(crate) mod model;
pub mod reason;
pub(crate) mod subject;
pub(crate) mod template;

pub use compile::{
    check_file, compile, CompiledPolicy, Conduit, ConduitId, Limits, Profile, ProfileId, Rate,
    Zone, ZoneId, DEFAULT_BYTES_PER_SECOND, DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_QOS,
    DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MESSAGES_PER_SECOND, MAX_FILTERS_PER_LIST,
    MAX_FILTERS_TOTAL, MAX_ITEMS, MAX_PAYLOAD_LIMIT, MAX_POLICY_BYTES, MAX_PROFILES,
    MAX_PROFILE_FILTERS_TOTAL,
};
pub use diagnostic::{Diagnostic, PolicyError};
pub use eval::{
    evaluate, ConduitClause, Decision, ProfileClause, Request, RuleDescription, RuleId, Transport,
};
pub use subject::{SessionRights, Subject};
