//! Client certificates: reading the attributes that device profiles map to
//! an identity, and resolving the [`Subject`](crate::policy::Subject).
//!
//! Chain verification and CRL checks are the TLS layer's; issuing and
//! revoking certificates is `crate::ca`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod identity;
pub(crate) mod pattern;

pub use identity::{resolve, CertAttributes, CertError, IdentityError, IdentityProblem};
