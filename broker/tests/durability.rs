//! The durability contract, tested on the real binary: QoS 1 messages for an offline persistent
//! session are acknowledged only once they are in RocksDB's write-ahead log, so SIGKILL in the
//! middle of a stream loses none of the acknowledged ones. Two kill -9 cycles, as in the issue.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;

use common::{Client5, Env, WAIT};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `converge serve` and returns it with the TLS address it logged.
async fn spawn_server(config: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("converge binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("MQTT over mutual TLS listening") {
                let at = line.find("addr=").expect("addr field") + 5;
                let addr = line[at..].split_whitespace().next().unwrap();
                return addr.parse::<SocketAddr>().unwrap();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server starts listening");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Publishes `count` QoS 1 messages named `{tag}-{i}` and SIGKILLs the server once `kill_after`
/// PUBACKs have arrived. Returns the names of the acknowledged messages.
async fn publish_and_kill(
    env: &Env,
    server: &mut Child,
    addr: SocketAddr,
    tag: &str,
    count: usize,
    kill_after: usize,
) -> Vec<String> {
    let mut o = env.v5("line-plc", addr);
    o.set_outgoing_inflight_upper_limit(32);
    let mut publ = Client5::connect(o).await.unwrap();
    let client = publ.client.clone();
    let tag_owned = tag.to_string();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            if client
                .publish(
                    "line/counter",
                    QoS::AtLeastOnce,
                    false,
                    format!("{tag_owned}-{i}"),
                )
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut acked = 0usize;
    while acked < kill_after {
        publ.puback().await;
        acked += 1;
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    // PUBACKs already on their way before the kill still count as acknowledged.
    while let Ok(Some(Ok(p))) = tokio::time::timeout(WAIT, publ.events.recv()).await {
        if matches!(p, Packet::PubAck(_)) {
            acked += 1;
        }
    }
    sender.abort();
    // QoS 1 PUBACKs come back in PUBLISH order (MQTT-4.6.0-2): the first `acked` are durable.
    (0..acked).map(|i| format!("{tag}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let env = Env::new();
    let config = env.path("converge.toml");
    let toml = format!(
        "data_dir = {data:?}\n[listeners.tls]\nbind = \"127.0.0.1:0\"\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n[listeners.quic]\nbind = \"127.0.0.1:0\"\n[metrics]\nenabled = false\n[mqtt]\nsys_interval_secs = 0\n[persistence]\nsync = \"fsync\"\n",
        data = env.path("data"),
        ca = env.path("ca.pem"),
        cert = env.path("server.pem"),
        key = env.path("server.key"),
    );
    std::fs::write(&config, toml).unwrap();

    let (mut server, addr) = spawn_server(&config).await;
    let mut sub = Client5::connect(env.v5_persistent("historian-feed", addr, 3600))
        .await
        .unwrap();
    sub.subscribe("line/#", QoS::AtLeastOnce).await;
    sub.leave().await;

    let mut acknowledged = publish_and_kill(&env, &mut server, addr, "a", 3000, 600).await;
    let (mut server, addr) = spawn_server(&config).await;
    acknowledged.extend(publish_and_kill(&env, &mut server, addr, "b", 3000, 700).await);
    let (mut server, addr) = spawn_server(&config).await;

    let mut sub = Client5::connect(env.v5_persistent("historian-feed", addr, 3600))
        .await
        .unwrap();
    assert!(
        sub.connack.session_present,
        "the session survived two kill -9"
    );
    let want: BTreeSet<String> = acknowledged.into_iter().collect();
    let mut got = BTreeSet::new();
    while !want.is_subset(&got) {
        let p = sub.publish_packet().await;
        got.insert(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    assert!(
        want.len() >= 1300,
        "both cycles acknowledged messages: {}",
        want.len()
    );
    eprintln!(
        "{} acknowledged messages, all delivered after two kill -9",
        want.len()
    );
    server.start_kill().unwrap();
}
