//! Mutual TLS and the identity rule, over real sockets with rumqttc and rcgen certificates.

mod common;

use common::{Client4, Client5, Env, TestCa};
use rcgen::ExtendedKeyUsagePurpose;
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
