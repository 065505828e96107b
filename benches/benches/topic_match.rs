//! Topic matching against 100k subscriptions in the router's trie.
//! `cargo bench -p converge-benches --bench topic_match`

use std::sync::Arc;

use converge_broker::mqtt::packet::{QoS, SubscriptionOptions};
use converge_broker::router::trie::{SubEntry, SubscriptionTrie};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// 100k subscriptions shaped like a plant: exact tags, per-cell `+` and per-line `#` filters.
fn plant_trie() -> SubscriptionTrie {
    let mut trie = SubscriptionTrie::new();
    let entry = SubEntry {
        options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        identifier: None,
    };
    let mut n = 0u32;
    'outer: for site in 0..10 {
        for line in 0..50 {
            for cell in 0..20 {
                for tag in 0..9 {
                    let client: Arc<str> = Arc::from(format!("c{n}"));
                    trie.insert(
                        &format!("site{site}/line{line}/cell{cell}/tag{tag}"),
                        None,
                        &client,
                        entry,
                    );
                    n += 1;
                }
                let client: Arc<str> = Arc::from(format!("c{n}"));
                trie.insert(
                    &format!("site{site}/line{line}/cell{cell}/+"),
                    None,
                    &client,
                    entry,
                );
                n += 1;
                if n >= 100_000 {
                    break 'outer;
                }
            }
            let client: Arc<str> = Arc::from(format!("c{n}"));
            trie.insert(&format!("site{site}/line{line}/#"), None, &client, entry);
            n += 1;
        }
    }
    trie
}

fn bench(c: &mut Criterion) {
    let mut trie = plant_trie();
    let mut g = c.benchmark_group("topic_match_100k");
    g.throughput(Throughput::Elements(1));
    for topic in [
        "site3/line17/cell5/tag4",
        "site9/line49/cell19/unknown",
        "other/topic/entirely",
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(topic), topic, |b, t| {
            b.iter(|| std::hint::black_box(trie.matches(t).subscribers.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
