//! The historian inside the server: what devices publish over MQTT (rumqttc, mutual TLS) is
//! decoded by the configured rules, written with the PUBACK's group commit, and read back over
//! the HTTP query API, as an IT application would.

mod common;

use std::net::SocketAddr;

use common::{http_get, Client5, Env};
use converge_broker::config::Config;
use converge_broker::server::Running;
use converge_historian::ingest::sparkplug::proto::payload::metric::Value as MV;
use converge_historian::ingest::sparkplug::proto::payload::Metric;
use converge_historian::ingest::sparkplug::proto::{DataType, Payload};
use converge_historian::ingest::RuleConfig;
use prost::Message;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value as Json;

fn rule(toml_text: &str) -> RuleConfig {
    toml::from_str(toml_text).unwrap()
}

fn with_rules(c: &mut Config) {
    c.historian.rules = vec![
        rule("filter = \"plant/+/plain/#\"\ndecoder = \"plain\"\nunit = \"°C\""),
        rule("filter = \"plant/+/json/#\"\ndecoder = \"json\""),
        rule("filter = \"spBv1.0/#\"\ndecoder = \"sparkplug\""),
    ];
}

async fn get_json(api: SocketAddr, path: &str) -> Json {
    let (status, body) = http_get(api, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `items[i].point.value` of a `latest` answer.
fn latest_values(j: &Json) -> Vec<Json> {
    j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["point"]["value"].clone())
        .collect()
}

async fn publish_acked(c: &mut Client5, topic: &str, payload: Vec<u8>) {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    c.puback().await;
}

fn metric_value(running: &Running, name: &str) -> u64 {
    let text = running.broker.metrics.render();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn acknowledged_plain_and_json_points_are_queryable() {
    let env = Env::new();
    let running = env.start_with(with_rules).await;
    let (addr, api) = (running.tls_addr.unwrap(), running.api_addr.unwrap());
    let mut dev = Client5::connect(env.v5("press-01", addr)).await.unwrap();

    publish_acked(&mut dev, "plant/l1/plain/temp", b"21.5".to_vec()).await;
    publish_acked(
        &mut dev,
        "plant/l1/json/flow",
        br#"[{"value": 3, "ts": 1700000000000}, {"value": 4, "ts": 1700000060000, "quality": 1073741824}]"#
            .to_vec(),
    )
    .await;

    // The PUBACKs came after the group commit: the points are readable now.
    let latest = get_json(
        api,
        "/api/v1/streams/latest?tag=plant/l1/plain/temp&tag=plant/l1/json/flow",
    )
    .await;
    assert_eq!(
        latest_values(&latest),
        vec![Json::from(21.5), Json::from(4.0)]
    );
    assert_eq!(latest["items"][1]["point"]["quality"], "uncertain");

    let recorded = get_json(
        api,
        "/api/v1/streams/recorded?tag=plant/l1/json/flow&start=1700000000000&end=1700000060000",
    )
    .await;
    let points = recorded["items"][0]["points"].as_array().unwrap();
    let got: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p["time_ms"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![(1_700_000_000_000, 3.0), (1_700_000_060_000, 4.0)]
    );

    let meta = get_json(api, "/api/v1/tags/plant/l1/plain/temp").await;
    assert_eq!(meta["unit"], "°C");
    assert_eq!(meta["value_type"], "f64");
    let search = get_json(api, "/api/v1/tags?q=plant/l1/*").await;
    assert_eq!(search["items"].as_array().unwrap().len(), 2);

    assert_eq!(
        metric_value(&running, "converge_historian_points_written_total"),
        3
    );
    assert_eq!(metric_value(&running, "converge_historian_tags "), 2);
    let (status, _) = http_get(api, "/api/v1/streams/latest?tag=no/such/tag").await;
    running.shutdown().await.unwrap();

    // Who read what is in the audit log: one record per answered request.
    let log = std::fs::read_to_string(env.path("data").join("audit").join("audit.jsonl")).unwrap();
    let queries: Vec<Json> = log
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|r| r["action"] == "historian_query")
        .collect();
    assert_eq!(queries.len(), 5, "{log}");
    let recorded = queries
        .iter()
        .find(|r| r["resource"].as_str().unwrap().starts_with("recorded?"))
        .unwrap();
    assert_eq!(recorded["actor"], "local");
    assert_eq!(recorded["outcome"], "success");
    assert!(recorded["resource"]
        .as_str()
        .unwrap()
        .contains("tag=plant/l1/json/flow&start=1700000000000"));
    assert!(recorded["source"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let unknown = queries.last().unwrap();
    assert_eq!(unknown["outcome"], "failure");
    assert_eq!(unknown["reason"], status.to_string());
}

#[tokio::test]
async fn points_survive_a_restart_and_replacements_are_counted() {
    let env = Env::new();
    let running = env.start_with(with_rules).await;
    let addr = running.tls_addr.unwrap();
    let mut dev = Client5::connect(env.v5("press-01", addr)).await.unwrap();
    for (ts, v) in [(1_700_000_000_000u64, 1), (1_700_000_001_000, 2)] {
        let body = format!(r#"{{"value": {v}, "ts": {ts}}}"#);
        publish_acked(&mut dev, "plant/l2/json/level", body.into_bytes()).await;
    }
    // Same timestamp again: replaces the first point, as in PI.
    publish_acked(
        &mut dev,
        "plant/l2/json/level",
        br#"{"value": 10, "ts": 1700000000000}"#.to_vec(),
    )
    .await;
    assert_eq!(
        metric_value(&running, "converge_historian_points_replaced_total"),
        1
    );
    dev.leave().await;
    running.shutdown().await.unwrap();

    let running = env.start_with(with_rules).await;
    let api = running.api_addr.unwrap();
    let recorded = get_json(
        api,
        "/api/v1/streams/recorded?tag=plant/l2/json/level&start=1700000000000&end=1700000001000",
    )
    .await;
    let values: Vec<f64> = recorded["items"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![10.0, 2.0]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_point_of_the_wrong_type_is_refused_and_counted_but_the_message_is_delivered() {
    let env = Env::new();
    let running = env.start_with(with_rules).await;
    let (addr, api) = (running.tls_addr.unwrap(), running.api_addr.unwrap());
    let mut sub = Client5::connect(env.v5("scada-01", addr)).await.unwrap();
    sub.subscribe("plant/#", QoS::AtLeastOnce).await;
    let mut dev = Client5::connect(env.v5("press-01", addr)).await.unwrap();

    publish_acked(&mut dev, "plant/l3/plain/speed", b"1200".to_vec()).await;
    // A text payload for a numeric tag: not stored, still acknowledged and routed.
    dev.client
        .publish("plant/l3/plain/speed", QoS::AtLeastOnce, false, "fast")
        .await
        .unwrap();
    let ack = dev
        .expect("PUBACK", |p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await;
    assert_eq!(format!("{ack:?}"), "Success");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(sub.publish_packet().await.payload);
    }
    assert_eq!(got[1].as_ref(), b"fast");
    assert_eq!(
        metric_value(&running, "converge_historian_points_rejected_total"),
        1
    );
    let latest = get_json(api, "/api/v1/streams/latest?tag=plant/l3/plain/speed").await;
    assert_eq!(latest_values(&latest), vec![Json::from(1200.0)]);
    running.shutdown().await.unwrap();
}

fn sparkplug(seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_700_000_000_000),
        seq: Some(seq),
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn sp_metric(name: Option<&str>, alias: u64, value: f64, ts: u64) -> Metric {
    Metric {
        name: name.map(str::to_owned),
        alias: Some(alias),
        timestamp: Some(ts),
        datatype: Some(DataType::Double as u32),
        value: Some(MV::DoubleValue(value)),
        ..Metric::default()
    }
}

#[tokio::test]
async fn sparkplug_births_and_data_are_historized_and_unknown_nodes_are_asked_to_rebirth() {
    let env = Env::new();
    let running = env.start_with(with_rules).await;
    let (addr, api) = (running.tls_addr.unwrap(), running.api_addr.unwrap());
    let mut scada = Client5::connect(env.v5("scada-01", addr)).await.unwrap();
    scada.subscribe("spBv1.0/+/NCMD/#", QoS::AtMostOnce).await;
    let mut edge = Client5::connect(env.v5("edge-01", addr)).await.unwrap();

    // DATA before any BIRTH (the server just started): the node is asked to rebirth.
    publish_acked(
        &mut edge,
        "spBv1.0/plant1/NDATA/edge-01",
        sparkplug(5, vec![sp_metric(None, 1, 7.0, 1_700_000_000_000)]),
    )
    .await;
    let ncmd = scada.publish_packet().await;
    assert_eq!(ncmd.topic.as_ref(), b"spBv1.0/plant1/NCMD/edge-01");
    let cmd = Payload::decode(ncmd.payload.as_ref()).unwrap();
    assert_eq!(cmd.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));

    let birth = sparkplug(
        0,
        vec![
            Metric {
                name: Some("bdSeq".into()),
                datatype: Some(DataType::Int64 as u32),
                value: Some(MV::LongValue(0)),
                ..Metric::default()
            },
            sp_metric(Some("Line/Pressure"), 1, 2.5, 1_700_000_000_000),
        ],
    );
    publish_acked(&mut edge, "spBv1.0/plant1/NBIRTH/edge-01", birth).await;
    publish_acked(
        &mut edge,
        "spBv1.0/plant1/NDATA/edge-01",
        sparkplug(1, vec![sp_metric(None, 1, 2.75, 1_700_000_001_000)]),
    )
    .await;

    let tag = "plant1/edge-01/Line/Pressure";
    let recorded = get_json(
        api,
        &format!("/api/v1/streams/recorded?tag={tag}&start=1700000000000&end=1700000001000"),
    )
    .await;
    let values: Vec<f64> = recorded["items"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![2.5, 2.75]);
    assert_eq!(
        metric_value(&running, "converge_historian_rebirth_requests_total"),
        1
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn historian_can_be_turned_off() {
    let env = Env::new();
    let running = env
        .start_with(|c| {
            with_rules(c);
            c.historian.enabled = false;
        })
        .await;
    assert!(running.api_addr.is_none());
    let addr = running.tls_addr.unwrap();
    let mut dev = Client5::connect(env.v5("press-01", addr)).await.unwrap();
    publish_acked(&mut dev, "plant/l1/plain/temp", b"1".to_vec()).await;
    assert_eq!(
        metric_value(&running, "converge_historian_points_written_total"),
        0
    );
    running.shutdown().await.unwrap();
}

#[test]
fn bad_rules_and_a_public_plain_api_are_refused_by_name() {
    let e = Config::parse("[[historian.rules]]\nfilter = \"a/#/b\"\ndecoder = \"plain\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("historian.rules"), "{e}");
    let e = Config::parse("[historian.api]\nbind = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(e.to_string().contains("historian.api.bind"), "{e}");
    let e = Config::parse("[historian]\nseal_threshold = 0\n").unwrap_err();
    assert!(e.to_string().contains("historian.seal_threshold"), "{e}");
}
