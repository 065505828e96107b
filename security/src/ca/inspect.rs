//! `converge cert inspect FILE`: what the current policy gives a
//! certificate (identity, zone, rights), or why it refuses it.
//!
//! Uses the same `CertAttributes::from_der` and `resolve` as the broker, so
//! the answer is the broker's answer, except for what only the TLS layer
//! checks (chain, CRL, clock), which is reported as warnings where visible.

use std::fmt;
use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;

use crate::certs::identity::hex;
use crate::policy::compile::{CompiledPolicy, Limits};
use crate::policy::Transport;
use crate::{resolve, CertAttributes, IdentityError};

use super::{time_fmt, unix_seconds, CaError, Status};

/// Client id used while resolving, to show where `${client_id}` lands in
/// the rights. It passes `safe_value`, so only profiles bind it.
pub const CLIENT_ID_PLACEHOLDER: &str = "{client_id}";

/// The certificate and what the policy makes of it. `Display` renders the
/// `cert inspect` report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// Subject DN, e.g. `CN=press-01, OU=cell-a, O=ACME Plant1`.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Valid, not yet valid or expired at the time of inspection.
    pub validity: Status,
    pub san_uris: Vec<String>,
    pub san_dns: Vec<String>,
    pub policy_oids: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// The status in this CA's index, when this CA issued the certificate
    /// (filled by [`Ca::inspect`](super::Ca::inspect)).
    pub index_status: Option<Status>,
    /// Things the TLS layer would refuse (a CA certificate, no clientAuth).
    pub warnings: Vec<String>,
    /// What the policy gives it, or why it refuses it.
    pub grant: Result<Grant, IdentityError>,
}

/// The identity and rights a certificate gets under a policy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Grant {
    pub profile: String,
    pub identity: String,
    pub device: String,
    pub zone: String,
    pub security_level: u8,
    /// The client id the device must use; `None` when the profile allows any
    /// (`danger_allow_any_client_id`).
    pub client_id: Option<String>,
    /// Publish filters with placeholders expanded.
    pub publish: Vec<String>,
    /// Subscribe filters with placeholders expanded.
    pub subscribe: Vec<String>,
    pub limits: Limits,
    pub transports: Vec<Transport>,
    /// `None`: every listener.
    pub listeners: Option<Vec<String>>,
    /// Conduits out of and into the zone, by id.
    pub conduits_out: Vec<String>,
    pub conduits_in: Vec<String>,
}

/// Reads a certificate (PEM, first CERTIFICATE block, or DER) and resolves
/// it under `policy` at `now`.
pub fn inspect(
    cert: &[u8],
    policy: &CompiledPolicy,
    now: SystemTime,
) -> Result<Inspection, CaError> {
    let der = certificate_der(cert)?;
    let attrs = CertAttributes::from_der(&der)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::NotACertificate(e.to_string()))?;
    let now_s = unix_seconds(now);
    let validity = if now_s < attrs.not_before {
        Status::NotYetValid
    } else if now_s > attrs.not_after {
        Status::Expired
    } else {
        Status::Valid
    };
    Ok(Inspection {
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        serial: hex(x509.raw_serial()),
        not_before: attrs.not_before,
        not_after: attrs.not_after,
        validity,
        san_uris: attrs.san_uris.clone(),
        san_dns: attrs.san_dns.clone(),
        policy_oids: attrs.policy_oids.clone(),
        fingerprint: attrs.fingerprint_hex(),
        index_status: None,
        warnings: warnings(&x509),
        grant: grant(policy, &attrs),
    })
}

/// The DER of the first certificate in PEM input, or the input itself.
pub(crate) fn certificate_der(input: &[u8]) -> Result<Vec<u8>, CaError> {
    let text_start = input.iter().position(|b| !b.is_ascii_whitespace());
    let is_pem = text_start
        .and_then(|i| input.get(i..))
        .is_some_and(|rest| rest.starts_with(b"-----BEGIN"));
    if !is_pem {
        return Ok(input.to_vec());
    }
    for pem in x509_parser::pem::Pem::iter_from_buffer(input) {
        let pem = pem.map_err(|e| CaError::NotACertificate(format!("bad PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            return Ok(pem.contents);
        }
    }
    Err(CaError::NotACertificate(
        "no CERTIFICATE block in the PEM input".to_owned(),
    ))
}

fn grant(policy: &CompiledPolicy, attrs: &CertAttributes) -> Result<Grant, IdentityError> {
    let mut subject = resolve(policy, attrs, CLIENT_ID_PLACEHOLDER)?;
    let profile = policy.profiles.get(subject.profile().at());
    let any_client_id = profile.is_some_and(|p| p.any_client_id);
    if !any_client_id {
        // The client id must equal the identity: expand with that.
        let identity = subject.identity().to_owned();
        subject = resolve(policy, attrs, &identity)?;
    }
    let zone = policy.zones.get(subject.zone().at());
    let named = |ids: &mut dyn Iterator<Item = &crate::policy::Conduit>| -> Vec<String> {
        ids.map(|c| c.id().to_owned()).collect()
    };
    Ok(Grant {
        profile: profile.map(|p| p.id().to_owned()).unwrap_or_default(),
        identity: subject.identity().to_owned(),
        device: subject.device().to_owned(),
        zone: subject.zone_name().to_owned(),
        security_level: zone.map_or(0, |z| z.security_level()),
        client_id: (!any_client_id).then(|| subject.identity().to_owned()),
        publish: subject.rights().publish().map(str::to_owned).collect(),
        subscribe: subject.rights().subscribe().map(str::to_owned).collect(),
        limits: subject.rights().limits(),
        transports: profile
            .map(|p| {
                ALL_TRANSPORTS
                    .into_iter()
                    .filter(|t| p.transports.contains(*t))
                    .collect()
            })
            .unwrap_or_default(),
        listeners: profile
            .and_then(|p| p.listeners.as_ref())
            .map(|l| l.iter().map(|s| s.to_string()).collect()),
        conduits_out: named(
            &mut policy
                .conduits()
                .iter()
                .filter(|c| c.from() == subject.zone()),
        ),
        conduits_in: named(
            &mut policy
                .conduits()
                .iter()
                .filter(|c| c.to() == subject.zone()),
        ),
    })
}

const ALL_TRANSPORTS: [Transport; 5] = [
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
    Transport::Quic,
];

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
        Transport::Ws => "ws",
        Transport::Wss => "wss",
        Transport::Quic => "quic",
    }
}

fn warnings(x509: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(bc)) = x509.basic_constraints() {
        if bc.value.ca {
            out.push("a CA certificate: TLS servers refuse it as a client certificate".to_owned());
        }
    }
    match x509.extended_key_usage() {
        Ok(Some(eku)) if !eku.value.client_auth && !eku.value.any => out.push(
            "no clientAuth extended key usage: TLS servers refuse it as a client certificate"
                .to_owned(),
        ),
        Err(_) => out.push("the extended key usage extension is malformed".to_owned()),
        _ => {}
    }
    out
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| {
            writeln!(f, "  {k:<13} {v}")
        };
        let rows = |f: &mut fmt::Formatter<'_>, k: &str, vs: &[String]| -> fmt::Result {
            for (i, v) in vs.iter().enumerate() {
                row(f, if i == 0 { k } else { "" }, v)?;
            }
            Ok(())
        };
        writeln!(f, "certificate")?;
        row(f, "subject", &self.subject)?;
        row(f, "issuer", &self.issuer)?;
        row(f, "serial", &self.serial)?;
        row(
            f,
            "validity",
            &format_args!(
                "{} to {} ({})",
                time_fmt::datetime(self.not_before),
                time_fmt::datetime(self.not_after),
                self.validity
            ),
        )?;
        rows(f, "SAN URI", &self.san_uris)?;
        rows(f, "SAN DNS", &self.san_dns)?;
        rows(f, "policy OID", &self.policy_oids)?;
        row(f, "SHA-256", &self.fingerprint)?;
        if let Some(s) = &self.index_status {
            row(f, "CA index", s)?;
        }
        rows(f, "warning", &self.warnings)?;
        writeln!(f, "policy")?;
        let g = match &self.grant {
            Ok(g) => g,
            Err(e) => return row(f, "refused", e),
        };
        row(f, "profile", &g.profile)?;
        row(f, "identity", &g.identity)?;
        match &g.client_id {
            Some(id) => row(f, "client id", &format_args!("must be {id:?}"))?,
            None => row(f, "client id", &"any (danger_allow_any_client_id)")?,
        }
        row(f, "device", &g.device)?;
        row(
            f,
            "zone",
            &format_args!("{} (security level {})", g.zone, g.security_level),
        )?;
        rows(f, "publish", &g.publish)?;
        rows(f, "subscribe", &g.subscribe)?;
        let l = &g.limits;
        row(f, "max QoS", &l.max_qos())?;
        row(f, "retain", &if l.retain() { "allowed" } else { "refused" })?;
        row(f, "max payload", &format_args!("{} bytes", l.max_payload()))?;
        row(f, "max subs", &l.max_subscriptions())?;
        row(
            f,
            "messages/s",
            &format_args!(
                "{} (burst {})",
                l.messages().per_second(),
                l.messages().burst()
            ),
        )?;
        row(
            f,
            "bytes/s",
            &format_args!("{} (burst {})", l.bytes().per_second(), l.bytes().burst()),
        )?;
        let transports: Vec<&str> = g.transports.iter().map(|t| transport_name(*t)).collect();
        row(f, "transports", &transports.join(", "))?;
        match &g.listeners {
            Some(l) => row(f, "listeners", &l.join(", "))?,
            None => row(f, "listeners", &"any")?,
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        row(f, "conduits out", &list(&g.conduits_out))?;
        row(f, "conduits in", &list(&g.conduits_in))?;
        writeln!(
            f,
            "  (topics of other zones need a conduit too: rights alone do not cross zones)"
        )
    }
}
