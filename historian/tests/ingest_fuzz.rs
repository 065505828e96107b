//! No payload or topic panics a decoder: random bytes into each decoder,
//! and random but well-formed Sparkplug sessions (any datatype with any
//! value, any alias, any flags, in any message order).

use converge_historian::encoding::Timestamp;
use converge_historian::ingest::sparkplug::proto::payload::metric::Value as MV;
use converge_historian::ingest::sparkplug::proto::payload::Metric;
use converge_historian::ingest::sparkplug::proto::Payload;
use converge_historian::ingest::{Decoder, Ingest, RuleConfig, Rules};
use proptest::prelude::*;
use prost::Message;

fn rule(filter: &str, decoder: Decoder, tag: Option<&str>) -> RuleConfig {
    RuleConfig {
        tag: tag.map(Into::into),
        deadband: Some(0.5),
        ..RuleConfig::new(filter, decoder)
    }
}

fn ingest() -> Ingest {
    Ingest::new(
        Rules::compile(vec![
            rule("spBv1.0/#", Decoder::Sparkplug, None),
            RuleConfig {
                name_pointer: Some("/n".into()),
                ..rule("json/#", Decoder::Json, Some("{2}/{name}"))
            },
            rule("plain/#", Decoder::Plain, Some("{3}")),
        ])
        .unwrap(),
    )
}

const TOPICS: &[&str] = &[
    "spBv1.0/G/NBIRTH/N",
    "spBv1.0/G/NDATA/N",
    "spBv1.0/G/NDEATH/N",
    "spBv1.0/G/DBIRTH/N/D",
    "spBv1.0/G/DDATA/N/D",
    "spBv1.0/G/DDEATH/N/D",
    "spBv1.0/G/NCMD/N",
    "spBv1.0/STATE/h",
    "spBv1.0/G/XDATA/N",
    "json/a",
    "json/a/b",
    "plain/a",
    "plain/a/b",
];

fn metric() -> impl Strategy<Value = Metric> {
    let value = prop_oneof![
        any::<u32>().prop_map(MV::IntValue),
        any::<u64>().prop_map(MV::LongValue),
        any::<f32>().prop_map(MV::FloatValue),
        any::<f64>().prop_map(MV::DoubleValue),
        any::<bool>().prop_map(MV::BooleanValue),
        ".{0,8}".prop_map(MV::StringValue),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(MV::BytesValue),
    ];
    (
        prop::option::of(prop_oneof![Just("bdSeq".to_owned()), "[a-c]{1,2}"]),
        prop::option::of(0u64..6),
        prop::option::of(any::<u64>()),
        prop::option::of(prop_oneof![0u32..36, any::<u32>()]),
        (
            any::<Option<bool>>(),
            any::<Option<bool>>(),
            any::<Option<bool>>(),
        ),
        prop::option::of(value),
    )
        .prop_map(
            |(name, alias, timestamp, datatype, (h, t, n), value)| Metric {
                name,
                alias,
                timestamp,
                datatype,
                is_historical: h,
                is_transient: t,
                is_null: n,
                value,
                ..Metric::default()
            },
        )
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(any::<u64>()),
        prop::option::of(prop_oneof![0u64..300, any::<u64>()]),
        prop::collection::vec(metric(), 0..6),
    )
        .prop_map(|(timestamp, seq, metrics)| {
            Payload {
                timestamp,
                seq,
                metrics,
                ..Payload::default()
            }
            .encode_to_vec()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(
        msgs in prop::collection::vec((0..TOPICS.len(), prop::collection::vec(any::<u8>(), 0..64)), 1..8),
        rx in any::<i64>(),
    ) {
        let mut ingest = ingest();
        for (t, bytes) in msgs {
            let _ = ingest.decode(TOPICS[t], &bytes, Timestamp::from_micros(rx));
        }
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,40}", t in 9..TOPICS.len()) {
        let mut ingest = ingest();
        let _ = ingest.decode(TOPICS[t], text.as_bytes(), Timestamp::EPOCH);
        let json = format!(r#"[{{"n":"x","value":{text},"ts":{text},"quality":{text}}}]"#);
        let _ = ingest.decode("json/a", json.as_bytes(), Timestamp::EPOCH);
    }

    #[test]
    fn random_sparkplug_sessions_never_panic(
        nbirth in payload(),
        dbirth in payload(),
        msgs in prop::collection::vec((0..8usize, payload()), 1..12),
        rx in any::<i64>(),
    ) {
        let mut ingest = ingest();
        // Most sessions start with births, so DATA and DEATH meet real state.
        let births = [(0, nbirth), (3, dbirth)];
        for (t, bytes) in births.into_iter().chain(msgs) {
            let _ = ingest.decode(TOPICS[t], &bytes, Timestamp::from_micros(rx));
        }
        let c = ingest.counters();
        prop_assert!(c.messages + c.errors.total() + c.ignored >= 1);
    }

    #[test]
    fn random_topics_never_panic(topic in "[a-zA-Z0-9/+#$.]{0,30}", bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut ingest = Ingest::new(Rules::compile(vec![
            rule("#", Decoder::Sparkplug, None),
        ]).unwrap());
        let _ = ingest.decode(&topic, &bytes, Timestamp::EPOCH);
        let mut ingest = Ingest::new(Rules::compile(vec![
            rule("#", Decoder::Plain, Some("{1}{5}{topic}")),
        ]).unwrap());
        let _ = ingest.decode(&topic, &bytes, Timestamp::EPOCH);
    }
}
