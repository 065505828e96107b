//! Revocation: index status, the CRL's content and numbering, and the CRL
//! as rustls's client verifier (webpki) uses it on every handshake. Also
//! `list` and its table, with statuses computed at a given time.

mod ca_common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ca_common::{device_ca, pem_der};
use converge_security::ca::{
    format_table, Ca, CaError, IssueRequest, RevocationReason, Status, CRL_FILE,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};

const DAY: Duration = Duration::from_secs(86_400);

fn crl_der(ca: &Ca) -> Vec<u8> {
    pem_der(&std::fs::read_to_string(ca.crl_path()).unwrap())
}

/// The verifier the TLS server builds: the CA as root, the CRL, and
/// nextUpdate enforced.
fn verifier(ca: &Ca) -> Arc<dyn ClientCertVerifier> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pem_der(ca.cert_pem())))
        .unwrap();
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .with_crls([CertificateRevocationListDer::from(crl_der(ca))])
    .enforce_revocation_expiration()
    .build()
    .unwrap()
}

fn verify(ca: &Ca, cert_pem: &str) -> Result<(), rustls::Error> {
    let now = UnixTime::since_unix_epoch(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    verifier(ca)
        .verify_client_cert(&CertificateDer::from(pem_der(cert_pem)), &[], now)
        .map(|_| ())
}

#[test]
fn revocation_updates_the_index_and_the_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let keep = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let gone = ca.issue(IssueRequest::new("press-02", "cell-a")).unwrap();
    let now = SystemTime::now();

    let revoked = ca
        .revoke_at(&gone.serial, RevocationReason::KeyCompromise, now)
        .unwrap();
    assert_eq!(revoked.crl_number, 2, "init wrote CRL 1");
    assert_eq!(
        revoked.entry.status(now),
        Status::Revoked(RevocationReason::KeyCompromise)
    );
    let entries = ca.list().unwrap();
    assert_eq!(entries[0].status(now), Status::Valid);
    assert_eq!(entries[1], revoked.entry);

    let ca_der = pem_der(ca.cert_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let der = crl_der(&ca);
    let (rest, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert!(rest.is_empty());
    crl.verify_signature(ca_cert.public_key()).unwrap();
    assert_eq!(crl.version(), Some(x509_parser::x509::X509Version::V2));
    assert_eq!(crl.issuer(), ca_cert.subject());
    assert_eq!(crl.crl_number().unwrap().to_string(), "2");
    let listed: Vec<(String, Option<u8>)> = crl
        .iter_revoked_certificates()
        .map(|r| {
            let serial: String = r.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
            (serial, r.reason_code().map(|(_, c)| c.0))
        })
        .collect();
    assert_eq!(listed, [(gone.serial.clone(), Some(1))]);
    let lifetime = crl.next_update().unwrap().timestamp() - crl.last_update().timestamp();
    assert_eq!(lifetime, 7 * 86_400);
    let aki = crl
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    let aki_hex: String = aki.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(aki_hex, ca.key_id_hex());

    // Renewal keeps the entries and moves the number on.
    assert_eq!(ca.renew_crl().unwrap(), 3);
    let der = crl_der(&ca);
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert_eq!(crl.crl_number().unwrap().to_string(), "3");
    assert_eq!(crl.iter_revoked_certificates().count(), 1);
    let _ = keep;
}

#[test]
fn webpki_refuses_the_revoked_certificate_and_accepts_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let keep = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let gone = ca.issue(IssueRequest::new("press-02", "cell-a")).unwrap();

    // The empty CRL from init is accepted as is.
    verify(&ca, &keep.cert_pem).unwrap();
    verify(&ca, &gone.cert_pem).unwrap();

    ca.revoke(&gone.serial, RevocationReason::CessationOfOperation)
        .unwrap();
    verify(&ca, &keep.cert_pem).unwrap();
    assert_eq!(
        verify(&ca, &gone.cert_pem),
        Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    );
}

#[test]
fn revoking_twice_or_an_unknown_serial_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();

    let err = ca
        .revoke("0123456789abcdef", RevocationReason::Superseded)
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownSerial(_)), "{err}");
    let err = ca
        .revoke("not hex", RevocationReason::Superseded)
        .unwrap_err();
    assert!(matches!(err, CaError::BadValue { .. }), "{err}");

    // Serials as other tools print them: upper case with colons.
    let colons = issued
        .serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let r = ca.revoke(&colons, RevocationReason::Superseded).unwrap();
    assert_eq!(r.entry.serial, issued.serial);

    let before = std::fs::read(ca.crl_path()).unwrap();
    let err = ca
        .revoke(&issued.serial, RevocationReason::KeyCompromise)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CaError::AlreadyRevoked {
                reason: RevocationReason::Superseded,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(ca.crl_path()).unwrap(), before);

    assert!(matches!(
        "removeFromCRL".parse::<RevocationReason>(),
        Err(CaError::UnknownReason(_))
    ));
}

#[test]
fn unspecified_is_listed_without_a_reason_code() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    ca.revoke(&issued.serial, "unspecified".parse().unwrap())
        .unwrap();
    let der = crl_der(&ca);
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let entry = crl.iter_revoked_certificates().next().unwrap();
    // RFC 5280 §5.3.1: absent rather than unspecified (0).
    assert_eq!(entry.reason_code(), None);
}

#[test]
fn the_crl_is_replaced_not_rewritten_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let issued = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let path = tmp.path().join("ca").join(CRL_FILE);
    // A reader holding the old file keeps a complete old CRL.
    let old = std::fs::File::open(&path).unwrap();
    let old_len = old.metadata().unwrap().len();
    ca.revoke(&issued.serial, RevocationReason::KeyCompromise)
        .unwrap();
    assert_eq!(old.metadata().unwrap().len(), old_len);
    assert!(std::fs::metadata(&path).unwrap().len() > old_len);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n == "lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn list_and_table_show_computed_status() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = device_ca(tmp.path());
    let now = SystemTime::now();
    let valid = ca.issue(IssueRequest::new("press-01", "cell-a")).unwrap();
    let expired = ca
        .issue_at(
            IssueRequest {
                days: 30,
                ..IssueRequest::new("press-02", "cell-b")
            },
            now - 400 * DAY,
        )
        .unwrap();
    let revoked = ca.issue(IssueRequest::new("press-03", "cell-a")).unwrap();
    ca.revoke(&revoked.serial, RevocationReason::AffiliationChanged)
        .unwrap();

    let entries = ca.list().unwrap();
    let statuses: Vec<Status> = entries.iter().map(|e| e.status(now)).collect();
    assert_eq!(
        statuses,
        [
            Status::Valid,
            Status::Expired,
            Status::Revoked(RevocationReason::AffiliationChanged)
        ]
    );
    // Before its notBefore (backdated one hour) a certificate is not yet valid.
    assert_eq!(
        entries[0].status(now - 2 * 3600 * Duration::from_secs(1)),
        Status::NotYetValid
    );

    let table = format_table(&entries, now);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["SERIAL", "SUBJECT", "ZONE", "EXPIRES", "STATUS"]);
    assert!(lines[1].starts_with(&valid.serial));
    assert!(lines[1].contains("CN=press-01, OU=cell-a, O=ACME Plant1"));
    assert!(lines[1].ends_with("valid"));
    assert!(lines[2].starts_with(&expired.serial));
    assert!(lines[2].contains("cell-b"));
    assert!(lines[2].ends_with("expired"));
    assert!(lines[3].ends_with("revoked (affiliationChanged)"));
    // Columns line up: the subject column starts at the same offset.
    let col = |l: &str| l.find("CN=").unwrap();
    assert_eq!(col(lines[1]), col(lines[2]));
    assert_eq!(col(lines[1]), lines[0].find("SUBJECT").unwrap());
    println!("{table}");
}
