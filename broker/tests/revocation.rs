//! Certificate revocation over real TLS and QUIC-shared verification: CRLs checked in every
//! handshake (unknown status refused), a changed CRL file picked up without a restart, and the
//! live connection of a newly revoked certificate closed at once with DISCONNECT 0x87.

mod common;

use std::path::Path;

use common::{Client5, Env, TestCa};
use converge_broker::server;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;

/// Replaces a file the way `converge cert revoke` does: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_new_crl_closes_the_live_connection_of_the_revoked_certificate() {
    let env = Env::new();
    let crl = env.path("crl.pem");
    std::fs::write(&crl, env.ca.crl(&[], 1)).unwrap();
    let server = env
        .start_with(|c| {
            c.listeners.tls.crl_file = Some(crl.clone());
            c.listeners.tls.crl_check_interval_secs = 1;
        })
        .await;
    let addr = server.tls_addr.unwrap();
    let press = env.ca.device("press-01");
    let mut victim = Client5::connect(env.v5_as("press-01", &press, addr))
        .await
        .expect("not revoked yet: accepted");
    let mut bystander = Client5::connect(env.v5("press-02", addr)).await.unwrap();
    bystander.subscribe("line/#", QoS::AtLeastOnce).await;

    // Nothing but the file changes: the server's CRL check finds it.
    replace(&crl, &env.ca.crl(&[&press.0], 2));
    // rumqttc reports the DISCONNECT's reason code as the end of its event loop.
    let (_, error) = victim.closed().await;
    assert!(error.contains("NotAuthorized"), "{error}");

    // The revoked certificate cannot come back; the other device carries on.
    let err = Client5::connect(env.v5_as("press-01", &press, addr))
        .await
        .err()
        .expect("revoked: refused");
    assert!(!err.contains("ConnAck"), "refused in the handshake: {err}");
    bystander
        .client
        .publish("line/1", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    let p = bystander.publish_packet().await;
    assert_eq!(&p.payload[..], b"still here");

    let metrics = server.broker.metrics.render();
    for line in [
        "converge_tls_handshake_failures_total{reason=\"cert_revoked\"} 1",
        "converge_crl_reloads_total{outcome=\"success\"} 1",
        "converge_revoked_connections_closed_total 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }

    // A CRL file that no longer parses changes nothing: the revocation stays in force.
    replace(
        &crl,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    );
    assert!(server.broker.reload_crl().is_err());
    assert!(Client5::connect(env.v5_as("press-01", &press, addr))
        .await
        .is_err());
    drop(bystander);
    server.shutdown().await.unwrap();

    // The audit log tells the story: the reload, and the connection it closed.
    let log = std::fs::read_to_string(env.path("data").join("audit").join("audit.jsonl")).unwrap();
    let reload = log
        .lines()
        .find(|l| l.contains("\"crl_reload\"") && l.contains("\"success\""))
        .expect("crl_reload record");
    assert!(reload.contains("1 live connection(s) closed"), "{reload}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"crl_reload\"") && l.contains("\"failure\"")),
        "{log}"
    );
}

#[tokio::test]
async fn unknown_revocation_status_is_refused() {
    let env = Env::new();
    // The file holds a CRL, but not from the CA that issued the devices: their status is
    // unknown, and unknown is a refusal.
    let crl = env.path("crl.pem");
    std::fs::write(&crl, TestCa::new("Other CA").crl(&[], 1)).unwrap();
    let server = env
        .start_with(|c| c.listeners.tls.crl_file = Some(crl.clone()))
        .await;
    let addr = server.tls_addr.unwrap();
    assert!(Client5::connect(env.v5("press-01", addr)).await.is_err());
    let metrics = server.broker.metrics.render();
    let line = "converge_tls_handshake_failures_total{reason=\"cert_revocation_unknown\"} 1";
    assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_server_does_not_start_without_the_crl_it_was_given() {
    let env = Env::new();
    let mut config = env.config();
    config.listeners.tls.crl_file = Some(env.path("missing.pem"));
    let err = server::start(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");

    let garbage = env.path("garbage.pem");
    std::fs::write(&garbage, "this is not a CRL").unwrap();
    let mut config = env.config();
    config.listeners.tls.crl_file = Some(garbage);
    let err = server::start(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("bad CRL"), "{err}");
}

#[tokio::test]
async fn a_crl_revoking_someone_else_lets_the_device_in() {
    let env = Env::new();
    let crl = env.path("crl.pem");
    let other = env.ca.device("press-09");
    std::fs::write(&crl, env.ca.crl(&[&other.0], 1)).unwrap();
    let server = env
        .start_with(|c| c.listeners.tls.crl_file = Some(crl.clone()))
        .await;
    let addr = server.tls_addr.unwrap();
    let mut ok = Client5::connect(env.v5("press-01", addr)).await.unwrap();
    ok.subscribe("a/b", QoS::AtMostOnce).await;
    assert!(Client5::connect(env.v5_as("press-09", &other, addr))
        .await
        .is_err());
    ok.client
        .publish("a/b", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    ok.expect("own message", |p| {
        matches!(p, Packet::Publish(_)).then_some(())
    })
    .await;
    drop(ok);
    server.shutdown().await.unwrap();
}

/// One HTTPS GET with a client certificate: the status line, or the TLS error.
async fn https_status(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: &(String, String),
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Env::client_tls(ca_pem, identity))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /api/v1/tags HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, tls.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1.1"))
        .map(str::to_owned)
        .ok_or_else(|| format!("not HTTP: {text}"))
}

#[tokio::test]
async fn the_historian_api_shares_the_crl_when_it_trusts_the_same_ca() {
    let env = Env::new();
    let crl = env.path("crl.pem");
    std::fs::write(&crl, env.ca.crl(&[], 1)).unwrap();
    let server = env
        .start_with(|c| {
            c.listeners.tls.crl_file = Some(crl.clone());
            c.listeners.tls.crl_check_interval_secs = 1;
            c.historian.api.tls = Some(converge_historian::api::TlsConfig::new(
                env.path("ca.pem"),
                env.path("server.pem"),
                env.path("server.key"),
            ));
        })
        .await;
    let api = server.api_addr.unwrap();
    let grafana = env.ca.device("grafana");
    let status = https_status(api, &env.ca.cert_pem, &grafana).await;
    assert!(status.is_ok(), "{status:?}");

    // Revoked through the MQTT listeners' CRL file: the API refuses the IT client as well.
    replace(&crl, &env.ca.crl(&[&grafana.0], 2));
    // The CRL is applied by the server's check loop; a device connecting with the revoked
    // certificate is refused once it is (that is the event waited for, not a sleep).
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if Client5::connect(env.v5_as("grafana", &grafana, server.tls_addr.unwrap()))
            .await
            .is_err()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "CRL not applied");
        server.broker.reload_crl().ok();
    }
    let status = https_status(api, &env.ca.cert_pem, &grafana).await;
    assert!(
        status.is_err(),
        "revoked IT client still served: {status:?}"
    );
    // Another IT client is still served.
    let mes = env.ca.device("mes");
    assert!(https_status(api, &env.ca.cert_pem, &mes).await.is_ok());
    server.shutdown().await.unwrap();
}
