//! Sparkplug B through `Ingest`: BIRTH, DATA by alias and by name, nulls,
//! historical and transient metrics, DEATHs, bdSeq, seq gaps, unknown
//! aliases and deadbands. Payloads are built by encoding the prost structs.

use std::time::Duration;

use converge_historian::encoding::{Quality, Severity, Timestamp, Value, ValueType};
use converge_historian::ingest::sparkplug::proto::payload::metric::Value as MV;
use converge_historian::ingest::sparkplug::proto::payload::{DataSet, MetaData, Metric};
use converge_historian::ingest::sparkplug::proto::{DataType, Payload};
use converge_historian::ingest::{
    Decoded, Decoder, Ingest, IngestError, RuleConfig, Rules, TagPoint, STALE_QUALITY,
};
use prost::Message;

const RX: i64 = 1_800_000_000_000_000;
const MS: u64 = 1_700_000_000_000;

fn rx() -> Timestamp {
    Timestamp::from_micros(RX)
}

fn us(ms: u64) -> Timestamp {
    Timestamp::from_micros(i64::try_from(ms).unwrap() * 1_000)
}

fn rule() -> RuleConfig {
    RuleConfig {
        unit: Some("bar".into()),
        retention: Some("30d".into()),
        ..RuleConfig::new("spBv1.0/#", Decoder::Sparkplug)
    }
}

fn ingest_with(rule: RuleConfig) -> Ingest {
    Ingest::new(Rules::compile(vec![rule]).unwrap())
}

fn metric(name: &str, alias: u64, datatype: DataType, value: Option<MV>) -> Metric {
    Metric {
        name: Some(name.into()),
        alias: Some(alias),
        datatype: Some(datatype as u32),
        value,
        ..Metric::default()
    }
}

/// A DATA metric by alias only, as edge nodes send them.
fn by_alias(alias: u64, value: MV) -> Metric {
    Metric {
        alias: Some(alias),
        value: Some(value),
        ..Metric::default()
    }
}

fn payload(ts: Option<u64>, seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: ts,
        seq,
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn bd_seq(n: u64) -> Metric {
    metric("bdSeq", 0, DataType::Int64, Some(MV::LongValue(n)))
}

fn send(ingest: &mut Ingest, topic: &str, bytes: &[u8]) -> Decoded {
    ingest.decode(topic, bytes, rx()).unwrap()
}

fn find<'a>(d: &'a Decoded, tag: &str) -> &'a TagPoint {
    d.points
        .iter()
        .find(|p| p.tag == tag)
        .unwrap_or_else(|| panic!("no point for {tag} in {:?}", d.points))
}

/// NBIRTH (bdSeq 7, seq 0) with Temp (alias 1) and Count (alias 2), then
/// DBIRTH of D1 (seq 1) with Pressure (alias 10) and State (alias 11).
fn born() -> Ingest {
    let mut ingest = ingest_with(rule());
    let nbirth = payload(
        Some(MS),
        Some(0),
        vec![
            bd_seq(7),
            metric("Temp", 1, DataType::Double, Some(MV::DoubleValue(20.5))),
            metric("Count", 2, DataType::UInt64, Some(MV::LongValue(3))),
        ],
    );
    let d = send(&mut ingest, "spBv1.0/G/NBIRTH/N", &nbirth);
    assert_eq!(d.points.len(), 2, "bdSeq is not a tag: {:?}", d.points);
    let dbirth = payload(
        Some(MS),
        Some(1),
        vec![
            metric("Pressure", 10, DataType::Float, Some(MV::FloatValue(1.5))),
            metric("State", 11, DataType::String, None),
        ],
    );
    let d = send(&mut ingest, "spBv1.0/G/DBIRTH/N/D1", &dbirth);
    assert_eq!(d.points.len(), 1, "State has no value yet");
    ingest
}

#[test]
fn births_define_tags_and_store_their_values() {
    let mut ingest = ingest_with(rule());
    let nbirth = payload(
        Some(MS),
        Some(0),
        vec![
            bd_seq(0),
            metric("Temp", 1, DataType::Double, Some(MV::DoubleValue(20.5))),
            Metric {
                metadata: Some(MetaData {
                    description: Some("pump speed".into()),
                    ..MetaData::default()
                }),
                ..metric("Speed", 2, DataType::Int32, Some(MV::IntValue(u32::MAX)))
            },
        ],
    );
    let d = send(&mut ingest, "spBv1.0/G/NBIRTH/N", &nbirth);
    let temp = find(&d, "G/N/Temp");
    assert_eq!(temp.point.value, Value::F64(20.5));
    assert_eq!(temp.point.ts, us(MS));
    assert_eq!(temp.point.quality, Quality::GOOD);
    assert_eq!(temp.meta.value_type, ValueType::F64);
    assert_eq!(temp.meta.unit.as_deref(), Some("bar"));
    assert_eq!(temp.meta.retention, Some(Duration::from_secs(30 * 86_400)));
    let speed = find(&d, "G/N/Speed");
    assert_eq!(speed.point.value, Value::I64(-1));
    assert_eq!(speed.meta.description.as_deref(), Some("pump speed"));
    assert!(d.rebirth.is_none());
    assert_eq!(ingest.counters().points, 2);
}

#[test]
fn data_by_alias_and_by_name_with_timestamps() {
    let mut ingest = born();
    // Metric timestamp wins.
    let ndata = payload(
        Some(MS + 5),
        Some(2),
        vec![Metric {
            timestamp: Some(MS + 1),
            ..by_alias(1, MV::DoubleValue(21.0))
        }],
    );
    let d = send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata);
    let p = find(&d, "G/N/Temp");
    assert_eq!(
        (p.point.ts, &p.point.value),
        (us(MS + 1), &Value::F64(21.0))
    );

    // By name, payload timestamp.
    let ddata = payload(
        Some(MS + 6),
        Some(3),
        vec![Metric {
            name: Some("State".into()),
            value: Some(MV::StringValue("running".into())),
            ..Metric::default()
        }],
    );
    let d = send(&mut ingest, "spBv1.0/G/DDATA/N/D1", &ddata);
    let p = find(&d, "G/N/D1/State");
    assert_eq!(p.point.ts, us(MS + 6));
    assert_eq!(p.point.value, Value::Str("running".into()));
    assert_eq!(p.meta.value_type, ValueType::Str);

    // Neither: the broker's receive time.
    let ddata = payload(None, Some(4), vec![by_alias(10, MV::FloatValue(2.25))]);
    let d = send(&mut ingest, "spBv1.0/G/DDATA/N/D1", &ddata);
    let p = find(&d, "G/N/D1/Pressure");
    assert_eq!((p.point.ts, &p.point.value), (rx(), &Value::F64(2.25)));
    assert_eq!(ingest.counters().seq_gaps, 0);
}

#[test]
fn null_historical_and_transient() {
    let mut ingest = born();
    let ndata = payload(
        Some(MS + 10),
        Some(2),
        vec![
            Metric {
                timestamp: Some(MS - 1_000),
                is_historical: Some(true),
                ..by_alias(1, MV::DoubleValue(19.0))
            },
            Metric {
                is_transient: Some(true),
                ..by_alias(2, MV::LongValue(4))
            },
        ],
    );
    let d = send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata);
    assert_eq!(d.points.len(), 1);
    let p = find(&d, "G/N/Temp");
    assert_eq!(
        (p.point.ts, &p.point.value),
        (us(MS - 1_000), &Value::F64(19.0))
    );
    assert_eq!(ingest.counters().transient_skipped, 1);

    // A null carries the last live value (20.5 from the BIRTH, not the
    // historical 19.0) with Bad quality.
    let ndata = payload(
        Some(MS + 20),
        Some(3),
        vec![Metric {
            alias: Some(1),
            is_null: Some(true),
            ..Metric::default()
        }],
    );
    let d = send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata);
    let p = find(&d, "G/N/Temp");
    assert_eq!(p.point.value, Value::F64(20.5));
    assert_eq!(p.point.quality.severity(), Severity::Bad);
    assert_eq!(p.point.ts, us(MS + 20));

    // Null for a metric never seen with a value: zero of its type.
    let ddata = payload(
        Some(MS + 21),
        Some(4),
        vec![Metric {
            alias: Some(11),
            is_null: Some(true),
            ..Metric::default()
        }],
    );
    let d = send(&mut ingest, "spBv1.0/G/DDATA/N/D1", &ddata);
    assert_eq!(
        find(&d, "G/N/D1/State").point.value,
        Value::Str(String::new())
    );
}

#[test]
fn ddeath_marks_only_the_device_stale() {
    let mut ingest = born();
    let ddata = payload(
        Some(MS + 1),
        Some(2),
        vec![by_alias(10, MV::FloatValue(3.0))],
    );
    send(&mut ingest, "spBv1.0/G/DDATA/N/D1", &ddata);

    let ddeath = payload(Some(MS + 50), Some(3), vec![]);
    let d = send(&mut ingest, "spBv1.0/G/DDEATH/N/D1", &ddeath);
    assert_eq!(d.points.len(), 2, "{:?}", d.points);
    let p = find(&d, "G/N/D1/Pressure");
    assert_eq!(p.point.quality, STALE_QUALITY);
    assert_eq!(p.point.value, Value::F64(3.0));
    assert_eq!(p.point.ts, us(MS + 50));
    let s = find(&d, "G/N/D1/State");
    assert_eq!(s.point.value, Value::Str(String::new()));
    assert_eq!(ingest.counters().stale_marks, 2);

    // The device is gone; the node is not.
    let ddata = payload(
        Some(MS + 60),
        Some(4),
        vec![by_alias(10, MV::FloatValue(3.0))],
    );
    let d = send(&mut ingest, "spBv1.0/G/DDATA/N/D1", &ddata);
    assert!(d.points.is_empty());
    assert_eq!(ingest.counters().unknown_nodes, 1);
    assert!(d.rebirth.is_some());
    let ndata = payload(
        Some(MS + 61),
        Some(5),
        vec![by_alias(1, MV::DoubleValue(1.0))],
    );
    assert_eq!(
        send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata).points.len(),
        1
    );
}

#[test]
fn ndeath_marks_node_and_devices_stale_at_receive_time() {
    let mut ingest = born();
    // The Will was written at CONNECT time; its timestamp is ignored.
    let ndeath = payload(Some(MS - 99_000), None, vec![bd_seq(7)]);
    let d = send(&mut ingest, "spBv1.0/G/NDEATH/N", &ndeath);
    let tags: Vec<&str> = d.points.iter().map(|p| p.tag.as_str()).collect();
    assert_eq!(d.points.len(), 4, "{tags:?}");
    for tag in ["G/N/Temp", "G/N/Count", "G/N/D1/Pressure", "G/N/D1/State"] {
        let p = find(&d, tag);
        assert_eq!(p.point.quality, STALE_QUALITY);
        assert_eq!(p.point.ts, rx());
    }
    assert_eq!(find(&d, "G/N/Temp").point.value, Value::F64(20.5));
    assert_eq!(find(&d, "G/N/Count").point.value, Value::I64(3));
    assert_eq!(ingest.counters().stale_marks, 4);

    // Dead: DATA is unknown until the next NBIRTH.
    let ndata = payload(Some(MS), Some(2), vec![by_alias(1, MV::DoubleValue(1.0))]);
    assert!(send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata)
        .points
        .is_empty());
    assert_eq!(ingest.counters().unknown_nodes, 1);
}

#[test]
fn stale_mark_is_never_older_than_the_last_value() {
    let mut ingest = born();
    let future = u64::try_from(RX / 1_000).unwrap() + 60_000;
    let ndata = payload(
        Some(future),
        Some(2),
        vec![by_alias(1, MV::DoubleValue(9.0))],
    );
    send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata);
    // A timestamp out of range does not matter: an NDEATH's is not used.
    let ndeath = payload(Some(u64::MAX), None, vec![bd_seq(7)]);
    let d = send(&mut ingest, "spBv1.0/G/NDEATH/N", &ndeath);
    assert_eq!(find(&d, "G/N/Temp").point.ts, us(future));
    assert_eq!(find(&d, "G/N/Count").point.ts, rx());
}

#[test]
fn ndeath_of_an_older_session_is_ignored() {
    let mut ingest = born();
    let d = send(
        &mut ingest,
        "spBv1.0/G/NDEATH/N",
        &payload(None, None, vec![bd_seq(6)]),
    );
    assert!(d.points.is_empty());
    assert_eq!(ingest.counters().stale_deaths_ignored, 1);
    // Still alive.
    let ndata = payload(Some(MS), Some(2), vec![by_alias(1, MV::DoubleValue(1.0))]);
    assert_eq!(
        send(&mut ingest, "spBv1.0/G/NDATA/N", &ndata).points.len(),
        1
    );
}

#[test]
fn seq_gaps_are_counted_and_wrap_is_not_a_gap() {
    let mut ingest = born();
    let data = |seq| payload(Some(MS), Some(seq), vec![by_alias(1, MV::DoubleValue(1.0))]);
    send(&mut ingest, "spBv1.0/G/NDATA/N", &data(2));
    send(&mut ingest, "spBv1.0/G/NDATA/N", &data(5)); // 3 and 4 lost
    assert_eq!(ingest.counters().seq_gaps, 1);
    for seq in (6..=255).chain(0..=1) {
        send(
            &mut ingest,
            "spBv1.0/G/DDATA/N/D1",
            &payload(Some(MS), Some(seq), vec![]),
        );
    }
    assert_eq!(ingest.counters().seq_gaps, 1);
    send(&mut ingest, "spBv1.0/G/NDATA/N", &data(1)); // repeated
    assert_eq!(ingest.counters().seq_gaps, 2);
    // A new NBIRTH restarts the count.
    send(
        &mut ingest,
        "spBv1.0/G/NBIRTH/N",
        &payload(Some(MS), Some(0), vec![bd_seq(8)]),
    );
    send(
        &mut ingest,
        "spBv1.0/G/NDATA/N",
        &payload(Some(MS), Some(1), vec![]),
    );
    assert_eq!(ingest.counters().seq_gaps, 2);
}

#[test]
fn unknown_alias_name_and_node_ask_for_rebirth() {
    let mut ingest = born();
    let d = send(
        &mut ingest,
        "spBv1.0/G/NDATA/N",
        &payload(Some(MS), Some(2), vec![by_alias(99, MV::DoubleValue(1.0))]),
    );
    assert!(d.points.is_empty());
    assert_eq!(ingest.counters().unknown_aliases, 1);
    let rebirth = d.rebirth.unwrap();
    assert_eq!(rebirth.topic(), "spBv1.0/G/NCMD/N");
    let cmd = Payload::decode(rebirth.payload(rx()).as_slice()).unwrap();
    let m = cmd.metrics.first().unwrap();
    assert_eq!(m.name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(m.value, Some(MV::BooleanValue(true)));

    let by_name = Metric {
        name: Some("Nope".into()),
        value: Some(MV::DoubleValue(1.0)),
        ..Metric::default()
    };
    send(
        &mut ingest,
        "spBv1.0/G/NDATA/N",
        &payload(Some(MS), Some(3), vec![by_name]),
    );
    assert_eq!(ingest.counters().unknown_metrics, 1);

    // DATA from a node never born (e.g. the server restarted).
    let d = send(
        &mut ingest,
        "spBv1.0/G/NDATA/Other",
        &payload(Some(MS), Some(9), vec![by_alias(1, MV::DoubleValue(1.0))]),
    );
    assert_eq!(d.rebirth.unwrap().edge_node, "Other");
    assert_eq!(ingest.counters().unknown_nodes, 1);
}

#[test]
fn bad_metrics_are_rejected_alone() {
    let mut ingest = ingest_with(rule());
    let nbirth = payload(
        Some(MS),
        Some(0),
        vec![
            metric("Big", 1, DataType::UInt64, Some(MV::LongValue(u64::MAX))),
            metric(
                "Table",
                2,
                DataType::DataSet,
                Some(MV::DatasetValue(DataSet::default())),
            ),
            metric(
                "Odd",
                3,
                DataType::Double,
                Some(MV::StringValue("x".into())),
            ),
            Metric {
                datatype: Some(999),
                ..metric("Future", 4, DataType::Unknown, None)
            },
            metric("Ok", 5, DataType::Boolean, Some(MV::BooleanValue(true))),
            metric("Dup", 5, DataType::Boolean, Some(MV::BooleanValue(true))),
        ],
    );
    let d = send(&mut ingest, "spBv1.0/G/NBIRTH/N", &nbirth);
    assert_eq!(d.points.len(), 1);
    assert_eq!(find(&d, "G/N/Ok").point.value, Value::Bool(true));
    let c = ingest.counters();
    assert_eq!(c.unsupported_skipped, 1);
    assert_eq!(
        c.errors.value, 3,
        "UInt64 range, wrong value type, unknown datatype"
    );
    assert_eq!(c.errors.malformed, 1, "duplicate alias");
    assert!(d
        .rejected
        .iter()
        .any(|e| matches!(e, IngestError::IntegerOutOfRange)));
    // A later DATA for the skipped DataSet is skipped, not unknown.
    send(
        &mut ingest,
        "spBv1.0/G/NDATA/N",
        &payload(
            Some(MS),
            Some(1),
            vec![by_alias(2, MV::DatasetValue(DataSet::default()))],
        ),
    );
    assert_eq!(ingest.counters().unsupported_skipped, 2);
    assert_eq!(ingest.counters().unknown_aliases, 0);
}

#[test]
fn commands_and_state_are_ignored_and_garbage_is_an_error() {
    let mut ingest = born();
    for topic in [
        "spBv1.0/G/NCMD/N",
        "spBv1.0/G/DCMD/N/D1",
        "spBv1.0/STATE/host",
    ] {
        let d = send(&mut ingest, topic, b"{\"online\":true}");
        assert!(d.points.is_empty());
    }
    assert_eq!(ingest.counters().ignored, 3);
    let err = ingest
        .decode("spBv1.0/G/NDATA/N", &[0xFF, 0xFF, 0xFF], rx())
        .unwrap_err();
    assert!(matches!(err, IngestError::InvalidProtobuf(_)));
    let err = ingest.decode("spBv1.0/G/NDATA", &[], rx()).unwrap_err();
    assert!(matches!(err, IngestError::InvalidSparkplugTopic(_)));
    assert_eq!(ingest.counters().errors.malformed, 2);
}

#[test]
fn templates_and_limits() {
    let mut ingest = ingest_with(RuleConfig {
        tag: Some("site1.{group}.{node}.{device}.{metric}".into()),
        ..rule()
    });
    let dbirth = payload(
        Some(MS),
        Some(1),
        vec![metric("T", 1, DataType::Double, Some(MV::DoubleValue(1.0)))],
    );
    send(
        &mut ingest,
        "spBv1.0/G/NBIRTH/N",
        &payload(Some(MS), Some(0), vec![]),
    );
    let d = send(&mut ingest, "spBv1.0/G/DBIRTH/N/D", &dbirth);
    assert_eq!(d.points.first().unwrap().tag, "site1.G.N.D.T");

    let mut ingest = ingest_with(RuleConfig {
        tag: Some("plant/{tag}".into()),
        ..rule()
    });
    let nbirth = payload(
        Some(MS),
        Some(0),
        vec![metric("T", 1, DataType::Double, Some(MV::DoubleValue(1.0)))],
    );
    let d = send(&mut ingest, "spBv1.0/G/NBIRTH/N", &nbirth);
    assert_eq!(d.points.first().unwrap().tag, "plant/G/N/T");

    let many: Vec<Metric> = (0..10_001)
        .map(|i| by_alias(i, MV::DoubleValue(0.0)))
        .collect();
    let err = ingest
        .decode("spBv1.0/G/NDATA/N", &payload(None, Some(1), many), rx())
        .unwrap_err();
    assert!(matches!(err, IngestError::TooManyPoints { .. }));
}

#[test]
fn deadband_applies_to_sparkplug_points() {
    let mut ingest = ingest_with(RuleConfig {
        deadband: Some(0.5),
        ..rule()
    });
    let nbirth = payload(
        Some(MS),
        Some(0),
        vec![metric(
            "T",
            1,
            DataType::Double,
            Some(MV::DoubleValue(10.0)),
        )],
    );
    send(&mut ingest, "spBv1.0/G/NBIRTH/N", &nbirth);
    let mut stored = Vec::new();
    for (seq, v) in [(1, 10.2), (2, 10.5), (3, 10.6), (4, 10.7), (5, 11.2)] {
        let d = send(
            &mut ingest,
            "spBv1.0/G/NDATA/N",
            &payload(
                Some(MS + seq),
                Some(seq),
                vec![by_alias(1, MV::DoubleValue(v))],
            ),
        );
        stored.extend(d.points.into_iter().map(|p| p.point.value));
    }
    assert_eq!(stored, vec![Value::F64(10.6), Value::F64(11.2)]);
    assert_eq!(ingest.counters().deadband_dropped, 3);
    // A quality change always passes.
    let d = send(
        &mut ingest,
        "spBv1.0/G/NDEATH/N",
        &payload(None, None, vec![]),
    );
    assert_eq!(d.points.len(), 1);
}
