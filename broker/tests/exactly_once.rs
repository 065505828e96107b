//! QoS 2 across a server restart, over raw sockets on the plain listener so that the test
//! controls every packet of the handshake: a message is neither lost nor delivered twice, in
//! either direction (publisher → broker, broker → subscriber).

mod common;

use std::net::SocketAddr;

use common::{Env, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CONNECT v5, clean start off, session expiry 3600 s.
fn connect_persistent(id: &str) -> Vec<u8> {
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x00, 0, 60, 5, 0x11, 0, 0, 0x0E, 0x10,
    ];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Reads one whole packet (fixed header with a one-byte remaining length is enough here).
async fn packet(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut head))
        .await
        .expect("a packet in time")
        .unwrap();
    assert!(head[1] < 0x80, "short packets only in this test");
    let mut body = vec![0u8; head[1] as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut p = head.to_vec();
    p.extend(body);
    p
}

async fn connect(addr: SocketAddr, id: &str) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_persistent(id)).await.unwrap();
    let connack = packet(&mut s).await;
    assert_eq!(connack[0], 0x20, "{connack:02X?}");
    assert_eq!(connack[3], 0x00, "CONNACK success: {connack:02X?}");
    (s, connack[2] & 1 == 1)
}

/// PUBLISH QoS 2 to "eo/t" with packet id 7 and the given DUP flag and payload.
fn publish_qos2(dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x34 | if dup { 0x08 } else { 0 },
        0,
        0,
        4,
        b'e',
        b'o',
        b'/',
        b't',
        0,
        7,
        0,
    ];
    p.extend_from_slice(payload);
    p[1] = (p.len() - 2) as u8;
    p
}

async fn server(env: &Env) -> converge_broker::server::Running {
    env.start_plain(|_| {}).await
}

#[tokio::test]
async fn qos2_is_delivered_exactly_once_across_restarts() {
    let env = Env::new();
    let srv = server(&env).await;
    let addr = srv.tcp_addr.unwrap();
    let (mut sub, _) = connect(addr, "eo-sub").await;
    // SUBSCRIBE eo/# QoS 2.
    sub.write_all(&[
        0x82, 0x0A, 0x00, 0x01, 0x00, 0x00, 0x04, b'e', b'o', b'/', b'#', 0x02,
    ])
    .await
    .unwrap();
    assert_eq!(packet(&mut sub).await[0], 0x90);

    // The publisher sends PUBLISH and gets PUBREC; then the server restarts before PUBREL.
    let (mut publ, _) = connect(addr, "eo-pub").await;
    publ.write_all(&publish_qos2(false, b"once")).await.unwrap();
    let pubrec = packet(&mut publ).await;
    assert_eq!(&pubrec[..4], &[0x50, 0x02, 0x00, 0x07][..], "{pubrec:02X?}");
    // The subscriber receives it and answers PUBREC; the broker moves on to PUBREL.
    let first = packet(&mut sub).await;
    assert_eq!(first[0] & 0xF6, 0x34, "QoS 2 PUBLISH: {first:02X?}");
    assert!(first.ends_with(b"once"));
    let pid = [first[8], first[9]];
    sub.write_all(&[0x50, 0x02, pid[0], pid[1]]).await.unwrap();
    let pubrel = packet(&mut sub).await;
    assert_eq!(
        &pubrel[..4],
        &[0x62, 0x02, pid[0], pid[1]][..],
        "{pubrel:02X?}"
    );
    drop((sub, publ));
    srv.shutdown().await.unwrap();

    let srv = server(&env).await;
    let addr = srv.tcp_addr.unwrap();
    // The publisher resends its PUBLISH with DUP (it never saw PUBCOMP): the broker knows the
    // packet id and answers PUBREC without routing a second copy.
    let (mut publ, present) = connect(addr, "eo-pub").await;
    assert!(present);
    publ.write_all(&publish_qos2(true, b"once")).await.unwrap();
    assert_eq!(&packet(&mut publ).await[..4], &[0x50, 0x02, 0x00, 0x07][..]);
    publ.write_all(&[0x62, 0x02, 0x00, 0x07]).await.unwrap();
    assert_eq!(
        &packet(&mut publ).await[..4],
        &[0x70, 0x02, 0x00, 0x07][..],
        "PUBCOMP"
    );

    // The subscriber resumes: it gets PUBREL again (not the message), then only the marker.
    let (mut sub, present) = connect(addr, "eo-sub").await;
    assert!(present);
    let again = packet(&mut sub).await;
    assert_eq!(
        &again[..4],
        &[0x62, 0x02, pid[0], pid[1]][..],
        "PUBREL resent, not the PUBLISH: {again:02X?}"
    );
    sub.write_all(&[0x70, 0x02, pid[0], pid[1]]).await.unwrap();
    // QoS 0 marker from the publisher on the same topic.
    publ.write_all(&[
        0x30, 0x0B, 0x00, 0x04, b'e', b'o', b'/', b't', 0x00, b'e', b'n', b'd', b'!',
    ])
    .await
    .unwrap();
    let next = packet(&mut sub).await;
    assert!(
        next.ends_with(b"end!"),
        "the next message is the marker, not a duplicate: {next:02X?}"
    );
    srv.shutdown().await.unwrap();
}
