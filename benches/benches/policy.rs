//! Policy evaluation on the per-message path: PUBLISH, SUBSCRIBE and
//! cross-zone delivery against the example plant policy, and quota charging.
//! `cargo bench -p converge-benches --bench policy`

use std::time::{Duration, Instant, UNIX_EPOCH};

use converge_security::{compile, evaluate, resolve, CertAttributes, Quota, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PLANT: &str = include_str!("../../security/examples/plant.toml");

fn bench(c: &mut Criterion) {
    let policy = compile(PLANT, "plant.toml").expect("example policy compiles");
    let mut cert = CertAttributes::default();
    cert.issuer = vec![
        ("CN".into(), "Plant1 Device CA".into()),
        ("O".into(), "ACME Plant1".into()),
    ];
    cert.policy_oids = vec!["1.3.6.1.4.1.55555.1.1".into()];
    cert.san_uris = vec!["urn:dev:plant1:cell-a:press-01".into()];
    cert.not_after = i64::MAX;
    let press = resolve(&policy, &cert, "cell-a.press-01").expect("subject resolves");
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);

    let requests = [
        (
            "publish_allowed",
            Request::Publish {
                topic: "plant1/cell-a/press-01/telemetry/spindle/temp",
                qos: 1,
                retain: false,
                payload_len: 200,
            },
        ),
        (
            "publish_denied",
            Request::Publish {
                topic: "plant1/cell-a/press-02/telemetry/spindle/temp",
                qos: 1,
                retain: false,
                payload_len: 200,
            },
        ),
        (
            "subscribe",
            Request::Subscribe {
                filter: "plant1/cell-a/press-01/cmd/#",
                qos: 1,
                active_subscriptions: 2,
            },
        ),
        (
            "deliver_through_conduit",
            Request::Deliver {
                topic: "plant1/cell-a/press-01/cmd/start",
                publisher_zone: "scada",
                qos: 1,
                payload_len: 64,
            },
        ),
        (
            "deliver_no_conduit",
            Request::Deliver {
                topic: "acme/enterprise/mes/orders",
                publisher_zone: "enterprise",
                qos: 1,
                payload_len: 64,
            },
        ),
    ];
    let mut g = c.benchmark_group("policy_evaluate");
    g.throughput(Throughput::Elements(1));
    for (name, req) in &requests {
        g.bench_with_input(BenchmarkId::from_parameter(name), req, |b, req| {
            b.iter(|| std::hint::black_box(evaluate(&policy, &press, req, now)))
        });
    }
    g.finish();

    let t0 = Instant::now();
    let mut quota = Quota::new(&press, t0);
    let mut tick = 0u64;
    c.bench_function("quota_charge", |b| {
        b.iter(|| {
            tick += 1;
            std::hint::black_box(quota.charge(t0 + Duration::from_micros(tick), 200))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
