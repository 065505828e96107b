//! MQTT over QUIC against the real listener on 127.0.0.1: a quinn client speaking MQTT 3.1.1
//! through rumqttc's `mqttbytes` codec (not ours), with rcgen certificates.

mod common;

use common::quic::{connect, eventually, try_connect, MqttStream};
use common::{Client5, Env, TestCa, WAIT};
use rcgen::ExtendedKeyUsagePurpose;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS as QoS5;

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
    roamer.control.subscribe("fleet/+/cmd", 1).await;
    let mut out = MqttStream::open(&roamer.conn).await;
    let mut tracker = connect(&env, addr, "tracker").await;
    tracker.control.subscribe("fleet/+/pos", 1).await;
    let mut dispatcher = connect(&env, addr, "dispatcher").await;
    // A QoS 1 sequence to the roamer that the address change falls in the middle of.
    const N: u16 = 40;
    const REBIND_AT: usize = 15;
    // Lock-step: the next command goes out once the roamer has the previous one, so that the
    // commands after the change really travel to the new address.
    let (next, mut go) = tokio::sync::mpsc::unbounded_channel::<()>();
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            dispatcher
                .control
                .publish("fleet/roamer/cmd", &i.to_be_bytes(), i)
                .await;
            if go.recv().await.is_none() {
                break;
            }
        }
        dispatcher
    });
    let before = roamer.endpoint.local_addr().unwrap();
    let mut got = Vec::new();
    while got.len() < usize::from(N) {
        let m = roamer.control.message().await;
        assert_eq!(m.topic, "fleet/roamer/cmd");
        assert!(!m.dup, "nothing is sent twice");
        got.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
        let _ = next.send(());
        if got.len() == REBIND_AT {
            // Wi-Fi to cellular: the device's packets now come from another socket, with
            // messages still in flight both ways.
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            roamer.endpoint.rebind(socket).unwrap();
            assert_ne!(roamer.endpoint.local_addr().unwrap(), before);
            // The roamer publishes across the change too (PUBACK on its data stream).
            out.publish("fleet/roamer/pos", b"moved", 1).await;
        }
    }
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "all, in order, once");
    // Nothing more is queued for it: the next packet is the answer to its PINGREQ.
    roamer.control.send(Packet::PingReq).await;
    assert!(matches!(roamer.control.recv().await, Packet::PingResp));
    let m = tracker.control.message().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("fleet/roamer/pos", &b"moved"[..])
    );
    let _dispatcher = sender.await.unwrap();
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

#[tokio::test]
async fn the_stream_credit_bounds_data_streams_and_the_broker_goes_on() {
    let env = Env::new();
    let server = env
        .start_with(|c| c.listeners.quic.max_streams_per_connection = 2)
        .await;
    let addr = server.quic_addr.unwrap();
    let mut dev = connect(&env, addr, "gateway-3").await;
    let mut a = MqttStream::open(&dev.conn).await;
    a.subscribe("credit/a", 1).await;
    let mut b = MqttStream::open(&dev.conn).await;
    b.subscribe("credit/b", 2).await;
    // Control + 2 data streams is the credit the server granted in its transport parameters:
    // quinn cannot open a third data stream; the open waits for credit.
    let mut third = Box::pin(dev.conn.open_bi());
    tokio::select! {
        biased;
        _ = &mut third => panic!("a stream beyond the credit was opened"),
        _ = std::future::ready(()) => {}
    }
    // The broker goes on serving the open streams and the control stream.
    let mut publisher = connect(&env, addr, "pub-3").await;
    publisher.control.publish("credit/a", b"1", 1).await;
    assert_eq!(&a.message().await.payload[..], b"1");
    dev.control.send(Packet::PingReq).await;
    assert!(matches!(dev.control.recv().await, Packet::PingResp));
    // When the client gives a stream up, the server grants the next one.
    b.send.reset(0u32.into()).unwrap();
    b.recv.stop(0u32.into()).unwrap();
    let streams = tokio::time::timeout(WAIT, &mut third)
        .await
        .expect("credit returns once a stream is closed")
        .unwrap();
    let mut c = MqttStream::from(streams);
    c.subscribe("credit/c", 3).await;
    publisher.control.publish("credit/c", b"3", 2).await;
    assert_eq!(&c.message().await.payload[..], b"3");
    assert_eq!(server.broker.metrics.quic_data_streams.get(), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handshakes_beyond_the_cap_wait_for_a_free_slot() {
    let env = Env::new();
    let server = env
        .start_with(|c| c.listeners.quic.max_handshakes_in_flight = 1)
        .await;
    let addr = server.quic_addr.unwrap();
    // Device A's handshake stalls: its first datagram (the ClientHello) gets through, its
    // Finished is held, so the server has one handshake in flight.
    let relay = common::quic::Relay::start(addr, 1).await;
    let a_env = &env;
    let a = tokio::spawn({
        let config = common::quic::client_config(&a_env.ca.cert_pem, &a_env.ca.device("slow-a"));
        let relay_addr = relay.addr;
        async move {
            common::quic::try_connect_with(
                common::quic::client_endpoint(),
                config,
                relay_addr,
                common::quic::connect_packet("slow-a", true),
            )
            .await
        }
    });
    eventually("A's Finished is held", || !relay.held().is_empty()).await;
    // Device B's Initial finds no free slot: dropped, not refused.
    let b = tokio::spawn({
        let config = common::quic::client_config(&env.ca.cert_pem, &env.ca.device("quick-b"));
        async move {
            common::quic::try_connect_with(
                common::quic::client_endpoint(),
                config,
                addr,
                common::quic::connect_packet("quick-b", true),
            )
            .await
        }
    });
    let line = "converge_connections_rejected_total{reason=\"quic_handshakes_in_flight\"}";
    eventually("B's Initial is dropped", || {
        server.broker.metrics.render().contains(line)
    })
    .await;
    // A's handshake completes; B's retransmitted Initial then gets the slot.
    relay.release();
    let (_a, ack) = a.await.unwrap().expect("A connects");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (_b, ack) = b.await.unwrap().expect("B connects after retransmitting");
    assert_eq!(ack.code, ConnectReturnCode::Success);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_connection_limit_is_shared_with_tls() {
    let env = Env::new();
    let server = env.start_with(|c| c.limits.max_connections = 1).await;
    let (quic, tls) = (server.quic_addr.unwrap(), server.tls_addr.unwrap());
    // A TLS device holds the only slot: a QUIC device is refused in the handshake.
    let tls_dev = Client5::connect(env.v5("tls-1", tls)).await.unwrap();
    let err = try_connect(&env, quic, "quic-1", &env.ca.device("quic-1"))
        .await
        .err()
        .expect("refused while TLS holds the slot");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    let line = "converge_connections_rejected_total{reason=\"max_connections\"} 1";
    assert!(server.broker.metrics.render().contains(line));
    // Once the TLS device leaves, the QUIC device gets in (as soon as the slot is free).
    tls_dev.leave().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let quic_dev = loop {
        match try_connect(&env, quic, "quic-1", &env.ca.device("quic-1")).await {
            Ok((dev, ack)) if ack.code == ConnectReturnCode::Success => break dev,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the slot never freed"
            ),
        }
    };
    // Now the QUIC device holds it: a TLS device is refused.
    assert!(Client5::connect(env.v5("tls-2", tls)).await.is_err());
    drop(quic_dev);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn above_a_nonzero_handshake_rate_clients_validate_their_address_first() {
    let env = Env::new();
    // One unvalidated handshake per one-second window; the others in the same window get a
    // Retry (the window itself is unit-tested in server::quic_accept).
    let server = env
        .start_with(|c| c.listeners.quic.retry_above_handshakes_per_sec = 1)
        .await;
    let addr = server.quic_addr.unwrap();
    let mut devices = Vec::new();
    for i in 0..4 {
        let id = format!("burst-{i}");
        let identity = env.ca.device(&id);
        let ca = env.ca.cert_pem.clone();
        devices.push(tokio::spawn(async move {
            common::quic::try_connect_with(
                common::quic::client_endpoint(),
                common::quic::client_config(&ca, &identity),
                addr,
                common::quic::connect_packet(&id, true),
            )
            .await
        }));
    }
    for d in devices {
        let (_dev, ack) = d.await.unwrap().expect("every device connects");
        assert_eq!(ack.code, ConnectReturnCode::Success);
    }
    // Four handshakes within a second (on loopback, a few milliseconds): three over the rate.
    assert!(server.broker.metrics.quic_retries.get() >= 1);
    assert!(server.broker.metrics.quic_retries.get() <= 3);
    server.shutdown().await.unwrap();
}

/// An MQTT 5 device over QUIC whose client has the given QUIC idle timeout (quinn: 30 s).
async fn connect5(
    env: &Env,
    addr: std::net::SocketAddr,
    id: &str,
    keep_alive: u16,
    client_idle: std::time::Duration,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    common::quic::Mqtt5Stream,
) {
    use rumqttc::v5::mqttbytes::v5 as m5;
    let mut config = common::quic::client_config(&env.ca.cert_pem, &env.ca.device(id));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(client_idle.try_into().unwrap()));
    config.transport_config(std::sync::Arc::new(transport));
    let endpoint = common::quic::client_endpoint();
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    let mut control = common::quic::Mqtt5Stream::new(conn.open_bi().await.unwrap());
    let connect = m5::Connect {
        keep_alive,
        client_id: id.to_owned(),
        clean_start: true,
        properties: None,
    };
    control.send(m5::Packet::Connect(connect, None, None)).await;
    match control.try_recv().await.expect("CONNACK") {
        m5::Packet::ConnAck(a) => assert_eq!(a.code, m5::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (endpoint, conn, control)
}

/// The DISCONNECT the server sends last on `control`, and the QUIC close code that follows.
async fn disconnect_and_close_code(
    conn: &quinn::Connection,
    control: &mut common::quic::Mqtt5Stream,
) -> (u8, u64) {
    use rumqttc::v5::mqttbytes::v5 as m5;
    let reason = loop {
        match control.try_recv().await {
            Ok(m5::Packet::Disconnect(d)) => break d.reason_code as u8,
            Ok(m5::Packet::PingResp(_)) => {}
            Ok(other) => panic!("expected DISCONNECT, got {other:?}"),
            Err(e) => panic!("no DISCONNECT: {e}"),
        }
    };
    (reason, common::quic::close_code(conn).await)
}

#[tokio::test]
async fn a_silent_client_meets_the_mqtt_keep_alive_not_a_quic_idle_timeout() {
    let env = Env::new();
    // The server PINGs a quiet connection every second.
    let server = env
        .start_with(|c| c.listeners.quic.keep_alive_interval_secs = 1)
        .await;
    let addr = server.quic_addr.unwrap();
    // The client's QUIC stack gives up after 2 s without a packet; its MQTT keep-alive is 2 s,
    // so the server's check fires at 3 s. Without the server's PINGs, QUIC would end the
    // connection silently at 2 s (a timeout, no DISCONNECT, no close code).
    let idle = std::time::Duration::from_secs(2);
    let (_endpoint, conn, mut control) = connect5(&env, addr, "sleepy-1", 2, idle).await;
    // The client now sends nothing at all (its QUIC stack still acknowledges).
    let (reason, code) = disconnect_and_close_code(&conn, &mut control).await;
    assert_eq!(reason, 0x8D, "DISCONNECT: keep-alive timeout");
    assert_eq!(code, 0x8D, "the QUIC close code agrees");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn close_codes_give_the_mqtt_reason() {
    use rumqttc::v5::mqttbytes::v5 as m5;
    let env = Env::new();
    let server = env.start_with(|c| c.limits.connect_timeout_secs = 1).await;
    let addr = server.quic_addr.unwrap();
    let client_idle = std::time::Duration::from_secs(30);

    // MQTT 5, after CONNECT: a malformed packet (PUBLISH with QoS 3) gets DISCONNECT 0x81 and
    // QUIC close code 0x81.
    let (_e1, conn, mut control) = connect5(&env, addr, "bad-1", 30, client_idle).await;
    control
        .send
        .write_all(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await
        .unwrap();
    assert_eq!(
        disconnect_and_close_code(&conn, &mut control).await,
        (0x81, 0x81)
    );

    // A malformed CONNECT (reserved flag set): no CONNACK, close code 0x81.
    let e2 = common::quic::client_endpoint();
    let config = common::quic::client_config(&env.ca.cert_pem, &env.ca.device("bad-2"));
    let conn = e2
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut connect = bytes::BytesMut::new();
    let c = m5::Connect {
        keep_alive: 30,
        client_id: "bad-2".to_owned(),
        clean_start: true,
        properties: None,
    };
    m5::Packet::Connect(c, None, None)
        .write(&mut connect, None)
        .unwrap();
    connect[0] = 0x11; // CONNECT's fixed-header flags must be 0
    send.write_all(&connect).await.unwrap();
    assert_eq!(common::quic::close_code(&conn).await, 0x81);

    // A control stream but no CONNECT within the connect timeout: 0x8D.
    let e3 = common::quic::client_endpoint();
    let config = common::quic::client_config(&env.ca.cert_pem, &env.ca.device("mute-3"));
    let conn = e3
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x10]).await.unwrap(); // the first byte of a CONNECT, and no more
    assert_eq!(common::quic::close_code(&conn).await, 0x8D);

    // No control stream at all within the connect timeout: 0x8D.
    let e4 = common::quic::client_endpoint();
    let config = common::quic::client_config(&env.ca.cert_pem, &env.ca.device("mute-4"));
    let conn = e4
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    assert_eq!(common::quic::close_code(&conn).await, 0x8D);
    server.shutdown().await.unwrap();
}
