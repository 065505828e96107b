//! Live revocation: when the CRL file changes, the new list applies to every later handshake
//! (the verifier swaps it) and, here, to the connections already open: a connection whose
//! certificate the new list revokes is closed at once with DISCONNECT 0x87.
//!
//! Race with a connect in progress: the verifier swaps its list before the sessions are
//! scanned, and a connecting client records its certificate in its session before it asks
//! whether the certificate is revoked. Either the scan sees the certificate or the client sees
//! the new list.

use std::sync::Arc;

use converge_security::audit::{Action, Event, Outcome};

use super::Broker;
use crate::mqtt::packet::ReasonCode;
use crate::session;
use crate::transport::tls::TlsSetupError;
use crate::transport::verify::{ClientVerifier, LeafId};

/// What one CRL reload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RevocationSummary {
    /// CRLs in the file.
    pub crls: usize,
    /// Certificates they list.
    pub revoked: usize,
    /// Live connections closed because their certificate is among them.
    pub closed: usize,
}

impl Broker {
    /// Checks client certificates with `verifier`, whose CRLs `reload_crl` refreshes.
    pub fn with_verifier(mut self, verifier: Arc<ClientVerifier>) -> Broker {
        self.verifier = Some(verifier);
        self
    }

    /// The client-certificate verifier of the MQTT listeners, if TLS or QUIC is on.
    pub fn client_verifier(&self) -> Option<Arc<ClientVerifier>> {
        self.verifier.clone()
    }

    /// Whether the CRLs in force revoke this certificate.
    pub fn is_revoked(&self, leaf: &LeafId) -> bool {
        self.verifier.as_ref().is_some_and(|v| v.is_revoked(leaf))
    }

    /// Reads the CRL file again if it changed and closes the live connections whose
    /// certificate it now revokes. `Ok(None)`: nothing changed, or no CRL is configured. On
    /// `Err` the previous CRLs stay in force.
    pub fn reload_crl(&self) -> Result<Option<RevocationSummary>, TlsSetupError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let path = verifier
            .crl_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let loaded = match verifier.reload_crl() {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.metrics
                    .crl_reloads
                    .with_label_values(&["failure"])
                    .inc();
                self.audit(
                    Event::new(Action::CrlReload, Outcome::Failure)
                        .resource(path)
                        .reason(e.to_string()),
                );
                return Err(e);
            }
        };
        let mut closed = 0;
        {
            let st = self.lock();
            for s in st.sessions.values() {
                let mut s = session::lock(s);
                let revoked = s.owner.is_some()
                    && s.cert
                        .as_ref()
                        .is_some_and(|leaf| verifier.is_revoked(leaf));
                if !revoked {
                    continue;
                }
                if let Some(kick) = s.kick.take() {
                    let serial = s.cert.as_ref().map(LeafId::serial_hex).unwrap_or_default();
                    tracing::info!(client_id = %s.client_id, %serial, "certificate revoked; closing the connection");
                    let _ = kick.send(ReasonCode::NOT_AUTHORIZED);
                    closed += 1;
                }
            }
        }
        self.metrics
            .crl_reloads
            .with_label_values(&["success"])
            .inc();
        self.metrics
            .revoked_connections_closed
            .inc_by(closed as u64);
        self.audit(
            Event::new(Action::CrlReload, Outcome::Success)
                .resource(path)
                .reason(format!(
                    "{} CRL(s), {} revoked certificate(s), {} live connection(s) closed",
                    loaded.crls, loaded.revoked, closed
                )),
        );
        Ok(Some(RevocationSummary {
            crls: loaded.crls,
            revoked: loaded.revoked,
            closed,
        }))
    }
}
