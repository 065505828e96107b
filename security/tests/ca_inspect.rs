//! Certificates issued by the plant CA as the example policy
//! (examples/plant.toml) sees them: issuing for a profile, the checks made
//! before anything is recorded, and `inspect`.

mod ca_common;

use std::time::SystemTime;

use ca_common::{device_ca, pem_der, plant};
use converge_security::ca::{
    inspect, Ca, CaError, InitOptions, IssueRequest, RevocationReason, Status,
};
use converge_security::certs::IdentityProblem;
use converge_security::policy::Transport;
use converge_security::IdentityError;

const CELL_DEVICE_OID: &str = "1.3.6.1.4.1.55555.1.1";

fn ca_named(dir: &std::path::Path, name: &str, org: &str) -> Ca {
    Ca::init(
        &dir.join("ca"),
        &InitOptions {
            name: name.to_owned(),
            organization: Some(org.to_owned()),
            ..InitOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_device_issued_for_its_profile_gets_its_identity_and_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let policy = plant();
    let issued = ca
        .issue_for_policy(
            IssueRequest {
                profile: Some("cell-device".into()),
                ..IssueRequest::new("press-01", "cell-a")
            },
            &policy,
        )
        .unwrap();
    assert_eq!(issued.entry.profile.as_deref(), Some("cell-device"));
    let attrs = converge_security::CertAttributes::from_der(&pem_der(&issued.cert_pem)).unwrap();
    assert_eq!(attrs.policy_oids, [CELL_DEVICE_OID]);
    assert_eq!(attrs.san_uris, ["urn:dev:plant1:cell-a:press-01"]);

    let now = SystemTime::now();
    let found = ca
        .inspect(issued.cert_pem.as_bytes(), &policy, now)
        .unwrap();
    assert_eq!(found.validity, Status::Valid);
    assert_eq!(found.index_status, Some(Status::Valid));
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    let g = found.grant.as_ref().unwrap();
    assert_eq!(g.profile, "cell-device");
    assert_eq!(g.identity, "cell-a.press-01");
    assert_eq!(g.client_id.as_deref(), Some("cell-a.press-01"));
    assert_eq!((g.device.as_str(), g.zone.as_str()), ("press-01", "cell-a"));
    assert_eq!(g.security_level, 2);
    assert_eq!(
        g.publish,
        [
            "plant1/cell-a/press-01/telemetry/#",
            "plant1/cell-a/press-01/alarm/#",
            "plant1/cell-a/press-01/state"
        ]
    );
    assert_eq!(
        g.subscribe,
        ["plant1/cell-a/press-01/cmd/#", "plant1/cell-a/broadcast/#"]
    );
    assert_eq!(g.limits.max_qos(), 1);
    assert!(g.limits.retain());
    assert_eq!(g.limits.max_payload(), 16384);
    assert_eq!(g.transports, [Transport::Tls, Transport::Quic]);
    assert_eq!(g.conduits_out, ["cell-a-to-scada", "cell-a-to-dmz"]);
    assert_eq!(g.conduits_in, ["scada-to-cell-a"]);

    let text = found.to_string();
    println!("{text}");
    for line in [
        "  subject       CN=press-01, OU=cell-a, O=ACME Plant1",
        "  issuer        CN=Plant1 Device CA, O=ACME Plant1",
        "  SAN URI       urn:dev:plant1:cell-a:press-01",
        "  CA index      valid",
        "  profile       cell-device",
        "  identity      cell-a.press-01",
        "  client id     must be \"cell-a.press-01\"",
        "  zone          cell-a (security level 2)",
        "  publish       plant1/cell-a/press-01/telemetry/#",
        "                plant1/cell-a/press-01/alarm/#",
        "  transports    tls, quic",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    // Revocation shows in the index status.
    ca.revoke(&issued.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let found = ca
        .inspect(issued.cert_pem.as_bytes(), &policy, now)
        .unwrap();
    assert_eq!(
        found.index_status,
        Some(Status::Revoked(RevocationReason::KeyCompromise))
    );
}

#[test]
fn the_default_encoding_with_the_oid_is_recognised_too() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca
        .issue(IssueRequest {
            policy_oids: vec![CELL_DEVICE_OID.into()],
            ..IssueRequest::new("robot-07", "cell-b")
        })
        .unwrap();
    // DER input works as well as PEM.
    let found = inspect(&pem_der(&issued.cert_pem), &plant(), SystemTime::now()).unwrap();
    let g = found.grant.unwrap();
    assert_eq!(
        (g.identity.as_str(), g.zone.as_str()),
        ("cell-b.robot-07", "cell-b")
    );
    assert_eq!(found.index_status, None, "the free function knows no index");
}

#[test]
fn inspect_says_why_a_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let policy = plant();
    let now = SystemTime::now();

    // No policy OID: no profile applies.
    let plain = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let found = inspect(plain.cert_pem.as_bytes(), &policy, now).unwrap();
    assert!(matches!(found.grant, Err(IdentityError::NoProfile)));
    assert!(found
        .to_string()
        .contains("  refused       no profile matches the certificate"));

    // A zone the policy does not know.
    let lost = ca
        .issue(IssueRequest {
            policy_oids: vec![CELL_DEVICE_OID.into()],
            ..IssueRequest::new("press-09", "cell-z")
        })
        .unwrap();
    let found = inspect(lost.cert_pem.as_bytes(), &policy, now).unwrap();
    match &found.grant {
        Err(IdentityError::Rejected { name, problem, .. }) => {
            assert_eq!(name, "cell-device");
            assert_eq!(problem, &IdentityProblem::UnknownZone("cell-z".into()));
        }
        other => panic!("{other:?}"),
    }
    let text = found.to_string();
    assert!(
        text.contains(
            "refused       profile \"cell-device\": zone \"cell-z\" is not in the policy"
        ),
        "{text}"
    );

    // The CA certificate itself: refused, with a warning.
    let found = inspect(ca.cert_pem().as_bytes(), &policy, now).unwrap();
    assert!(found.warnings.iter().any(|w| w.contains("CA certificate")));

    for garbage in [
        &b"junk"[..],
        b"",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        assert!(inspect(garbage, &policy, now).is_err());
    }
}

#[test]
fn issuing_for_a_profile_checks_before_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let policy = plant();
    let for_profile = |device: &str, zone: &str, profile: &str| {
        ca.issue_for_policy(
            IssueRequest {
                profile: Some(profile.into()),
                ..IssueRequest::new(device, zone)
            },
            &policy,
        )
    };
    let err = for_profile("press-01", "scada", "cell-device").unwrap_err();
    assert!(
        matches!(&err, CaError::ProfileCannotEncode { why, .. } if why.contains("not among its zones (cell-a, cell-b)")),
        "{err}"
    );
    let err = for_profile("press-01", "cell-z", "cell-device").unwrap_err();
    assert!(
        matches!(&err, CaError::ProfileCannotEncode { why, .. } if why.contains("not in the policy")),
        "{err}"
    );
    let err = for_profile("press-01", "cell-a", "no-such").unwrap_err();
    assert!(matches!(err, CaError::UnknownProfile(_)), "{err}");

    // The profile exists, but this CA is not among its issuers (the
    // historian profile trusts the OT systems CA).
    let err = for_profile("hist-01", "dmz", "historian").unwrap_err();
    assert!(
        matches!(
            err,
            CaError::PolicyRefuses { .. } | CaError::PolicyMismatch { .. }
        ),
        "{err}"
    );

    // Without a profile and without the OID nothing matches; the error hints why.
    let err = ca
        .issue_for_policy(IssueRequest::new("press-01", "cell-a"), &policy)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            CaError::PolicyRefuses {
                error: IdentityError::NoProfile,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("CN=Plant1 Device CA, O=ACME Plant1"),
        "{err}"
    );

    assert_eq!(ca.list().unwrap(), [], "nothing was recorded");

    // Without a profile but with the OID, the resolved profile is recorded.
    let issued = ca
        .issue_for_policy(
            IssueRequest {
                policy_oids: vec![CELL_DEVICE_OID.into()],
                ..IssueRequest::new("press-01", "cell-a")
            },
            &policy,
        )
        .unwrap();
    assert_eq!(issued.entry.profile.as_deref(), Some("cell-device"));
}

#[test]
fn a_ca_the_policy_does_not_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_named(tmp.path(), "Rogue CA", "ACME Plant1");
    let err = ca
        .issue_for_policy(
            IssueRequest {
                profile: Some("cell-device".into()),
                ..IssueRequest::new("press-01", "cell-a")
            },
            &plant(),
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            CaError::PolicyRefuses {
                error: IdentityError::NoProfile,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(ca.list().unwrap(), []);
}

#[test]
fn cn_and_fixed_zone_profiles() {
    let policy = plant();

    // scada-server: device from the CN, zone fixed to scada.
    let tmp = tempfile::tempdir().unwrap();
    let ot = ca_named(tmp.path(), "Plant1 OT Systems CA", "ACME Plant1");
    let issued = ot
        .issue_for_policy(
            IssueRequest {
                profile: Some("scada-server".into()),
                ..IssueRequest::new("scada-01", "scada")
            },
            &policy,
        )
        .unwrap();
    let g = inspect(issued.cert_pem.as_bytes(), &policy, SystemTime::now())
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(
        (g.identity.as_str(), g.zone.as_str()),
        ("scada-01", "scada")
    );
    assert_eq!(g.limits.max_qos(), 2);
    let err = ot
        .issue_for_policy(
            IssueRequest {
                profile: Some("scada-server".into()),
                ..IssueRequest::new("scada-01", "cell-a")
            },
            &policy,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CaError::ProfileCannotEncode { why, .. } if why.contains("every device in zone \"scada\"")),
        "{err}"
    );

    // enterprise-app: device from the CN, zone from the OU.
    let tmp = tempfile::tempdir().unwrap();
    let ent = ca_named(tmp.path(), "ACME Enterprise CA", "ACME");
    let issued = ent
        .issue_for_policy(
            IssueRequest {
                profile: Some("enterprise-app".into()),
                ..IssueRequest::new("mes", "enterprise")
            },
            &policy,
        )
        .unwrap();
    let g = inspect(issued.cert_pem.as_bytes(), &policy, SystemTime::now())
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(g.identity, "mes");
    assert_eq!(g.transports, [Transport::Tls, Transport::Wss]);
    assert_eq!(
        g.subscribe,
        ["plant1/dmz/+/reports/#", "acme/enterprise/mes/#"]
    );
}

#[test]
fn names_that_do_not_read_back_through_the_pattern_are_refused() {
    // A dotted device name cannot be encoded under `{device}.{zone}.…`.
    let src = include_str!("../examples/plant.toml")
        .replace(
            "san_uri = \"urn:dev:plant1:{zone}:{device}\"",
            "san_dns = \"{device}.{zone}.plant1.example\"",
        )
        .replace(
            "device = \"san_uri\"\nzone = \"san_uri\"",
            "device = \"san_dns\"\nzone = \"san_dns\"",
        );
    let policy = converge_security::compile(&src, "dns.toml").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let req = |device: &str| IssueRequest {
        profile: Some("cell-device".into()),
        ..IssueRequest::new(device, "cell-a")
    };
    let issued = ca.issue_for_policy(req("press-01"), &policy).unwrap();
    let attrs = converge_security::CertAttributes::from_der(&pem_der(&issued.cert_pem)).unwrap();
    assert_eq!(attrs.san_dns, ["press-01.cell-a.plant1.example"]);
    let err = ca.issue_for_policy(req("press.01"), &policy).unwrap_err();
    assert!(
        matches!(&err, CaError::ProfileCannotEncode { why, .. } if why.contains("does not read back")),
        "{err}"
    );
}
