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

/// Starts `converge serve` and returns it with the TLS and historian API addresses it logged.
async fn spawn_server(config: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
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
    let field = |line: &str| {
        let at = line.find("addr=").expect("addr field") + 5;
        let addr = line[at..].split_whitespace().next().unwrap();
        addr.parse::<SocketAddr>().unwrap()
    };
    let (addr, api) = tokio::time::timeout(WAIT, async {
        let mut tls = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("MQTT over mutual TLS listening") {
                tls = Some(field(&line));
            }
            if line.contains("historian query API") {
                return (tls.expect("TLS is logged first"), field(&line));
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server starts listening");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, api)
}

/// Publishes `count` QoS 1 messages `payload(i)` to `topic` and SIGKILLs the server once
/// `kill_after` PUBACKs have arrived. Returns the indexes of the acknowledged messages.
async fn publish_and_kill(
    env: &Env,
    server: &mut Child,
    addr: SocketAddr,
    topic: &'static str,
    payload: fn(usize) -> String,
    count: usize,
    kill_after: usize,
) -> std::ops::Range<usize> {
    let mut o = env.v5("line-plc", addr);
    o.set_outgoing_inflight_upper_limit(32);
    let mut publ = Client5::connect(o).await.unwrap();
    let client = publ.client.clone();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload(i))
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
    0..acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let env = Env::new();
    let config = env.path("converge.toml");
    let toml = format!(
        "data_dir = {data:?}\n[listeners.tls]\nbind = \"127.0.0.1:0\"\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n[listeners.quic]\nbind = \"127.0.0.1:0\"\n[historian.api]\nbind = \"127.0.0.1:0\"\n[metrics]\nenabled = false\n[mqtt]\nsys_interval_secs = 0\n[persistence]\nsync = \"fsync\"\n",
        data = env.path("data"),
        ca = env.path("ca.pem"),
        cert = env.path("server.pem"),
        key = env.path("server.key"),
    );
    std::fs::write(&config, toml).unwrap();

    let (mut server, addr, _) = spawn_server(&config).await;
    let mut sub = Client5::connect(env.v5_persistent("historian-feed", addr, 3600))
        .await
        .unwrap();
    sub.subscribe("line/#", QoS::AtLeastOnce).await;
    sub.leave().await;

    let a = |i: usize| format!("a-{i}");
    let b = |i: usize| format!("b-{i}");
    let mut acknowledged: Vec<String> =
        publish_and_kill(&env, &mut server, addr, "line/counter", a, 3000, 600)
            .await
            .map(a)
            .collect();
    let (mut server, addr, _) = spawn_server(&config).await;
    acknowledged.extend(
        publish_and_kill(&env, &mut server, addr, "line/counter", b, 3000, 700)
            .await
            .map(b),
    );
    let (mut server, addr, _) = spawn_server(&config).await;

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

/// The same contract for the historian: a QoS 1 PUBLISH to a historized topic is acknowledged
/// only once its point is in the write-ahead log with the rest of the group commit. Two kill -9
/// cycles; afterwards the query API returns every acknowledged point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_historian_point() {
    let env = Env::new();
    let config = env.path("converge.toml");
    let toml = format!(
        "data_dir = {data:?}\n[listeners.tls]\nbind = \"127.0.0.1:0\"\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n[listeners.quic]\nbind = \"127.0.0.1:0\"\n[historian]\nseal_threshold = 256\n[[historian.rules]]\nfilter = \"line/#\"\ndecoder = \"json\"\n[historian.api]\nbind = \"127.0.0.1:0\"\n[metrics]\nenabled = false\n[mqtt]\nsys_interval_secs = 0\n[persistence]\nsync = \"fsync\"\n",
        data = env.path("data"),
        ca = env.path("ca.pem"),
        cert = env.path("server.pem"),
        key = env.path("server.key"),
    );
    std::fs::write(&config, toml).unwrap();
    const T0: usize = 1_700_000_000_000;
    // One point per millisecond; the second cycle writes after the first's range.
    let a = |i: usize| format!(r#"{{"value": {i}, "ts": {}}}"#, T0 + i);
    let b = |i: usize| format!(r#"{{"value": {}, "ts": {}}}"#, 10_000 + i, T0 + 10_000 + i);

    let (mut server, addr, _) = spawn_server(&config).await;
    let first = publish_and_kill(&env, &mut server, addr, "line/meter", a, 3000, 900).await;
    let (mut server, addr, _) = spawn_server(&config).await;
    let second = publish_and_kill(&env, &mut server, addr, "line/meter", b, 3000, 1000).await;
    let (mut server, _, api) = spawn_server(&config).await;

    let mut stored = BTreeSet::new();
    let mut query = format!(
        "/api/v1/streams/recorded?tag=line/meter&start={T0}&end={}&max_count=10000",
        T0 + 20_000
    );
    loop {
        let (status, body) = common::http_get(api, &query).await;
        assert_eq!(status, 200, "{body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        let item = &j["items"][0];
        for p in item["points"].as_array().unwrap() {
            stored.insert(p["value"].as_f64().unwrap() as usize);
        }
        match item["next"].as_str() {
            Some(token) => {
                query = format!(
                "/api/v1/streams/recorded?start={T0}&end={}&max_count=10000&continuation={token}",
                T0 + 20_000
            )
            }
            None => break,
        }
    }
    let want: BTreeSet<usize> = first.chain(second.map(|i| 10_000 + i)).collect();
    let lost: Vec<_> = want.difference(&stored).take(10).collect();
    assert!(lost.is_empty(), "acknowledged points lost: {lost:?}…");
    assert!(
        want.len() >= 1900,
        "both cycles acknowledged: {}",
        want.len()
    );
    eprintln!(
        "{} acknowledged points, {} stored, none lost after two kill -9",
        want.len(),
        stored.len()
    );
    server.start_kill().unwrap();
}
