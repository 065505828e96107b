//! MQTT over QUIC against the real listener on 127.0.0.1: a quinn client speaking MQTT 3.1.1
//! through rumqttc's `mqttbytes` codec (not ours), with rcgen certificates.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use common::{Client5, Env, TestCa, WAIT};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rcgen::ExtendedKeyUsagePurpose;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::QoS as QoS5;

const MAX_PACKET: usize = 1 << 20;

/// One bidirectional stream carrying MQTT packets.
struct MqttStream {
    send: SendStream,
    recv: RecvStream,
    buf: BytesMut,
}

impl MqttStream {
    async fn open(conn: &Connection) -> MqttStream {
        let (send, recv) = conn.open_bi().await.expect("open stream");
        MqttStream {
            send,
            recv,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, MAX_PACKET).expect("encode");
        self.send.write_all(&bytes).await.expect("write");
    }

    /// The next packet on this stream; Err when the stream or connection ends first.
    async fn try_recv(&mut self) -> Result<Packet, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.buf, MAX_PACKET) {
                    Ok(p) => return Ok(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(format!("undecodable: {e:?}")),
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => return Err("stream finished".to_string()),
                    Err(e) => return Err(format!("stream error: {e}")),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("nothing within WAIT".to_string()))
    }

    async fn recv(&mut self) -> Packet {
        self.try_recv().await.expect("packet")
    }

    async fn publish(&mut self, topic: &str, payload: &[u8], pkid: u16) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        p.pkid = pkid;
        self.send(Packet::Publish(p)).await;
        match self.recv().await {
            Packet::PubAck(PubAck { pkid: got, .. }) => assert_eq!(got, pkid),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, filter: &str, pkid: u16) {
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
    async fn message(&mut self) -> Publish {
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

/// A QUIC device: its endpoint, connection and control stream.
struct QuicDevice {
    endpoint: Endpoint,
    conn: Connection,
    control: MqttStream,
}

fn client_config(ca_pem: &str, identity: &(String, String)) -> quinn::ClientConfig {
    let mut tls = (*Env::client_tls(ca_pem, identity)).clone();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("TLS 1.3")))
}

fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint")
}

/// Handshake plus CONNECT on the control stream; returns the device and the CONNACK.
async fn try_connect(
    env: &Env,
    addr: SocketAddr,
    id: &str,
    identity: &(String, String),
) -> Result<(QuicDevice, ConnAck), String> {
    let endpoint = client_endpoint();
    let connecting = endpoint
        .connect_with(client_config(&env.ca.cert_pem, identity), addr, "localhost")
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(WAIT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut control = MqttStream {
        send,
        recv,
        buf: BytesMut::new(),
    };
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(id);
    connect.keep_alive = 30;
    let mut bytes = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, MAX_PACKET)
        .map_err(|e| format!("{e:?}"))?;
    control
        .send
        .write_all(&bytes)
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

async fn connect(env: &Env, addr: SocketAddr, id: &str) -> QuicDevice {
    let (device, ack) = try_connect(env, addr, id, &env.ca.device(id))
        .await
        .expect("QUIC connect");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    device
}

/// Lets the server's tasks run until `f` holds (bounded by WAIT; no sleeping).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn single_stream_publish_and_subscribe() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.expect("QUIC listener");
    let mut sub = connect(&env, addr, "quic-sub").await;
    sub.control.subscribe("plant/+/temp", 1).await;
    let mut publisher = connect(&env, addr, "quic-pub").await;
    for i in 0..20u16 {
        publisher
            .control
            .publish("plant/line1/temp", format!("{i}").as_bytes(), i + 1)
            .await;
    }
    for i in 0..20u16 {
        let m = sub.control.message().await;
        assert_eq!(m.topic, "plant/line1/temp");
        assert_eq!(&m.payload[..], format!("{i}").as_bytes(), "in order");
    }
    sub.control.send(Packet::PingReq).await;
    assert!(matches!(sub.control.recv().await, Packet::PingResp));
    let text = server.broker.metrics.render();
    assert!(
        text.contains("converge_connections_total{listener=\"quic\"} 2"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn multi_stream_answers_on_the_stream_of_each_request() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let dev = connect(&env, addr, "gateway-1").await;
    let mut temps = MqttStream::open(&dev.conn).await;
    temps.subscribe("site/temp/#", 11).await;
    let mut alarms = MqttStream::open(&dev.conn).await;
    alarms.subscribe("site/alarm/#", 12).await;
    let mut out = MqttStream::open(&dev.conn).await;
    out.publish("site/temp/t1", b"21.5", 1).await;
    out.publish("site/alarm/a1", b"HIGH", 2).await;
    // Each message arrives on the stream that subscribed to it, nothing on the others.
    let t = temps.message().await;
    assert_eq!(
        (t.topic.as_str(), &t.payload[..]),
        ("site/temp/t1", &b"21.5"[..])
    );
    let a = alarms.message().await;
    assert_eq!(
        (a.topic.as_str(), &a.payload[..]),
        ("site/alarm/a1", &b"HIGH"[..])
    );
    // Control traffic stays on the control stream.
    let mut control = dev.control;
    control.send(Packet::PingReq).await;
    assert!(matches!(control.recv().await, Packet::PingResp));
    // A TLS client's messages reach the QUIC streams, and the other way round.
    let mut tls = Client5::connect(env.v5("tls-dev", server.tls_addr.unwrap()))
        .await
        .unwrap();
    tls.subscribe("site/cmd/#", QoS5::AtLeastOnce).await;
    tls.client
        .publish("site/temp/t2", QoS5::AtLeastOnce, false, "22.0")
        .await
        .unwrap();
    let t2 = temps.message().await;
    assert_eq!(&t2.payload[..], b"22.0");
    out.publish("site/cmd/c1", b"start", 3).await;
    let c = tls.publish_packet().await;
    assert_eq!(
        (&c.topic[..], &c.payload[..]),
        (&b"site/cmd/c1"[..], &b"start"[..])
    );
    assert_eq!(server.broker.metrics.quic_data_streams.get(), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reset_data_stream_leaves_the_others_running() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let dev = connect(&env, addr, "gateway-2").await;
    let mut a = MqttStream::open(&dev.conn).await;
    a.subscribe("cell/a/#", 1).await;
    let mut b = MqttStream::open(&dev.conn).await;
    b.subscribe("cell/b/#", 2).await;
    // The client abandons stream b in the middle of a packet.
    b.send.write_all(&[0x30, 0x10, 0x00]).await.unwrap();
    b.send.reset(7u32.into()).unwrap();
    b.recv.stop(7u32.into()).unwrap();
    eventually("the reset is seen", || {
        server.broker.metrics.quic_stream_resets.get() == 1
    })
    .await;
    let mut publisher = connect(&env, addr, "pub-2").await;
    publisher.control.publish("cell/a/x", b"1", 1).await;
    let m = a.message().await;
    assert_eq!(&m.payload[..], b"1");
    // Messages for the reset stream's subscription now come on the control stream.
    publisher.control.publish("cell/b/y", b"2", 2).await;
    let mut control = dev.control;
    let m = control.message().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("cell/b/y", &b"2"[..]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn migration_keeps_the_connection_and_session() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let mut roamer = connect(&env, addr, "roamer").await;
    roamer.control.subscribe("fleet/#", 1).await;
    let before = roamer.endpoint.local_addr().unwrap();
    // Wi-Fi to cellular: the device's packets now come from another socket.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    roamer.endpoint.rebind(socket).unwrap();
    assert_ne!(roamer.endpoint.local_addr().unwrap(), before);
    roamer
        .control
        .publish("fleet/roamer/pos", b"moved", 1)
        .await;
    let m = roamer.control.message().await;
    assert_eq!(&m.payload[..], b"moved");
    let mut other = connect(&env, addr, "dispatcher").await;
    other.control.publish("fleet/roamer/cmd", b"go", 1).await;
    let m = roamer.control.message().await;
    assert_eq!(&m.payload[..], b"go");
    assert_eq!(server.broker.metrics.quic_migrations.get(), 1);
    assert!(
        roamer.conn.close_reason().is_none(),
        "same connection throughout"
    );
    server.shutdown().await.unwrap();
}

async fn refused(env: &Env, identity: (String, String), reason: &str) {
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let err = try_connect(env, addr, "press-01", &identity)
        .await
        .err()
        .expect("the handshake must fail");
    assert!(!err.contains("CONNACK"), "refused in the handshake: {err}");
    let line = format!("converge_tls_handshake_failures_total{{reason=\"{reason}\"}} 1");
    eventually(&line, || server.broker.metrics.render().contains(&line)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let env = Env::new();
    let other = TestCa::new("Other CA");
    refused(&env, other.device("press-01"), "cert_unknown_issuer").await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let env = Env::new();
    let identity = env
        .ca
        .leaf("press-01", ExtendedKeyUsagePurpose::ClientAuth, (-30, -1));
    refused(&env, identity, "cert_expired").await;
}

#[tokio::test]
async fn certificate_without_client_auth_is_refused() {
    let env = Env::new();
    let identity = env
        .ca
        .leaf("press-01", ExtendedKeyUsagePurpose::ServerAuth, (-1, 30));
    refused(&env, identity, "cert_wrong_purpose").await;
}

#[tokio::test]
async fn identity_rules_and_close_codes_match_tls() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    // A client id that is not the certificate's CN: CONNACK "identifier rejected".
    let (_, ack) = try_connect(&env, addr, "someone-else", &env.ca.device("press-07"))
        .await
        .unwrap();
    assert_eq!(ack.code, ConnectReturnCode::BadClientId);
    // A second connection with the same identity takes the session over; the first is closed
    // with QUIC application code 0x8E (session taken over), its MQTT reason.
    let first = connect(&env, addr, "press-08").await;
    let _second = connect(&env, addr, "press-08").await;
    let closed = tokio::time::timeout(WAIT, first.conn.closed())
        .await
        .unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, 0x8Eu32.into(), "{c:?}")
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn quic_listener_can_be_turned_off() {
    let env = Env::new();
    let server = env.start_with(|c| c.listeners.quic.enabled = false).await;
    assert!(server.quic_addr.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn above_the_handshake_rate_clients_validate_their_address_first() {
    let env = Env::new();
    // Rate 0: every handshake from an unvalidated address is answered with a Retry.
    let server = env
        .start_with(|c| c.listeners.quic.retry_above_handshakes_per_sec = 0)
        .await;
    let addr = server.quic_addr.unwrap();
    let mut dev = connect(&env, addr, "retry-dev").await;
    dev.control.subscribe("r/#", 1).await;
    dev.control.publish("r/1", b"ok", 2).await;
    assert_eq!(&dev.control.message().await.payload[..], b"ok");
    assert_eq!(server.broker.metrics.quic_retries.get(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_stream_the_client_finished_still_receives() {
    let env = Env::new();
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let dev = connect(&env, addr, "listener-1").await;
    let mut s = MqttStream::open(&dev.conn).await;
    s.subscribe("feed/#", 1).await;
    // Nothing more to send on this stream: the client finishes its half, keeps reading.
    s.send.finish().unwrap();
    let mut publisher = connect(&env, addr, "feeder").await;
    for i in 0..3u16 {
        publisher.control.publish("feed/x", &[i as u8], i + 1).await;
    }
    for i in 0..3u8 {
        let m = match s.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        assert_eq!(&m.payload[..], &[i]);
    }
    server.shutdown().await.unwrap();
}
