//! Measures the storage write path and `latest` on one thread.
//!
//! `cargo run --release -p converge-historian --example storage_bench [TAGS] [POINTS_PER_TAG] [BATCH_POINTS_PER_TAG]`
//!
//! Writes `TAGS` float tags (1 s period, a noisy sine, like a process
//! value) in batches holding `BATCH_POINTS_PER_TAG` points of every tag, with
//! fsync off (the throughput of the storage layer, not of the disk), then
//! times `latest_many` over all tags and a one-hour `range` of one tag.

use std::error::Error;
use std::time::Instant;

use converge_historian::encoding::{Point, Timestamp, Value};
use converge_historian::storage::{Storage, StorageConfig, TagId, TagRef};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let tags: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let per_tag: i64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let batch_per_tag: i64 = args.next().map_or(Ok(10), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let storage = Storage::open_standalone(
        dir.path(),
        StorageConfig {
            sync: false,
            ..StorageConfig::default()
        },
    )?;
    let names: Vec<String> = (0..tags).map(|i| format!("plant/unit{i}/pv")).collect();
    let start_us: i64 = 1_700_000_000_000_000;
    // Create the tags first so the timed loop writes by id, as the broker will.
    let first: Vec<(TagRef<'_>, Point)> = names
        .iter()
        .map(|n| (TagRef::Name(n), point(0, 0, start_us)))
        .collect();
    storage.write(&first)?;
    let ids: Vec<TagId> = names
        .iter()
        .filter_map(|n| storage.tag_by_name(n).map(|t| t.id))
        .collect();

    let mut written = 0u64;
    let mut blocks = 0u64;
    let mut plan_secs = 0f64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(tags * usize::try_from(batch_per_tag)?);
    let mut t = 1;
    while t < per_tag {
        batch.clear();
        for (k, &id) in ids.iter().enumerate() {
            for i in t..(t + batch_per_tag).min(per_tag) {
                batch.push((TagRef::Id(id), point(k, i, start_us)));
            }
        }
        let p = Instant::now();
        let mut ws = storage.plan(&batch)?;
        ws.ops()?;
        plan_secs += p.elapsed().as_secs_f64();
        let mut wb = rocksdb::WriteBatch::default();
        ws.append_to(&mut wb)?;
        // WAL on, no fsync: RocksDB's default write options.
        storage.db().write(wb)?;
        let sum = ws.committed();
        written += sum.points;
        blocks += sum.blocks_written;
        t += batch_per_tag;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "write: {tags} tags x {per_tag} points, {batch_per_tag} points/tag/batch: {written} points in {secs:.2} s = {:.0} points/s ({blocks} blocks; planning {plan_secs:.2} s)",
        written as f64 / secs
    );

    let rounds = 100;
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        found += storage.latest_many(&ids).iter().flatten().count();
    }
    let per = started.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "latest_many over {} tags: {:.3} ms ({found} found)",
        ids.len(),
        per * 1e3
    );

    if let Some(&id) = ids.first() {
        let from = Timestamp::from_micros(start_us + 1_000_000 * 1000);
        let to = Timestamp::from_micros(start_us + 1_000_000 * 4600);
        let started = Instant::now();
        let got = storage.range(id, from, to, usize::MAX)?;
        println!(
            "range of one tag, 1 h: {} points in {:.3} ms",
            got.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn point(tag: usize, i: i64, start_us: i64) -> Point {
    let x = i as f64 / 300.0 + tag as f64;
    // Two decimals, like most process values.
    let v = (50.0 + 10.0 * x.sin() + ((i * 7919 + tag as i64) % 13) as f64 * 0.01) * 100.0;
    Point::good(
        Timestamp::from_micros(start_us + i * 1_000_000),
        Value::F64(v.round() / 100.0),
    )
}
