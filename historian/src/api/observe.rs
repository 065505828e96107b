//! Who asked what: every answered request, and every refused TLS handshake, is reported to an
//! optional observer, which the server connects to its tamper-evident audit log (historian
//! queries by IT clients and refused clients are security events). The API knows nothing of
//! the audit log itself.

use std::net::SocketAddr;

/// One answered request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct QueryRecord<'a> {
    /// The client's identity (certificate CN over HTTPS, `local` on loopback).
    pub identity: &'a str,
    /// The client's address, when the request came through `serve`.
    pub peer: Option<SocketAddr>,
    /// The endpoint, as metrics label it (`recorded`, `summary`, …).
    pub endpoint: &'static str,
    /// The query string as sent (tags, range, options); the body of a POST is not included.
    pub query: &'a str,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// Receives a record of every answered request. Called on the request's task after the
/// answer is ready: it must not block (the audit log's `record` only queues).
pub trait QueryObserver: Send + Sync {
    fn answered(&self, record: &QueryRecord<'_>);

    /// An HTTPS client was refused before any request: its handshake failed (no, expired,
    /// revoked or foreign certificate, …) or timed out, or its certificate names no usable
    /// identity. `reason` is the metrics label (`ApiMetrics::handshakes_refused`), `detail`
    /// says what happened. Called on the connection's task; must not block.
    fn handshake_refused(&self, peer: SocketAddr, reason: &'static str, detail: &str) {
        let _ = (peer, reason, detail);
    }
}

/// The peer address the accept loop attaches to each request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);
