//! Malformed and illegal input over raw sockets on the plain listener: each ends only its own
//! connection, with the MQTT 5 reason code (a plain close on 3.1.1), and other clients go on.

mod common;

use std::net::SocketAddr;

use common::{read_to_close, Client5, Env, WAIT};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_packet(level: u8, id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Connects, sends CONNECT, reads CONNACK, then sends `bad` and returns everything the server
/// sends until it closes the socket.
async fn after_connect(addr: SocketAddr, level: u8, bad: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_packet(level, "raw")).await.unwrap();
    let mut connack = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack[0], 0x20);
    let mut rest = vec![0u8; connack[1] as usize];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0, "CONNACK success");
    s.write_all(bad).await.unwrap();
    read_to_close(&mut s).await
}

async fn server(env: &Env) -> converge_broker::server::Running {
    env.start_plain(|c| {
        c.limits.max_packet_size = 1024;
    })
    .await
}

#[tokio::test]
async fn each_kind_of_malformed_packet_gets_its_reason_code() {
    let env = Env::new();
    let server = server(&env).await;
    let addr = server.tcp_addr.unwrap();
    // A bystander over TLS that must not notice anything.
    let mut bystander = Client5::connect(env.v5("bystander", server.tls_addr.unwrap()))
        .await
        .unwrap();
    bystander.subscribe("ok/#", QoS::AtLeastOnce).await;

    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "SUBSCRIBE with reserved flags 0000",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
            0x81,
        ),
        (
            "remaining length of five bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            0x81,
        ),
        (
            "declared length above the maximum packet size",
            vec![0x30, 0xFF, 0xFF, 0x03],
            0x95,
        ),
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            0x81,
        ),
        (
            "topic that is not UTF-8",
            vec![0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00],
            0x81,
        ),
        (
            "wildcard in a PUBLISH topic",
            vec![0x30, 0x04, 0x00, 0x01, b'#', 0x00],
            0x90,
        ),
        (
            "packet id 0 in SUBSCRIBE",
            vec![0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
            0x81,
        ),
        ("second CONNECT", connect_packet(5, "again"), 0x82),
        ("PINGREQ with a body", vec![0xC0, 0x01, 0x00], 0x81),
        ("reserved packet type 0", vec![0x00, 0x00], 0x81),
    ];
    for (what, bytes, reason) in cases {
        let got = after_connect(addr, 5, &bytes).await;
        assert!(
            got.len() >= 3,
            "{what}: expected DISCONNECT, got {got:02X?}"
        );
        assert_eq!(got[0], 0xE0, "{what}: DISCONNECT expected, got {got:02X?}");
        assert_eq!(got[2], reason, "{what}: reason code");
    }
    // MQTT 3.1.1 has no DISCONNECT from the server: a plain close.
    let got = after_connect(addr, 4, &[0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a']).await;
    assert!(
        got.is_empty(),
        "3.1.1: closed without a packet, got {got:02X?}"
    );

    let publ = Client5::connect(env.v5("pub", server.tls_addr.unwrap()))
        .await
        .unwrap();
    publ.client
        .publish("ok/1", QoS::AtLeastOnce, false, "still fine")
        .await
        .unwrap();
    let p = bystander.publish_packet().await;
    assert_eq!(&p.payload[..], b"still fine");
    let metrics = server.broker.metrics.render();
    assert!(
        metrics.contains("converge_protocol_errors_total{reason=\"0x81\"}"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn first_packet_must_be_connect_and_versions_are_checked() {
    let env = Env::new();
    let server = server(&env).await;
    let addr = server.tcp_addr.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xC0, 0x00]).await.unwrap(); // PINGREQ first
    assert!(read_to_close(&mut s).await.is_empty());

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_packet(3, "old")).await.unwrap(); // protocol level 3 with name MQTT
    let got = read_to_close(&mut s).await;
    assert_eq!(
        got,
        vec![0x20, 0x02, 0x00, 0x01],
        "3.1.1-style CONNACK 0x01, then close"
    );

    // Level 5 with the wrong protocol name: a v5 CONNACK with 0x84 and no properties.
    let mut wrong_name = connect_packet(5, "hj");
    wrong_name[4..8].copy_from_slice(b"MQTX");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&wrong_name).await.unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(
        got,
        vec![0x20, 0x03, 0x00, 0x84, 0x00],
        "v5 CONNACK 0x84, then close"
    );

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]).await.unwrap(); // CONNECT declaring 256 MiB
    assert!(read_to_close(&mut s).await.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_topic_alias_leaves_the_topic_out_on_the_wire() {
    let env = Env::new();
    let server = server(&env).await;
    let addr = server.tcp_addr.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // CONNECT v5 with Topic Alias Maximum 4 (property 0x22).
    let mut c = vec![
        0x10, 0x00, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x22, 0, 4, 0, 1, b'x',
    ];
    c[1] = (c.len() - 2) as u8;
    s.write_all(&c).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0], 0x20, "{:02X?}", &buf[..n]);
    // SUBSCRIBE t/# QoS 0, then wait for SUBACK.
    s.write_all(&[
        0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b't', b'/', b'#', 0x00,
    ])
    .await
    .unwrap();
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0], 0x90, "SUBACK: {:02X?}", &buf[..n]);
    let publ = Client5::connect(env.v5("pub", server.tls_addr.unwrap()))
        .await
        .unwrap();
    publ.client
        .publish("t/a", QoS::AtMostOnce, false, "1")
        .await
        .unwrap();
    publ.client
        .publish("t/a", QoS::AtMostOnce, false, "2")
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 21 {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early after {got:02X?}");
        got.extend_from_slice(&buf[..n]);
    }
    // 0x30 len | 00 03 t/a | props 03 23 00 01 | "1"
    assert_eq!(
        &got[..11],
        &[0x30, 0x0A, 0x00, 0x03, b't', b'/', b'a', 0x03, 0x23, 0x00, 0x01][..],
        "{got:02X?}"
    );
    assert_eq!(got[11], b'1');
    // 0x30 len | 00 00 | props 03 23 00 01 | "2"
    assert_eq!(
        &got[12..20],
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01][..],
        "{got:02X?}"
    );
    assert_eq!(got[20], b'2');
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_subscriber_does_not_stall_publishers_or_a_fast_subscriber() {
    let env = Env::new();
    let server = env
        .start_plain(|c| {
            c.limits.max_queued_messages = 200;
        })
        .await;
    // The slow one subscribes at QoS 1 and then never reads its socket again.
    let mut slow = TcpStream::connect(server.tcp_addr.unwrap()).await.unwrap();
    slow.write_all(&connect_packet(5, "slow")).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0], 0x20, "{:02X?}", &buf[..n]);
    slow.write_all(&[
        0x82, 0x0A, 0x00, 0x01, 0x00, 0x00, 0x04, b'f', b'a', b's', b't', 0x01,
    ])
    .await
    .unwrap();
    let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0], 0x90, "SUBACK {:02X?}", &buf[..n]);

    let addr = server.tls_addr.unwrap();
    let mut fast = Client5::connect(env.v5("fast", addr)).await.unwrap();
    fast.subscribe("fast", QoS::AtLeastOnce).await;
    let mut o = env.v5("producer", addr);
    o.set_outgoing_inflight_upper_limit(50);
    let mut producer = Client5::connect(o).await.unwrap();
    let payload = vec![b'x'; 4096];
    let count = 2000;
    let client = producer.client.clone();
    let sending = tokio::spawn(async move {
        for _ in 0..count {
            client
                .publish("fast", QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
        }
    });
    // 8 MB to a client that reads nothing: its queue overflows, it is disconnected with
    // 0x97, and meanwhile the producer is acknowledged and the fast one gets every message.
    for _ in 0..count {
        fast.publish_packet().await;
    }
    let mut acks = 0;
    while acks < count {
        producer.puback().await;
        acks += 1;
    }
    sending.await.unwrap();
    let metrics = server.broker.metrics.render();
    assert!(
        metrics.contains("converge_messages_dropped_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    // The slow client's connection was closed by the server with DISCONNECT 0x97 at its end.
    let rest = read_to_close(&mut slow).await;
    let tail = &rest[rest.len().saturating_sub(4)..];
    assert_eq!(
        tail,
        &[0xE0, 0x02, 0x97, 0x00][..],
        "ends with DISCONNECT quota exceeded"
    );
    server.shutdown().await.unwrap();
}
