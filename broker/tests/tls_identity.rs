//! Mutual TLS and the identity rule, over real sockets with rumqttc and rcgen certificates.

mod common;

use common::{Client4, Client5, Env, TestCa};
use rcgen::{
    BasicConstraints, CustomExtension, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    KeyUsagePurpose, NameConstraints,
};
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;

#[tokio::test]
async fn good_certificate_is_accepted_on_v5_and_v311() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let c5 = Client5::connect(env.v5("press-01", addr)).await.unwrap();
    assert_eq!(c5.connack.code, ConnectReturnCode::Success);
    let props = c5.connack.properties.clone().unwrap();
    assert_eq!(props.receive_max, Some(64));
    let c4 = Client4::connect(env.v4("press-02", addr)).await.unwrap();
    assert_eq!(c4.connack.code, rumqttc::ConnectReturnCode::Success);
    drop((c5, c4));
    server.shutdown().await.unwrap();
}

async fn refused_in_handshake(env: &Env, identity: (String, String), expect_reason: &str) {
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let err = Client5::connect(env.v5_as("press-01", &identity, addr))
        .await
        .err()
        .expect("handshake must fail");
    assert!(!err.contains("ConnAck"), "refused only after TLS: {err}");
    let metrics = server.broker.metrics.render();
    let line = format!("converge_tls_handshake_failures_total{{reason=\"{expect_reason}\"}} 1");
    assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let env = Env::new();
    let other = TestCa::new("Other CA");
    refused_in_handshake(&env, other.device("press-01"), "cert_unknown_issuer").await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let env = Env::new();
    let expired = env
        .ca
        .leaf("press-01", ExtendedKeyUsagePurpose::ClientAuth, (-30, -1));
    refused_in_handshake(&env, expired, "cert_expired").await;
}

#[tokio::test]
async fn server_auth_only_certificate_is_refused() {
    let env = Env::new();
    let wrong_eku = env
        .ca
        .leaf("press-01", ExtendedKeyUsagePurpose::ServerAuth, (-1, 30));
    refused_in_handshake(&env, wrong_eku, "cert_wrong_purpose").await;
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let env = Env::new();
    let early = env
        .ca
        .leaf("press-01", ExtendedKeyUsagePurpose::ClientAuth, (1, 30));
    refused_in_handshake(&env, early, "cert_not_yet_valid").await;
}

// RFC 5280 end-entity rules (converge_security::certs::end_entity), each through a real
// handshake: the client's certificate is signed by the trusted CA and otherwise valid.

#[tokio::test]
async fn leaf_that_is_a_ca_is_refused() {
    let env = Env::new();
    let ca_leaf = env.ca.device_with("press-01", |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    refused_in_handshake(&env, ca_leaf, "cert_leaf_is_ca").await;
}

#[tokio::test]
async fn leaf_allowed_to_sign_certificates_is_refused() {
    let env = Env::new();
    let signer = env.ca.device_with("press-01", |p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    refused_in_handshake(&env, signer, "cert_leaf_ca_key_usage").await;
}

#[tokio::test]
async fn version_1_leaf_is_refused() {
    let env = Env::new();
    refused_in_handshake(&env, env.ca.v1_device("press-01"), "cert_not_v3").await;
}

#[tokio::test]
async fn leaf_with_name_constraints_is_refused() {
    let env = Env::new();
    let constrained = env.ca.device_with("press-01", |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName("plant.example".into())],
            excluded_subtrees: vec![],
        });
    });
    refused_in_handshake(&env, constrained, "cert_leaf_name_constraints").await;
}

#[tokio::test]
async fn leaf_with_a_malformed_san_or_name_constraints_is_refused() {
    let env = Env::new();
    // A SAN whose one GeneralName claims 5 bytes and has 1; then Name Constraints that are
    // not even a SEQUENCE.
    for (oid, content) in [
        (&[2u64, 5, 29, 17][..], vec![0x30, 0x03, 0x82, 0x05, 0x61]),
        (&[2u64, 5, 29, 30][..], vec![0x04, 0x01, 0x00]),
    ] {
        let bad = env.ca.device_with("press-01", |p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(oid, content)];
        });
        refused_in_handshake(&env, bad, "cert_malformed_extension").await;
    }
}

#[tokio::test]
async fn leaf_with_an_empty_san_is_refused() {
    let env = Env::new();
    let empty = env.ca.device_with("press-01", |p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            vec![0x30, 0x00],
        )];
    });
    refused_in_handshake(&env, empty, "cert_no_name").await;
}

#[tokio::test]
async fn chains_too_deep_or_too_large_are_refused_unparsed() {
    let env = Env::new();
    // Four copies of the CA after a good device certificate: five certificates, one over the
    // default depth of four. Their content does not matter: only their count is looked at.
    let (cert, key) = env.ca.device("press-01");
    let deep = (format!("{cert}{}", env.ca.cert_pem.repeat(4)), key.clone());
    refused_in_handshake(&env, deep, "chain_too_deep").await;
    // A certificate of about 20 KB (a bulky custom extension), over the default 16 KiB.
    let bulky = env.ca.device_with("press-01", |p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 55555, 1],
            [&[0x04, 0x82, 0x4e, 0x20][..], &[0xab; 20_000]].concat(),
        )];
    });
    refused_in_handshake(&env, bulky, "chain_too_large").await;
}

#[tokio::test]
async fn rejections_are_in_the_audit_log_with_their_reason() {
    let env = Env::new();
    let ca_leaf = env.ca.device_with("press-01", |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    let data = env.config().data_dir;
    refused_in_handshake(&env, ca_leaf, "cert_leaf_is_ca").await;
    // Shutdown flushed the log.
    let log = std::fs::read_to_string(data.join("audit").join("audit.jsonl")).unwrap();
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"handshake_rejected\""))
        .collect();
    assert_eq!(rejected.len(), 1, "{log}");
    assert!(rejected[0].contains("cert_leaf_is_ca"), "{}", rejected[0]);
}

#[tokio::test]
async fn a_connection_ends_when_its_certificate_expires() {
    let env = Env::new();
    let server = env.start().await;
    let short = env.ca.device_with("press-01", |p| {
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    });
    let mut c = Client5::connect(env.v5_as("press-01", &short, server.tls_addr.unwrap()))
        .await
        .expect("valid for now");
    let (_, error) = c.closed().await;
    assert!(error.contains("NotAuthorized"), "{error}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn accepted_handshakes_are_audited_with_the_serial() {
    let env = Env::new();
    let server = env.start().await;
    let press = env.ca.device("press-01");
    let c = Client5::connect(env.v5_as("press-01", &press, server.tls_addr.unwrap()))
        .await
        .unwrap();
    c.leave().await;
    server.shutdown().await.unwrap();
    let log = std::fs::read_to_string(env.path("data").join("audit").join("audit.jsonl")).unwrap();
    let serial: String = common::serial_of(&press.0)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let accepted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"handshake_accepted\""))
        .collect();
    assert_eq!(accepted.len(), 1, "{log}");
    assert!(
        accepted[0].contains("\"actor\":\"press-01\""),
        "{}",
        accepted[0]
    );
    assert!(
        accepted[0].contains(&format!("serial {serial}")),
        "{}",
        accepted[0]
    );
}

#[tokio::test]
async fn client_id_must_equal_the_common_name() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    // Certificate of press-01, client id of press-02: one device posing as another.
    let err = Client5::connect(env.v5_as("press-02", &env.ca.device("press-01"), addr))
        .await
        .err()
        .unwrap();
    assert!(err.contains("ClientIdentifierNotValid"), "{err}");
    let mut o4 = rumqttc::MqttOptions::new("press-02", "127.0.0.1", addr.port());
    o4.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Env::client_tls(
            &env.ca.cert_pem,
            &env.ca.device("press-01"),
        )),
    ));
    let err = Client4::connect(o4).await.err().unwrap();
    assert!(err.contains("BadClientId"), "{err}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_client_id_is_assigned_the_common_name() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.tls_addr.unwrap();
    let c = Client5::connect(env.v5_as("", &env.ca.device("press-07"), addr))
        .await
        .unwrap();
    let props = c.connack.properties.clone().unwrap();
    assert_eq!(
        props.assigned_client_identifier.as_deref(),
        Some("press-07")
    );
    server.shutdown().await.unwrap();
}
