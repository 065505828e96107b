//! Identity from real certificates generated with rcgen: attribute
//! extraction (`CertAttributes::from_der`) and subject resolution from a SAN
//! URI, CN, OU, a policy OID, the authority key id and the fingerprint.

use converge_security::certs::{CertError, IdentityProblem};
use converge_security::policy::reason;
use converge_security::{compile, resolve, CertAttributes, CompiledPolicy, IdentityError};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, IsCa,
    Issuer, KeyPair, SanType,
};

const CELL_DEVICE_OID: &str = "1.3.6.1.4.1.55555.1.1";
const SCADA_OID: &str = "1.3.6.1.4.1.55555.1.2";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(dn: &[(DnType, &str)]) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = name(dn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            params,
            key: KeyPair::generate().unwrap(),
        }
    }

    /// The CA's subject key identifier, as a leaf's AKI will carry it.
    fn key_id(&self) -> Vec<u8> {
        self.params.key_identifier(&self.key)
    }

    fn issue(&self, leaf: Leaf<'_>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = name(leaf.dn);
        params.subject_alt_names = leaf
            .san_uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .chain(
                leaf.san_dns
                    .iter()
                    .map(|d| SanType::DnsName((*d).try_into().unwrap())),
            )
            .collect();
        if !leaf.policies.is_empty() {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[2, 5, 29, 32],
                    certificate_policies(leaf.policies),
                ));
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .to_vec()
    }
}

#[derive(Default, Clone, Copy)]
struct Leaf<'a> {
    dn: &'a [(DnType, &'a str)],
    san_uris: &'a [&'a str],
    san_dns: &'a [&'a str],
    policies: &'a [&'a str],
}

fn name(dn: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (t, v) in dn {
        name.push(t.clone(), *v);
    }
    name
}

/// DER of a CertificatePolicies extension value holding `oids`.
fn certificate_policies(oids: &[&str]) -> Vec<u8> {
    let infos: Vec<u8> = oids
        .iter()
        .flat_map(|o| tlv(0x30, &tlv(0x06, &oid_body(o))))
        .collect();
    tlv(0x30, &infos)
}

fn oid_body(oid: &str) -> Vec<u8> {
    let arcs: Vec<u64> = oid.split('.').map(|a| a.parse().unwrap()).collect();
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        tmp.reverse();
        out.extend(tmp);
    };
    push(arcs[0] * 40 + arcs[1]);
    for &a in &arcs[2..] {
        push(a);
    }
    out
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "short form lengths only");
    let mut v = vec![tag, body.len() as u8];
    v.extend_from_slice(body);
    v
}

fn plant() -> CompiledPolicy {
    compile(include_str!("../examples/plant.toml"), "plant.toml").unwrap()
}

fn device_ca() -> Ca {
    Ca::new(&[
        (DnType::CommonName, "Plant1 Device CA"),
        (DnType::OrganizationName, "ACME Plant1"),
    ])
}

#[test]
fn attributes_are_extracted() {
    let ca = device_ca();
    let der = ca.issue(Leaf {
        dn: &[
            (DnType::CommonName, "press-01"),
            (DnType::OrganizationalUnitName, "cell-a"),
            (DnType::OrganizationName, "ACME Plant1"),
        ],
        san_uris: &["urn:dev:plant1:cell-a:press-01"],
        san_dns: &["press-01.cell-a.plant1.example"],
        policies: &[CELL_DEVICE_OID, "2.5.29.32.0"],
    });
    let a = CertAttributes::from_der(&der).unwrap();
    assert_eq!(a.common_names, ["press-01"]);
    assert_eq!(a.organizational_units, ["cell-a"]);
    assert_eq!(a.organizations, ["ACME Plant1"]);
    assert_eq!(a.san_uris, ["urn:dev:plant1:cell-a:press-01"]);
    assert_eq!(a.san_dns, ["press-01.cell-a.plant1.example"]);
    assert_eq!(a.policy_oids, [CELL_DEVICE_OID, "2.5.29.32.0"]);
    assert_eq!(
        a.issuer,
        [
            ("CN".to_owned(), "Plant1 Device CA".to_owned()),
            ("O".to_owned(), "ACME Plant1".to_owned())
        ]
    );
    assert_eq!(a.authority_key_id.as_deref(), Some(&ca.key_id()[..]));
    assert_eq!(a.not_before, 1_735_689_600); // 2025-01-01
    assert_eq!(a.not_after, 2_051_222_400); // 2035-01-01
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    assert_eq!(&a.sha256[..], digest.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(a.fingerprint_hex(), hex);
}

#[test]
fn identity_from_san_uri() {
    let policy = plant();
    let der = device_ca().issue(Leaf {
        dn: &[(DnType::CommonName, "whatever")],
        san_uris: &["https://vendor.example/", "urn:dev:plant1:cell-b:robot-07"],
        policies: &[CELL_DEVICE_OID],
        ..Leaf::default()
    });
    let cert = CertAttributes::from_der(&der).unwrap();
    let s = resolve(&policy, &cert, "cell-b.robot-07").unwrap();
    assert_eq!(
        policy.profiles()[s.profile().index() as usize].id(),
        "cell-device"
    );
    assert_eq!(s.zone_name(), "cell-b");
    assert_eq!(s.device(), "robot-07");
    assert_eq!(s.identity(), "cell-b.robot-07");
    assert_eq!(
        s.rights().publish().collect::<Vec<_>>(),
        [
            "plant1/cell-b/robot-07/telemetry/#",
            "plant1/cell-b/robot-07/alarm/#",
            "plant1/cell-b/robot-07/state"
        ]
    );
    assert_eq!(
        s.rights().subscribe().collect::<Vec<_>>(),
        ["plant1/cell-b/robot-07/cmd/#", "plant1/cell-b/broadcast/#"]
    );
    assert_eq!(s.rights().limits().max_qos(), 1);
}

#[test]
fn identity_from_cn_with_a_fixed_zone() {
    let policy = plant();
    let ot_ca = Ca::new(&[
        (DnType::OrganizationName, "ACME Plant1"),
        (DnType::CommonName, "Plant1 OT Systems CA"),
    ]);
    let der = ot_ca.issue(Leaf {
        dn: &[(DnType::CommonName, "scada-01")],
        policies: &[SCADA_OID],
        ..Leaf::default()
    });
    let s = resolve(
        &policy,
        &CertAttributes::from_der(&der).unwrap(),
        "scada-01",
    )
    .unwrap();
    assert_eq!((s.zone_name(), s.device()), ("scada", "scada-01"));
    assert_eq!(s.rights().publish().next(), Some("plant1/scada/scada-01/#"));
}

#[test]
fn identity_from_cn_and_ou() {
    let policy = plant();
    let ent_ca = Ca::new(&[
        (DnType::CommonName, "ACME Enterprise CA"),
        (DnType::OrganizationName, "ACME"),
    ]);
    let cert = |ou: &str| {
        CertAttributes::from_der(&ent_ca.issue(Leaf {
            dn: &[
                (DnType::CommonName, "mes"),
                (DnType::OrganizationalUnitName, ou),
            ],
            ..Leaf::default()
        }))
        .unwrap()
    };
    let s = resolve(&policy, &cert("enterprise"), "mes").unwrap();
    assert_eq!((s.zone_name(), s.device()), ("enterprise", "mes"));
    // The OU names a real zone, but not one this profile may place devices in.
    let err = resolve(&policy, &cert("scada"), "mes").unwrap_err();
    assert!(matches!(
        &err,
        IdentityError::Rejected { problem: IdentityProblem::ZoneNotAllowed(z), .. } if z == "scada"
    ));
    assert_eq!(
        err.to_string(),
        "profile \"enterprise-app\": zone \"scada\" is not among the profile's zones"
    );
    assert_eq!(err.decision().reason_code(), reason::NOT_AUTHORIZED);
}

#[test]
fn wrong_issuer_or_missing_policy_oid_matches_no_profile() {
    let policy = plant();
    let rogue = Ca::new(&[
        (DnType::CommonName, "Plant1 Device CA"),
        (DnType::OrganizationName, "Evil Corp"),
    ]);
    let leaf = Leaf {
        dn: &[(DnType::CommonName, "press-01")],
        san_uris: &["urn:dev:plant1:cell-a:press-01"],
        policies: &[CELL_DEVICE_OID],
        ..Leaf::default()
    };
    let cert = CertAttributes::from_der(&rogue.issue(leaf)).unwrap();
    let err = resolve(&policy, &cert, "cell-a.press-01").unwrap_err();
    assert_eq!(err, IdentityError::NoProfile);
    let d = err.decision();
    assert!(!d.is_allowed());
    assert_eq!(d.reason_code(), reason::NOT_AUTHORIZED);
    assert_eq!(
        policy.describe(d.rule()).to_string(),
        "default deny: no profile matches the certificate"
    );

    let cert = CertAttributes::from_der(&device_ca().issue(Leaf {
        policies: &[],
        ..leaf
    }))
    .unwrap();
    assert_eq!(
        resolve(&policy, &cert, "cell-a.press-01").unwrap_err(),
        IdentityError::NoProfile
    );
}

#[test]
fn san_uri_problems_are_refused() {
    let policy = plant();
    let ca = device_ca();
    let problem = |uris: &[&str]| {
        let cert = CertAttributes::from_der(&ca.issue(Leaf {
            dn: &[(DnType::CommonName, "x")],
            san_uris: uris,
            policies: &[CELL_DEVICE_OID],
            ..Leaf::default()
        }))
        .unwrap();
        match resolve(&policy, &cert, "id") {
            Err(IdentityError::Rejected { problem, .. }) => problem,
            other => panic!("{uris:?}: {other:?}"),
        }
    };
    assert_eq!(problem(&[]), IdentityProblem::Missing("SAN URI"));
    assert_eq!(
        problem(&["urn:dev:plant2:cell-a:press-01"]),
        IdentityProblem::NoPatternMatch {
            field: "SAN URI",
            pattern: "urn:dev:plant1:{zone}:{device}".into()
        }
    );
    assert_eq!(
        problem(&[
            "urn:dev:plant1:cell-a:press-01",
            "urn:dev:plant1:cell-a:press-02"
        ]),
        IdentityProblem::Ambiguous("SAN URI")
    );
    assert_eq!(
        problem(&["urn:dev:plant1:cell-c:press-01"]),
        IdentityProblem::UnknownZone("cell-c".into())
    );
    assert_eq!(
        problem(&["urn:dev:plant1:scada:press-01"]),
        IdentityProblem::ZoneNotAllowed("scada".into())
    );
    // A device name that would widen its own topic rights.
    assert_eq!(
        problem(&["urn:dev:plant1:cell-a:#"]),
        IdentityProblem::UnsafeValue {
            field: "device",
            value: "#".into()
        }
    );
    assert_eq!(
        problem(&["urn:dev:plant1:cell-a:a/b"]),
        IdentityProblem::UnsafeValue {
            field: "device",
            value: "a/b".into()
        }
    );
}

#[test]
fn key_id_fingerprint_and_san_dns() {
    let ca = Ca::new(&[(DnType::CommonName, "Line CA")]);
    let key_id: String = ca.key_id().iter().map(|b| format!("{b:02X}:")).collect();
    let der = ca.issue(Leaf {
        dn: &[(DnType::CommonName, "gw")],
        san_dns: &["gw-1.line-3.plant1.example"],
        ..Leaf::default()
    });
    let cert = CertAttributes::from_der(&der).unwrap();
    let fp = cert.fingerprint_hex();
    let src = format!(
        r#"version = 1
[[ca]]
id = "line-ca"
key_id = "{}"
[[zone]]
id = "line-3"
security_level = 2
trusted_cas = ["line-ca"]
namespace = ["plant1/line-3/#"]
[[profile]]
id = "pinned"
fingerprints = ["{fp}"]
device = "fingerprint"
zone = {{ fixed = "line-3" }}
publish = ["plant1/line-3/pinned/${{device}}/#"]
[[profile]]
id = "gateway"
issuers = ["line-ca"]
device = "san_dns"
zone = "san_dns"
san_dns = "{{device}}.{{zone}}.plant1.example"
publish = ["plant1/${{zone}}/${{device}}/#"]
"#,
        key_id.trim_end_matches(':')
    );
    let policy = compile(&src, "p.toml").unwrap_or_else(|d| panic!("{d:?}"));
    // The pinned profile comes first and matches by fingerprint.
    let s = resolve(&policy, &cert, &fp).unwrap();
    assert_eq!(s.device(), fp);
    assert_eq!(s.zone_name(), "line-3");

    // Another certificate of the same CA falls through to the gateway profile.
    let other = CertAttributes::from_der(&ca.issue(Leaf {
        dn: &[(DnType::CommonName, "gw")],
        san_dns: &["gw-2.line-3.plant1.example"],
        ..Leaf::default()
    }))
    .unwrap();
    let s = resolve(&policy, &other, "gw-2").unwrap();
    assert_eq!((s.zone_name(), s.device()), ("line-3", "gw-2"));
    assert_eq!(s.rights().publish().next(), Some("plant1/line-3/gw-2/#"));

    // Same subject DN, different key: the key id does not match.
    let impostor = Ca::new(&[(DnType::CommonName, "Line CA")]);
    let forged = CertAttributes::from_der(&impostor.issue(Leaf {
        dn: &[(DnType::CommonName, "gw")],
        san_dns: &["gw-2.line-3.plant1.example"],
        ..Leaf::default()
    }))
    .unwrap();
    assert_eq!(
        resolve(&policy, &forged, "gw-2").unwrap_err(),
        IdentityError::NoProfile
    );
}

#[test]
fn unreadable_and_malformed_certificates() {
    let ca = device_ca();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        DnValue::BmpString("press-01".try_into().unwrap()),
    );
    let der = params
        .signed_by(
            &KeyPair::generate().unwrap(),
            &Issuer::from_params(&ca.params, &ca.key),
        )
        .unwrap()
        .der()
        .to_vec();
    assert_eq!(
        CertAttributes::from_der(&der),
        Err(CertError::UnreadableAttribute("CN"))
    );

    let good = ca.issue(Leaf {
        dn: &[(DnType::CommonName, "x")],
        ..Leaf::default()
    });
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        CertAttributes::from_der(&trailing),
        Err(CertError::TrailingData(1))
    );
    // Truncations and bit flips never panic.
    for cut in (0..good.len()).step_by(7) {
        let _ = CertAttributes::from_der(&good[..cut]);
    }
    for i in 0..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0x55;
        let _ = CertAttributes::from_der(&flipped);
    }
}

#[test]
fn zone_from_policy_oid() {
    let policy = compile(
        r#"version = 1
[[ca]]
id = "ca"
subject = "CN=CA"
[[zone]]
id = "cell-a"
security_level = 2
trusted_cas = ["ca"]
namespace = ["p/cell-a/#"]
[[zone]]
id = "scada"
security_level = 3
trusted_cas = ["ca"]
namespace = ["p/scada/#"]
[[profile]]
id = "by-oid"
device = "o"
zone = { policy_oid = { "1.2.3.4" = "cell-a", "1.2.3.5" = "scada" } }
publish = ["p/${zone}/${device}/#"]
"#,
        "p.toml",
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let cert = |oids: &[&str]| {
        let mut c = CertAttributes::default();
        c.issuer = vec![("CN".into(), "CA".into())];
        c.organizations = vec!["robot".into()];
        c.policy_oids = oids.iter().map(|o| (*o).to_owned()).collect();
        c.not_after = i64::MAX;
        c
    };
    let s = resolve(&policy, &cert(&["2.5.29.32.0", "1.2.3.5"]), "robot").unwrap();
    assert_eq!((s.zone_name(), s.device()), ("scada", "robot"));
    let problem = |oids: &[&str]| match resolve(&policy, &cert(oids), "robot") {
        Err(IdentityError::Rejected { problem, .. }) => problem,
        other => panic!("{other:?}"),
    };
    assert_eq!(problem(&[]), IdentityProblem::Missing("zone policy OID"));
    assert_eq!(
        problem(&["1.2.3.4", "1.2.3.5"]),
        IdentityProblem::Ambiguous("zone policy OID")
    );
}

#[test]
fn zone_rule_tables_refuse_extra_keys() {
    let err = compile(
        r#"version = 1
[[profile]]
id = "x"
device = "cn"
zone = { fixed = "scada", also = "dmz" }
"#,
        "p.toml",
    )
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].location().0, 5);
}
