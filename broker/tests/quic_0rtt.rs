//! QUIC 0-RTT over real UDP on 127.0.0.1: quinn clients that resume a session and send their
//! CONNECT as early data (rustls `enable_early_data`), with rumqttc's codec. Early data carries
//! one CONNECT at most; anything else closes the connection (0x82) unread; a replayed first
//! flight, whose handshake never completes, changes nothing that matters.

mod common;

use std::net::SocketAddr;

use common::quic::{
    client_config, client_endpoint, close_code, connect, connect_packet, early_client_config,
    encode, eventually, try_connect_with, MqttStream, Relay, TicketCount,
};
use common::Env;
use converge_broker::server::Running;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, LastWill, Packet, Publish};
use rumqttc::mqttbytes::QoS;

/// A first visit at 1-RTT that leaves the client holding session tickets; with `persistent`,
/// the session (clean session off) subscribes to `subscribe` and outlives the connection.
async fn first_visit(
    server: &Running,
    config: &quinn::ClientConfig,
    tickets: &TicketCount,
    id: &str,
    subscribe: Option<&str>,
) {
    let addr = server.quic_addr.unwrap();
    let connected = server.broker.metrics.connections.get();
    let (mut dev, ack) = try_connect_with(
        client_endpoint(),
        config.clone(),
        addr,
        connect_packet(id, subscribe.is_none()),
    )
    .await
    .expect("first visit");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    if let Some(filter) = subscribe {
        dev.control.subscribe(filter, 1).await;
    }
    eventually("a session ticket arrives", || tickets.get() > 0).await;
    dev.control.send(Packet::Disconnect).await;
    eventually("the first visit has ended", || {
        server.broker.metrics.connections.get() == connected
    })
    .await;
}

/// The audit records (JSON lines) of `action` whose actor is `actor`; read after shutdown,
/// when the audit writer has flushed.
fn audited(env: &Env, action: &str, actor: &str) -> Vec<String> {
    let log = std::fs::read_to_string(env.path("data").join("audit").join("audit.jsonl"))
        .expect("audit log");
    log.lines()
        .filter(|l| l.contains(&format!("\"{action}\"")))
        .filter(|l| l.contains(&format!("\"actor\":\"{actor}\"")))
        .map(str::to_owned)
        .collect()
}

/// A QoS 1 message from another device.
async fn publish(env: &Env, addr: SocketAddr, topic: &str, payload: &[u8]) {
    let mut p = connect(env, addr, "publisher").await;
    p.control.publish(topic, payload, 1).await;
    p.control.send(Packet::Disconnect).await;
}

#[tokio::test]
async fn a_0rtt_connect_gets_its_connack_and_its_session() {
    let env = Env::new();
    let server = env.start_with(|c| c.listeners.quic.zero_rtt = true).await;
    let addr = server.quic_addr.unwrap();
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("roam-0"));
    first_visit(&server, &config, &tickets, "roam-0", Some("zr/roam-0/#")).await;
    publish(&env, addr, "zr/roam-0/cmd", b"while away").await;

    // Back again: the CONNECT goes in the first flight, before the handshake completes.
    let endpoint = client_endpoint();
    let connecting = endpoint.connect_with(config, addr, "localhost").unwrap();
    let (conn, accepted) = connecting
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the client holds a ticket that allows 0-RTT"));
    let mut control = MqttStream::from(conn.open_bi().await.unwrap());
    control
        .send
        .write_all(&encode(Packet::Connect(connect_packet("roam-0", false))))
        .await
        .unwrap();
    match control.recv().await {
        Packet::ConnAck(a) => {
            assert_eq!(a.code, ConnectReturnCode::Success);
            assert!(a.session_present, "its session, resumed");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(accepted.await, "the server accepted the early data");
    assert_eq!(server.broker.metrics.quic_0rtt_connects.get(), 1);
    // What waited in the session comes once the handshake is confirmed.
    let m = control.message().await;
    assert_eq!(&m.payload[..], b"while away");
    // After the handshake, everything else goes as usual.
    control.publish("zr/elsewhere", b"here", 7).await;
    control.send(Packet::PingReq).await;
    assert!(matches!(control.recv().await, Packet::PingResp));
    assert_eq!(server.broker.metrics.quic_0rtt_refused.get(), 0);
    server.shutdown().await.unwrap();
    // The handshake is recorded once confirmed, as on the first visit; the CONNECT says it
    // came as 0-RTT data.
    assert_eq!(audited(&env, "handshake_accepted", "roam-0").len(), 2);
    let connects = audited(&env, "connect", "roam-0");
    assert_eq!(connects.len(), 2, "{connects:?}");
    assert!(!connects[0].contains("0-RTT"), "{}", connects[0]);
    assert!(connects[1].contains("0-RTT"), "{}", connects[1]);
}

#[tokio::test]
async fn a_publish_in_0rtt_closes_the_connection_and_is_never_delivered() {
    let env = Env::new();
    let server = env.start_with(|c| c.listeners.quic.zero_rtt = true).await;
    let addr = server.quic_addr.unwrap();
    let mut watcher = connect(&env, addr, "watcher").await;
    watcher.control.subscribe("zr/#", 1).await;
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("eager-1"));
    first_visit(&server, &config, &tickets, "eager-1", None).await;

    let endpoint = client_endpoint();
    let connecting = endpoint.connect_with(config, addr, "localhost").unwrap();
    let (conn, _accepted) = connecting
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the client holds a ticket that allows 0-RTT"));
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // CONNECT and PUBLISH together in the first flight (this runtime has one thread: nothing
    // is sent before both are written).
    let mut flight = encode(Packet::Connect(connect_packet("eager-1", true)));
    let mut p = Publish::new("zr/early", QoS::AtLeastOnce, b"replayable".to_vec());
    p.pkid = 1;
    flight.extend_from_slice(&encode(Packet::Publish(p)));
    send.write_all(&flight).await.unwrap();
    assert_eq!(close_code(&conn).await, 0x82, "protocol error");
    assert_eq!(server.broker.metrics.quic_0rtt_refused.get(), 1);
    // Never delivered: a message published after the close is the watcher's next one.
    publish(&env, addr, "zr/marker", b"after").await;
    let m = watcher.control.message().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("zr/marker", &b"after"[..])
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_stream_opened_in_0rtt_closes_the_connection() {
    let env = Env::new();
    let server = env.start_with(|c| c.listeners.quic.zero_rtt = true).await;
    let addr = server.quic_addr.unwrap();
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("eager-2"));
    first_visit(&server, &config, &tickets, "eager-2", None).await;
    let endpoint = client_endpoint();
    let (conn, _accepted) = endpoint
        .connect_with(config, addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("0-RTT"));
    let (mut control, _r) = conn.open_bi().await.unwrap();
    control
        .write_all(&encode(Packet::Connect(connect_packet("eager-2", false))))
        .await
        .unwrap();
    let (mut data, _r2) = conn.open_bi().await.unwrap();
    data.write_all(&encode(Packet::PingReq)).await.unwrap();
    assert_eq!(close_code(&conn).await, 0x82);
    assert_eq!(server.broker.metrics.quic_0rtt_refused.get(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_zero_rtt_off_early_data_is_rejected_and_the_client_connects_at_1rtt() {
    let env = Env::new();
    // Off (the default): the server's tickets do not offer early data, so the client does not
    // even try; it resumes and connects at 1-RTT.
    let server = env.start().await;
    let addr = server.quic_addr.unwrap();
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("plain-1"));
    first_visit(&server, &config, &tickets, "plain-1", None).await;
    let connecting = client_endpoint()
        .connect_with(config, addr, "localhost")
        .unwrap();
    let connecting = match connecting.into_0rtt() {
        Ok(_) => panic!("a server with zero_rtt = false offered 0-RTT"),
        Err(c) => c,
    };
    let conn = connecting.await.expect("1-RTT handshake");
    connect_at_1rtt(&conn, "plain-1").await;
    assert_eq!(server.broker.metrics.quic_0rtt_connects.get(), 0);
    server.shutdown().await.unwrap();

    // A client that holds a 0-RTT ticket from a server that allowed it, against that server
    // restarted with zero_rtt = false: its early data is rejected, it sends again at 1-RTT.
    let server = env.start_with(|c| c.listeners.quic.zero_rtt = true).await;
    let addr = server.quic_addr.unwrap();
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("plain-2"));
    first_visit(&server, &config, &tickets, "plain-2", None).await;
    server.shutdown().await.unwrap();
    let server = env.start_with(|c| c.listeners.quic.bind = addr).await;
    let (conn, accepted) = client_endpoint()
        .connect_with(config, addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the client holds a 0-RTT ticket"));
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(Packet::Connect(connect_packet("plain-2", true))))
        .await
        .unwrap();
    assert!(!accepted.await, "early data rejected");
    // quinn discards what was sent early; the client sends its CONNECT again.
    connect_at_1rtt(&conn, "plain-2").await;
    assert_eq!(server.broker.metrics.quic_0rtt_connects.get(), 0);
    server.shutdown().await.unwrap();
}

/// Opens the control stream at 1-RTT, sends a clean-start CONNECT and expects CONNACK success.
async fn connect_at_1rtt(conn: &quinn::Connection, client_id: &str) {
    let mut control = MqttStream::from(conn.open_bi().await.unwrap());
    control
        .send
        .write_all(&encode(Packet::Connect(connect_packet(client_id, true))))
        .await
        .unwrap();
    assert!(
        matches!(control.recv().await, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success)
    );
}

/// Records a device's first 0-RTT flight carrying `connect`, without letting it reach the
/// server: what an attacker on the path could capture and send again.
async fn record_first_flight(
    addr: SocketAddr,
    config: quinn::ClientConfig,
    connect: rumqttc::mqttbytes::v4::Connect,
) -> Vec<Vec<u8>> {
    let relay = Relay::start(addr, 0).await;
    let endpoint = client_endpoint();
    let (conn, _accepted) = endpoint
        .connect_with(config, relay.addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("0-RTT"));
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(Packet::Connect(connect)))
        .await
        .unwrap();
    eventually("the CONNECT is sent", || conn.stats().frame_tx.stream > 0).await;
    let sent = conn.stats().udp_tx.datagrams as usize;
    eventually("the relay has the flight", || relay.seen() >= sent).await;
    let flight = relay.held();
    assert!(!flight.is_empty());
    flight
}

/// Sends a recorded flight to the server from another socket.
async fn replay(addr: SocketAddr, flight: &[Vec<u8>]) -> tokio::net::UdpSocket {
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in flight {
        attacker.send_to(datagram, addr).await.unwrap();
    }
    attacker
}

#[tokio::test]
async fn a_replayed_0rtt_connect_publishes_no_will_and_takes_no_message() {
    let env = Env::new();
    let server = env
        .start_with(|c| {
            c.listeners.quic.zero_rtt = true;
            c.limits.connect_timeout_secs = 1;
        })
        .await;
    let addr = server.quic_addr.unwrap();
    let mut watcher = connect(&env, addr, "watcher").await;
    watcher.control.subscribe("site/status/#", 1).await;
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &env.ca.device("dev-r"));
    first_visit(&server, &config, &tickets, "dev-r", Some("site/cmd/dev-r")).await;
    publish(&env, addr, "site/cmd/dev-r", b"queued").await;

    // 1. A CONNECT with a will, replayed: it waits for a handshake that never completes.
    let mut with_will = connect_packet("dev-r", false);
    with_will.last_will = Some(LastWill::new(
        "site/status/dev-r",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let flight = record_first_flight(addr, config.clone(), with_will).await;
    let _attacker = replay(addr, &flight).await;
    eventually("the replayed CONNECT arrives as 0-RTT data", || {
        server.broker.metrics.quic_0rtt_connects.get() == 1
    })
    .await;
    let timeout = "converge_tls_handshake_failures_total{reason=\"timeout\"} 1";
    eventually("its handshake times out", || {
        server.broker.metrics.render().contains(timeout)
    })
    .await;
    // No will was published: the watcher's next message is one sent after the replay died.
    publish(&env, addr, "site/status/marker", b"1").await;
    let m = watcher.control.message().await;
    assert_eq!(m.topic, "site/status/marker");

    // 2. A CONNECT without a will or clean start takes the session at once, but nothing
    // leaves its queue before the handshake is confirmed, which never happens.
    let flight = record_first_flight(addr, config.clone(), connect_packet("dev-r", false)).await;
    let connected = server.broker.metrics.connections.get();
    let _attacker = replay(addr, &flight).await;
    eventually("the replayed CONNECT arrives as 0-RTT data", || {
        server.broker.metrics.quic_0rtt_connects.get() == 2
    })
    .await;
    eventually("the replay's connection ends", || {
        server
            .broker
            .metrics
            .render()
            .contains("converge_tls_handshake_failures_total{reason=\"timeout\"} 2")
            && server.broker.metrics.connections.get() == connected
    })
    .await;

    // The device itself comes back at 1-RTT: its session and its message are still there.
    let (mut dev, ack) = try_connect_with(
        client_endpoint(),
        client_config(&env.ca.cert_pem, &env.ca.device("dev-r")),
        addr,
        connect_packet("dev-r", false),
    )
    .await
    .unwrap();
    assert!(ack.session_present);
    let m = dev.control.message().await;
    assert_eq!(
        (&m.payload[..], m.dup),
        (&b"queued"[..], false),
        "never sent before"
    );
    // And no will went out at any point.
    publish(&env, addr, "site/status/marker", b"2").await;
    let m = watcher.control.message().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("site/status/marker", &b"2"[..])
    );
    server.shutdown().await.unwrap();
    // Neither replay completed a handshake: only the device's own two visits are recorded as
    // accepted handshakes; the replays as rejected ones (timeout).
    assert_eq!(audited(&env, "handshake_accepted", "dev-r").len(), 2);
    let log = std::fs::read_to_string(env.path("data").join("audit").join("audit.jsonl")).unwrap();
    let rejected = log
        .lines()
        .filter(|l| l.contains("\"handshake_rejected\"") && l.contains("timeout"))
        .count();
    assert_eq!(rejected, 2, "{log}");
}

#[tokio::test]
async fn a_0rtt_connect_with_a_certificate_revoked_since_is_refused_at_connect() {
    let env = Env::new();
    let crl = env.path("crl.pem");
    std::fs::write(&crl, env.ca.crl(&[], 1)).unwrap();
    let server = env
        .start_with(|c| {
            c.listeners.quic.zero_rtt = true;
            c.listeners.tls.crl_file = Some(crl.clone());
        })
        .await;
    let addr = server.quic_addr.unwrap();
    let device = env.ca.device("gone-1");
    let (config, tickets) = early_client_config(&env.ca.cert_pem, &device);
    first_visit(&server, &config, &tickets, "gone-1", Some("zr/gone-1/#")).await;

    // Revoked after the first visit: the resumed session carries the certificate verified
    // then, which the handshake does not check again; the CONNECT is where it is refused.
    std::fs::write(&crl, env.ca.crl(&[&device.0], 2)).unwrap();
    server.broker.reload_crl().expect("CRL reloaded");
    let (conn, accepted) = client_endpoint()
        .connect_with(config, addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the client holds a ticket that allows 0-RTT"));
    let mut control = MqttStream::from(conn.open_bi().await.unwrap());
    control
        .send
        .write_all(&encode(Packet::Connect(connect_packet("gone-1", false))))
        .await
        .unwrap();
    match control.recv().await {
        Packet::ConnAck(a) => assert_eq!(a.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(accepted.await, "the early data itself was accepted");
    assert_eq!(server.broker.metrics.quic_0rtt_connects.get(), 1);
    // Refused by the check before the session is attached (its own counter).
    assert!(server
        .broker
        .metrics
        .render()
        .contains("converge_connections_rejected_total{reason=\"0x87\"} 1"));
    server.shutdown().await.unwrap();
    let denied = audited(&env, "connect", "gone-1");
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied[1].contains("certificate revoked"), "{}", denied[1]);
}
