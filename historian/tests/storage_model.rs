//! Random interleavings of in-order, late and duplicate writes against a
//! `BTreeMap` reference model, with a small seal threshold so that blocks
//! are sealed, merged into and split often.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use converge_historian::encoding::{Point, Timestamp, Value};
use converge_historian::storage::{Storage, StorageConfig, TagRef};
use proptest::prelude::*;

const TAGS: [&str; 3] = ["a", "b", "c"];

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// (tag index, timestamp, value) batches; timestamps from a narrow range so
/// duplicates and late points are common, with a drifting base so that
/// later batches are mostly newer.
fn batches() -> impl Strategy<Value = Vec<Vec<(usize, i64, i64)>>> {
    prop::collection::vec(
        (0i64..400).prop_flat_map(|base| {
            prop::collection::vec((0usize..TAGS.len(), -60i64..60, any::<i64>()), 1..80).prop_map(
                move |pts| {
                    pts.into_iter()
                        .map(|(tag, off, v)| (tag, base * 3 + off, v))
                        .collect::<Vec<_>>()
                },
            )
        }),
        1..12,
    )
}

fn check(
    s: &Storage,
    model: &BTreeMap<(usize, i64), i64>,
    probes: &[i64],
    scale: i64,
) -> Result<(), TestCaseError> {
    for (i, name) in TAGS.iter().enumerate() {
        let want: Vec<Point> = model
            .range((i, i64::MIN)..=(i, i64::MAX))
            .map(|(&(_, t), &v)| Point::good(ts(t), Value::I64(v)))
            .collect();
        let Some(tag) = s.tag_by_name(name) else {
            prop_assert!(want.is_empty());
            continue;
        };
        let got = s
            .range(tag.id, ts(i64::MIN), ts(i64::MAX), usize::MAX)
            .unwrap();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(s.latest(tag.id).unwrap(), want.last().cloned());
        prop_assert_eq!(s.stats(name).unwrap()[0].points, want.len() as u64);
        for &t in probes {
            let t = t * scale;
            let before = want.iter().rev().find(|p| p.ts.micros() < t).cloned();
            let at_or_before = want.iter().rev().find(|p| p.ts.micros() <= t).cloned();
            let after = want.iter().find(|p| p.ts.micros() > t).cloned();
            let at_or_after = want.iter().find(|p| p.ts.micros() >= t).cloned();
            prop_assert_eq!(s.before(tag.id, ts(t), false).unwrap(), before);
            prop_assert_eq!(s.before(tag.id, ts(t), true).unwrap(), at_or_before);
            prop_assert_eq!(s.after(tag.id, ts(t), false).unwrap(), after);
            prop_assert_eq!(s.after(tag.id, ts(t), true).unwrap(), at_or_after);
            let sub: Vec<Point> = want
                .iter()
                .filter(|p| (t - 50 * scale..=t + 50 * scale).contains(&p.ts.micros()))
                .take(7)
                .cloned()
                .collect();
            prop_assert_eq!(
                s.range(tag.id, ts(t - 50 * scale), ts(t + 50 * scale), 7)
                    .unwrap(),
                sub
            );
        }
    }
    Ok(())
}

/// Writes the batches (timestamps times `scale` µs) and checks every read
/// after each write and after reopening.
fn run(
    batches: &[Vec<(usize, i64, i64)>],
    probes: &[i64],
    scale: i64,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        sync: false,
        seal_threshold: 16,
        ..StorageConfig::default()
    };
    let s = Storage::open_standalone(dir.path(), config.clone()).unwrap();
    let mut model = BTreeMap::new();
    let mut replaced = 0u64;
    for batch in batches {
        let points: Vec<_> = batch
            .iter()
            .map(|&(tag, t, v)| {
                (
                    TagRef::Name(TAGS[tag]),
                    Point::good(ts(t * scale), Value::I64(v)),
                )
            })
            .collect();
        for &(tag, t, v) in batch {
            if model.insert((tag, t * scale), v).is_some() {
                replaced += 1;
            }
        }
        s.write(&points).unwrap();
        prop_assert_eq!(s.replacements(), replaced);
        check(&s, &model, probes, scale)?;
    }
    drop(s);
    let s = Storage::open_standalone(dir.path(), config).unwrap();
    check(&s, &model, probes, scale)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn storage_matches_a_btreemap(batches in batches(), probes in prop::collection::vec(-100i64..1300, 4)) {
        run(&batches, &probes, 1)?;
    }

    /// Points 20 minutes apart: recent chunks are split by their one-hour
    /// span, so late points often find no chunk to merge into.
    #[test]
    fn storage_matches_a_btreemap_sparse(batches in batches(), probes in prop::collection::vec(-100i64..1300, 4)) {
        run(&batches, &probes, 1_200_000_000)?;
    }
}
