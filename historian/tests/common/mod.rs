//! Point generators shared by the integration tests.
#![allow(dead_code)]

use converge_historian::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use proptest::prelude::*;

/// Floats that break naive codecs: NaN payloads, signed zeros, infinities, subnormals.
pub fn nasty_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        2 => (-1000i32..1000).prop_map(|i| f64::from(i) / 10.0),
        1 => Just(f64::NAN),
        1 => (0u64..(1 << 51)).prop_map(|p| f64::from_bits(0x7FF8_0000_0000_0000 | p)),
        1 => (1u64..(1 << 51)).prop_map(|p| f64::from_bits(0xFFF0_0000_0000_0000 | p)),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => (1u64..(1 << 52)).prop_map(f64::from_bits),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(f64::MAX),
    ]
}

pub fn nasty_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        -3i64..3,
        (0i64..1000).prop_map(|x| x * 1000)
    ]
}

pub fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        6 => Just(Quality::GOOD),
        1 => (0u8..3, any::<u16>()).prop_map(|(s, sub)| {
            let sev = [Severity::Good, Severity::Uncertain, Severity::Bad][usize::from(s)];
            Quality::new(sev, sub)
        }),
    ]
}

/// Sorted timestamps: regular with gaps and duplicates, or arbitrary.
pub fn timestamps(n: usize) -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        (
            any::<i64>(),
            0i64..10_000_000_000,
            prop::collection::vec(0u8..20, n)
        )
            .prop_map(move |(start, step, kinds)| {
                let mut t = start / 2;
                kinds
                    .into_iter()
                    .map(|k| {
                        let v = t;
                        t = t.saturating_add(match k {
                            0 => 0,
                            1 => step.saturating_mul(3),
                            2 => step / 2 + 1,
                            _ => step,
                        });
                        v
                    })
                    .collect()
            }),
        prop::collection::vec(prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)], n)
            .prop_map(|mut v| {
                v.sort_unstable();
                v
            }),
    ]
}

/// Values of one type, with runs so the run-length paths are exercised.
pub fn values(vt: ValueType, n: usize) -> BoxedStrategy<Vec<Value>> {
    let runs = 1usize..6;
    match vt {
        ValueType::F64 => (prop::collection::vec(nasty_f64(), n), runs)
            .prop_map(move |(v, r)| stretch(v.into_iter().map(Value::F64).collect(), r, n))
            .boxed(),
        ValueType::I64 => (prop::collection::vec(nasty_i64(), n), runs)
            .prop_map(move |(v, r)| stretch(v.into_iter().map(Value::I64).collect(), r, n))
            .boxed(),
        ValueType::Bool => (prop::collection::vec(any::<bool>(), n), runs)
            .prop_map(move |(v, r)| stretch(v.into_iter().map(Value::Bool).collect(), r, n))
            .boxed(),
        _ => (
            prop::collection::vec(
                prop_oneof![Just(String::new()), ".{0,12}", Just("é€😀".to_string())],
                1..6,
            ),
            prop::collection::vec(any::<prop::sample::Index>(), n),
            any::<bool>(),
        )
            .prop_map(|(mut pool, picks, huge)| {
                if huge {
                    pool.push("x".repeat(100_000));
                }
                picks
                    .iter()
                    .map(|i| Value::Str(i.get(&pool).clone()))
                    .collect()
            })
            .boxed(),
    }
}

/// Repeats each value `r` times, keeping `n` values.
fn stretch(v: Vec<Value>, r: usize, n: usize) -> Vec<Value> {
    v.into_iter()
        .flat_map(|x| std::iter::repeat_n(x, r))
        .take(n)
        .collect()
}

pub fn value_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        Just(ValueType::F64),
        Just(ValueType::I64),
        Just(ValueType::Bool),
        Just(ValueType::Str)
    ]
}

/// A valid block's worth of points: one type, sorted, 1..max points.
pub fn block_points(max: usize) -> impl Strategy<Value = Vec<Point>> {
    (value_type(), 1..max).prop_flat_map(|(vt, n)| {
        (
            timestamps(n),
            values(vt, n),
            prop::collection::vec(quality(), n),
            1usize..50,
        )
            .prop_map(|(ts, vals, q, qrun)| {
                ts.into_iter()
                    .zip(vals)
                    .enumerate()
                    .map(|(i, (t, value))| Point {
                        ts: Timestamp::from_micros(t),
                        value,
                        quality: q.get(i / qrun).copied().unwrap_or(Quality::GOOD),
                    })
                    .collect()
            })
    })
}
