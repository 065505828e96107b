//! How a device name and a zone are written into a certificate, so that the
//! policy reads them back.
//!
//! Default encoding (no policy at hand): `CN=<device>, OU=<zone>, O=<CA
//! organization>`, plus the SAN URI `urn:dev:<namespace>:<zone>:<device>`
//! when the CA has a URN namespace and the request names no SAN URI. That
//! serves profiles with `device = "cn"`, `zone = "ou"` and those with
//! `san_uri = "urn:dev:<namespace>:{zone}:{device}"`.
//!
//! With a policy and a profile, the encoding follows the profile instead:
//! the fields its `device` and `zone` read, its SAN pattern rendered, its
//! policy OID (and the zone's OID for `zone = { policy_oid = … }`). The
//! issued certificate is then resolved under the policy before it is
//! recorded (see `Ca::issue_for_policy`).

use crate::policy::compile::{CompiledPolicy, Profile, ZoneRule};
use crate::policy::model::DeviceSource;

use super::CaError;

/// Longest device or zone name: X.520's upper bound for a common name
/// (ub-common-name, 64), which the device name is written into.
pub const MAX_NAME_LEN: usize = 64;

/// Subject fields, SANs and policy OIDs of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub cn: Option<String>,
    pub ou: Option<String>,
    pub o: Option<String>,
    pub san_uris: Vec<String>,
    pub san_dns: Vec<String>,
    pub policy_oids: Vec<String>,
}

/// Checks a device or zone name. Both end up in a subject, a SAN URI, topic
/// levels and (the device) a file name, so only `A-Z a-z 0-9 . _ -` are
/// allowed, not leading `.` or `-`, no `..`, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), CaError> {
    let bad = |why| CaError::BadName {
        kind,
        value: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 64 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains a control character"));
    }
    if name.contains(['/', '\\']) {
        return Err(bad("it contains a path separator"));
    }
    if name.contains("..") {
        return Err(bad("it contains '..'"));
    }
    if name.starts_with(['.', '-']) {
        return Err(bad("it starts with '.' or '-'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("only A-Z a-z 0-9 . _ - are allowed"));
    }
    Ok(())
}

/// Checks a SAN URI or DNS name given on the command line: printable ASCII
/// (IA5String), no spaces.
pub(crate) fn check_san(kind: &'static str, value: &str) -> Result<(), CaError> {
    if value.is_empty() || value.len() > 1024 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CaError::BadValue {
            kind,
            value: value.to_owned(),
            why: "must be 1 to 1024 printable ASCII characters without spaces",
        });
    }
    Ok(())
}

/// The default encoding; see the module docs.
pub(crate) fn default_encoding(
    device: &str,
    zone: &str,
    organization: Option<&str>,
    urn_namespace: Option<&str>,
    extra: Extra<'_>,
) -> Encoding {
    let mut e = Encoding {
        cn: Some(device.to_owned()),
        ou: Some(zone.to_owned()),
        o: organization.map(str::to_owned),
        ..Encoding::default()
    };
    extra.add_to(&mut e);
    add_default_urn(&mut e, device, zone, urn_namespace);
    e
}

/// SANs and policy OIDs the caller asked for explicitly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extra<'a> {
    pub san_uris: &'a [String],
    pub san_dns: &'a [String],
    pub policy_oids: &'a [String],
}

impl Extra<'_> {
    fn add_to(self, e: &mut Encoding) {
        for (list, add) in [
            (&mut e.san_uris, self.san_uris),
            (&mut e.san_dns, self.san_dns),
            (&mut e.policy_oids, self.policy_oids),
        ] {
            for v in add {
                push_unique(list, v.clone());
            }
        }
    }
}

/// The encoding `profile` of `policy` reads as (device, zone).
pub(crate) fn profile_encoding(
    policy: &CompiledPolicy,
    profile_name: &str,
    device: &str,
    zone: &str,
    organization: Option<&str>,
    urn_namespace: Option<&str>,
    extra: Extra<'_>,
) -> Result<Encoding, CaError> {
    let profile = policy
        .profiles
        .iter()
        .find(|p| &*p.id == profile_name)
        .ok_or_else(|| CaError::UnknownProfile(profile_name.to_owned()))?;
    let refuse = |why: String| CaError::ProfileCannotEncode {
        profile: profile_name.to_owned(),
        why,
    };
    if !profile.fingerprints.is_empty() {
        return Err(refuse(
            "it admits only pinned fingerprints; issue without the profile, add the \
             printed fingerprint to the profile and reload the policy"
                .to_owned(),
        ));
    }
    check_zone(policy, profile, zone).map_err(refuse)?;

    let mut e = Encoding::default();
    extra.add_to(&mut e);
    if let Some(oid) = &profile.policy_oid {
        push_unique(&mut e.policy_oids, oid.to_string());
    }
    let device_field = match profile.device {
        DeviceSource::Cn => Some(Field::Cn),
        DeviceSource::Ou => Some(Field::Ou),
        DeviceSource::O => Some(Field::O),
        DeviceSource::SanUri => Some(Field::SanUri),
        DeviceSource::SanDns => Some(Field::SanDns),
        DeviceSource::Fingerprint => None,
    };
    let zone_field = match &profile.zone {
        ZoneRule::Cn => Some(Field::Cn),
        ZoneRule::Ou => Some(Field::Ou),
        ZoneRule::O => Some(Field::O),
        ZoneRule::SanUri => Some(Field::SanUri),
        ZoneRule::SanDns => Some(Field::SanDns),
        ZoneRule::Fixed(_) => None,
        ZoneRule::PolicyOid(rules) => {
            let zone_id = policy.zone(zone);
            let oid = rules
                .iter()
                .find(|(_, z)| Some(*z) == zone_id)
                .map(|(oid, _)| oid.to_string())
                .ok_or_else(|| refuse(format!("it maps no policy OID to zone {zone:?}")))?;
            push_unique(&mut e.policy_oids, oid);
            None
        }
    };
    for (field, value, what) in [(device_field, device, "device"), (zone_field, zone, "zone")] {
        let slot = match field {
            Some(Field::Cn) => &mut e.cn,
            Some(Field::Ou) => &mut e.ou,
            Some(Field::O) => &mut e.o,
            _ => continue,
        };
        match slot {
            Some(old) if old != value => {
                return Err(refuse(format!(
                    "it reads both the device and the zone from the same subject field, \
                     so the {what} would have to be {old:?}"
                )))
            }
            _ => *slot = Some(value.to_owned()),
        }
    }
    let wants = |f| device_field == Some(f) || zone_field == Some(f);
    if wants(Field::SanUri) {
        let name = render(profile, profile.san_uri.as_ref(), device, zone).map_err(refuse)?;
        push_unique(&mut e.san_uris, name);
    }
    if wants(Field::SanDns) {
        let name = render(profile, profile.san_dns.as_ref(), device, zone).map_err(refuse)?;
        push_unique(&mut e.san_dns, name);
    }
    // Fields the profile does not read still say what the certificate is for.
    e.cn.get_or_insert_with(|| device.to_owned());
    e.ou.get_or_insert_with(|| zone.to_owned());
    if e.o.is_none() {
        e.o = organization.map(str::to_owned);
    }
    add_default_urn(&mut e, device, zone, urn_namespace);
    Ok(e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Cn,
    Ou,
    O,
    SanUri,
    SanDns,
}

/// The zone must exist, be allowed by the profile and agree with a fixed zone.
fn check_zone(policy: &CompiledPolicy, profile: &Profile, zone: &str) -> Result<(), String> {
    let Some(id) = policy.zone(zone) else {
        return Err(format!("zone {zone:?} is not in the policy"));
    };
    if let Some(allowed) = &profile.zones {
        if !allowed.contains(&id) {
            let names: Vec<&str> = allowed
                .iter()
                .filter_map(|z| policy.zones.get(z.at()).map(|z| &*z.id))
                .collect();
            return Err(format!(
                "zone {zone:?} is not among its zones ({})",
                names.join(", ")
            ));
        }
    }
    if let ZoneRule::Fixed(fixed) = &profile.zone {
        if *fixed != id {
            let name = policy.zones.get(fixed.at()).map_or("?", |z| &*z.id);
            return Err(format!("it puts every device in zone {name:?}"));
        }
    }
    Ok(())
}

/// Renders the profile's SAN pattern and checks it reads back as (device, zone).
fn render(
    profile: &Profile,
    pattern: Option<&crate::certs::pattern::NamePattern>,
    device: &str,
    zone: &str,
) -> Result<String, String> {
    // Compile requires the pattern whenever device or zone comes from a SAN.
    let Some(pattern) = pattern else {
        return Err("it reads a SAN but has no pattern".to_owned());
    };
    let name = pattern.render(device, zone).map_err(|capture| {
        format!(
            "its pattern {:?} has a capture {{{capture}}} the CA has no value for",
            pattern.as_str()
        )
    })?;
    let back = pattern.captures(&name);
    let device_ok = !matches!(profile.device, DeviceSource::SanUri | DeviceSource::SanDns)
        || back.and_then(|c| c.device) == Some(device);
    let zone_ok = !matches!(profile.zone, ZoneRule::SanUri | ZoneRule::SanDns)
        || back.and_then(|c| c.zone) == Some(zone);
    if back.is_none() || !device_ok || !zone_ok {
        return Err(format!(
            "{name:?} does not read back as device {device:?} in zone {zone:?} under its \
             pattern {:?} (a name contains the pattern's separator)",
            pattern.as_str()
        ));
    }
    Ok(name)
}

fn add_default_urn(e: &mut Encoding, device: &str, zone: &str, urn_namespace: Option<&str>) {
    if let (true, Some(ns)) = (e.san_uris.is_empty(), urn_namespace) {
        e.san_uris.push(format!("urn:dev:{ns}:{zone}:{device}"));
    }
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["press-01", "a", "robot_7.left", "PLC1"] {
            check_name("device", ok).unwrap();
        }
        for bad in [
            "", "a/b", "..", "a..b", ".hidden", "-rf", "a\nb", "a\0", "a b", "a,b", "a+b", "#",
            "$SYS", "é", "a\\b",
        ] {
            assert!(
                matches!(check_name("device", bad), Err(CaError::BadName { .. })),
                "{bad:?}"
            );
        }
        assert!(check_name("device", &"x".repeat(65)).is_err());
        check_name("device", &"x".repeat(64)).unwrap();
    }

    #[test]
    fn default_encoding_adds_the_urn_only_without_uris() {
        let none = Extra {
            san_uris: &[],
            san_dns: &[],
            policy_oids: &[],
        };
        let e = default_encoding("press-01", "cell-a", Some("ACME"), Some("plant1"), none);
        assert_eq!(e.cn.as_deref(), Some("press-01"));
        assert_eq!(e.ou.as_deref(), Some("cell-a"));
        assert_eq!(e.o.as_deref(), Some("ACME"));
        assert_eq!(e.san_uris, ["urn:dev:plant1:cell-a:press-01"]);
        let given = ["urn:x".to_owned()];
        let e = default_encoding(
            "d",
            "z",
            None,
            Some("plant1"),
            Extra {
                san_uris: &given,
                ..none
            },
        );
        assert_eq!(e.san_uris, ["urn:x"]);
        assert_eq!(e.o, None);
    }
}
