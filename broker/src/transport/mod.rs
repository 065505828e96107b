//! Transports move bytes and the peer's identity into the shared connection loop
//! (`crate::connection`). They hold no MQTT logic.

pub mod early_data;
pub mod quic;
pub mod tls;
pub mod verify;

pub use tls::PeerIdentity;

/// Which listener a connection came through (logs, metrics, per-listener rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tls,
    Tcp,
    Quic,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Tls => "tls",
            ListenerKind::Tcp => "tcp",
            ListenerKind::Quic => "quic",
        }
    }
}
