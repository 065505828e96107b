//! Historian block encoding: encode/decode of one 4,096-point block, the
//! recent-data record, and plain Gorilla as the baseline.
//! `cargo bench -p converge-benches --bench historian_encoding`
//!
//! Synthetic data so the bench runs anywhere; the dataset comparison
//! (bytes/point against pco and Gorilla) is
//! `cargo run --release -p converge-historian --example measure`.

use converge_historian::encoding::{
    block_header, decode_block, decode_block_columns, decode_recent_point, encode_block,
    encode_recent_point, gorilla, Point, Timestamp, Value, TARGET_POINTS_PER_BLOCK,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// A temperature-like random walk in 0.01 steps sampled every second, from a
/// fixed xorshift sequence.
fn walk(n: usize) -> Vec<Point> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut centi: i64 = 2150;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            centi += (state % 7) as i64 - 3;
            let ts = 1_767_225_600_000_000 + i as i64 * 1_000_000;
            Point::good(Timestamp::from_micros(ts), Value::F64(centi as f64 / 100.0))
        })
        .collect()
}

fn block(c: &mut Criterion) {
    let points = walk(TARGET_POINTS_PER_BLOCK);
    let bytes = encode_block(&points).expect("valid block");
    let mut g = c.benchmark_group("historian_block");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("encode_block", |b| b.iter(|| encode_block(&points)));
    g.bench_function("decode_block", |b| b.iter(|| decode_block(&bytes)));
    g.bench_function("decode_block_columns", |b| {
        b.iter(|| decode_block_columns(&bytes))
    });
    g.finish();
    c.bench_function("historian_block_header", |b| {
        b.iter(|| block_header(&bytes))
    });
}

fn gorilla_baseline(c: &mut Criterion) {
    let points = walk(TARGET_POINTS_PER_BLOCK);
    let values: Vec<f64> = points
        .iter()
        .map(|p| match p.value {
            Value::F64(v) => v,
            _ => 0.0,
        })
        .collect();
    let bytes = gorilla::encode_values(&values);
    let mut g = c.benchmark_group("historian_gorilla");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("encode_values", |b| {
        b.iter(|| gorilla::encode_values(&values))
    });
    g.bench_function("decode_values", |b| {
        b.iter(|| gorilla::decode_values(&bytes, values.len()))
    });
    g.finish();
}

fn recent(c: &mut Criterion) {
    let points = walk(1024);
    let mut log = Vec::new();
    for p in &points {
        encode_recent_point(p, &mut log).expect("numeric point");
    }
    let mut g = c.benchmark_group("historian_recent");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("encode_recent_point", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(log.len()),
            |out| {
                for p in &points {
                    let _ = encode_recent_point(p, out);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode_recent_point", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Some(rest) = log.get(at..).filter(|r| !r.is_empty()) {
                match decode_recent_point(rest) {
                    Ok((_, used)) => at += used,
                    Err(_) => break,
                }
            }
            at
        })
    });
    g.finish();
}

criterion_group!(benches, block, gorilla_baseline, recent);
criterion_main!(benches);
