//! Rollups over a real RocksDB. After any mix of in-order writes, late
//! points, replacements and bad-quality periods, with blocks small enough
//! that sealing happens all the time:
//!
//! 1. every stored minute and hour rollup equals the rollup of the tag's
//!    points in its bucket (computed here from a model of the writes);
//! 2. every final bucket with enough points has one, so queries really
//!    read them;
//! 3. summaries through `Storage` as the query `Source` equal the reference
//!    computed point by point from the model, in both weightings, for
//!    intervals aligned to minutes and hours or not, shorter than a minute
//!    or longer than a day.
//!
//! Then: a two-day 1 s series answered under a scan limit far below its
//! point count (so from rollups), reopen, the rollups in the blocks' batch,
//! and retention removing rollups with the data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod summary_ref;

use std::collections::BTreeMap;
use std::time::Duration;

use converge_historian::encoding::{block_header, Point, Quality, Severity, Timestamp, Value};
use converge_historian::query::{
    summary, Interpolation, QueryError, QueryLimits, Rollup, SummaryKind,
};
use converge_historian::storage::{
    Op, Storage, StorageConfig, TagId, TagMeta, TagRef, CF_BLOCKS, CF_ROLLUP_1H, CF_ROLLUP_1M,
};
use proptest::prelude::*;
use summary_ref::*;

const TAG: &str = "plant/line1/flow";
const SEC: i64 = 1_000_000;
const MINUTE: i64 = 60 * SEC;
const HOUR: i64 = 60 * MINUTE;
/// 2026-01-01T00:00:00Z: a whole hour.
const T0: i64 = 1_767_225_600 * SEC;

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// SplitMix64: scenarios from a seed, the same on every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Batches of writes: a series over `hours` hours (gaps from 0.1 s to
/// 50 min, runs of Bad and Uncertain quality, values in 1/8 steps) cut into
/// in-order batches, with late batches between them that replace written
/// points or add points in the past.
fn scenario(seed: u64, hours: i64) -> Vec<Vec<Point>> {
    let mut m = Mix(seed);
    let mut t = T0 + m.below(HOUR as u64);
    let end = T0 + hours * HOUR;
    let mut v = 0i64;
    let mut bad_run = 0;
    let mut series = Vec::new();
    while t < end {
        v += m.below(17) - 8;
        if bad_run == 0 && m.chance(4) {
            bad_run = 1 + m.below(12);
        }
        let quality = match bad_run {
            0 => Quality::GOOD,
            n if n % 3 == 0 => Quality::new(Severity::Uncertain, 2),
            _ => Quality::BAD,
        };
        bad_run = (bad_run - 1).max(0);
        series.push(Point {
            ts: ts(t),
            value: Value::F64(v as f64 / 8.0),
            quality,
        });
        t += match m.below(100) {
            0..=69 => (1 + m.below(20)) * SEC,
            70..=84 => 100_000 + m.below(900_000),
            85..=94 => (60 + m.below(240)) * SEC,
            _ => (15 + m.below(35)) * MINUTE,
        };
    }
    let mut batches = Vec::new();
    let mut written: Vec<i64> = Vec::new();
    let mut rest = series.as_slice();
    while !rest.is_empty() {
        let n = (1 + m.below(250) as usize).min(rest.len());
        let (batch, tail) = rest.split_at(n);
        written.extend(batch.iter().map(|p| p.ts.micros()));
        batches.push(batch.to_vec());
        rest = tail;
        if m.chance(35) {
            let (lo, hi) = (written[0], *written.last().unwrap());
            let late: Vec<Point> = (0..1 + m.below(20))
                .map(|_| {
                    let at = if m.chance(50) {
                        written[m.below(written.len() as u64) as usize]
                    } else {
                        lo + m.below((hi - lo + 1) as u64)
                    };
                    Point {
                        ts: ts(at),
                        value: Value::F64((m.below(2001) - 1000) as f64 / 8.0),
                        quality: if m.chance(20) {
                            Quality::BAD
                        } else {
                            Quality::GOOD
                        },
                    }
                })
                .collect();
            batches.push(late);
        }
    }
    batches
}

/// Writes the batches and returns the model: the last write at each time wins.
fn write_all(s: &Storage, batches: &[Vec<Point>]) -> Vec<Point> {
    let mut model = BTreeMap::new();
    for batch in batches {
        let ops: Vec<_> = batch
            .iter()
            .map(|p| (TagRef::Name(TAG), p.clone()))
            .collect();
        s.write(&ops).unwrap();
        for p in batch {
            model.insert(p.ts, p.clone());
        }
    }
    model.into_values().collect()
}

fn config(seal_threshold: usize, rollup_min_points: u64) -> StorageConfig {
    StorageConfig {
        sync: false,
        seal_threshold,
        rollup_min_points,
        ..StorageConfig::default()
    }
}

fn limits() -> QueryLimits {
    QueryLimits::default()
}

/// Stored rollups of `tag` at one width, read straight from the column family.
fn stored(s: &Storage, cf: &str, tag: TagId, width: i64) -> Vec<Rollup> {
    let cf = s.db().cf_handle(cf).unwrap();
    let mut out = Vec::new();
    for item in s.db().iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        assert_eq!(k.len(), 12, "series key");
        if k[..4] != tag.0.to_be_bytes() {
            continue;
        }
        let flipped = u64::from_be_bytes(k[4..12].try_into().unwrap());
        let start = (flipped ^ (1 << 63)) as i64;
        out.push(Rollup::from_bytes(&v, ts(start), ts(start + width)).unwrap());
    }
    out
}

/// The last sealed timestamp, from the last block's header.
fn sealed_last(s: &Storage, tag: TagId) -> Option<i64> {
    let cf = s.db().cf_handle(CF_BLOCKS).unwrap();
    let mut it = s.db().raw_iterator_cf(cf);
    it.seek_for_prev([tag.0.to_be_bytes().as_slice(), &[0xFF; 8]].concat());
    let (k, v) = (it.key()?, it.value()?);
    (k[..4] == tag.0.to_be_bytes()).then(|| block_header(v).unwrap().last_ts.micros())
}

fn bucket(t: i64, width: i64) -> i64 {
    t - t.rem_euclid(width)
}

fn inside(points: &[Point], a: i64, b: i64) -> Vec<Point> {
    points
        .iter()
        .filter(|p| (a..b).contains(&p.ts.micros()))
        .cloned()
        .collect()
}

/// Properties 1 and 2 of the module docs for one width.
fn check_stored(s: &Storage, tag: TagId, model: &[Point], cf: &str, width: i64, min_points: u64) {
    let frontier = sealed_last(s, tag).map_or(i64::MIN, |t| bucket(t, width));
    let got = stored(s, cf, tag, width);
    for r in &got {
        let (a, b) = (r.start().micros(), r.end().micros());
        assert!(
            b <= frontier,
            "{cf}: rollup at {a} past the frontier {frontier}"
        );
        let want = Rollup::compute(&inside(model, a, b), ts(a), ts(b))
            .unwrap()
            .unwrap_or_else(|| panic!("{cf}: rollup at {a} for a bucket without points"));
        assert!(r.points() >= min_points);
        assert_eq!(
            (r.points(), r.count(), r.min(), r.max(), r.first(), r.last()),
            (
                want.points(),
                want.count(),
                want.min(),
                want.max(),
                want.first(),
                want.last()
            ),
            "{cf} at {a}"
        );
        assert_eq!(
            (r.first_point(), r.last_point(), r.good_micros()),
            (want.first_point(), want.last_point(), want.good_micros()),
            "{cf} at {a}"
        );
        assert!(close(r.sum(), want.sum()), "{cf} at {a}");
        assert!(opt_close(r.std_dev(), want.std_dev()), "{cf} at {a}");
        for w in [Interpolation::Step, Interpolation::Linear] {
            assert!(close(r.integral(w), want.integral(w)), "{cf} at {a}: {w:?}");
        }
    }
    // Every final bucket dense enough has its rollup.
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for p in model {
        *counts.entry(bucket(p.ts.micros(), width)).or_default() += 1;
    }
    let have: Vec<i64> = got.iter().map(|r| r.start().micros()).collect();
    for (&a, &n) in &counts {
        if a + width <= frontier && n >= min_points {
            assert!(
                have.binary_search(&a).is_ok(),
                "{cf}: no rollup at {a} ({n} points)"
            );
        }
    }
}

/// Property 3: summaries from storage equal the reference over the model.
fn check_summaries(s: &Storage, model: &[Point], seed: u64) {
    let mut m = Mix(seed ^ 0x5EED);
    let span = model.last().map_or(HOUR, |p| p.ts.micros() - T0 + HOUR);
    for _ in 0..12 {
        let aligned = m.chance(40);
        let mut a = T0 - HOUR / 2 + m.below(span as u64);
        let mut len = 1 + m.below(span as u64);
        let mut step = match m.below(6) {
            0 => None,
            1 => Some(SEC * (1 + m.below(59))),
            2 => Some(MINUTE * (1 + m.below(90))),
            3 => Some(HOUR * (1 + m.below(4))),
            _ => Some(MINUTE + m.below(3 * HOUR as u64)),
        };
        if aligned {
            let unit = if m.chance(50) { HOUR } else { MINUTE };
            a = bucket(a, unit);
            len = bucket(len, unit).max(unit);
            step = step.map(|x| bucket(x, unit).max(unit));
        }
        // At most 200 rows: the reference rescans every point per row.
        if let Some(x) = step {
            len = len.min(200 * x);
        }
        let b = a + len;
        let interval = step.map(|x| Duration::from_micros(x as u64));
        for w in [Interpolation::Step, Interpolation::Linear] {
            let rows = summary(s, TAG, ts(a), ts(b), interval, &ALL_KINDS, w, &limits()).unwrap();
            let n = step.map_or(1, |x| (len + x - 1) / x);
            assert_eq!(rows.len() as i64, n);
            for row in &rows {
                let (ra, rb) = (row.start.micros(), row.end.micros());
                check_row(row, &ref_summary_row(model, ra, rb, w));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn stored_rollups_and_summaries_match_the_points(
        seed in any::<u64>(),
        hours in 2i64..6,
        seal_threshold in prop::sample::select(vec![8usize, 40, 150]),
        min_points in prop::sample::select(vec![1u64, 4, 16]),
        reopen in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(seal_threshold, min_points);
        let mut s = Storage::open_standalone(dir.path(), cfg.clone()).unwrap();
        let model = write_all(&s, &scenario(seed, hours));
        if reopen {
            drop(s);
            s = Storage::open_standalone(dir.path(), cfg).unwrap();
        }
        let tag = s.tag_by_name(TAG).unwrap().id;
        prop_assert_eq!(s.range(tag, ts(i64::MIN), ts(i64::MAX), usize::MAX).unwrap(), model.clone());
        check_stored(&s, tag, &model, CF_ROLLUP_1M, MINUTE, min_points);
        check_stored(&s, tag, &model, CF_ROLLUP_1H, HOUR, min_points);
        check_summaries(&s, &model, seed);
    }
}

/// Two days of 1 s data, written in in-order batches of 1,000 points, then
/// late points in an old hour and a replaced point: per hour and in 7
/// unaligned intervals, in both weightings, the summaries equal the
/// reference while the call may read only 6,000 points and rollups (the
/// raw path would read 172,800). After a reopen the same holds.
#[test]
fn two_days_of_seconds_come_from_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(4096, 16);
    let mut s = Storage::open_standalone(dir.path(), cfg.clone()).unwrap();
    let point = |i: i64, v: f64| Point::good(ts(T0 + i * SEC), Value::F64(v));
    let mut model: BTreeMap<i64, Point> = BTreeMap::new();
    let mut batches: Vec<Vec<Point>> = (0..2 * 86_400)
        .map(|i| point(i, ((i * 7) % 1_000) as f64 / 4.0))
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(<[Point]>::to_vec)
        .collect();
    // Late: a bad stretch and a replaced point in hour 3, a new point at 3:30:00.5.
    batches.push(vec![
        Point {
            quality: Quality::BAD,
            ..point(3 * 3_600 + 10, 0.0)
        },
        point(3 * 3_600 + 20, -5.0),
        Point::good(ts(T0 + 3 * HOUR + 30 * MINUTE + SEC / 2), Value::F64(1e6)),
    ]);
    for b in &batches {
        for p in b {
            model.insert(p.ts.micros(), p.clone());
        }
    }
    let model: Vec<Point> = model.into_values().collect();
    write_all(&s, &batches);

    let tight = QueryLimits {
        max_points_scanned: 6_000,
        ..limits()
    };
    let end = T0 + 2 * 86_400 * SEC;
    let cases = [
        (T0, end, 3_600 * SEC),
        (T0 + 17 * SEC, end - 3 * SEC, 2 * 86_400 * SEC / 7),
    ];
    for round in 0..2 {
        for (a, b, step) in cases {
            for w in [Interpolation::Step, Interpolation::Linear] {
                let interval = Some(Duration::from_micros(step as u64));
                let rows = summary(&s, TAG, ts(a), ts(b), interval, &ALL_KINDS, w, &tight)
                    .unwrap_or_else(|e| panic!("round {round}, {w:?}, step {step}: {e}"));
                for row in &rows {
                    let (ra, rb) = (row.start.micros(), row.end.micros());
                    check_row(row, &ref_summary_row(&model, ra, rb, w));
                }
            }
        }
        // Short intervals still read points, and hit the limit as they should.
        let r = summary(
            &s,
            TAG,
            ts(T0),
            ts(end),
            Some(Duration::from_secs(30)),
            &[SummaryKind::Count],
            Interpolation::Step,
            &tight,
        );
        assert!(matches!(r, Err(QueryError::TooManyPointsScanned { .. })));
        drop(s);
        s = Storage::open_standalone(dir.path(), cfg.clone()).unwrap();
    }
}

/// The plan that seals a block carries the rollup puts in the same
/// operations (hence the same `WriteBatch` and WAL write); a plan that only
/// appends to the recent area carries none.
#[test]
fn rollups_ride_in_the_blocks_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(200, 1)).unwrap();
    let batch: Vec<_> = (0..150)
        .map(|i| {
            (
                TagRef::Name(TAG),
                Point::good(ts(T0 + i * SEC), Value::F64(i as f64)),
            )
        })
        .collect();
    let mut ws = s.plan(&batch).unwrap();
    let cfs = |ops: &[Op]| -> Vec<&'static str> {
        ops.iter()
            .map(|op| match op {
                Op::Put { cf, .. } | Op::Delete { cf, .. } => *cf,
                _ => "other",
            })
            .collect()
    };
    assert!(!cfs(ws.ops().unwrap()).contains(&CF_ROLLUP_1M));
    let mut wb = rocksdb::WriteBatch::default();
    ws.append_to(&mut wb).unwrap();
    s.db().write(wb).unwrap();
    ws.committed();

    // 150 more seconds: the first 200 points seal (up to 3:19), so minutes
    // 0 to 2 are final, hour 0 is not: 3 minute rollups beside the block.
    let batch: Vec<_> = (150..300)
        .map(|i| {
            (
                TagRef::Name(TAG),
                Point::good(ts(T0 + i * SEC), Value::F64(i as f64)),
            )
        })
        .collect();
    let mut ws = s.plan(&batch).unwrap();
    let cf_list = cfs(ws.ops().unwrap());
    assert_eq!(cf_list.iter().filter(|c| **c == CF_BLOCKS).count(), 1);
    assert_eq!(cf_list.iter().filter(|c| **c == CF_ROLLUP_1M).count(), 3);
    assert_eq!(cf_list.iter().filter(|c| **c == CF_ROLLUP_1H).count(), 0);
    // Dropped unwritten: nothing reaches the disk.
    drop(ws);
    let tag = s.tag_by_name(TAG).unwrap().id;
    assert!(stored(&s, CF_ROLLUP_1M, tag, MINUTE).is_empty());
}

/// Retention removes the rollups of the buckets it cuts into or before,
/// keeps the later ones, and summaries over what remains still equal the
/// reference over the points a read still returns.
#[test]
fn retention_removes_rollups_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(500, 16)).unwrap();
    let mut meta = TagMeta::new(TAG, converge_historian::encoding::ValueType::F64);
    meta.retention = Some(Duration::from_secs(86_400));
    let tag = s.ensure_tag(meta).unwrap();
    let points: Vec<(TagRef<'_>, Point)> = (0..3 * 86_400 / 2)
        .map(|i| {
            let v = ((i * 13) % 97) as f64;
            (
                TagRef::Id(tag),
                Point::good(ts(T0 + i * 2 * SEC), Value::F64(v)),
            )
        })
        .collect();
    for chunk in points.chunks(2_000) {
        s.write(chunk).unwrap();
    }
    let before_m = stored(&s, CF_ROLLUP_1M, tag, MINUTE);
    let before_h = stored(&s, CF_ROLLUP_1H, tag, HOUR);
    assert!(before_m.first().unwrap().start().micros() < T0 + HOUR);
    assert!(before_h.first().unwrap().start().micros() < T0 + HOUR);

    let now = T0 + 3 * 86_400 * SEC;
    let cutoff = now - 86_400 * SEC - 17 * MINUTE - 5 * SEC;
    s.enforce_retention(ts(cutoff + 86_400 * SEC)).unwrap();
    for (cf, width, before) in [
        (CF_ROLLUP_1M, MINUTE, &before_m),
        (CF_ROLLUP_1H, HOUR, &before_h),
    ] {
        let after = stored(&s, cf, tag, width);
        assert!(!after.is_empty(), "{cf}: everything went");
        assert!(
            after.iter().all(|r| r.start().micros() >= cutoff),
            "{cf}: a rollup before the cutoff survived"
        );
        let kept: Vec<&Rollup> = before
            .iter()
            .filter(|r| r.start().micros() >= cutoff)
            .collect();
        assert_eq!(after.iter().collect::<Vec<_>>(), kept, "{cf}");
    }
    let remaining = s
        .range(tag, ts(i64::MIN), ts(i64::MAX), usize::MAX)
        .unwrap();
    assert!(
        remaining.first().unwrap().ts.micros() < cutoff,
        "a straddling block stays"
    );
    for w in [Interpolation::Step, Interpolation::Linear] {
        let (a, b) = (cutoff - 2 * HOUR - 7 * SEC, now);
        let rows = summary(
            &s,
            TAG,
            ts(a),
            ts(b),
            Some(Duration::from_secs(3 * 3_600)),
            &ALL_KINDS,
            w,
            &limits(),
        )
        .unwrap();
        for row in &rows {
            let (ra, rb) = (row.start.micros(), row.end.micros());
            check_row(row, &ref_summary_row(&remaining, ra, rb, w));
        }
    }
}
