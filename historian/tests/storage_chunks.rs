//! The recent area holds chunks (several recent records under one key):
//! late points and replacements inside a chunk, databases that still hold
//! the one-point-per-key records of earlier versions mixed with chunks,
//! chunks split by their time span, retention cutting through a chunk and
//! corrupt chunks. Each scenario is checked against a `BTreeMap` model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use converge_historian::encoding::{encode_recent_point, Point, Timestamp, Value, ValueType};
use converge_historian::storage::{
    Storage, StorageConfig, StorageError, TagId, TagMeta, TagRef, CF_RECENT, CF_TAGS,
};

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

fn p(t: i64, v: i64) -> Point {
    Point::good(ts(t), Value::I64(v))
}

fn config(threshold: usize) -> StorageConfig {
    StorageConfig {
        sync: false,
        seal_threshold: threshold,
        ..StorageConfig::default()
    }
}

/// The layout of a `hist_recent` key: tag BE | time with its sign bit flipped, BE.
fn series_key(tag: TagId, t: i64) -> Vec<u8> {
    let mut k = tag.0.to_be_bytes().to_vec();
    k.extend_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn recent_keys(s: &Storage, tag: TagId) -> usize {
    let cf = s.db().cf_handle(CF_RECENT).unwrap();
    s.db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .filter(|kv| kv.as_ref().unwrap().0.starts_with(&tag.0.to_be_bytes()))
        .count()
}

fn write(s: &Storage, tag: TagId, points: &[Point], model: &mut BTreeMap<i64, i64>) -> u64 {
    let batch: Vec<_> = points
        .iter()
        .map(|q| (TagRef::Id(tag), q.clone()))
        .collect();
    let sum = s.write(&batch).unwrap();
    for q in points {
        let Value::I64(v) = q.value else { panic!() };
        model.insert(q.ts.micros(), v);
    }
    sum.replaced
}

/// Every read agrees with the model: the whole range, sub-ranges starting
/// inside chunks, before/after around every point, latest and stats.
fn check(s: &Storage, tag: TagId, model: &BTreeMap<i64, i64>, step: i64) {
    let want: Vec<Point> = model.iter().map(|(&t, &v)| p(t, v)).collect();
    assert_eq!(
        s.range(tag, ts(i64::MIN), ts(i64::MAX), usize::MAX)
            .unwrap(),
        want
    );
    assert_eq!(s.latest(tag).unwrap(), want.last().cloned());
    assert_eq!(s.stats("*").unwrap()[0].points, want.len() as u64);
    let probes = want.iter().flat_map(|q| {
        [
            q.ts.micros() - step / 2,
            q.ts.micros(),
            q.ts.micros() + step / 2,
        ]
    });
    for t in probes {
        let sub: Vec<Point> = want
            .iter()
            .filter(|q| (t..=t + 3 * step).contains(&q.ts.micros()))
            .cloned()
            .collect();
        assert_eq!(
            s.range(tag, ts(t), ts(t + 3 * step), usize::MAX).unwrap(),
            sub,
            "at {t}"
        );
        let before = want.iter().rev().find(|q| q.ts.micros() < t).cloned();
        let at_or_before = want.iter().rev().find(|q| q.ts.micros() <= t).cloned();
        let after = want.iter().find(|q| q.ts.micros() > t).cloned();
        let at_or_after = want.iter().find(|q| q.ts.micros() >= t).cloned();
        assert_eq!(s.before(tag, ts(t), false).unwrap(), before, "before {t}");
        assert_eq!(
            s.before(tag, ts(t), true).unwrap(),
            at_or_before,
            "before= {t}"
        );
        assert_eq!(s.after(tag, ts(t), false).unwrap(), after, "after {t}");
        assert_eq!(
            s.after(tag, ts(t), true).unwrap(),
            at_or_after,
            "after= {t}"
        );
    }
}

#[test]
fn late_points_and_replacements_merge_into_the_chunk_that_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(64)).unwrap();
    let tag = s.ensure_tag(TagMeta::new("t", ValueType::I64)).unwrap();
    let mut model = BTreeMap::new();
    // One write of in-order points is one chunk, one key.
    let first: Vec<Point> = (0..10).map(|i| p(i * 10, i)).collect();
    assert_eq!(write(&s, tag, &first, &mut model), 0);
    assert_eq!(recent_keys(&s, tag), 1);
    // A second in-order write: a second chunk.
    assert_eq!(write(&s, tag, &[p(100, 10), p(110, 11)], &mut model), 0);
    assert_eq!(recent_keys(&s, tag), 2);
    check(&s, tag, &model, 10);

    // A late point inside the first chunk goes into it.
    assert_eq!(write(&s, tag, &[p(35, -1)], &mut model), 0);
    assert_eq!(recent_keys(&s, tag), 2);
    assert_eq!(s.replacements(), 0);
    check(&s, tag, &model, 5);

    // A replacement inside the first chunk, one in the second, a late point
    // between the chunks and a new point, all in one write.
    let w = [p(40, -2), p(110, -3), p(95, -4), p(120, 12)];
    assert_eq!(write(&s, tag, &w, &mut model), 2);
    assert_eq!(s.replacements(), 2);
    assert_eq!(s.stats("t").unwrap()[0].recent_points, model.len() as u64);
    check(&s, tag, &model, 5);

    // The same after reopening (the state record counts points).
    drop(s);
    let s = Storage::open_standalone(dir.path(), config(64)).unwrap();
    assert_eq!(s.stats("t").unwrap()[0].recent_points, model.len() as u64);
    check(&s, tag, &model, 5);

    // Replacing the same point twice in one write counts twice, keeps the last.
    assert_eq!(write(&s, tag, &[p(50, -5), p(50, -6)], &mut model), 2);
    check(&s, tag, &model, 5);

    // Sealing reads the chunks, deletes them and keeps the rest as one chunk.
    let fill: Vec<Point> = (13..70).map(|i| p(i * 10, i)).collect();
    write(&s, tag, &fill, &mut model);
    let st = &s.stats("t").unwrap()[0];
    assert_eq!(st.blocks, 1);
    assert_eq!(st.block_points + st.recent_points, model.len() as u64);
    assert!(recent_keys(&s, tag) <= 1, "{st:?}");
    check(&s, tag, &model, 5);
}

/// Writes recent records the way earlier versions did (one point per key)
/// straight into RocksDB, with the state record counting them.
fn put_old_records(s: &Storage, tag: TagId, points: &[Point], count: u64) {
    let cf = s.db().cf_handle(CF_RECENT).unwrap();
    for q in points {
        let mut value = Vec::new();
        encode_recent_point(q, &mut value).unwrap();
        s.db()
            .put_cf(cf, series_key(tag, q.ts.micros()), value)
            .unwrap();
    }
    let mut state = vec![1u8];
    state.extend_from_slice(&count.to_le_bytes());
    let mut key = vec![b's'];
    key.extend_from_slice(&tag.0.to_be_bytes());
    let tags = s.db().cf_handle(CF_TAGS).unwrap();
    s.db().put_cf(tags, key, state).unwrap();
}

#[test]
fn old_one_point_records_mixed_with_chunks_read_replace_and_seal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(32)).unwrap();
    let tag = s.ensure_tag(TagMeta::new("old", ValueType::I64)).unwrap();
    let mut model = BTreeMap::new();
    let old: Vec<Point> = (0..12).map(|i| p(i * 10, 100 + i)).collect();
    put_old_records(&s, tag, &old, old.len() as u64);
    for (i, q) in old.iter().enumerate() {
        model.insert(q.ts.micros(), 100 + i as i64);
    }
    drop(s);

    let s = Storage::open_standalone(dir.path(), config(32)).unwrap();
    assert_eq!(recent_keys(&s, tag), 12);
    assert_eq!(s.stats("old").unwrap()[0].recent_points, 12);
    check(&s, tag, &model, 10);
    // New chunks after the old records; a replacement of an old record and a
    // late point between two of them.
    write(&s, tag, &[p(120, 1), p(130, 2), p(140, 3)], &mut model);
    assert_eq!(write(&s, tag, &[p(50, -1), p(55, -2)], &mut model), 1);
    assert_eq!(recent_keys(&s, tag), 13);
    assert_eq!(s.stats("old").unwrap()[0].recent_points, 16);
    check(&s, tag, &model, 5);
    drop(s);

    // Reopen, then seal across old records and chunks.
    let s = Storage::open_standalone(dir.path(), config(32)).unwrap();
    check(&s, tag, &model, 5);
    let more: Vec<Point> = (15..40).map(|i| p(i * 10, i)).collect();
    write(&s, tag, &more, &mut model);
    let st = &s.stats("old").unwrap()[0];
    assert_eq!(st.blocks, 1);
    assert_eq!(st.block_points, 32);
    assert_eq!(st.recent_points, model.len() as u64 - 32);
    assert_eq!(recent_keys(&s, tag), 1);
    check(&s, tag, &model, 5);
    // A late replacement of a sealed point that was an old record.
    assert_eq!(write(&s, tag, &[p(30, -7)], &mut model), 1);
    check(&s, tag, &model, 5);
}

#[test]
fn sparse_points_split_into_chunks_by_span() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(40)).unwrap();
    let tag = s
        .ensure_tag(TagMeta::new("sparse", ValueType::I64))
        .unwrap();
    let mut model = BTreeMap::new();
    let step = 25 * 60 * 1_000_000; // 25 minutes: three points per hour-long chunk
    let first: Vec<Point> = (0..10).map(|i| p(i * step, i)).collect();
    write(&s, tag, &first, &mut model);
    assert_eq!(recent_keys(&s, tag), 4);
    check(&s, tag, &model, step);
    // Late points far from any chunk's start, between and inside chunks.
    let late = [
        p(step / 2, -1),
        p(3 * step + step / 2, -2),
        p(4 * step, -3),
        p(-5 * step, -4),
    ];
    assert_eq!(write(&s, tag, &late, &mut model), 1);
    check(&s, tag, &model, step / 2);
    drop(s);
    let s = Storage::open_standalone(dir.path(), config(40)).unwrap();
    check(&s, tag, &model, step / 2);
    let more: Vec<Point> = (10..50).map(|i| p(i * step, i)).collect();
    write(&s, tag, &more, &mut model);
    assert_eq!(s.stats("sparse").unwrap()[0].blocks, 1);
    check(&s, tag, &model, step / 2);
}

#[test]
fn retention_keeps_the_newer_part_of_a_straddling_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(1000)).unwrap();
    let mut meta = TagMeta::new("r", ValueType::I64);
    meta.retention = Some(Duration::from_micros(100));
    let tag = s.ensure_tag(meta).unwrap();
    let mut model = BTreeMap::new();
    write(
        &s,
        tag,
        &(0..10).map(|i| p(i * 10, i)).collect::<Vec<_>>(),
        &mut model,
    );
    write(
        &s,
        tag,
        &(10..20).map(|i| p(i * 10, i)).collect::<Vec<_>>(),
        &mut model,
    );
    // Cutoff 145: the first chunk goes, the second keeps 150..190.
    let sum = s.enforce_retention(ts(245)).unwrap();
    assert_eq!(sum.recent_deleted, 15);
    model.retain(|&t, _| t >= 145);
    assert_eq!(s.stats("r").unwrap()[0].recent_points, 5);
    assert_eq!(recent_keys(&s, tag), 1);
    check(&s, tag, &model, 5);
    drop(s);
    let s = Storage::open_standalone(dir.path(), config(1000)).unwrap();
    assert_eq!(s.stats("r").unwrap()[0].recent_points, 5);
    check(&s, tag, &model, 5);
}

#[test]
fn corrupt_chunks_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_standalone(dir.path(), config(1000)).unwrap();
    let tag = s.ensure_tag(TagMeta::new("c", ValueType::I64)).unwrap();
    let mut model = BTreeMap::new();
    write(&s, tag, &[p(10, 1), p(20, 2), p(30, 3)], &mut model);
    let cf = s.db().cf_handle(CF_RECENT).unwrap();
    let key = series_key(tag, 10);
    let good = s.db().get_cf(cf, &key).unwrap().unwrap();
    let mut out_of_order = Vec::new();
    for q in [p(10, 1), p(30, 3), p(20, 2)] {
        encode_recent_point(&q, &mut out_of_order).unwrap();
    }
    let mut wrong_key = Vec::new();
    encode_recent_point(&p(11, 1), &mut wrong_key).unwrap();
    let bad_values = [
        out_of_order,
        wrong_key,
        good[..good.len() - 1].to_vec(),
        Vec::new(),
        vec![9; 30],
    ];
    for bad in bad_values {
        s.db().put_cf(cf, &key, &bad).unwrap();
        let r = s.range(tag, ts(0), ts(100), 100);
        assert!(
            matches!(
                r,
                Err(StorageError::CorruptRecord { .. } | StorageError::CorruptRecent { .. })
            ),
            "{r:?}"
        );
        assert!(s.before(tag, ts(25), true).is_err());
        assert!(s.after(tag, ts(15), true).is_err());
        assert!(s.stats("c").is_err());
        assert!(s.write(&[(TagRef::Id(tag), p(15, 0))]).is_err());
    }
    drop(s);
    assert!(Storage::open_standalone(dir.path(), config(1000)).is_err());
}
