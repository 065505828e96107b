//! The plain and JSON decoders through `Ingest`: routing, templates,
//! pointers, batches, timestamp and quality forms, nulls and deadbands.

use converge_historian::encoding::{Quality, Severity, Timestamp, Value, ValueType};
use converge_historian::ingest::{
    Decoded, Decoder, Ingest, IngestError, IngestLimits, RuleConfig, RuleId, Rules, ValueTypeName,
    NULL_QUALITY,
};

const RX: i64 = 1_800_000_000_000_000;

fn rx() -> Timestamp {
    Timestamp::from_micros(RX)
}

fn rule(filter: &str, decoder: Decoder) -> RuleConfig {
    RuleConfig::new(filter, decoder)
}

fn ingest(rules: Vec<RuleConfig>) -> Ingest {
    Ingest::new(Rules::compile(rules).unwrap())
}

fn one(ingest: &mut Ingest, topic: &str, payload: &str) -> Decoded {
    ingest.decode(topic, payload.as_bytes(), rx()).unwrap()
}

fn values(d: &Decoded) -> Vec<Value> {
    d.points.iter().map(|p| p.point.value.clone()).collect()
}

#[test]
fn plain_values_and_routing() {
    let mut ing = ingest(vec![
        RuleConfig {
            tag: Some("{2}.{3}".into()),
            unit: Some("degC".into()),
            ..rule("plant/+/+", Decoder::Plain)
        },
        RuleConfig {
            value_type: Some(ValueTypeName::I64),
            ..rule("counts/#", Decoder::Plain)
        },
    ]);
    let d = one(&mut ing, "plant/a/temp", " 21.5\n");
    assert_eq!(d.rule, Some(RuleId(0)));
    let p = d.points.first().unwrap();
    assert_eq!(p.tag, "a.temp");
    assert_eq!(p.point.ts, rx());
    assert_eq!(p.point.quality, Quality::GOOD);
    assert_eq!(p.point.value, Value::F64(21.5));
    assert_eq!(p.meta.unit.as_deref(), Some("degC"));
    assert_eq!(p.meta.retention, None);
    assert_eq!(
        values(&one(&mut ing, "plant/a/run", "true")),
        [Value::Bool(true)]
    );
    assert_eq!(
        values(&one(&mut ing, "plant/a/mode", "auto")),
        [Value::Str("auto".into())]
    );

    let d = one(&mut ing, "counts/x/y", "42");
    assert_eq!(d.points.first().unwrap().tag, "counts/x/y");
    assert_eq!(values(&d), [Value::I64(42)]);
    assert!(matches!(
        ing.decode("counts/x", b"4.5", rx()),
        Err(IngestError::WrongType {
            expected: ValueType::I64
        })
    ));
    assert!(matches!(
        ing.decode("plant/a/b", &[0xC3, 0x28], rx()),
        Err(IngestError::InvalidUtf8)
    ));
    assert!(matches!(
        ing.decode("plant/a/b", b"  ", rx()),
        Err(IngestError::EmptyValue)
    ));

    let d = one(&mut ing, "elsewhere", "1");
    assert!(d.rule.is_none() && d.points.is_empty());
    let c = ing.counters();
    assert_eq!((c.messages, c.unrouted, c.points), (4, 1, 4));
    assert_eq!((c.errors.value, c.errors.malformed), (2, 1));
}

#[test]
fn json_default_pointers() {
    let mut ing = ingest(vec![rule("sensors/#", Decoder::Json)]);
    let d = one(
        &mut ing,
        "sensors/t1",
        r#"{"value": 3.5, "ts": 1700000000123, "quality": "Uncertain"}"#,
    );
    let p = d.points.first().unwrap();
    assert_eq!(p.tag, "sensors/t1");
    assert_eq!(p.point.value, Value::F64(3.5));
    assert_eq!(p.point.ts.micros(), 1_700_000_000_123_000);
    assert_eq!(p.point.quality, Quality::UNCERTAIN);

    let d = one(
        &mut ing,
        "sensors/t1",
        r#"{"value": 4, "ts": "2023-11-14T22:13:20Z"}"#,
    );
    let p = d.points.first().unwrap();
    assert_eq!(p.point.ts.micros(), 1_700_000_000_000_000);
    assert_eq!(p.point.quality, Quality::GOOD);

    let d = one(
        &mut ing,
        "sensors/t2",
        r#"{"value": true, "quality": 2150694912}"#,
    );
    let p = d.points.first().unwrap();
    assert_eq!(p.point.ts, rx());
    assert_eq!(p.point.value, Value::Bool(true));
    assert_eq!(p.point.quality, Quality::new(Severity::Bad, 0x031));

    for (payload, want) in [
        (r#"{"v": 1}"#, "MissingValue"),
        (r#"{"value": [1]}"#, "UnsupportedValue"),
        (r#"{"value": 1, "ts": "noon"}"#, "InvalidTimestamp"),
        (r#"{"value": 1, "quality": "great"}"#, "InvalidQuality"),
        ("{", "InvalidJson"),
    ] {
        let err = ing
            .decode("sensors/x", payload.as_bytes(), rx())
            .unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{payload}: {err:?}");
    }
}

#[test]
fn json_custom_pointers_batch_and_names() {
    let mut ing = ingest(vec![RuleConfig {
        tag: Some("{2}/{name}".into()),
        value_pointer: Some("/data/v".into()),
        timestamp_pointer: Some("/data/t".into()),
        quality_pointer: Some("/q".into()),
        name_pointer: Some("/n".into()),
        ..rule("line/+", Decoder::Json)
    }]);
    let d = one(
        &mut ing,
        "line/7",
        r#"[
            {"n": "speed", "data": {"v": 1.5, "t": 1000}},
            {"n": "state", "data": {"v": "run"}, "q": "bad"},
            {"data": {"v": 2}},
            {"n": "count", "data": {"v": {"x": 1}}}
        ]"#,
    );
    let tags: Vec<&str> = d.points.iter().map(|p| p.tag.as_str()).collect();
    assert_eq!(tags, ["7/speed", "7/state"]);
    assert_eq!(d.points.first().unwrap().point.ts.micros(), 1_000_000);
    assert_eq!(d.points.get(1).unwrap().point.quality, Quality::BAD);
    assert_eq!(d.rejected.len(), 2);
    assert!(matches!(
        d.rejected.first(),
        Some(IngestError::MissingName(_))
    ));
    let c = ing.counters();
    assert_eq!(
        (c.messages, c.points, c.errors.tag_name, c.errors.value),
        (1, 2, 1, 1)
    );

    // Batch of bare values with the whole-document pointer.
    let mut ing = ingest(vec![RuleConfig {
        value_pointer: Some(String::new()),
        ..rule("raw", Decoder::Json)
    }]);
    assert_eq!(
        values(&one(&mut ing, "raw", "[1, 2.5, false]")),
        [Value::F64(1.0), Value::F64(2.5), Value::Bool(false)]
    );
}

#[test]
fn json_value_types() {
    let mut ing = ingest(vec![
        RuleConfig {
            value_type: Some(ValueTypeName::I64),
            ..rule("i", Decoder::Json)
        },
        RuleConfig {
            value_type: Some(ValueTypeName::F64),
            ..rule("f", Decoder::Json)
        },
    ]);
    assert_eq!(
        values(&one(&mut ing, "i", r#"{"value": -9007199254740993}"#)),
        [Value::I64(-9_007_199_254_740_993)]
    );
    assert_eq!(
        values(&one(&mut ing, "i", r#"{"value": "12"}"#)),
        [Value::I64(12)]
    );
    assert_eq!(
        values(&one(&mut ing, "f", r#"{"value": " 1.25 "}"#)),
        [Value::F64(1.25)]
    );
    let mut err = |t: &str, p: &str| ing.decode(t, p.as_bytes(), rx()).unwrap_err();
    assert!(matches!(
        err("i", r#"{"value": 1.5}"#),
        IngestError::WrongType { .. }
    ));
    assert!(matches!(
        err("i", r#"{"value": 18446744073709551615}"#),
        IngestError::IntegerOutOfRange
    ));
    assert!(matches!(
        err("f", r#"{"value": true}"#),
        IngestError::WrongType { .. }
    ));
}

#[test]
fn json_null_is_a_bad_point_keeping_the_tag_type() {
    let mut ing = ingest(vec![
        rule("a", Decoder::Json),
        RuleConfig {
            value_type: Some(ValueTypeName::Bool),
            ..rule("b", Decoder::Json)
        },
    ]);
    one(&mut ing, "a", r#"{"value": 7.5}"#);
    let d = one(&mut ing, "a", r#"{"value": null}"#);
    let p = d.points.first().unwrap();
    assert_eq!(
        (&p.point.value, p.point.quality),
        (&Value::F64(7.5), NULL_QUALITY)
    );

    let d = one(&mut ing, "b", r#"{"value": null, "quality": 2150694912}"#);
    let p = d.points.first().unwrap();
    assert_eq!(p.point.value, Value::Bool(false));
    assert_eq!(p.point.quality, Quality::new(Severity::Bad, 0x031));
    assert_eq!(p.meta.value_type, ValueType::Bool);
}

#[test]
fn deadband_drops_only_close_values_of_same_quality() {
    let mut ing = ingest(vec![RuleConfig {
        deadband: Some(1.0),
        ..rule("t", Decoder::Json)
    }]);
    let mut kept = Vec::new();
    for (v, q) in [
        ("10", "good"),
        ("10.5", "good"), // within 1 of 10: dropped
        ("11", "good"),   // |11 - 10| <= 1: dropped
        ("11.5", "good"), // 1.5 from 10: stored
        ("11.5", "bad"),  // quality changed: stored
        ("11.6", "bad"),  // dropped
        ("\"x\"", "bad"), // type changed: stored
        ("\"x\"", "bad"), // equal: dropped
        ("\"y\"", "bad"), // stored
    ] {
        let d = one(
            &mut ing,
            "t",
            &format!(r#"{{"value": {v}, "quality": "{q}"}}"#),
        );
        kept.extend(values(&d));
    }
    assert_eq!(
        kept,
        [
            Value::F64(10.0),
            Value::F64(11.5),
            Value::F64(11.5),
            Value::Str("x".into()),
            Value::Str("y".into())
        ]
    );
    assert_eq!(ing.counters().deadband_dropped, 4);
}

#[test]
fn batch_limit() {
    let rules = Rules::compile(vec![rule("t", Decoder::Json)]).unwrap();
    let mut ing = Ingest::with_limits(
        rules,
        IngestLimits {
            max_points_per_message: 2,
            ..IngestLimits::default()
        },
    );
    let err = ing
        .decode("t", br#"[{"value":1},{"value":2},{"value":3}]"#, rx())
        .unwrap_err();
    assert!(matches!(
        err,
        IngestError::TooManyPoints { count: 3, max: 2 }
    ));
    assert_eq!(ing.counters().errors.limit, 1);
}
