//! Client certificates: reading the attributes that device profiles map to
//! an identity, and resolving the [`Subject`](crate::policy::Subject).
//!
//! Chain verification and CRL checks are the TLS layer's (webpki), with the RFC 5280
//! end-entity rules it leaves out in [`end_entity`]; issuing and
//! revoking certificates is `crate::ca`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod end_entity;
pub mod identity;
pub(crate) mod pattern;

pub use end_entity::{check_chain_limits, check_end_entity, ChainLimits, EndEntityError};
pub use identity::{resolve, CertAttributes, CertError, IdentityError, IdentityProblem};
