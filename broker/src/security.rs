//! The broker's side of the policy engine (`converge-security`): which policy is in force, and
//! what one session may do under it.
//!
//! - `PolicyStore` holds the compiled policy behind an `Arc` that a reload swaps whole. Readers
//!   take the `Arc` once (at CONNECT, at reload); a connection notices a reload by comparing
//!   the store's generation (an atomic) with its own, so the per-packet check takes no lock.
//! - `SessionAuth` is one session's subject under one policy generation, with what is needed
//!   to resolve it again after a reload (the certificate's attributes and the client id).
//! - `check_*` are thin, allocation-free wrappers around `converge_security::evaluate`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use converge_security::{
    check_file, evaluate, resolve, CertAttributes, CompiledPolicy, Decision, IdentityError,
    Request, Subject, Transport,
};

use crate::mqtt::packet::ReasonCode;
use crate::transport::ListenerKind;

/// The policy in force, swapped whole on reload.
pub struct PolicyStore {
    path: PathBuf,
    current: RwLock<Arc<CompiledPolicy>>,
    generation: AtomicU64,
}

/// A policy file that does not compile: every diagnostic, with its file location.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {} error(s):\n{}", .diagnostics.len(), .diagnostics.join("\n"))]
pub struct PolicyLoadError {
    pub path: String,
    pub diagnostics: Vec<String>,
}

impl PolicyStore {
    pub fn load(path: &Path) -> Result<PolicyStore, PolicyLoadError> {
        let policy = compile(path)?;
        Ok(PolicyStore {
            path: path.to_path_buf(),
            generation: AtomicU64::new(policy.generation()),
            current: RwLock::new(Arc::new(policy)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Generation of the policy in force (lock-free).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Compiles the file again; on success the new policy is in force for every later check.
    /// On failure the old one stays (a broken file must never open the plant).
    pub fn reload(&self) -> Result<Arc<CompiledPolicy>, PolicyLoadError> {
        let policy = Arc::new(compile(&self.path)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = policy.clone();
        self.generation
            .store(policy.generation(), Ordering::Release);
        Ok(policy)
    }
}

fn compile(path: &Path) -> Result<CompiledPolicy, PolicyLoadError> {
    check_file(path).map_err(|diagnostics| PolicyLoadError {
        path: path.display().to_string(),
        diagnostics: diagnostics.iter().map(ToString::to_string).collect(),
    })
}

/// What a session may do: its subject under one policy generation.
#[derive(Debug)]
pub struct SessionAuth {
    pub policy: Arc<CompiledPolicy>,
    pub subject: Subject,
    /// Kept to resolve the subject again after a reload.
    pub cert: CertAttributes,
    pub client_id: Arc<str>,
    pub listener: ListenerKind,
    /// The subject's zone, shared with every message it publishes (no allocation per PUBLISH).
    zone: Arc<str>,
}

/// Why a CONNECT is refused by the policy.
#[derive(Debug)]
pub struct ConnectDenied {
    pub reason: ReasonCode,
    /// For the log: the identity problem or the rule that decided.
    pub why: String,
}

impl SessionAuth {
    /// Resolves the certificate and the CONNECT's client id under `policy` and checks the
    /// CONNECT rules (client id, transport, listener). An empty client id is given the identity.
    pub fn connect(
        policy: Arc<CompiledPolicy>,
        leaf_der: &[u8],
        client_id: &str,
        listener: ListenerKind,
    ) -> Result<SessionAuth, ConnectDenied> {
        let cert = CertAttributes::from_der(leaf_der).map_err(|e| ConnectDenied {
            reason: ReasonCode::NOT_AUTHORIZED,
            why: format!("certificate: {e}"),
        })?;
        let mut id = client_id.to_owned();
        if id.is_empty() {
            id = resolve(&policy, &cert, "")
                .map(|s| s.identity().to_owned())
                .map_err(|e| identity_denied(&e))?;
        }
        SessionAuth::resolve(policy, cert, Arc::from(id), listener)
    }

    /// The same session under another policy (reload).
    pub fn reresolve(&self, policy: Arc<CompiledPolicy>) -> Result<SessionAuth, ConnectDenied> {
        SessionAuth::resolve(
            policy,
            self.cert.clone(),
            self.client_id.clone(),
            self.listener,
        )
    }

    fn resolve(
        policy: Arc<CompiledPolicy>,
        cert: CertAttributes,
        client_id: Arc<str>,
        listener: ListenerKind,
    ) -> Result<SessionAuth, ConnectDenied> {
        let subject = resolve(&policy, &cert, &client_id).map_err(|e| identity_denied(&e))?;
        let decision = evaluate(
            &policy,
            &subject,
            &Request::Connect {
                client_id: &client_id,
                listener: listener.name(),
                transport: transport(listener),
            },
            SystemTime::now(),
        );
        if !decision.is_allowed() {
            return Err(ConnectDenied {
                reason: ReasonCode(decision.reason_code()),
                why: policy.describe(decision.rule()).to_string(),
            });
        }
        Ok(SessionAuth {
            zone: Arc::from(subject.zone_name()),
            policy,
            subject,
            cert,
            client_id,
            listener,
        })
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The zone as the router attaches it to a published message.
    pub fn shared_zone(&self) -> Arc<str> {
        self.zone.clone()
    }

    /// The id of the profile that matched the certificate.
    pub fn profile_name(&self) -> &str {
        self.policy
            .profiles()
            .get(usize::from(self.subject.profile().index()))
            .map_or("?", |p| p.id())
    }

    pub fn check(&self, request: &Request<'_>) -> Decision {
        evaluate(&self.policy, &self.subject, request, SystemTime::now())
    }

    /// May this session receive `topic`, published in `publisher_zone` (or, for the server's
    /// own and restored retained messages, in the zone that owns the topic)? Returns the QoS
    /// to deliver with.
    pub fn deliver(
        &self,
        topic: &str,
        publisher_zone: Option<&str>,
        qos: u8,
        payload_len: usize,
    ) -> Option<u8> {
        let owner;
        let zone = match publisher_zone {
            Some(z) => z,
            None => {
                let id = self.policy.owner_zone(topic)?;
                owner = self.policy.zones().get(usize::from(id.index()))?;
                owner.id()
            }
        };
        self.check(&Request::Deliver {
            topic,
            publisher_zone: zone,
            qos,
            payload_len,
        })
        .granted_qos()
    }

    /// The rule behind a decision, for logs and the audit trail.
    pub fn describe(&self, d: &Decision) -> String {
        self.policy.describe(d.rule()).to_string()
    }
}

fn identity_denied(e: &IdentityError) -> ConnectDenied {
    ConnectDenied {
        reason: ReasonCode(e.decision().reason_code()),
        why: e.to_string(),
    }
}

fn transport(listener: ListenerKind) -> Transport {
    match listener {
        ListenerKind::Tls => Transport::Tls,
        ListenerKind::Tcp => Transport::Tcp,
        ListenerKind::Quic => Transport::Quic,
    }
}
