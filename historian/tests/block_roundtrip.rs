//! Blocks round-trip bit-exactly, headers describe them, and bad input to the
//! encoder is refused.

mod common;

use converge_historian::encoding::{
    block_header, decode_block, decode_block_columns, decode_block_window, describe_block,
    encode_block, EncodeError, Point, Quality, Severity, Timestamp, Value, ValueRange, ValueType,
    MAX_POINTS_PER_BLOCK,
};
use proptest::prelude::*;

fn f64_point(t: i64, v: f64) -> Point {
    Point::good(Timestamp::from_micros(t), Value::F64(v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_block_round_trips(points in common::block_points(600)) {
        let bytes = encode_block(&points).unwrap();
        let back = decode_block(&bytes).unwrap();
        prop_assert_eq!(&back, &points);

        let h = block_header(&bytes).unwrap();
        prop_assert_eq!(h.count as usize, points.len());
        prop_assert_eq!(h.first_ts, points[0].ts);
        prop_assert_eq!(h.last_ts, points[points.len() - 1].ts);
        prop_assert_eq!(h.value_type, points[0].value.value_type());
        prop_assert_eq!(h.has_non_good_quality, points.iter().any(|p| !p.quality.is_good()));
        match h.range {
            Some(ValueRange::F64 { min, max }) => {
                for p in &points {
                    if let Value::F64(v) = p.value {
                        prop_assert!(v.is_nan() || (min <= v && v <= max));
                    }
                }
            }
            Some(ValueRange::I64 { min, max }) => {
                let vals: Vec<i64> = points.iter().filter_map(|p| match p.value { Value::I64(v) => Some(v), _ => None }).collect();
                prop_assert_eq!(Some(&min), vals.iter().min());
                prop_assert_eq!(Some(&max), vals.iter().max());
            }
            _ => {}
        }

        let layout = describe_block(&bytes).unwrap();
        prop_assert_eq!(
            layout.header_bytes + layout.timestamps.bytes + layout.values.bytes + layout.quality.bytes + layout.trailer_bytes,
            bytes.len()
        );
        let cols = decode_block_columns(&bytes).unwrap();
        prop_assert_eq!(cols.timestamps.len(), points.len());
    }

    /// A window of a block holds exactly the points the whole block holds
    /// in that window, for blocks large enough that a pco values section is
    /// read only up to the window's end.
    #[test]
    fn windows_equal_filtered_blocks(
        n in 1usize..3_000,
        seed in any::<u64>(),
        ints in any::<bool>(),
        bad_every in prop::option::of(3usize..50),
        cuts in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let mut x = seed;
        let points: Vec<Point> = (0..n)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let t = Timestamp::from_micros(1_000_000 * i as i64 + (x >> 60) as i64);
                let value = if ints {
                    Value::I64((x >> 40) as i64 - (1 << 23))
                } else {
                    Value::F64(((x >> 44) as f64).round() / 100.0)
                };
                let quality = match bad_every {
                    Some(k) if i % k == 0 => Quality::BAD,
                    _ => Quality::GOOD,
                };
                Point { ts: t, value, quality }
            })
            .collect();
        let bytes = encode_block(&points).unwrap();
        let (i, j) = (cuts.0.index(n), cuts.1.index(n));
        let (a, b) = (points[i.min(j)].ts, points[i.max(j)].ts);
        for (from, to) in [
            (a, b),
            (Timestamp::from_micros(i64::MIN), b),
            (a, Timestamp::from_micros(i64::MAX)),
            (b, a),
        ] {
            let want: Vec<Point> =
                points.iter().filter(|p| p.ts >= from && p.ts <= to).cloned().collect();
            prop_assert_eq!(decode_block_window(&bytes, from, to).unwrap(), want);
        }
    }
}

#[test]
fn special_floats_survive_every_encoding() {
    let specials = [
        f64::NAN,
        f64::from_bits(0x7FF0_0000_0000_0001),
        f64::from_bits(0xFFF8_DEAD_BEEF_0001),
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from_bits(1),
        f64::MIN_POSITIVE / 3.0,
        f64::MAX,
        f64::MIN,
    ];
    // Constant, run-length and pco paths.
    for v in specials {
        let pts: Vec<Point> = (0..100).map(|i| f64_point(i, v)).collect();
        assert_eq!(decode_block(&encode_block(&pts).unwrap()).unwrap(), pts);
    }
    let runs: Vec<Point> = (0..1100)
        .map(|i| f64_point(i, specials[i as usize / 100]))
        .collect();
    assert_eq!(decode_block(&encode_block(&runs).unwrap()).unwrap(), runs);
    let mixed: Vec<Point> = (0..1100)
        .map(|i| f64_point(i, specials[i as usize % 11]))
        .collect();
    assert_eq!(decode_block(&encode_block(&mixed).unwrap()).unwrap(), mixed);
    let decimals: Vec<Point> = (0..1000)
        .map(|i| {
            f64_point(
                i,
                if i % 97 == 0 {
                    specials[i as usize % 11]
                } else {
                    i as f64 * 0.1
                },
            )
        })
        .collect();
    assert_eq!(
        decode_block(&encode_block(&decimals).unwrap()).unwrap(),
        decimals
    );
}

#[test]
fn regular_constant_block_is_tiny() {
    let pts: Vec<Point> = (0..4096)
        .map(|i| f64_point(1_700_000_000_000_000 + i * 1_000_000, 42.0))
        .collect();
    let bytes = encode_block(&pts).unwrap();
    assert!(bytes.len() < 64, "{} bytes", bytes.len());
    let layout = describe_block(&bytes).unwrap();
    assert_eq!(
        (
            layout.timestamps.encoding,
            layout.values.encoding,
            layout.quality.encoding
        ),
        ("regular", "constant", "all-good")
    );
}

#[test]
fn encoder_refuses_bad_input() {
    assert_eq!(encode_block(&[]), Err(EncodeError::EmptyBlock));
    let mixed = [
        f64_point(0, 1.0),
        Point::good(Timestamp::from_micros(1), Value::I64(1)),
    ];
    assert!(matches!(
        encode_block(&mixed),
        Err(EncodeError::MixedValueTypes { index: 1, .. })
    ));
    let unsorted = [f64_point(5, 1.0), f64_point(4, 1.0)];
    assert_eq!(
        encode_block(&unsorted),
        Err(EncodeError::Unsorted { index: 1 })
    );
    let too_many: Vec<Point> = (0..=MAX_POINTS_PER_BLOCK as i64)
        .map(|i| f64_point(i, 0.0))
        .collect();
    assert!(matches!(
        encode_block(&too_many),
        Err(EncodeError::TooManyPoints { .. })
    ));
    let exactly_max = &too_many[..MAX_POINTS_PER_BLOCK];
    assert_eq!(
        decode_block(&encode_block(exactly_max).unwrap()).unwrap(),
        exactly_max
    );
}

#[test]
fn header_is_read_without_the_body() {
    let pts = vec![
        Point {
            ts: Timestamp::from_micros(-5),
            value: Value::I64(i64::MIN),
            quality: Quality::new(Severity::Bad, 3),
        },
        Point::good(Timestamp::from_micros(7), Value::I64(i64::MAX)),
    ];
    let bytes = encode_block(&pts).unwrap();
    let h = block_header(&bytes).unwrap();
    // The header alone parses even when the body is missing.
    let h2 = block_header(&bytes[..h.header_len]).unwrap();
    assert_eq!(h, h2);
    assert_eq!(
        h.range,
        Some(ValueRange::I64 {
            min: i64::MIN,
            max: i64::MAX
        })
    );
    assert_eq!(h.value_type, ValueType::I64);
    assert!(h.has_non_good_quality);
    assert_eq!((h.first_ts.micros(), h.last_ts.micros()), (-5, 7));
}
