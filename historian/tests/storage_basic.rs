//! Storage scenarios on a real RocksDB in a temporary directory: round trip
//! across sealing, replacement (also inside sealed blocks), reopen, type
//! errors, stats and retention.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use converge_historian::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use converge_historian::storage::{
    Storage, StorageConfig, StorageError, TagId, TagMeta, TagRef, CF_BLOCKS,
};

const MIN: i64 = i64::MIN;
const MAX: i64 = i64::MAX;

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

fn f(t: i64, v: f64) -> Point {
    Point::good(ts(t), Value::F64(v))
}

fn config() -> StorageConfig {
    StorageConfig {
        sync: false,
        ..StorageConfig::default()
    }
}

fn all(s: &Storage, tag: TagId) -> Vec<Point> {
    s.range(tag, ts(MIN), ts(MAX), usize::MAX).unwrap()
}

#[test]
fn ten_thousand_points_make_two_blocks_and_a_recent_tail() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let points: Vec<Point> = (0..10_000)
        .map(|i| f(1_000_000 * i, i as f64 * 0.5))
        .collect();
    for chunk in points.chunks(1000) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|p| (TagRef::Name("a/b"), p.clone()))
            .collect();
        s.write(&batch).unwrap();
    }
    let tag = s.tag_by_name("a/b").unwrap();
    assert_eq!(tag.meta.value_type, ValueType::F64);
    assert_eq!(all(&s, tag.id), points);
    let st = &s.stats("a/*").unwrap()[0];
    assert_eq!(st.blocks, 2);
    assert_eq!(st.block_points, 8192);
    assert_eq!(st.recent_points, 10_000 - 8192);
    assert_eq!(st.points, 10_000);
    assert_eq!(st.time_range, Some((ts(0), ts(9_999_000_000))));
    assert!(st.bytes_per_sealed_point < 2.0, "{st:?}");
    assert_eq!(s.latest(tag.id).unwrap(), points.last().cloned());

    // Sub-ranges and limits straddling the block boundary.
    let got = s
        .range(tag.id, ts(4_000_000_000), ts(4_200_000_000), usize::MAX)
        .unwrap();
    assert_eq!(got, points[4000..=4200]);
    let got = s.range(tag.id, ts(8_000_000_000), ts(MAX), 300).unwrap();
    assert_eq!(got, points[8000..8300]);
    assert_eq!(
        s.before(tag.id, ts(4_096_000_000), false).unwrap(),
        Some(points[4095].clone())
    );
    assert_eq!(
        s.before(tag.id, ts(4_096_000_000), true).unwrap(),
        Some(points[4096].clone())
    );
    assert_eq!(
        s.before(tag.id, ts(4_095_500_000), true).unwrap(),
        Some(points[4095].clone())
    );
    assert_eq!(
        s.after(tag.id, ts(4_095_000_000), false).unwrap(),
        Some(points[4096].clone())
    );
    assert_eq!(
        s.after(tag.id, ts(8_191_000_001), true).unwrap(),
        Some(points[8192].clone())
    );
    assert_eq!(s.after(tag.id, ts(9_999_000_000), false).unwrap(), None);
    assert_eq!(s.before(tag.id, ts(0), false).unwrap(), None);
    assert_eq!(
        s.after(tag.id, ts(-5), false).unwrap(),
        Some(points[0].clone())
    );
}

#[test]
fn duplicates_replace_also_inside_sealed_blocks_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(
        dir.path(),
        StorageConfig {
            seal_threshold: 100,
            ..config()
        },
    )
    .unwrap();
    let id = s.ensure_tag(TagMeta::new("t", ValueType::I64)).unwrap();
    let batch: Vec<_> = (0..250)
        .map(|i| (TagRef::Id(id), Point::good(ts(i * 10), Value::I64(i))))
        .collect();
    let sum = s.write(&batch).unwrap();
    assert_eq!((sum.points, sum.replaced, sum.blocks_written), (250, 0, 2));

    // Replace one sealed point, one recent point, and add a late new one.
    let bad = Quality::new(Severity::Bad, 3);
    let fixes = vec![
        (
            TagRef::Id(id),
            Point {
                ts: ts(50),
                value: Value::I64(-1),
                quality: bad,
            },
        ),
        (TagRef::Id(id), Point::good(ts(2300), Value::I64(-2))),
        (TagRef::Id(id), Point::good(ts(55), Value::I64(-3))),
        (TagRef::Id(id), Point::good(ts(55), Value::I64(-4))),
    ];
    let sum = s.write(&fixes).unwrap();
    assert_eq!((sum.points, sum.replaced), (4, 3));
    assert_eq!(s.replacements(), 3);

    let got = all(&s, id);
    assert_eq!(got.len(), 251);
    assert_eq!(
        got[5],
        Point {
            ts: ts(50),
            value: Value::I64(-1),
            quality: bad
        }
    );
    assert_eq!(got[6], Point::good(ts(55), Value::I64(-4)));
    assert_eq!(got[231], Point::good(ts(2300), Value::I64(-2)));
    assert_eq!(s.stats("t").unwrap()[0].points, 251);

    // Enough late points to seal again: they merge into the existing blocks.
    let late: Vec<_> = (0..100)
        .map(|i| {
            (
                TagRef::Id(id),
                Point::good(ts(i * 10 + 1), Value::I64(1000 + i)),
            )
        })
        .collect();
    s.write(&late).unwrap();
    let got = all(&s, id);
    assert_eq!(got.len(), 351);
    assert!(got.windows(2).all(|w| w[0].ts < w[1].ts));
    let at50 = got.iter().find(|p| p.ts == ts(50)).unwrap();
    assert_eq!(
        *at50,
        Point {
            ts: ts(50),
            value: Value::I64(-1),
            quality: bad
        }
    );
    let st = &s.stats("t").unwrap()[0];
    assert_eq!(st.points, 351);
    assert!(st.recent_points < 100, "{st:?}");
}

#[test]
fn reopen_gives_the_same_reads_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        seal_threshold: 64,
        ..config()
    };
    let (before, latest, tags) = {
        let s = Storage::open_standalone(dir.path(), cfg.clone()).unwrap();
        for round in 0..5 {
            let batch: Vec<_> = (0..100)
                .flat_map(|i| {
                    [
                        (TagRef::Name("x"), f(i * 7 + round, i as f64)),
                        (
                            TagRef::Name("y"),
                            Point::good(ts(1000 - i * 3 - round), Value::Str(format!("s{i}"))),
                        ),
                    ]
                })
                .collect();
            s.write(&batch).unwrap();
        }
        let x = s.tag_by_name("x").unwrap().id;
        let y = s.tag_by_name("y").unwrap().id;
        (
            (all(&s, x), all(&s, y)),
            (s.latest(x).unwrap(), s.latest(y).unwrap()),
            s.tags(),
        )
    };
    let s = Storage::open_standalone(dir.path(), cfg).unwrap();
    assert_eq!(s.tags(), tags);
    let x = s.tag_by_name("x").unwrap().id;
    let y = s.tag_by_name("y").unwrap().id;
    assert_eq!((all(&s, x), all(&s, y)), before);
    assert_eq!((s.latest(x).unwrap(), s.latest(y).unwrap()), latest);
    // Writing after reopen continues where the state left off.
    s.write(&[(TagRef::Id(x), f(1, 9.0))]).unwrap();
    assert_eq!(s.replacements(), 1);
    let z = s.ensure_tag(TagMeta::new("z", ValueType::Bool)).unwrap();
    assert!(z.0 > y.0.max(x.0));
}

#[test]
fn wrong_value_type_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let id = s.ensure_tag(TagMeta::new("temp", ValueType::F64)).unwrap();
    let err = s
        .write(&[
            (TagRef::Id(id), f(1, 1.0)),
            (TagRef::Name("new"), f(1, 1.0)),
            (TagRef::Name("temp"), Point::good(ts(2), Value::Bool(true))),
        ])
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::TypeMismatch {
            tag: id,
            expected: ValueType::F64,
            found: ValueType::Bool
        }
    );
    assert_eq!(all(&s, id), vec![]);
    assert!(s.tag_by_name("new").is_none());
    // Also within one batch for a tag it creates.
    let err = s
        .write(&[
            (TagRef::Name("n2"), f(1, 1.0)),
            (TagRef::Name("n2"), Point::good(ts(2), Value::I64(1))),
        ])
        .unwrap_err();
    assert!(matches!(err, StorageError::TypeMismatch { .. }), "{err}");
    assert!(matches!(
        s.ensure_tag(TagMeta::new("temp", ValueType::I64)),
        Err(StorageError::TagTypeConflict { .. })
    ));
    assert_eq!(
        s.write(&[(TagRef::Id(TagId(99)), f(1, 1.0))]),
        Err(StorageError::UnknownTagId(TagId(99)))
    );
    assert!(matches!(
        s.write(&[(TagRef::Name(""), f(1, 1.0))]),
        Err(StorageError::InvalidTagMeta(_))
    ));
    // The storage still works.
    s.write(&[(TagRef::Id(id), f(3, 3.0))]).unwrap();
    assert_eq!(all(&s, id), vec![f(3, 3.0)]);
}

#[test]
fn retention_removes_old_data_and_keeps_new() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(
        dir.path(),
        StorageConfig {
            seal_threshold: 100,
            ..config()
        },
    )
    .unwrap();
    let mut meta = TagMeta::new("short", ValueType::F64);
    meta.retention = Some(Duration::from_micros(1000));
    let short = s.ensure_tag(meta).unwrap();
    let keep = s
        .ensure_tag(TagMeta::new("forever", ValueType::F64))
        .unwrap();
    // 0..1990 µs step 10 seal into blocks [0, 990] and [1000, 1990];
    // 2000..2980 (99 points, under the threshold) stay recent.
    let write = |range: std::ops::Range<i64>| {
        let batch: Vec<_> = range
            .flat_map(|i| {
                [
                    (TagRef::Id(short), f(i * 10, 1.0)),
                    (TagRef::Id(keep), f(i * 10, 2.0)),
                ]
            })
            .collect();
        s.write(&batch).unwrap();
    };
    write(0..200);
    write(200..299);
    assert_eq!(s.stats("short").unwrap()[0].blocks, 2);
    assert_eq!(s.stats("short").unwrap()[0].recent_points, 99);

    // Cutoff 1500: the first block goes, the straddling one stays whole.
    let sum = s.enforce_retention(ts(2500)).unwrap();
    assert_eq!(
        (sum.tags, sum.blocks_deleted, sum.recent_deleted),
        (1, 1, 0)
    );
    assert_eq!(all(&s, short).first().map(|p| p.ts), Some(ts(1000)));
    assert_eq!(all(&s, keep).len(), 299);

    // Cutoff 2500: the second block and half the recent points go.
    let sum = s.enforce_retention(ts(3500)).unwrap();
    assert_eq!((sum.blocks_deleted, sum.recent_deleted), (1, 50));
    let left = all(&s, short);
    assert_eq!(left.len(), 49);
    assert_eq!(left[0].ts, ts(2500));
    assert_eq!(s.stats("short").unwrap()[0].points, 49);

    // Everything expires; latest follows.
    s.enforce_retention(ts(10_000)).unwrap();
    assert_eq!(all(&s, short), vec![]);
    assert_eq!(s.latest(short).unwrap(), None);
    assert_eq!(s.latest(keep).unwrap(), Some(f(2980, 2.0)));
    drop(s);
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    assert_eq!(s.latest(short).unwrap(), None);
    assert_eq!(s.stats("short").unwrap()[0].recent_points, 0);
    s.write(&[(TagRef::Id(short), f(20_000, 1.0))]).unwrap();
    assert_eq!(all(&s, short), vec![f(20_000, 1.0)]);
}

#[test]
fn corrupt_block_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(
        dir.path(),
        StorageConfig {
            seal_threshold: 50,
            ..config()
        },
    )
    .unwrap();
    let batch: Vec<_> = (0..60)
        .map(|i| (TagRef::Name("c"), f(i, i as f64)))
        .collect();
    s.write(&batch).unwrap();
    let id = s.tag_by_name("c").unwrap().id;
    let cf = s.db().cf_handle(CF_BLOCKS).unwrap();
    let (key, value) = s
        .db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .next()
        .unwrap()
        .unwrap();
    for at in [0, 10, value.len() / 2, value.len() - 1] {
        let mut bad = value.to_vec();
        bad[at] ^= 0x40;
        s.db().put_cf(cf, &key, &bad).unwrap();
        assert!(matches!(
            s.range(id, ts(MIN), ts(MAX), 100),
            Err(StorageError::CorruptBlock { .. })
        ));
        assert!(s.before(id, ts(10), true).is_err());
        assert!(s.after(id, ts(10), true).is_err());
        assert!(s.write(&[(TagRef::Id(id), f(5, 0.0))]).is_err());
    }
    s.db().put_cf(cf, &key, [1u8, 2, 3]).unwrap();
    assert!(s.stats("*").is_err());
    drop(s);
    assert!(Storage::open_standalone(dir.path(), config()).is_err());
}

#[test]
fn search_and_latest_many() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let batch: Vec<_> = [
        "plant/a/temp",
        "plant/b/temp",
        "plant/b/flow",
        "office/temp",
    ]
    .iter()
    .enumerate()
    .map(|(i, n)| (TagRef::Name(n), f(i as i64, i as f64)))
    .collect();
    s.write(&batch).unwrap();
    let names: Vec<String> = s
        .search("plant/*/temp")
        .into_iter()
        .map(|t| t.meta.name)
        .collect();
    assert_eq!(names, ["plant/a/temp", "plant/b/temp"]);
    assert_eq!(s.search("*temp").len(), 3);
    let ids: Vec<TagId> = s.tags().iter().map(|t| t.id).chain([TagId(77)]).collect();
    let latest = s.latest_many(&ids);
    assert_eq!(latest.len(), 5);
    assert_eq!(latest[2], Some(f(2, 2.0)));
    assert_eq!(latest[4], None);
}

#[test]
fn plan_joins_a_foreign_batch_and_abandoned_plans_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config()).unwrap();
    let mut ws = s.plan(&[(TagRef::Name("g"), f(1, 1.0))]).unwrap();
    ws.add(&[(TagRef::Name("g"), f(2, 2.0))]).unwrap();
    assert!(ws
        .add(&[(TagRef::Name("g"), Point::good(ts(3), Value::I64(1)))])
        .is_err());
    let mut batch = rocksdb::WriteBatch::default();
    ws.append_to(&mut batch).unwrap();
    assert!(!ws.ops().unwrap().is_empty());
    s.db().write(batch).unwrap();
    let sum = ws.committed();
    assert_eq!((sum.points, sum.tags_created), (2, 1));
    let g = s.tag_by_name("g").unwrap().id;
    assert_eq!(all(&s, g), vec![f(1, 1.0), f(2, 2.0)]);

    // Dropped without writing: no tag, same latest.
    let ws = s
        .plan(&[(TagRef::Name("h"), f(1, 1.0)), (TagRef::Id(g), f(9, 9.0))])
        .unwrap();
    drop(ws);
    assert!(s.tag_by_name("h").is_none());
    assert_eq!(s.latest(g).unwrap(), Some(f(2, 2.0)));

    // A failed commit poisons.
    let ws = s.plan(&[(TagRef::Id(g), f(9, 9.0))]).unwrap();
    ws.failed();
    assert_eq!(
        s.write(&[(TagRef::Id(g), f(9, 9.0))]),
        Err(StorageError::Poisoned)
    );
}
