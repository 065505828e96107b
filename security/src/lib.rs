//! Converge security: the policy engine of the broker.
//!
//! - [`policy`]: IEC 62443 zones, conduits and device profiles, compiled
//!   from TOML into an immutable [`CompiledPolicy`] (kept behind an `Arc`,
//!   swapped whole on reload) and the pure, default-deny [`evaluate`].
//! - [`certs`]: certificate attributes and identity resolution into a
//!   [`Subject`] whose rights are expanded once per session.
//! - [`quota`]: per-device and per-conduit token buckets, driven by the
//!   caller's `now`.
//! - [`topic`]: MQTT topic validation and matching (`+`, `#`, `$` rules).
//! - [`ca`]: certificate administration for a plant CA (issue, list,
//!   revoke with a CRL, inspect a certificate under the policy); the
//!   library behind `converge ca` and `converge cert`.
//! - [`audit`]: the tamper-evident audit log (hash chain, signed Merkle
//!   checkpoints, verify and SIEM export). It does IO: a writer thread
//!   appends to files.
//!
//! The broker calls, per connection: [`CertAttributes::from_der`],
//! [`resolve`], [`evaluate`] with [`Request::Connect`], [`Quota::new`];
//! then per packet `evaluate` (and [`Quota::charge`] for PUBLISH). The only
//! IO on the broker's per-packet path is none; [`check_file`] reads a policy,
//! [`ca`] its CA directory and [`audit`] its log. docs/SECURITY.md documents
//! the model and the file.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod audit;
pub mod ca;
pub mod certs;
pub mod policy;
pub mod quota;
pub mod topic;

pub use audit::{AuditConfig, AuditError, AuditLog, AuditStats, Event as AuditEvent};
pub use certs::{resolve, CertAttributes, CertError, IdentityError};
pub use policy::{
    check_file, compile, evaluate, CompiledPolicy, Decision, Diagnostic, PolicyError, Request,
    RuleId, Subject, Transport,
};
pub use quota::{ConduitQuotas, Quota, TokenBucket};
