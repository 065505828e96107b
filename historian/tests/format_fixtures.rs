//! Compatibility: blocks and recent records written by format version 1 are
//! committed under tests/fixtures/v1/ and must decode, to exactly the points
//! below, in every later version. Minute and hour rollups (record version 2)
//! as storage wrote them, keys included, are under tests/fixtures/rollup_v2/. Never edit or regenerate an existing
//! fixture; a new format version adds a new directory.
//!
//! The expected points come from deterministic generators (integer
//! arithmetic and exact divisions only, so every platform computes the same
//! bits). To add a fixture, add a generator to `FIXTURES` and run
//! `cargo test -p converge-historian --test format_fixtures -- --ignored write_missing_fixtures`,
//! which writes only files that do not exist yet.

use std::path::PathBuf;

use converge_historian::encoding::{
    block_header, decode_block, decode_recent_point, describe_block, encode_block,
    encode_recent_point, Point, Quality, Severity, Timestamp, Value, ValueRange, ValueType,
};
use converge_historian::query::{Interpolation, Rollup, ROLLUP_LEN};
use converge_historian::storage::{Storage, StorageConfig, TagRef, CF_ROLLUP_1H, CF_ROLLUP_1M};

/// 2026-01-01T00:00:00Z in µs.
const T0: i64 = 1_767_225_600_000_000;

/// (file stem, generator, expected (timestamps, values, quality) encodings).
type Fixture = (&'static str, fn() -> Vec<Point>, [&'static str; 3]);

const FIXTURES: &[Fixture] = &[
    (
        "f64_regular_pco",
        f64_regular_pco,
        ["regular", "pco", "all-good"],
    ),
    (
        "f64_constant",
        f64_constant,
        ["regular", "constant", "all-good"],
    ),
    (
        "f64_steps",
        f64_steps,
        ["regular", "run-length", "all-good"],
    ),
    (
        "f64_specials_irregular",
        f64_specials_irregular,
        ["pco-deltas", "pco", "run-length"],
    ),
    ("f64_jitter", f64_jitter, ["pco-deltas", "pco", "all-good"]),
    (
        "f64_single",
        f64_single,
        ["regular", "constant", "run-length"],
    ),
    ("i64_counter", i64_counter, ["regular", "pco", "all-good"]),
    (
        "i64_extremes",
        i64_extremes,
        ["pco-deltas", "pco", "run-length"],
    ),
    (
        "i64_steps",
        i64_steps,
        ["regular", "run-length", "all-good"],
    ),
    (
        "bool_states",
        bool_states,
        ["regular", "run-length", "all-good"],
    ),
    (
        "bool_chatter",
        bool_chatter,
        ["regular", "bitmap", "all-good"],
    ),
    (
        "bool_constant",
        bool_constant,
        ["regular", "constant", "all-good"],
    ),
    (
        "str_states",
        str_states,
        ["regular", "dictionary+run-length", "all-good"],
    ),
    (
        "str_varied",
        str_varied,
        ["pco-deltas", "dictionary+pco", "run-length"],
    ),
    (
        "str_constant",
        str_constant,
        ["regular", "dictionary+constant", "all-good"],
    ),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

#[test]
fn v1_blocks_decode_to_their_points() {
    for (name, gen, encodings) in FIXTURES {
        let path = dir().join(format!("{name}.blk"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expected = gen();
        assert_eq!(decode_block(&bytes).unwrap(), expected, "{name}");

        let h = block_header(&bytes).unwrap();
        assert_eq!(h.version, 1, "{name}");
        assert_eq!(h.count as usize, expected.len(), "{name}");
        assert_eq!(h.first_ts, expected[0].ts, "{name}");
        assert_eq!(h.last_ts, expected[expected.len() - 1].ts, "{name}");
        assert_eq!(h.value_type, expected[0].value.value_type(), "{name}");

        let l = describe_block(&bytes).unwrap();
        assert_eq!(
            [l.timestamps.encoding, l.values.encoding, l.quality.encoding],
            *encodings,
            "{name}"
        );
    }
}

#[test]
fn v1_headers_carry_ranges() {
    let h = block_header(&std::fs::read(dir().join("i64_extremes.blk")).unwrap()).unwrap();
    assert_eq!(
        h.range,
        Some(ValueRange::I64 {
            min: i64::MIN,
            max: i64::MAX
        })
    );
    assert!(h.has_non_good_quality);
    let h = block_header(&std::fs::read(dir().join("bool_states.blk")).unwrap()).unwrap();
    assert_eq!(
        h.range,
        Some(ValueRange::Bool {
            min: false,
            max: true
        })
    );
    let h = block_header(&std::fs::read(dir().join("str_states.blk")).unwrap()).unwrap();
    assert_eq!((h.value_type, h.range), (ValueType::Str, None));
}

#[test]
fn v1_fixtures_cover_every_encoding() {
    let mut seen: Vec<&str> = FIXTURES
        .iter()
        .flat_map(|(_, _, e)| e.iter().copied())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    for enc in [
        "regular",
        "pco-deltas",
        "constant",
        "run-length",
        "pco",
        "bitmap",
        "dictionary+constant",
        "dictionary+run-length",
        "dictionary+pco",
        "all-good",
    ] {
        assert!(seen.contains(&enc), "no v1 fixture uses {enc}");
    }
}

#[test]
fn v1_recent_records_decode() {
    let bytes = std::fs::read(dir().join("recent.bin")).unwrap();
    let mut at = 0;
    let mut got = Vec::new();
    while at < bytes.len() {
        let (p, used) = decode_recent_point(&bytes[at..]).unwrap();
        got.push(p);
        at += used;
    }
    assert_eq!(got, recent_points());
}

fn rollup_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rollup_v2/rollups.bin")
}

/// One stored rollup record of the fixture file: `'m'` or `'h'`, the
/// 12-byte key, the 118-byte value.
const ROLLUP_RECORD: usize = 1 + 12 + ROLLUP_LEN;

/// The rollups storage wrote for `rollup_points` decode to the rollups of
/// those points, and their keys follow docs/FORMAT.md §8: tag id u32 BE,
/// then the bucket start (µs, sign bit flipped) u64 BE.
#[test]
fn v2_rollups_decode_to_their_buckets() {
    let bytes = std::fs::read(rollup_path()).unwrap();
    assert_eq!(bytes.len() % ROLLUP_RECORD, 0);
    let points = rollup_points();
    let (mut minutes, mut hours) = (0, 0);
    for rec in bytes.chunks(ROLLUP_RECORD) {
        let (width, count) = match rec[0] {
            b'm' => (60_000_000, &mut minutes),
            b'h' => (3_600_000_000, &mut hours),
            other => panic!("record kind {other}"),
        };
        *count += 1;
        assert_eq!(rec[1..5], [0, 0, 0, 0], "tag id 0");
        let flipped = u64::from_be_bytes(rec[5..13].try_into().unwrap());
        let start = (flipped ^ (1 << 63)) as i64;
        assert_eq!(start.rem_euclid(width), 0, "bucket aligned to the epoch");
        let (a, b) = (at(start), at(start + width));
        let got = Rollup::from_bytes(&rec[13..], a, b).unwrap();
        let want = Rollup::compute(&points, a, b).unwrap().unwrap();
        // Values are multiples of 1/8 and times whole or half seconds:
        // every sum and integral is exact, whatever the order of additions.
        assert_eq!(
            (got.points(), got.count(), got.sum(), got.min(), got.max()),
            (
                want.points(),
                want.count(),
                want.sum(),
                want.min(),
                want.max()
            ),
            "{start}"
        );
        assert_eq!(
            (got.first(), got.last(), got.first_point(), got.last_point()),
            (
                want.first(),
                want.last(),
                want.first_point(),
                want.last_point()
            ),
            "{start}"
        );
        assert_eq!(got.good_micros(), want.good_micros(), "{start}");
        for w in [Interpolation::Step, Interpolation::Linear] {
            assert_eq!(got.integral(w), want.integral(w), "{start}");
        }
        let (g, w) = (got.std_dev().unwrap(), want.std_dev().unwrap());
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{start}");
    }
    // Every minute final when the writes ended (the last ~3 were not sealed yet).
    assert_eq!((minutes, hours), (127, 2));
}

/// Two hours and ten minutes from 2026-01-01T00:00Z, every 0.5 to 3 s,
/// with a Bad and an Uncertain run.
fn rollup_points() -> Vec<Point> {
    let mut m = Mix(7);
    let mut t = T0;
    let mut eighths: i64 = 0;
    let mut out = Vec::new();
    while t < T0 + 130 * 60_000_000 {
        eighths = (eighths + m.below(41) as i64 - 20).clamp(-800, 800);
        let quality = match (t - T0) / 1_000_000 {
            600..=640 => Quality::new(Severity::Bad, 0x31),
            4_000..=4_010 => Quality::new(Severity::Uncertain, 2),
            _ => Quality::GOOD,
        };
        out.push(Point {
            ts: at(t),
            value: Value::F64(eighths as f64 / 8.0),
            quality,
        });
        t += (1 + m.below(6) as i64) * 500_000;
    }
    out
}

/// Writes fixtures that do not exist yet; never overwrites.
#[test]
#[ignore = "writes files; run by hand when adding a fixture"]
fn write_missing_fixtures() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, gen, _) in FIXTURES {
        let path = dir().join(format!("{name}.blk"));
        if !path.exists() {
            std::fs::write(&path, encode_block(&gen()).unwrap()).unwrap();
            println!("wrote {}", path.display());
        }
    }
    let path = rollup_path();
    if !path.exists() {
        let db = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            sync: false,
            seal_threshold: 100,
            rollup_min_points: 1,
            ..StorageConfig::default()
        };
        let s = Storage::open_standalone(db.path(), config).unwrap();
        for chunk in rollup_points().chunks(250) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|p| (TagRef::Name("f"), p.clone()))
                .collect();
            s.write(&batch).unwrap();
        }
        let mut out = Vec::new();
        for (kind, cf) in [(b'm', CF_ROLLUP_1M), (b'h', CF_ROLLUP_1H)] {
            let cf = s.db().cf_handle(cf).unwrap();
            for item in s.db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item.unwrap();
                out.push(kind);
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, out).unwrap();
        println!("wrote {}", path.display());
    }
    let path = dir().join("recent.bin");
    if !path.exists() {
        let mut out = Vec::new();
        for p in recent_points() {
            encode_recent_point(&p, &mut out).unwrap();
        }
        std::fs::write(&path, out).unwrap();
    }
}

// ---- deterministic generators ----

/// SplitMix64: a fixed pseudo-random sequence, the same on every platform.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

fn f(t: i64, v: f64) -> Point {
    Point::good(at(t), Value::F64(v))
}

/// A temperature-like random walk in 0.01 steps, 1 s sampling with two gaps.
fn f64_regular_pco() -> Vec<Point> {
    let mut m = Mix(1);
    let mut centi: i64 = 2150;
    let mut t = T0;
    (0..2000)
        .map(|i| {
            centi += m.below(7) as i64 - 3;
            t += if i == 700 || i == 1500 {
                60_000_000
            } else {
                1_000_000
            };
            f(t, centi as f64 / 100.0)
        })
        .collect()
}

fn f64_constant() -> Vec<Point> {
    (0..500).map(|i| f(T0 + i * 10_000_000, 21.5)).collect()
}

/// A setpoint that moves every 400 samples.
fn f64_steps() -> Vec<Point> {
    (0..2000)
        .map(|i| f(T0 + i * 1_000_000, 50.0 + (i / 400) as f64 * 2.5))
        .collect()
}

/// Irregular times with duplicates; NaN payloads, signed zeros, infinities,
/// subnormals among ordinary values; a run of Bad and of Uncertain quality.
fn f64_specials_irregular() -> Vec<Point> {
    let mut m = Mix(2);
    let specials = [
        f64::from_bits(0x7FF8_0000_0000_0000),
        f64::from_bits(0x7FF0_0000_0000_0001),
        f64::from_bits(0xFFF8_DEAD_BEEF_0001),
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from_bits(1),
        f64::from_bits(0x000F_FFFF_FFFF_FFFF),
        f64::MAX,
        f64::MIN,
    ];
    let mut t = -T0;
    (0..600)
        .map(|i| {
            t += [0, 1, 999_999, 1_000_000, 17_000_001][m.below(5) as usize];
            let value = if i % 13 == 0 {
                specials[(i / 13) % specials.len()]
            } else {
                (m.below(200_001) as i64 - 100_000) as f64 / 1000.0
            };
            let quality = match i {
                100..=149 => Quality::new(Severity::Bad, 0x8000),
                300..=309 => Quality::new(Severity::Uncertain, 7),
                _ => Quality::GOOD,
            };
            Point {
                ts: at(t),
                value: Value::F64(value),
                quality,
            }
        })
        .collect()
}

/// 960 s sampling with ±1 s jitter, like the occupancy dataset.
fn f64_jitter() -> Vec<Point> {
    let mut m = Mix(3);
    let mut t = T0;
    let mut v: i64 = 40_000;
    (0..500)
        .map(|_| {
            t += 959_000_000 + m.below(3) as i64 * 1_000_000;
            v += m.below(101) as i64 - 50;
            f(t, v as f64 / 16.0)
        })
        .collect()
}

fn f64_single() -> Vec<Point> {
    vec![Point {
        ts: at(T0),
        value: Value::F64(-0.0),
        quality: Quality::new(Severity::Uncertain, 1),
    }]
}

/// A totaliser that increases irregularly, sampled every 5 s.
fn i64_counter() -> Vec<Point> {
    let mut m = Mix(4);
    let mut c: i64 = 1_000_000_000_000;
    (0..3000)
        .map(|i| {
            c += m.below(50) as i64;
            Point::good(at(T0 + i * 5_000_000), Value::I64(c))
        })
        .collect()
}

/// Extremes in value and time, with a quality change.
fn i64_extremes() -> Vec<Point> {
    let vals = [i64::MIN, i64::MIN, -1, 0, 1, i64::MAX, i64::MAX, i64::MAX];
    let ts = [i64::MIN, i64::MIN, -1, 0, 0, 1, i64::MAX - 1, i64::MAX];
    ts.iter()
        .zip(vals)
        .enumerate()
        .map(|(i, (&t, v))| Point {
            ts: at(t),
            value: Value::I64(v),
            quality: if i < 2 { Quality::BAD } else { Quality::GOOD },
        })
        .collect()
}

/// A mode register that changes every 250 samples.
fn i64_steps() -> Vec<Point> {
    (0..1000)
        .map(|i| Point::good(at(T0 + i * 500_000), Value::I64(-7 + i / 250)))
        .collect()
}

/// A pump that runs for a while, then stops.
fn bool_states() -> Vec<Point> {
    (0..2000)
        .map(|i| Point::good(at(T0 + i * 1_000_000), Value::Bool(i / 300 % 2 == 0)))
        .collect()
}

fn bool_chatter() -> Vec<Point> {
    let mut m = Mix(5);
    (0..1001)
        .map(|i| Point::good(at(T0 + i * 100_000), Value::Bool(m.below(2) == 1)))
        .collect()
}

fn bool_constant() -> Vec<Point> {
    (0..100)
        .map(|i| Point::good(at(T0 + i * 1_000_000), Value::Bool(true)))
        .collect()
}

fn str_states() -> Vec<Point> {
    let states = ["RUNNING", "STOPPED", "FAULT", "MAINTENANCE"];
    (0..1500)
        .map(|i| {
            Point::good(
                at(T0 + i * 2_000_000),
                Value::Str(states[i as usize / 200 % 4].into()),
            )
        })
        .collect()
}

/// Many distinct strings, including empty and non-ASCII, at irregular times.
fn str_varied() -> Vec<Point> {
    let mut m = Mix(6);
    let mut t = T0;
    let pool: Vec<String> = (0..40)
        .map(|k| match k {
            0 => String::new(),
            1 => "température °C – ok ✓".into(),
            2 => "😀".repeat(3),
            3 => "x".repeat(1000),
            k => format!("batch-{k:03}"),
        })
        .collect();
    (0..800)
        .map(|i| {
            t += 1 + m.below(5_000_000) as i64;
            Point {
                ts: at(t),
                value: Value::Str(pool[m.below(40) as usize].clone()),
                quality: if i >= 790 {
                    Quality::new(Severity::Bad, 42)
                } else {
                    Quality::GOOD
                },
            }
        })
        .collect()
}

fn str_constant() -> Vec<Point> {
    (0..64)
        .map(|i| Point::good(at(T0 + i * 1_000_000), Value::Str("AUTO".into())))
        .collect()
}

fn recent_points() -> Vec<Point> {
    vec![
        f(T0, 21.5),
        Point {
            ts: at(T0 + 1),
            value: Value::F64(f64::from_bits(0xFFF8_DEAD_BEEF_0001)),
            quality: Quality::BAD,
        },
        Point::good(at(i64::MIN), Value::I64(i64::MIN)),
        Point {
            ts: at(i64::MAX),
            value: Value::Bool(true),
            quality: Quality::new(Severity::Uncertain, u16::MAX),
        },
        Point::good(at(-1), Value::Str(String::new())),
        Point::good(at(0), Value::Str("température ✓".into())),
    ]
}
