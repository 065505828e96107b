//! HTTPS with client certificates: the CN is the identity the access rules
//! see; a client without a certificate, or with one from another CA, gets
//! no HTTP answer; plain HTTP off loopback and bad TLS files refuse to start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use api_util::*;
use converge_historian::api::{
    serve, serve_on, ApiConfig, ApiError, ApiState, ClientConfig, QueryObserver, QueryRecord,
    TlsConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig as RustlsClient, RootCertStore};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client_a: (String, String),
    stranger: (String, String),
    local_cn: (String, String),
}

fn ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    cn: &str,
    san: &[&str],
    eku: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let mut params =
        CertificateParams::new(san.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (ca_params, ca_key, ca_pem) = ca("converge test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let (other_params, other_key, _) = ca("some other CA");
    let other = Issuer::new(other_params, other_key);
    Pki {
        ca_pem,
        server: leaf(
            "historian",
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        ),
        client_a: leaf(
            "client-a",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        ),
        stranger: leaf("client-a", &[], ExtendedKeyUsagePurpose::ClientAuth, &other),
        local_cn: leaf("local", &[], ExtendedKeyUsagePurpose::ClientAuth, &issuer),
    }
}

fn tls_files(dir: &Path, pki: &Pki) -> TlsConfig {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    TlsConfig::new(
        write("ca.pem", &pki.ca_pem),
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
    )
}

fn connector(ca_pem: &str, client: Option<&(String, String)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder =
        RustlsClient::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// One HTTPS request; `Err` when TLS (or the connection) fails.
async fn https(addr: SocketAddr, tls: &TlsConnector, path: &str) -> std::io::Result<Resp> {
    let tcp = TcpStream::connect(addr).await?;
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    exchange(stream, "GET", path, &[], "").await
}

#[tokio::test]
async fn client_certificate_cn_is_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut config = ApiConfig::default();
    config.tls = Some(tls_files(dir.path(), &pki));
    config.clients = vec![
        ClientConfig::new("client-a", &["plant1/*"]),
        ClientConfig::new("local", &["*"]),
    ];
    let s = start(config).await;

    let a = connector(&pki.ca_pem, Some(&pki.client_a));
    let r = https(
        s.addr,
        &a,
        "/api/v1/streams/latest?tag=plant1/temp&tag=plant1/count",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["items"][1]["point"]["value"], 90);
    let r = https(s.addr, &a, "/api/v1/streams/latest?tag=plant2/flow")
        .await
        .unwrap();
    assert_eq!((r.status, r.code()), (403, "forbidden".to_owned()));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("client-a"));
    let r = https(s.addr, &a, "/api/v1/tags").await.unwrap();
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4);
    assert!(items
        .iter()
        .all(|t| t["name"].as_str().unwrap().starts_with("plant1/")));

    // No certificate, one from a CA we do not trust, or one claiming the
    // loopback pseudo-identity `local`: no HTTP answer.
    for client in [
        connector(&pki.ca_pem, Some(&pki.local_cn)),
        connector(&pki.ca_pem, None),
        connector(&pki.ca_pem, Some(&pki.stranger)),
    ] {
        let r = https(s.addr, &client, "/api/v1/streams/latest?tag=plant1/temp").await;
        assert!(
            r.is_err(),
            "answered without a valid client certificate: {r:?}"
        );
    }
    // Plain HTTP to the TLS port gets nothing either.
    assert!(exchange(
        TcpStream::connect(s.addr).await.unwrap(),
        "GET",
        "/api/v1/tags",
        &[],
        ""
    )
    .await
    .is_err());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn refuses_to_start_without_safe_tls() {
    let (src, cat) = fixture();
    let state = ApiState::new(Arc::new(src), Arc::new(cat));
    // Off loopback without TLS: refused before anything is bound.
    let mut config = ApiConfig::default();
    config.bind = "0.0.0.0:0".parse().unwrap();
    let e = serve(config, state.clone(), async {}).await.unwrap_err();
    assert!(matches!(e, ApiError::TlsRequired(_)));
    assert!(e.to_string().contains("historian.api.tls"), "{e}");

    // A missing key file is named by its key.
    let dir = tempfile::tempdir().unwrap();
    let mut tls = tls_files(dir.path(), &pki());
    tls.key_file = dir.path().join("missing.key");
    let mut config = ApiConfig::default();
    config.tls = Some(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = serve_on(listener, config, state, async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("historian.api.tls.key_file"), "{e}");
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut config = ApiConfig::default();
    config.tls = Some(tls_files(dir.path(), &pki));
    config.handshake_timeout_ms = 200;
    let s = start(config).await;
    // Connect and say nothing: the server hangs up (EOF or reset), no sleep needed.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
    s.stop().await.unwrap();

    // Plain HTTP: a request whose headers never finish is dropped too.
    let mut config = ApiConfig::default();
    config.handshake_timeout_ms = 200;
    let s = start(config).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /api/v1/tags HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    s.stop().await.unwrap();
}

/// Reports refused handshakes to the test.
struct Refused(tokio::sync::mpsc::UnboundedSender<(&'static str, String)>);

impl QueryObserver for Refused {
    fn answered(&self, _: &QueryRecord<'_>) {}

    fn handshake_refused(&self, _peer: SocketAddr, reason: &'static str, detail: &str) {
        let _ = self.0.send((reason, detail.to_owned()));
    }
}

#[tokio::test]
async fn refused_https_clients_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut config = ApiConfig::default();
    config.tls = Some(tls_files(dir.path(), &pki));
    config.clients = vec![ClientConfig::new("client-a", &["*"])];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (src, cat) = fixture();
    let state = ApiState::new(Arc::new(src), Arc::new(cat)).with_observer(Arc::new(Refused(tx)));
    let s = start_with(config, state).await;

    let cases = [
        (
            connector(&pki.ca_pem, None),
            "certificate",
            "no certificate",
        ),
        (
            connector(&pki.ca_pem, Some(&pki.stranger)),
            "certificate",
            "foreign CA",
        ),
        (
            connector(&pki.ca_pem, Some(&pki.local_cn)),
            "no_identity",
            "CN local",
        ),
    ];
    for (n, (client, reason, what)) in cases.into_iter().enumerate() {
        let r = https(s.addr, &client, "/api/v1/tags").await;
        assert!(r.is_err(), "{what}: answered: {r:?}");
        let (got, detail) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the refusal is reported")
            .unwrap();
        assert_eq!(got, reason, "{what}: {detail}");
        assert!(!detail.is_empty());
        assert_eq!(
            s.state.metrics().handshakes_refused(reason),
            if reason == "certificate" {
                n as u64 + 1
            } else {
                1
            },
            "{what}"
        );
    }
    // Plain HTTP to the TLS port: not a certificate problem.
    let _ = exchange(
        TcpStream::connect(s.addr).await.unwrap(),
        "GET",
        "/api/v1/tags",
        &[],
        "",
    )
    .await;
    let (got, _) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("the refusal is reported")
        .unwrap();
    assert_eq!(got, "other");
    // A good client is not reported, and the counters are in the metrics text.
    let a = connector(&pki.ca_pem, Some(&pki.client_a));
    let r = https(s.addr, &a, "/api/v1/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("historian_api_tls_handshakes_refused_total{reason=\"certificate\"} 2"),
        "{}",
        r.body
    );
    assert!(rx.try_recv().is_err(), "a good client was reported refused");
    s.stop().await.unwrap();
}
