//! Shared test support: a throw-away PKI made with rcgen, an in-process server on 127.0.0.1
//! with port 0, and rumqttc clients whose event loops run in tasks and report through channels.
//! Every wait is bounded (`WAIT`); nothing sleeps to synchronise.
#![allow(dead_code)]

pub mod quic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use converge_broker::config::{Config, SyncMode};
use converge_broker::server::{self, Running};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rumqttc::v5;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct TestCa {
    pub issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// A leaf certificate: (cert PEM, key PEM).
    pub fn leaf(
        &self,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        days: (i64, i64),
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A valid client certificate for `cn`.
    pub fn device(&self, cn: &str) -> (String, String) {
        self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth, (-1, 30))
    }

    /// A client certificate for `cn` with whatever `tweak` does to an otherwise valid one.
    pub fn device_with(
        &self,
        cn: &str,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A version 1 certificate for `cn` (no extensions at all), properly signed by this CA:
    /// rcgen writes only version 3, so the DER is put together here.
    pub fn v1_device(&self, cn: &str) -> (String, String) {
        use rcgen::{PublicKeyData, SigningKey};
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
        let key = KeyPair::generate().unwrap(); // ECDSA P-256, like the CA's
        let ecdsa_sha256 = der(
            0x30,
            &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let utc = |t: time::OffsetDateTime| {
            let text = format!(
                "{:02}{:02}{:02}{:02}{:02}{:02}Z",
                t.year() % 100,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            der(0x17, text.as_bytes())
        };
        let now = time::OffsetDateTime::now_utc();
        let validity = der(
            0x30,
            &[
                utc(now - time::Duration::days(1)),
                utc(now + time::Duration::days(30)),
            ]
            .concat(),
        );
        let cn_attr = der(
            0x30,
            &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, cn.as_bytes())].concat(),
        );
        let subject = der(0x30, &der(0x31, &cn_attr));
        // No [0] version field: that is what makes it version 1.
        let tbs = der(
            0x30,
            &[
                der(0x02, &[0x01, 0x23, 0x45]),
                ecdsa_sha256.clone(),
                ca.tbs_certificate.issuer.as_raw().to_vec(),
                validity,
                subject,
                key.subject_public_key_info(),
            ]
            .concat(),
        );
        let signature = self.issuer.key().sign(&tbs).unwrap();
        let cert = der(
            0x30,
            &[
                tbs,
                ecdsa_sha256,
                der(0x03, &[&[0u8][..], &signature].concat()),
            ]
            .concat(),
        );
        (pem_encode("CERTIFICATE", &cert), key.serialize_pem())
    }

    /// A CRL (PEM) of this CA revoking the certificates whose PEMs are given.
    pub fn crl(&self, revoked: &[&str], number: u64) -> String {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|pem| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&serial_of(pem)),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// The serial number (DER INTEGER content) of a PEM certificate.
pub fn serial_of(cert_pem: &str) -> Vec<u8> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.tbs_certificate.raw_serial().to_vec()
}

/// PEM armour around DER bytes (RFC 7468).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER TLV (lengths up to 65535 bytes).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n @ 0..=127 => out.push(n as u8),
        n @ 128..=255 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A client certificate resolver that always presents the same chain.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A PKI in a temp dir plus a data dir: everything one server needs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
}

impl Env {
    pub fn new() -> Env {
        // Server logs show up in a failing test's output (RUST_LOG=debug for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Test CA");
        let (cert, key) = ca.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, (-1, 30));
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        Env { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Loopback-only configuration with ephemeral ports and fast, crash-safe persistence.
    pub fn config(&self) -> Config {
        let mut c = Config {
            data_dir: self.path("data"),
            ..Config::default()
        };
        c.listeners.tls.bind = "127.0.0.1:0".parse().unwrap();
        c.listeners.tls.ca_file = Some(self.path("ca.pem"));
        c.listeners.tls.cert_file = Some(self.path("server.pem"));
        c.listeners.tls.key_file = Some(self.path("server.key"));
        c.listeners.quic.bind = "127.0.0.1:0".parse().unwrap();
        c.metrics.bind = "127.0.0.1:0".parse().unwrap();
        c.historian.api.bind = "127.0.0.1:0".parse().unwrap();
        c.mqtt.sys_interval_secs = 0;
        c.persistence.sync = SyncMode::Os;
        c
    }

    pub async fn start(&self) -> Running {
        self.start_with(|_| {}).await
    }

    /// A server that also has the plain listener on 127.0.0.1, anonymous clients allowed (for
    /// tests that write raw bytes).
    pub async fn start_plain(&self, tweak: impl FnOnce(&mut Config)) -> Running {
        self.start_with(|c| {
            c.listeners.tcp.enabled = true;
            c.listeners.tcp.bind = "127.0.0.1:0".parse().unwrap();
            c.listeners.tcp.allow_anonymous = true;
            tweak(c);
        })
        .await
    }

    pub async fn start_with(&self, tweak: impl FnOnce(&mut Config)) -> Running {
        let mut c = self.config();
        tweak(&mut c);
        server::start(c).await.expect("server starts")
    }

    /// A rustls client configuration presenting `identity` and trusting `ca_pem`.
    pub fn client_tls(ca_pem: &str, identity: &(String, String)) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<_> = CertificateDer::pem_slice_iter(identity.0.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Presented as given, not through `with_client_auth_cert`, which parses the certificate
        // first and would refuse the hostile ones the server must refuse itself.
        let key = provider.key_provider.load_private_key(key).unwrap();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_cert_resolver(Arc::new(Present(certified))),
        )
    }

    /// MQTT 5 options for a device whose certificate has CN = `id`.
    pub fn v5(&self, id: &str, addr: SocketAddr) -> v5::MqttOptions {
        self.v5_as(id, &self.ca.device(id), addr)
    }

    /// MQTT 5 options for a persistent session: clean start off, the given session expiry.
    pub fn v5_persistent(&self, id: &str, addr: SocketAddr, expiry_secs: u32) -> v5::MqttOptions {
        let mut o = self.v5(id, addr);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry_secs));
        o
    }

    pub fn v5_as(
        &self,
        id: &str,
        identity: &(String, String),
        addr: SocketAddr,
    ) -> v5::MqttOptions {
        let mut o = v5::MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Env::client_tls(&self.ca.cert_pem, identity)),
        ));
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn v4(&self, id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Env::client_tls(
                &self.ca.cert_pem,
                &self.ca.device(id),
            )),
        ));
        o.set_keep_alive(Duration::from_secs(30));
        o
    }
}

pub fn data_dir(c: &Config) -> &Path {
    &c.data_dir
}

/// Everything the server sends on a raw socket until it closes it (bounded by `WAIT`).
pub async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    out
}

/// An MQTT 5 client whose event loop runs in a task; incoming packets arrive on `events`.
pub struct Client5 {
    pub client: v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<v5::mqttbytes::v5::Packet, String>>,
    pub connack: v5::mqttbytes::v5::ConnAck,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client5 {
    /// Connects and waits for CONNACK; Err carries the event loop's error text.
    pub async fn connect(options: v5::MqttOptions) -> Result<Client5, String> {
        let (client, mut el) = v5::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(v5::Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(WAIT, rx.recv())
            .await
            .map_err(|_| "no CONNACK in time".to_string())?;
        match first {
            Some(Ok(v5::mqttbytes::v5::Packet::ConnAck(connack))) => Ok(Client5 {
                client,
                events: rx,
                connack,
                task,
            }),
            Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
            Some(Err(e)) => Err(e),
            None => Err("event loop ended".into()),
        }
    }

    /// Waits for the first incoming packet `pick` accepts; other packets are skipped.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&v5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("event loop ended while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e}"),
                Ok(Some(Ok(p))) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
            }
        }
    }

    pub async fn publish_packet(&mut self) -> v5::mqttbytes::v5::Publish {
        self.expect("PUBLISH", |p| match p {
            v5::mqttbytes::v5::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    pub async fn puback(&mut self) {
        self.expect("PUBACK", |p| {
            matches!(p, v5::mqttbytes::v5::Packet::PubAck(_)).then_some(())
        })
        .await
    }

    /// Sends DISCONNECT and waits for the connection to end.
    pub async fn leave(mut self) {
        self.client.disconnect().await.unwrap();
        let _ = self.closed().await;
    }

    pub async fn suback(&mut self) -> v5::mqttbytes::v5::SubAck {
        self.expect("SUBACK", |p| match p {
            v5::mqttbytes::v5::Packet::SubAck(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str, qos: v5::mqttbytes::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        let ack = self.suback().await;
        assert!(
            ack.return_codes
                .iter()
                .all(|c| matches!(c, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))),
            "{ack:?}"
        );
    }

    /// Waits until the connection ends; returns the error text (and any DISCONNECT seen first).
    pub async fn closed(&mut self) -> (Option<v5::mqttbytes::v5::Disconnect>, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut disconnect = None;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("connection did not close in time"),
                Ok(None) => return (disconnect, "event loop ended".into()),
                Ok(Some(Err(e))) => return (disconnect, e),
                Ok(Some(Ok(v5::mqttbytes::v5::Packet::Disconnect(d)))) => disconnect = Some(d),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// An MQTT 3.1.1 client, same shape as `Client5`.
pub struct Client4 {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::Packet, String>>,
    pub connack: rumqttc::ConnAck,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client4 {
    pub async fn connect(options: rumqttc::MqttOptions) -> Result<Client4, String> {
        let (client, mut el) = rumqttc::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(WAIT, rx.recv())
            .await
            .map_err(|_| "no CONNACK in time".to_string())?;
        match first {
            Some(Ok(rumqttc::Packet::ConnAck(connack))) => Ok(Client4 {
                client,
                events: rx,
                connack,
                task,
            }),
            Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
            Some(Err(e)) => Err(e),
            None => Err("event loop ended".into()),
        }
    }

    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&rumqttc::Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("event loop ended while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e}"),
                Ok(Some(Ok(p))) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
            }
        }
    }

    pub async fn publish_packet(&mut self) -> rumqttc::Publish {
        self.expect("PUBLISH", |p| match p {
            rumqttc::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        let ack = self
            .expect("SUBACK", |p| match p {
                rumqttc::Packet::SubAck(s) => Some(s.clone()),
                _ => None,
            })
            .await;
        assert!(
            ack.return_codes
                .iter()
                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
            "{ack:?}"
        );
    }
}

/// One HTTP/1.1 GET on loopback (the historian API); returns the status and the body.
#[allow(dead_code)] // not every test binary queries the API
pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("API answers")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}
