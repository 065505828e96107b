//! From a client certificate to a [`Subject`]: attribute extraction and
//! identity resolution.
//!
//! [`CertAttributes::from_der`] reads the fields a profile can use (CN, OU,
//! O, SAN URIs and DNS names, certificate policy OIDs, issuer, authority key
//! id, validity, SHA-256 fingerprint). [`resolve`] picks the first profile
//! whose conditions the certificate meets, takes the device and zone from it
//! as the profile says, checks that the zone trusts the issuer, and expands
//! the profile's rights for the session. Chain and signature verification is
//! the TLS layer's job; this code trusts that the certificate was verified.
//! Every ambiguity (two CNs, two SAN URIs giving different devices) is
//! refused rather than guessed.

use std::borrow::Cow;

use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::policy::compile::{Ca, CaId, CompiledPolicy, Profile, ProfileId, ZoneRule};
use crate::policy::model::DeviceSource;
use crate::policy::subject::{Right, SessionRights, Subject};
use crate::policy::template::{safe_value, Template, Values, Var};
use crate::policy::{reason, Decision, ProfileClause, RuleId};
use crate::topic::TopicFilter;

const OID_SAN: &str = "2.5.29.17";
const OID_POLICIES: &str = "2.5.29.32";
const OID_AKI: &str = "2.5.29.35";

/// The certificate fields profiles can use. `Default` (all empty) exists
/// for tests and fuzzing; the broker builds it with [`CertAttributes::from_der`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertAttributes {
    /// Subject Common Names (normally one).
    pub common_names: Vec<String>,
    /// Subject Organizational Units.
    pub organizational_units: Vec<String>,
    /// Subject Organizations.
    pub organizations: Vec<String>,
    /// SAN URIs, e.g. `urn:dev:plant1:cell-a:press-01`.
    pub san_uris: Vec<String>,
    /// SAN DNS names.
    pub san_dns: Vec<String>,
    /// Certificate policy OIDs, dotted.
    pub policy_oids: Vec<String>,
    /// Issuer DN as (attribute, value) pairs in certificate order, attribute
    /// names short and upper case (`CN`, `O`, …) or dotted OIDs.
    pub issuer: Vec<(String, String)>,
    /// Authority key identifier (the issuing CA's subject key id).
    pub authority_key_id: Option<Vec<u8>>,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
}

/// The certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
    #[error("{0} bytes follow the certificate")]
    TrailingData(usize),
    /// A subject attribute is in a string type we do not read (e.g.
    /// BMPString); refused rather than skipped so no other value stands in.
    #[error("the subject {0} is not in a readable string type")]
    UnreadableAttribute(&'static str),
    #[error("a subject alternative name is not readable")]
    UnreadableSan,
    #[error("the {0} extension is malformed")]
    BadExtension(&'static str),
}

/// Why no subject could be resolved. Map it to CONNACK with [`IdentityError::decision`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("no profile matches the certificate")]
    NoProfile,
    #[error("profile {name:?}: {problem}")]
    Rejected {
        profile: ProfileId,
        name: String,
        problem: IdentityProblem,
    },
}

/// What went wrong inside a matching profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityProblem {
    #[error("the certificate has no {0}")]
    Missing(&'static str),
    #[error("the certificate has several {0} values")]
    Ambiguous(&'static str),
    #[error("no {field} matches the pattern {pattern:?}")]
    NoPatternMatch {
        field: &'static str,
        pattern: String,
    },
    #[error("{field} {value:?} cannot be used in topics (empty, over 256 bytes, or has / + # NUL or a leading $)")]
    UnsafeValue { field: &'static str, value: String },
    #[error("zone {0:?} is not in the policy")]
    UnknownZone(String),
    #[error("zone {0:?} is not among the profile's zones")]
    ZoneNotAllowed(String),
    #[error("zone {0:?} does not trust the certificate's issuer")]
    UntrustedIssuer(String),
    #[error("client id {0:?} cannot be used in topics")]
    UnsafeClientId(String),
}

impl IdentityError {
    /// The CONNACK decision: 0x85 for an unusable client id, 0x87 otherwise.
    pub fn decision(&self) -> Decision {
        match self {
            Self::NoProfile => Decision::deny(reason::NOT_AUTHORIZED, RuleId::NoProfile),
            Self::Rejected {
                profile, problem, ..
            } => {
                let (code, clause) = match problem {
                    IdentityProblem::UnsafeClientId(_) => {
                        (reason::CLIENT_IDENTIFIER_NOT_VALID, ProfileClause::ClientId)
                    }
                    _ => (reason::NOT_AUTHORIZED, ProfileClause::Identity),
                };
                Decision::deny(
                    code,
                    RuleId::Profile {
                        profile: *profile,
                        clause,
                    },
                )
            }
        }
    }
}

impl CertAttributes {
    /// Reads a DER certificate (the leaf of the verified chain).
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::TrailingData(rest.len()));
        }
        let subject = cert.subject();
        let text =
            |field, it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.map(|a| {
                    a.as_str()
                        .map(str::to_owned)
                        .map_err(|_| CertError::UnreadableAttribute(field))
                })
                .collect::<Result<Vec<_>, _>>()
            };
        let common_names = text("CN", &mut subject.iter_common_name())?;
        let organizational_units = text("OU", &mut subject.iter_organizational_unit())?;
        let organizations = text("O", &mut subject.iter_organization())?;

        let mut san_uris = Vec::new();
        let mut san_dns = Vec::new();
        let mut policy_oids = Vec::new();
        let mut authority_key_id = None;
        for ext in cert.extensions() {
            let oid = ext.oid.to_id_string();
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => san_uris.push((*u).to_owned()),
                            GeneralName::DNSName(d) => san_dns.push((*d).to_owned()),
                            GeneralName::Invalid(..) => return Err(CertError::UnreadableSan),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::CertificatePolicies(policies) => {
                    policy_oids.extend(policies.iter().map(|p| p.policy_id.to_id_string()));
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::ParseError { .. } => match oid.as_str() {
                    OID_SAN => return Err(CertError::BadExtension("subject alternative name")),
                    OID_POLICIES => return Err(CertError::BadExtension("certificate policies")),
                    OID_AKI => return Err(CertError::BadExtension("authority key identifier")),
                    _ => {}
                },
                _ => {}
            }
        }

        let issuer = cert
            .issuer()
            .iter_attributes()
            .map(|a| {
                let value = a
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|_| format!("#{}", hex(a.as_slice())));
                (dn_key_from_oid(&a.attr_type().to_id_string()), value)
            })
            .collect();

        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut sha256 = [0u8; 32];
        if digest.as_ref().len() == sha256.len() {
            sha256.copy_from_slice(digest.as_ref());
        }
        Ok(Self {
            common_names,
            organizational_units,
            organizations,
            san_uris,
            san_dns,
            policy_oids,
            issuer,
            authority_key_id,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            sha256,
        })
    }

    /// The SHA-256 fingerprint as lower-case hex without separators.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Resolves the subject for a certificate and the client id of its CONNECT.
///
/// Profiles are tried in file order; the first whose `issuers`,
/// `policy_oid` and `fingerprints` conditions hold is used, and any problem
/// after that is final (no fall-through to a later profile). Then evaluate
/// `Request::Connect` with the subject for the client-id, transport and
/// listener rules.
pub fn resolve(
    policy: &CompiledPolicy,
    cert: &CertAttributes,
    client_id: &str,
) -> Result<Subject, IdentityError> {
    let issuer = Dn::from_pairs(&cert.issuer);
    let issued_by = |ca: &CaId| {
        policy
            .cas
            .get(ca.at())
            .is_some_and(|ca| ca_matches(ca, &issuer, cert.authority_key_id.as_deref()))
    };
    let Some((index, profile)) = policy
        .profiles
        .iter()
        .enumerate()
        .find(|(_, p)| profile_applies(p, cert, &issued_by))
    else {
        return Err(IdentityError::NoProfile);
    };
    let profile_id = ProfileId(u16::try_from(index).map_err(|_| IdentityError::NoProfile)?);
    let reject = |problem| IdentityError::Rejected {
        profile: profile_id,
        name: profile.id.to_string(),
        problem,
    };

    let (device, zone_name) = device_and_zone(policy, profile, cert).map_err(reject)?;
    if !safe_value(&device) {
        return Err(reject(IdentityProblem::UnsafeValue {
            field: "device",
            value: device.into_owned(),
        }));
    }
    let Some(zone) = policy.zone(&zone_name) else {
        return Err(reject(IdentityProblem::UnknownZone(zone_name.into_owned())));
    };
    if let Some(allowed) = &profile.zones {
        if !allowed.contains(&zone) {
            return Err(reject(IdentityProblem::ZoneNotAllowed(
                zone_name.into_owned(),
            )));
        }
    }
    let trusted = policy
        .zones
        .get(zone.at())
        .is_some_and(|z| z.trusted_cas.iter().any(issued_by));
    if !trusted {
        return Err(reject(IdentityProblem::UntrustedIssuer(
            zone_name.into_owned(),
        )));
    }

    let templates = || {
        std::iter::once(&profile.identity)
            .chain(profile.publish.iter())
            .chain(profile.subscribe.iter())
    };
    let cn = if templates().any(|t| t.uses(Var::Cn)) {
        let cn = single(&cert.common_names, "CN").map_err(reject)?;
        if !safe_value(cn) {
            return Err(reject(IdentityProblem::UnsafeValue {
                field: "CN",
                value: cn.to_owned(),
            }));
        }
        Some(cn)
    } else {
        None
    };
    if templates().any(|t| t.uses(Var::ClientId)) && !safe_value(client_id) {
        return Err(reject(IdentityProblem::UnsafeClientId(
            client_id.to_owned(),
        )));
    }
    let values = Values {
        device: &device,
        zone: &zone_name,
        cn,
        client_id,
    };
    let expand = |list: &[Template]| -> Result<Box<[Right]>, IdentityError> {
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                let text = t
                    .expand(&values)
                    .ok_or(reject(IdentityProblem::Missing("CN")))?;
                // Safe values keep a well-formed template well formed; this
                // only fails on length.
                let filter = TopicFilter::new(&text).map_err(|_| {
                    reject(IdentityProblem::UnsafeValue {
                        field: "expanded filter",
                        value: text.clone(),
                    })
                })?;
                Ok(Right {
                    filter,
                    index: u16::try_from(i).unwrap_or(u16::MAX),
                })
            })
            .collect()
    };
    let identity = profile
        .identity
        .expand(&values)
        .ok_or(reject(IdentityProblem::Missing("CN")))?;
    Ok(Subject {
        generation: policy.generation,
        profile: profile_id,
        zone,
        zone_name: zone_name.as_ref().into(),
        device: device.as_ref().into(),
        identity: identity.into(),
        client_id: client_id.into(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        rights: SessionRights {
            publish: expand(&profile.publish)?,
            subscribe: expand(&profile.subscribe)?,
            limits: profile.limits,
        },
    })
}

/// A distinguished name as sorted (attribute, value) pairs, so that the
/// order in the policy file need not follow the certificate's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dn(Vec<(String, String)>);

impl Dn {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut v = pairs.to_vec();
        v.sort();
        Self(v)
    }
}

/// Parses `"CN=Plant1 Cell CA, O=ACME"`. Values cannot contain `,` or `+`
/// (no RFC 4514 escapes); attribute names are case-insensitive.
pub(crate) fn parse_dn(text: &str) -> Option<Dn> {
    let mut pairs = Vec::new();
    for part in text.split([',', '+']) {
        let (key, value) = part.split_once('=')?;
        let key = key.trim().to_ascii_uppercase();
        let value = value.trim();
        if key.is_empty()
            || value.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return None;
        }
        let key = match key.as_str() {
            "S" => "ST".to_owned(),
            "E" | "EMAIL" => "EMAILADDRESS".to_owned(),
            "2.5.4.3" | "2.5.4.6" | "2.5.4.7" | "2.5.4.8" | "2.5.4.10" | "2.5.4.11" => {
                dn_key_from_oid(&key)
            }
            _ => key,
        };
        pairs.push((key, value.to_owned()));
    }
    if pairs.is_empty() {
        return None;
    }
    Some(Dn::from_pairs(&pairs))
}

fn dn_key_from_oid(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        other => other,
    }
    .to_owned()
}

fn ca_matches(ca: &Ca, issuer: &Dn, aki: Option<&[u8]>) -> bool {
    let subject_ok = ca.subject.as_ref().is_none_or(|s| s == issuer);
    let key_ok = ca.key_id.as_deref().is_none_or(|k| aki == Some(k));
    // A CA always has one of the two (compile checks), so this never
    // matches everything.
    (ca.subject.is_some() || ca.key_id.is_some()) && subject_ok && key_ok
}

fn profile_applies(p: &Profile, cert: &CertAttributes, issued_by: &impl Fn(&CaId) -> bool) -> bool {
    (p.issuers.is_empty() || p.issuers.iter().any(issued_by))
        && p.policy_oid
            .as_deref()
            .is_none_or(|o| cert.policy_oids.iter().any(|c| c == o))
        && (p.fingerprints.is_empty() || p.fingerprints.contains(&cert.sha256))
}

fn device_and_zone<'c>(
    policy: &'c CompiledPolicy,
    p: &Profile,
    cert: &'c CertAttributes,
) -> Result<(Cow<'c, str>, Cow<'c, str>), IdentityProblem> {
    let uri = |p: &Profile| captures(p.san_uri.as_ref(), &cert.san_uris, "SAN URI");
    let dns = |p: &Profile| captures(p.san_dns.as_ref(), &cert.san_dns, "SAN DNS name");
    let device: Cow<'c, str> = match p.device {
        DeviceSource::Cn => single(&cert.common_names, "CN")?.into(),
        DeviceSource::Ou => single(&cert.organizational_units, "OU")?.into(),
        DeviceSource::O => single(&cert.organizations, "O")?.into(),
        DeviceSource::SanUri => uri(p)?
            .device
            .ok_or(IdentityProblem::Missing("device"))?
            .into(),
        DeviceSource::SanDns => dns(p)?
            .device
            .ok_or(IdentityProblem::Missing("device"))?
            .into(),
        DeviceSource::Fingerprint => cert.fingerprint_hex().into(),
    };
    let zone: Cow<'c, str> = match &p.zone {
        ZoneRule::Cn => single(&cert.common_names, "CN")?.into(),
        ZoneRule::Ou => single(&cert.organizational_units, "OU")?.into(),
        ZoneRule::O => single(&cert.organizations, "O")?.into(),
        ZoneRule::SanUri => uri(p)?.zone.ok_or(IdentityProblem::Missing("zone"))?.into(),
        ZoneRule::SanDns => dns(p)?.zone.ok_or(IdentityProblem::Missing("zone"))?.into(),
        ZoneRule::Fixed(z) => policy
            .zones
            .get(z.at())
            .map(|z| &*z.id)
            .ok_or(IdentityProblem::Missing("zone"))?
            .into(),
        ZoneRule::PolicyOid(rules) => {
            let mut found = rules
                .iter()
                .filter(|(oid, _)| cert.policy_oids.iter().any(|c| c == &**oid))
                .map(|(_, z)| *z);
            let Some(first) = found.next() else {
                return Err(IdentityProblem::Missing("zone policy OID"));
            };
            if found.any(|z| z != first) {
                return Err(IdentityProblem::Ambiguous("zone policy OID"));
            }
            policy
                .zones
                .get(first.at())
                .map(|z| &*z.id)
                .ok_or(IdentityProblem::Missing("zone"))?
                .into()
        }
    };
    Ok((device, zone))
}

/// The captures of the one name (or several names agreeing) matching `pattern`.
fn captures<'c>(
    pattern: Option<&crate::certs::pattern::NamePattern>,
    names: &'c [String],
    field: &'static str,
) -> Result<crate::certs::pattern::Captures<'c>, IdentityProblem> {
    // Compile requires the pattern whenever a source uses it.
    let Some(pattern) = pattern else {
        return Err(IdentityProblem::Missing(field));
    };
    let mut found = names.iter().filter_map(|n| pattern.captures(n));
    let Some(first) = found.next() else {
        return Err(if names.is_empty() {
            IdentityProblem::Missing(field)
        } else {
            IdentityProblem::NoPatternMatch {
                field,
                pattern: pattern.as_str().to_owned(),
            }
        });
    };
    if found.any(|c| c != first) {
        return Err(IdentityProblem::Ambiguous(field));
    }
    Ok(first)
}

/// The single value of a field; several values are ambiguous, not "take the first".
fn single<'c>(values: &'c [String], field: &'static str) -> Result<&'c str, IdentityProblem> {
    match values {
        [one] => Ok(one),
        [] => Err(IdentityProblem::Missing(field)),
        _ => Err(IdentityProblem::Ambiguous(field)),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn dn_parsing_is_order_and_case_insensitive() {
        let a = parse_dn("CN=Plant1 Cell CA, O=ACME").unwrap();
        let b = parse_dn("o=ACME,cn=Plant1 Cell CA").unwrap();
        assert_eq!(a, b);
        let from_cert = Dn::from_pairs(&[
            ("O".to_owned(), "ACME".to_owned()),
            ("CN".to_owned(), "Plant1 Cell CA".to_owned()),
        ]);
        assert_eq!(a, from_cert);
        assert_eq!(parse_dn("2.5.4.3=X"), parse_dn("CN=X"));
        assert!(parse_dn("CN").is_none());
        assert!(parse_dn("CN=").is_none());
        assert!(parse_dn("C N=x").is_none());
        assert!(parse_dn("").is_none());
    }

    #[test]
    fn single_refuses_ambiguity() {
        assert_eq!(single(&[], "CN"), Err(IdentityProblem::Missing("CN")));
        assert_eq!(single(&["a".into()], "CN"), Ok("a"));
        assert_eq!(
            single(&["a".into(), "b".into()], "CN"),
            Err(IdentityProblem::Ambiguous("CN"))
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            CertAttributes::from_der(b"not a certificate"),
            Err(CertError::Malformed(_))
        ));
        assert!(matches!(
            CertAttributes::from_der(&[]),
            Err(CertError::Malformed(_))
        ));
    }
}
