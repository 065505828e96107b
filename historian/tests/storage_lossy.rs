//! PI-style lossy compression end to end, on real data (five columns of a
//! NREL MIDC day, `tests/fixtures/datasets/`): rules with `comp_dev` or
//! `exc_dev` → `Ingest` (JSON batches, as a data logger sends them) →
//! `Storage` (the tag's metadata carries the setting; sealing applies the
//! swinging door) → reads.
//!
//! 1. Without lossy keys every point is stored, bit for bit.
//! 2. With `comp_dev`, fewer points are stored, every dropped point lies
//!    within `comp_dev` of the line between the stored points around it,
//!    nothing unsealed is dropped, the latest value is the last one sent,
//!    and rollups describe the stored points.
//! 3. With `exc_dev`, every point not stored lies within `exc_dev` of the
//!    last stored point before it and less than `exc_max` after it.
//! 4. The setting lives in the tag's metadata: it survives a reopen,
//!    follows the rule when the rule changes, and late points are stored
//!    as they are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use converge_historian::encoding::lossy::{CompressionConfig, LossyConfig};
use converge_historian::encoding::{block_header, Point, Timestamp, Value};
use converge_historian::ingest::{Decoder, Ingest, RuleConfig, Rules, TagPoint};
use converge_historian::query::{Rollup, RollupResolution};
use converge_historian::storage::{Storage, StorageConfig, TagId, TagMeta, TagRef, CF_BLOCKS};

/// 2018-10-18T00:00 MST (UTC−7) in µs.
const DAY_START: i64 = 1_539_846_000 * 1_000_000;
const MINUTE: i64 = 60_000_000;
const COLUMNS: [&str; 5] = ["ghi", "air_temp", "rh", "pressure", "wind_speed"];

/// The dataset as (column, points at one-minute steps).
fn dataset() -> Vec<(&'static str, Vec<Point>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets/midc_uat_20181018.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[1..], COLUMNS);
    let mut out: Vec<(&str, Vec<Point>)> = COLUMNS.iter().map(|&c| (c, Vec::new())).collect();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let minute: i64 = cells[0].parse().unwrap();
        let t = Timestamp::from_micros(DAY_START + minute * MINUTE);
        for (i, (_, points)) in out.iter_mut().enumerate() {
            // As the JSON decoder reads it (serde_json without its
            // `float_roundtrip` feature may differ from `str::parse` in the
            // last bit).
            let v: f64 = serde_json::from_str(cells[i + 1]).unwrap();
            points.push(Point::good(t, Value::F64(v)));
        }
    }
    assert!(out.iter().all(|(_, p)| p.len() == 1440));
    out
}

fn tag_name(column: &str) -> String {
    format!("midc/uat/{column}")
}

/// One JSON rule per column, with the lossy keys `keys` gives it.
fn rules(keys: impl Fn(&str, &mut RuleConfig)) -> Rules {
    Rules::compile(
        COLUMNS
            .iter()
            .map(|&c| {
                let mut r = RuleConfig::new(tag_name(c), Decoder::Json);
                keys(c, &mut r);
                r
            })
            .collect(),
    )
    .unwrap()
}

/// Sends every column through `ingest` an hour per message, as a logger
/// would, and writes the decoded points the way the broker's writer does.
fn ingest_day(ingest: &mut Ingest, s: &Storage, data: &[(&str, Vec<Point>)]) {
    for hour in 0..24 {
        for (column, points) in data {
            send(ingest, s, column, &points[hour * 60..(hour + 1) * 60]);
        }
    }
}

/// `points` of one column as JSON batches of at most 60 points.
fn send(ingest: &mut Ingest, s: &Storage, column: &str, points: &[Point]) {
    for chunk in points.chunks(60) {
        let items: Vec<String> = chunk
            .iter()
            .map(|p| format!("{{\"value\":{},\"ts\":{}}}", value(p), p.ts.micros() / 1000))
            .collect();
        let payload = format!("[{}]", items.join(","));
        let decoded = ingest
            .decode(&tag_name(column), payload.as_bytes(), Timestamp::EPOCH)
            .unwrap();
        assert!(decoded.rejected.is_empty());
        store(s, &decoded.points);
    }
}

/// What `broker/src/historian.rs` `plan_points` does: create the tag with
/// the rule's metadata, let its lossy settings follow the rule, add.
fn store(s: &Storage, points: &[TagPoint]) {
    let mut ws = s.begin().unwrap();
    let mut refs = Vec::new();
    for p in points {
        let mut meta = TagMeta::new(p.tag.clone(), p.meta.value_type);
        meta.lossy = p.meta.lossy.unwrap_or_default();
        let id = ws.ensure_tag(meta).unwrap();
        if let Some(lossy) = p.meta.lossy {
            ws.set_lossy(id, lossy).unwrap();
        }
        refs.push((TagRef::Id(id), p.point.clone()));
    }
    ws.add(&refs).unwrap();
    let mut batch = rocksdb::WriteBatch::default();
    ws.append_to(&mut batch).unwrap();
    s.db().write(batch).unwrap();
    ws.committed();
}

fn config() -> StorageConfig {
    StorageConfig {
        sync: false,
        // Sealed often, so the day makes several blocks per tag; every
        // bucket keeps a rollup, so rollups of thinned data are checked too.
        seal_threshold: 200,
        rollup_min_points: 1,
        ..StorageConfig::default()
    }
}

fn all(s: &Storage, tag: TagId) -> Vec<Point> {
    s.range(
        tag,
        Timestamp::from_micros(i64::MIN),
        Timestamp::from_micros(i64::MAX),
        usize::MAX,
    )
    .unwrap()
}

fn id(s: &Storage, column: &str) -> TagId {
    s.tag_by_name(&tag_name(column)).unwrap().id
}

/// The last sealed timestamp, from the last block's header.
fn sealed_last(s: &Storage, tag: TagId) -> Option<Timestamp> {
    let cf = s.db().cf_handle(CF_BLOCKS).unwrap();
    let mut it = s.db().raw_iterator_cf(cf);
    it.seek_for_prev([tag.0.to_be_bytes().as_slice(), &[0xFF; 8]].concat());
    let (k, v) = (it.key()?, it.value()?);
    (k[..4] == tag.0.to_be_bytes()).then(|| block_header(v).unwrap().last_ts)
}

/// `got == want`, reporting the first difference only.
fn same_points(got: &[Point], want: &[Point], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} points, {} expected; first difference at {i}: {:?} != {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

fn value(p: &Point) -> f64 {
    match p.value {
        Value::F64(v) => v,
        _ => panic!("not a float"),
    }
}

/// Deviation of each column, about 0.5–1% of its day's range.
fn comp_dev(column: &str) -> f64 {
    match column {
        "ghi" => 5.0,
        "air_temp" => 0.1,
        "rh" => 0.5,
        "pressure" => 0.05,
        _ => 0.2,
    }
}

#[test]
fn without_lossy_keys_every_point_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let data = dataset();
    let mut ingest = Ingest::new(rules(|_, _| {}));
    ingest_day(&mut ingest, &s, &data);
    for (column, points) in &data {
        let tag = id(&s, column);
        assert_eq!(
            s.tag(tag).unwrap().meta.lossy,
            LossyConfig::default(),
            "{column}"
        );
        same_points(&all(&s, tag), points, column);
        assert!(sealed_last(&s, tag).is_some(), "{column}: nothing sealed");
    }
}

#[test]
fn compression_stores_fewer_points_each_dropped_one_near_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let data = dataset();
    let mut ingest = Ingest::new(rules(|c, r| r.comp_dev = Some(comp_dev(c))));
    ingest_day(&mut ingest, &s, &data);
    let (mut sent, mut kept) = (0, 0);
    for (column, points) in &data {
        let tag = id(&s, column);
        let dev = comp_dev(column);
        assert_eq!(
            s.tag(tag)
                .unwrap()
                .meta
                .lossy
                .compression
                .map(|c| c.deviation),
            Some(dev)
        );
        let stored = all(&s, tag);
        let by_time: BTreeMap<Timestamp, &Point> = stored.iter().map(|p| (p.ts, p)).collect();
        // Stored points are points that were sent, unchanged.
        let sent_at: BTreeMap<Timestamp, &Point> = points.iter().map(|p| (p.ts, p)).collect();
        for p in &stored {
            assert_eq!(Some(&p), sent_at.get(&p.ts), "{column}");
        }
        // Nothing past the sealed range is dropped: the recent area keeps
        // every acknowledged point until it is sealed.
        let sealed = sealed_last(&s, tag).unwrap();
        for p in points.iter().filter(|p| p.ts > sealed) {
            assert!(
                by_time.contains_key(&p.ts),
                "{column}: unsealed point dropped"
            );
        }
        // Every dropped point lies within comp_dev of the stored line.
        for p in points.iter().filter(|p| !by_time.contains_key(&p.ts)) {
            let (_, a) = by_time.range(..p.ts).next_back().unwrap();
            let (_, b) = by_time.range(p.ts..).next().unwrap();
            let f = (p.ts.micros() - a.ts.micros()) as f64 / (b.ts.micros() - a.ts.micros()) as f64;
            let line = value(a) + (value(b) - value(a)) * f;
            let tolerance = 1e-9 * (1.0 + value(a).abs().max(value(b).abs()));
            assert!(
                (value(p) - line).abs() <= dev + tolerance,
                "{column}: {} at {} is {} from the line (comp_dev {dev})",
                value(p),
                p.ts.micros(),
                (value(p) - line).abs()
            );
            assert_eq!(p.quality, a.quality);
        }
        assert!(
            stored.len() < points.len(),
            "{column}: {} of {}",
            stored.len(),
            points.len()
        );
        assert_eq!(s.latest(tag).unwrap().as_ref(), points.last(), "{column}");
        // Rollups describe the stored points, not the ones sent.
        let hours = s
            .rollups(
                tag,
                RollupResolution::Hour,
                Timestamp::from_micros(i64::MIN),
                Timestamp::from_micros(i64::MAX),
            )
            .unwrap();
        assert!(!hours.is_empty(), "{column}: no hour rollups");
        for r in hours {
            let inside: Vec<Point> = stored
                .iter()
                .filter(|p| p.ts >= r.start() && p.ts < r.end())
                .cloned()
                .collect();
            let want = Rollup::compute(&inside, r.start(), r.end())
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    r.points(),
                    r.first_point(),
                    r.last_point(),
                    r.min(),
                    r.max()
                ),
                (
                    want.points(),
                    want.first_point(),
                    want.last_point(),
                    want.min(),
                    want.max()
                ),
                "{column} hour at {}",
                r.start().micros()
            );
        }
        eprintln!(
            "{column}: comp_dev {dev}: {} of {} points stored ({:.1}%)",
            stored.len(),
            points.len(),
            100.0 * stored.len() as f64 / points.len() as f64
        );
        sent += points.len();
        kept += stored.len();
    }
    eprintln!("all: {kept} of {sent} points stored");
}

#[test]
fn exception_drops_only_within_exc_dev_of_the_last_stored_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let data = dataset();
    let exc_max = Duration::from_secs(600);
    let mut ingest = Ingest::new(rules(|c, r| {
        r.exc_dev = Some(comp_dev(c) / 2.0);
        r.exc_max = Some("10m".into());
    }));
    ingest_day(&mut ingest, &s, &data);
    let mut not_stored = 0;
    for (column, points) in &data {
        let tag = id(&s, column);
        let dev = comp_dev(column) / 2.0;
        let stored = all(&s, tag);
        let by_time: BTreeMap<Timestamp, &Point> = stored.iter().map(|p| (p.ts, p)).collect();
        assert!(stored.len() < points.len(), "{column}");
        for p in points.iter().filter(|p| !by_time.contains_key(&p.ts)) {
            let (_, last) = by_time.range(..p.ts).next_back().unwrap();
            assert!(
                (value(p) - value(last)).abs() <= dev,
                "{column} at {}",
                p.ts.micros()
            );
            assert!(p.ts.micros() - last.ts.micros() < exc_max.as_micros() as i64);
        }
        not_stored += points.len() - stored.len();
    }
    // Each tag may still hold one point back; the others were dropped.
    let dropped = ingest.counters().exception_dropped as usize;
    assert!(
        not_stored >= dropped && not_stored - dropped <= COLUMNS.len(),
        "{not_stored} not stored, {dropped} counted as dropped"
    );
}

#[test]
fn the_setting_is_tag_metadata_that_follows_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset();
    let (column, points) = (data[1].0, &data[1].1);
    {
        let s = Storage::open_standalone(dir.path(), config()).unwrap();
        let mut ingest = Ingest::new(rules(|c, r| r.comp_dev = Some(comp_dev(c))));
        send(&mut ingest, &s, column, &points[..720]);
    }
    // Reopened: the setting is in the stored metadata.
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let tag = id(&s, column);
    let expected = Some(CompressionConfig {
        deviation: comp_dev(column),
        max_interval: Duration::from_secs(8 * 3600),
    });
    assert_eq!(s.tag(tag).unwrap().meta.lossy.compression, expected);
    let compressed_until = sealed_last(&s, tag).unwrap();
    let before = all(&s, tag);
    assert!(before.len() < 720);

    // The rule loses its comp_dev: the rest of the day is sealed lossless.
    let mut ingest = Ingest::new(rules(|_, _| {}));
    send(&mut ingest, &s, column, &points[720..]);
    assert_eq!(s.tag(tag).unwrap().meta.lossy, LossyConfig::default());
    let after = all(&s, tag);
    let later: Vec<&Point> = after.iter().filter(|p| p.ts > compressed_until).collect();
    let sent_later: Vec<&Point> = points.iter().filter(|p| p.ts > compressed_until).collect();
    let later: Vec<Point> = later.into_iter().cloned().collect();
    let sent_later: Vec<Point> = sent_later.into_iter().cloned().collect();
    same_points(&later, &sent_later, "lossless after the rule changed");

    // A late point in the compressed range is stored as it is.
    let dropped = points
        .iter()
        .find(|p| p.ts < compressed_until && !before.contains(p))
        .unwrap();
    let late = Point::good(dropped.ts, Value::F64(value(dropped) + 100.0));
    s.write(&[(TagRef::Id(tag), late.clone())]).unwrap();
    s.set_lossy(
        tag,
        LossyConfig {
            compression: expected,
            ..LossyConfig::default()
        },
    )
    .unwrap();
    assert!(all(&s, tag).contains(&late));
    // Force a seal of the tag's late point: it merges into its block as is.
    let more: Vec<(TagRef<'_>, Point)> = (1..=400)
        .map(|i| {
            (
                TagRef::Id(tag),
                Point::good(
                    Timestamp::from_micros(DAY_START + (1440 + i) * MINUTE),
                    Value::F64(20.0),
                ),
            )
        })
        .collect();
    s.write(&more).unwrap();
    assert!(all(&s, tag).contains(&late));
    assert!(sealed_last(&s, tag).unwrap().micros() > DAY_START + 1440 * MINUTE);
}
