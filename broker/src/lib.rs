//! Converge broker: a secure industrial MQTT 5 / 3.1.1 broker.
//!
//! The data path, in module order: `transport` (TLS, plain TCP) hands bytes and the peer's
//! identity to `connection`, which decodes them with `mqtt::codec`, keeps per-client state in
//! `session`, routes PUBLISHes through `router` and makes what it acknowledges durable with
//! `persist`. `server` owns the listeners and shutdown; `config`, `pki` and `metrics` serve it.
//! See `docs/ARCHITECTURE.md`.

pub mod config;
pub mod connection;
pub mod historian;
pub mod metrics;
pub mod mqtt;
pub mod persist;
pub mod pki;
pub mod router;
pub mod security;
pub mod server;
pub mod session;
pub mod transport;
