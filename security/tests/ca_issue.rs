//! The plant CA: init (files, modes, no overwrite), issuing (chain,
//! extensions, SANs, key file modes), CSR signing and refused requests.

mod ca_common;

use std::time::{Duration, SystemTime};

use ca_common::{device_ca, device_ca_options, mode, pem, pem_der};
use converge_security::ca::{
    Ca, CaError, InitOptions, IssueRequest, CERT_FILE, CRL_FILE, INDEX_FILE, KEY_FILE, LOCK_FILE,
    MAX_DAYS,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn init_creates_private_files_and_an_empty_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let dir = tmp.path().join("ca");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    for f in [CERT_FILE, CRL_FILE, INDEX_FILE] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert!(!dir.join(LOCK_FILE).exists(), "the lock is released");
    assert_eq!(ca.subject(), "CN=Plant1 Device CA, O=ACME Plant1");
    assert_eq!(ca.list().unwrap(), []);

    let der = pem_der(ca.cert_pem());
    let cert = parse(&der);
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(ca.key_id_hex().len(), 40);

    let crl_pem = std::fs::read_to_string(dir.join(CRL_FILE)).unwrap();
    let crl_der = pem_der(&crl_pem);
    let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    assert_eq!(crl.crl_number().unwrap().to_string(), "1");
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    crl.verify_signature(cert.public_key()).unwrap();

    let reopened = Ca::open(&dir).unwrap();
    assert_eq!(reopened.cert_pem(), ca.cert_pem());
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = device_ca(tmp.path());
    let err = Ca::init(&dir, &device_ca_options()).unwrap_err();
    assert!(matches!(err, CaError::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(Ca::open(&dir).unwrap().cert_pem(), first.cert_pem());

    let forced = Ca::init(
        &dir,
        &InitOptions {
            force: true,
            ..device_ca_options()
        },
    )
    .unwrap();
    assert_ne!(forced.cert_pem(), first.cert_pem());
    let old = std::fs::read_to_string(dir.join("ca.pem.old")).unwrap();
    assert_eq!(old, first.cert_pem());
    assert_eq!(mode(&dir.join("ca.key.old")), 0o600);
}

#[test]
fn open_refuses_a_missing_ca_and_an_exposed_key() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let err = Ca::open(tmp.path()).unwrap_err();
    assert!(matches!(err, CaError::NotFound(_)), "{err}");

    device_ca(tmp.path());
    let key = tmp.path().join("ca").join(KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Ca::open(&tmp.path().join("ca")).unwrap_err();
    assert!(
        matches!(err, CaError::KeyExposed { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn a_held_lock_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    std::fs::write(tmp.path().join("ca").join(LOCK_FILE), "12345\n").unwrap();
    let err = ca
        .issue(IssueRequest::new("press-01", "cell-a"))
        .unwrap_err();
    assert!(matches!(err, CaError::Locked(_)), "{err}");
}

#[test]
fn issued_certificate_chains_to_the_ca_as_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca
        .issue(IssueRequest {
            san_uris: vec![
                "urn:dev:plant1:cell-a:press-01".into(),
                "urn:asset:4711".into(),
            ],
            san_dns: vec!["press-01.cell-a.plant1.example".into()],
            ..IssueRequest::new("press-01", "cell-a")
        })
        .unwrap();
    let ca_der = pem_der(ca.cert_pem());
    let ca_cert = parse(&ca_der);
    let der = pem_der(&issued.cert_pem);
    let cert = parse(&der);

    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(
        cert.subject().to_string(),
        "CN=press-01, OU=cell-a, O=ACME Plant1"
    );
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski(&ca_cert));
    assert!(!ski(&cert).is_empty());
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::DNSName(d) => format!("dns:{d}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            "uri:urn:dev:plant1:cell-a:press-01",
            "uri:urn:asset:4711",
            "dns:press-01.cell-a.plant1.example"
        ]
    );
    // Validity: backdated an hour, 365 days by default.
    let v = cert.validity();
    let lifetime = v.not_after.timestamp() - v.not_before.timestamp();
    assert_eq!(lifetime, 365 * 86_400 + 3600);

    // Serial: 16 random bytes, as the index records it.
    assert_eq!(issued.serial.len(), 32);
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(issued.serial, hex);
    assert_eq!(ca.list().unwrap(), std::slice::from_ref(&issued.entry));

    // The key is the certificate's.
    let key = KeyPair::from_pem(issued.key_pem.as_deref().unwrap()).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
}

#[test]
fn the_default_urn_is_added_when_no_uri_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca.issue(IssueRequest::new("robot-07", "cell-b")).unwrap();
    let der = pem_der(&issued.cert_pem);
    let attrs = converge_security::CertAttributes::from_der(&der).unwrap();
    assert_eq!(attrs.san_uris, ["urn:dev:plant1:cell-b:robot-07"]);
    assert_eq!(attrs.common_names, ["robot-07"]);
    assert_eq!(attrs.organizational_units, ["cell-b"]);
}

#[test]
fn files_are_written_with_a_private_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let out = tmp.path().join("out");
    let files = issued.write_files(&out, false).unwrap();
    assert_eq!(files.cert, out.join("press-01.pem"));
    let key = files.key.clone().unwrap();
    assert_eq!(key, out.join("press-01.key"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(
        std::fs::read_to_string(&files.cert).unwrap(),
        issued.cert_pem
    );

    let err = issued.write_files(&out, false).unwrap_err();
    assert!(matches!(err, CaError::FileExists(_)), "{err}");
    let renewed = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    renewed.write_files(&out, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&files.cert).unwrap(),
        renewed.cert_pem
    );
    assert_eq!(mode(&key), 0o600);
}

/// A CSR asking for another name, a CA certificate and extra SANs.
fn greedy_csr(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "root-of-everything");
    params.subject_alt_names.push(SanType::URI(
        "urn:dev:plant1:cell-a:press-01".try_into().unwrap(),
    ));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.serialize_request(key).unwrap().pem().unwrap()
}

#[test]
fn a_csr_contributes_its_public_key_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let device_key = KeyPair::generate().unwrap();
    let issued = ca
        .issue(IssueRequest {
            csr_pem: Some(greedy_csr(&device_key)),
            ..IssueRequest::new("press-02", "cell-a")
        })
        .unwrap();
    assert!(issued.key_pem.is_none());
    assert!(issued.entry.from_csr);
    let der = pem_der(&issued.cert_pem);
    let cert = parse(&der);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        device_key.public_key_raw()
    );
    assert_eq!(
        cert.subject().to_string(),
        "CN=press-02, OU=cell-a, O=ACME Plant1"
    );
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    let attrs = converge_security::CertAttributes::from_der(&der).unwrap();
    assert_eq!(attrs.san_uris, ["urn:dev:plant1:cell-a:press-02"]);
    assert!(attrs.san_dns.is_empty());

    // No key file is written for a CSR.
    let files = issued.write_files(&tmp.path().join("out"), false).unwrap();
    assert_eq!(files.key, None);

    // Opting in copies the CSR's SANs (and then no default URN is added).
    let issued = ca
        .issue(IssueRequest {
            csr_pem: Some(greedy_csr(&device_key)),
            csr_sans: true,
            ..IssueRequest::new("press-02", "cell-a")
        })
        .unwrap();
    let attrs = converge_security::CertAttributes::from_der(&pem_der(&issued.cert_pem)).unwrap();
    assert_eq!(attrs.san_uris, ["urn:dev:plant1:cell-a:press-01"]);
    assert_eq!(attrs.san_dns, ["evil.example"]);
}

#[test]
fn a_csr_with_a_bad_signature_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "press-03");
    let csr = params.serialize_request(&key).unwrap();
    let mut der = csr.der().to_vec();
    // Alter the signed content (the CN's last letter): the structure stays
    // valid, the signature no longer matches.
    let at = der.windows(8).position(|w| w == b"press-03").unwrap() + 7;
    der[at] = b'4';
    let err = ca
        .issue(IssueRequest {
            csr_pem: Some(pem("CERTIFICATE REQUEST", &der)),
            ..IssueRequest::new("press-03", "cell-a")
        })
        .unwrap_err();
    assert!(matches!(err, CaError::BadCsr(_)), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");

    for garbage in [
        "",
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = ca
            .issue(IssueRequest {
                csr_pem: Some(garbage.to_owned()),
                ..IssueRequest::new("press-03", "cell-a")
            })
            .unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)), "{garbage:?}: {err}");
    }
    let err = ca
        .issue(IssueRequest {
            csr_pem: Some("A".repeat(100_000)),
            ..IssueRequest::new("press-03", "cell-a")
        })
        .unwrap_err();
    assert!(matches!(err, CaError::BadCsr(_)), "{err}");
    assert_eq!(ca.list().unwrap(), []);
}

#[test]
fn names_that_would_break_a_subject_or_a_file_name_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    for device in [
        "", "a/b", "../etc", "..", "a\nb", "a\0b", "a,OU=x", ".key", "#", "press 01",
    ] {
        let err = ca.issue(IssueRequest::new(device, "cell-a")).unwrap_err();
        assert!(
            matches!(err, CaError::BadName { kind: "device", .. }),
            "{device:?}: {err}"
        );
    }
    for zone in ["", "cell/a", "cell+a", "\u{7f}"] {
        let err = ca.issue(IssueRequest::new("press-01", zone)).unwrap_err();
        assert!(
            matches!(err, CaError::BadName { kind: "zone", .. }),
            "{zone:?}: {err}"
        );
    }
    let err = ca
        .issue(IssueRequest {
            san_uris: vec!["urn:with space".into()],
            ..IssueRequest::new("press-01", "cell-a")
        })
        .unwrap_err();
    assert!(matches!(err, CaError::BadValue { .. }), "{err}");
    let err = ca
        .issue(IssueRequest {
            policy_oids: vec!["not.an.oid".into()],
            ..IssueRequest::new("press-01", "cell-a")
        })
        .unwrap_err();
    assert!(matches!(err, CaError::BadValue { .. }), "{err}");
    assert_eq!(ca.list().unwrap(), []);
}

#[test]
fn lifetimes_are_bounded_by_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::init(
        &tmp.path().join("ca"),
        &InitOptions {
            days: 30,
            ..device_ca_options()
        },
    )
    .unwrap();
    for days in [0, MAX_DAYS + 1] {
        let err = ca
            .issue(IssueRequest {
                days,
                ..IssueRequest::new("press-01", "cell-a")
            })
            .unwrap_err();
        assert!(matches!(err, CaError::DaysOutOfRange { .. }), "{err}");
    }
    let err = ca
        .issue(IssueRequest {
            days: 31,
            ..IssueRequest::new("press-01", "cell-a")
        })
        .unwrap_err();
    assert!(matches!(err, CaError::OutlivesCa(_)), "{err}");
    ca.issue(IssueRequest {
        days: 29,
        ..IssueRequest::new("press-01", "cell-a")
    })
    .unwrap();
}

#[test]
fn serials_are_unique_and_the_index_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let now = SystemTime::now();
    let serials: Vec<String> = (0..20)
        .map(|i| {
            ca.issue_at(
                IssueRequest::new(format!("dev-{i}"), "cell-a"),
                now + Duration::from_secs(i),
            )
            .unwrap()
            .serial
        })
        .collect();
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), serials.len());
    let listed: Vec<String> = Ca::open(&tmp.path().join("ca"))
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(listed, serials);
}

#[test]
fn ed25519_and_p384_cas_work() {
    use converge_security::ca::KeyAlgorithm;
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP384] {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::init(
            &tmp.path().join("ca"),
            &InitOptions {
                key_algorithm: alg,
                ..device_ca_options()
            },
        )
        .unwrap();
        let issued = ca
            .issue(IssueRequest {
                key_algorithm: alg,
                ..IssueRequest::new("press-01", "cell-a")
            })
            .unwrap();
        let ca_der = pem_der(ca.cert_pem());
        let der = pem_der(&issued.cert_pem);
        parse(&der)
            .verify_signature(Some(parse(&ca_der).public_key()))
            .unwrap();
    }
}

#[test]
fn the_key_leaves_only_by_explicit_export() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let dest = tmp.path().join("backup.key");
    ca.export_key(&dest).unwrap();
    assert_eq!(mode(&dest), 0o600);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(tmp.path().join("ca").join(KEY_FILE)).unwrap()
    );
    let err = ca.export_key(&dest).unwrap_err();
    assert!(matches!(err, CaError::FileExists(_)), "{err}");
}

#[test]
fn a_ca_made_elsewhere_can_be_adopted() {
    // Only ca.key and ca.pem, as the broker's development PKI writes them.
    let tmp = tempfile::tempdir().unwrap();
    device_ca(tmp.path());
    let dir = tmp.path().join("adopted");
    std::fs::create_dir(&dir).unwrap();
    for f in [KEY_FILE, CERT_FILE] {
        std::fs::copy(tmp.path().join("ca").join(f), dir.join(f)).unwrap();
    }
    let ca = Ca::open(&dir).unwrap();
    let issued = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    assert_eq!(ca.list().unwrap(), std::slice::from_ref(&issued.entry));
    assert_eq!(
        ca.revoke(
            &issued.serial,
            converge_security::ca::RevocationReason::Superseded
        )
        .unwrap()
        .crl_number,
        1
    );
}
