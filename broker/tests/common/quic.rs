//! QUIC test clients: quinn with rumqttc's MQTT codecs (3.1.1 and 5, not ours), rcgen
//! certificates, 0-RTT with a ticket store the test can watch, and a UDP relay that can hold
//! and record a client's datagrams (to stall a handshake or replay a first flight).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5 as mqtt5;
use tokio::sync::watch;

use super::{Env, WAIT};

pub const MAX_PACKET: usize = 1 << 20;

/// One bidirectional stream carrying MQTT 3.1.1 packets.
pub struct MqttStream {
    pub send: SendStream,
    pub recv: RecvStream,
    pub buf: BytesMut,
}

impl MqttStream {
    pub async fn open(conn: &Connection) -> MqttStream {
        let (send, recv) = conn.open_bi().await.expect("open stream");
        MqttStream::from((send, recv))
    }

    pub async fn send(&mut self, packet: Packet) {
        self.send.write_all(&encode(packet)).await.expect("write");
    }

    /// The next packet on this stream; Err when the stream or connection ends first.
    pub async fn try_recv(&mut self) -> Result<Packet, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.buf, MAX_PACKET) {
                    Ok(p) => return Ok(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(format!("undecodable: {e:?}")),
                }
                read_more(&mut self.recv, &mut self.buf).await?;
            }
        })
        .await
        .unwrap_or_else(|_| Err("nothing within WAIT".to_string()))
    }

    pub async fn recv(&mut self) -> Packet {
        self.try_recv().await.expect("packet")
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], pkid: u16) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        p.pkid = pkid;
        self.send(Packet::Publish(p)).await;
        match self.recv().await {
            Packet::PubAck(PubAck { pkid: got, .. }) => assert_eq!(got, pkid),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, pkid: u16) {
        let mut s = Subscribe::new(filter, QoS::AtLeastOnce);
        s.pkid = pkid;
        self.send(Packet::Subscribe(s)).await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid);
                assert_eq!(
                    ack.return_codes,
                    vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
                );
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next PUBLISH; QoS 1 ones are acknowledged on this stream.
    pub async fn message(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(PubAck::new(p.pkid))).await;
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

impl From<(SendStream, RecvStream)> for MqttStream {
    fn from((send, recv): (SendStream, RecvStream)) -> MqttStream {
        MqttStream {
            send,
            recv,
            buf: BytesMut::new(),
        }
    }
}

pub fn encode(packet: Packet) -> BytesMut {
    let mut bytes = BytesMut::new();
    packet.write(&mut bytes, MAX_PACKET).expect("encode");
    bytes
}

/// A 3.1.1 CONNECT with keep-alive 30 s.
pub fn connect_packet(id: &str, clean: bool) -> rumqttc::mqttbytes::v4::Connect {
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id);
    c.keep_alive = 30;
    c.clean_session = clean;
    c
}

/// Appends the next chunk of `recv` to `buf`; Err when the stream ends first.
async fn read_more(recv: &mut RecvStream, buf: &mut BytesMut) -> Result<(), String> {
    match recv.read_chunk(64 * 1024, true).await {
        Ok(Some(chunk)) => {
            buf.extend_from_slice(&chunk.bytes);
            Ok(())
        }
        Ok(None) => Err("stream finished".to_string()),
        Err(e) => Err(format!("stream error: {e}")),
    }
}

/// One bidirectional stream carrying MQTT 5 packets.
pub struct Mqtt5Stream {
    pub send: SendStream,
    pub recv: RecvStream,
    buf: BytesMut,
}

impl Mqtt5Stream {
    pub fn new((send, recv): (SendStream, RecvStream)) -> Mqtt5Stream {
        Mqtt5Stream {
            send,
            recv,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: mqtt5::Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, None).expect("encode");
        self.send.write_all(&bytes).await.expect("write");
    }

    /// The next packet; Err when the stream or connection ends first.
    pub async fn try_recv(&mut self) -> Result<mqtt5::Packet, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match mqtt5::Packet::read(&mut self.buf, None) {
                    Ok(p) => return Ok(p),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(format!("undecodable: {e:?}")),
                }
                read_more(&mut self.recv, &mut self.buf).await?;
            }
        })
        .await
        .unwrap_or_else(|_| Err("nothing within WAIT".to_string()))
    }
}

/// A QUIC device: its endpoint, connection and control stream.
pub struct QuicDevice {
    pub endpoint: Endpoint,
    pub conn: Connection,
    pub control: MqttStream,
}

/// A quinn client configuration presenting `identity`, ALPN `mqtt`.
pub fn client_config(ca_pem: &str, identity: &(String, String)) -> quinn::ClientConfig {
    let mut tls = (*Env::client_tls(ca_pem, identity)).clone();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("TLS 1.3")))
}

/// A client configuration that resumes sessions and sends 0-RTT data when it holds a ticket
/// that allows it; `tickets` counts the session tickets it has received.
pub fn early_client_config(
    ca_pem: &str,
    identity: &(String, String),
) -> (quinn::ClientConfig, Arc<TicketCount>) {
    let mut tls = (*Env::client_tls(ca_pem, identity)).clone();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    tls.enable_early_data = true;
    let count = Arc::new(TicketCount {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: AtomicUsize::new(0),
    });
    tls.resumption = rustls::client::Resumption::store(count.clone());
    let config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("TLS 1.3")));
    (config, count)
}

/// rustls' client session store, counting the TLS 1.3 tickets it is given.
#[derive(Debug)]
pub struct TicketCount {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl TicketCount {
    pub fn get(&self) -> usize {
        self.tickets.load(Ordering::SeqCst)
    }
}

impl rustls::client::ClientSessionStore for TicketCount {
    fn set_kx_hint(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.inner.set_kx_hint(server_name, group)
    }

    fn kx_hint(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server_name, value)
    }

    fn tls12_session(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

pub fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint")
}

/// Handshake plus CONNECT on the control stream; returns the device and the CONNACK.
pub async fn try_connect(
    env: &Env,
    addr: SocketAddr,
    id: &str,
    identity: &(String, String),
) -> Result<(QuicDevice, ConnAck), String> {
    let endpoint = client_endpoint();
    try_connect_with(
        endpoint,
        client_config(&env.ca.cert_pem, identity),
        addr,
        connect_packet(id, true),
    )
    .await
}

/// Handshake (1-RTT) with `config` on `endpoint`, then `connect` on the control stream.
pub async fn try_connect_with(
    endpoint: Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    connect: rumqttc::mqttbytes::v4::Connect,
) -> Result<(QuicDevice, ConnAck), String> {
    let connecting = endpoint
        .connect_with(config, addr, "localhost")
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(WAIT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let streams = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut control = MqttStream::from(streams);
    control
        .send
        .write_all(&encode(Packet::Connect(connect)))
        .await
        .map_err(|e| e.to_string())?;
    match control.try_recv().await? {
        Packet::ConnAck(ack) => Ok((
            QuicDevice {
                endpoint,
                conn,
                control,
            },
            ack,
        )),
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

pub async fn connect(env: &Env, addr: SocketAddr, id: &str) -> QuicDevice {
    let (device, ack) = try_connect(env, addr, id, &env.ca.device(id))
        .await
        .expect("QUIC connect");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    device
}

/// The application close code a connection ended with (panics on any other end).
pub async fn close_code(conn: &Connection) -> u64 {
    let closed = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the server closes the connection");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other:?}"),
    }
}

/// Lets the server's tasks run until `f` holds (bounded by WAIT; no sleeping).
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

/// A UDP relay between one client and the server. The client's datagrams pass until
/// `pass_first` of them have; later ones are held (and recorded) until `release`.
/// The server's datagrams always pass.
pub struct Relay {
    /// Where the client sends.
    pub addr: SocketAddr,
    held: Arc<Mutex<Vec<Vec<u8>>>>,
    seen: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr, pass_first: usize) -> Relay {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let (release, mut released) = watch::channel(false);
        let (h, s) = (held.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let datagram = up[..n].to_vec();
                        let count = s.fetch_add(1, Ordering::SeqCst) + 1;
                        if count > pass_first && !*released.borrow() {
                            h.lock().unwrap().push(datagram);
                        } else {
                            let _ = back.send(&datagram).await;
                        }
                    }
                    r = back.recv(&mut down) => {
                        let Ok(n) = r else { return };
                        if let Some(c) = client {
                            let _ = front.send_to(&down[..n], c).await;
                        }
                    }
                    r = released.changed() => {
                        if r.is_err() { return }
                        let queued: Vec<_> = std::mem::take(&mut *h.lock().unwrap());
                        for d in queued {
                            let _ = back.send(&d).await;
                        }
                    }
                }
            }
        });
        Relay {
            addr,
            held,
            seen,
            release,
            task,
        }
    }

    /// Datagrams received from the client so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Copies of the client datagrams held so far.
    pub fn held(&self) -> Vec<Vec<u8>> {
        self.held.lock().unwrap().clone()
    }

    /// Sends what was held, and everything after it, on to the server.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
