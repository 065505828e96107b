//! Authorization at plant scale: a policy of 100 zones, 100 conduits and 10,000 device
//! profiles, evaluated over 100,000 distinct topics (10 per device).
//! `cargo bench -p converge-benches --bench policy_scale`
//!
//! Each measured iteration decides 100,000 requests, one per topic, each for the device that
//! owns it, so the figures are per batch; criterion's throughput line gives decisions/s.

use std::fmt::Write as _;
use std::time::{Duration, Instant, UNIX_EPOCH};

use converge_security::{compile, evaluate, resolve, CertAttributes, Request, Subject};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ZONES: usize = 100;
const DEVICES: usize = 10_000;
const TOPICS_PER_DEVICE: usize = 10;

fn zone(i: usize) -> String {
    format!("zone-{:03}", i % ZONES)
}

fn device(i: usize) -> String {
    format!("dev-{i:05}")
}

fn oid(i: usize) -> String {
    format!("1.3.6.1.4.1.55555.9.{i}")
}

/// The policy text: one profile per device (selected by a certificate policy OID), each zone
/// with a conduit of its telemetry to SCADA.
fn policy_text() -> String {
    let mut t = String::from("version = 1\n\n[[ca]]\nid = \"ca\"\nsubject = \"CN=Scale CA\"\n\n");
    for z in 0..ZONES {
        let _ = writeln!(
            t,
            "[[zone]]\nid = \"{0}\"\nsecurity_level = 2\ntrusted_cas = [\"ca\"]\nnamespace = [\"plant/{0}/#\"]\n",
            zone(z)
        );
    }
    t.push_str("[[zone]]\nid = \"scada\"\nsecurity_level = 3\ntrusted_cas = [\"ca\"]\nnamespace = [\"plant/scada/#\"]\n\n");
    for z in 0..ZONES {
        let _ = writeln!(
            t,
            "[[conduit]]\nid = \"{0}-to-scada\"\nfrom = \"{0}\"\nto = \"scada\"\ntopics = [\"plant/{0}/+/telemetry/#\"]\nmax_qos = 1\n",
            zone(z)
        );
    }
    for i in 0..DEVICES {
        let _ = writeln!(
            t,
            "[[profile]]\nid = \"p{i}\"\nissuers = [\"ca\"]\npolicy_oid = \"{}\"\ndevice = \"cn\"\nzone = {{ fixed = \"{}\" }}\npublish = [\"plant/${{zone}}/${{device}}/telemetry/#\", \"plant/${{zone}}/${{device}}/state\"]\nsubscribe = [\"plant/${{zone}}/${{device}}/cmd/#\"]\nmax_qos = 1\n",
            oid(i),
            zone(i)
        );
    }
    t.push_str("[[profile]]\nid = \"scada\"\nissuers = [\"ca\"]\npolicy_oid = \"1.3.6.1.4.1.55555.8\"\ndevice = \"cn\"\nzone = { fixed = \"scada\" }\npublish = [\"plant/scada/#\"]\nsubscribe = [\"plant/+/+/telemetry/#\"]\nmax_qos = 1\n");
    t
}

fn cert(cn: &str, policy_oid: String) -> CertAttributes {
    let mut cert = CertAttributes::default();
    cert.issuer = vec![("CN".into(), "Scale CA".into())];
    cert.common_names = vec![cn.into()];
    cert.policy_oids = vec![policy_oid];
    cert.not_after = i64::MAX;
    cert
}

fn bench(c: &mut Criterion) {
    let text = policy_text();
    let t0 = Instant::now();
    let policy = compile(&text, "scale.toml").expect("scale policy compiles");
    eprintln!(
        "compile: {} zones, {} conduits, {} profiles, {} KB of TOML in {:?}",
        policy.zones().len(),
        policy.conduits().len(),
        policy.profiles().len(),
        text.len() / 1024,
        t0.elapsed()
    );

    let certs: Vec<CertAttributes> = (0..DEVICES).map(|i| cert(&device(i), oid(i))).collect();
    let t0 = Instant::now();
    let subjects: Vec<Subject> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| resolve(&policy, c, &device(i)).expect("device resolves"))
        .collect();
    eprintln!(
        "resolve (CONNECT): {} devices in {:?}, {:?} each on average",
        DEVICES,
        t0.elapsed(),
        t0.elapsed() / DEVICES as u32
    );
    let scada = resolve(
        &policy,
        &cert("scada-01", "1.3.6.1.4.1.55555.8".into()),
        "scada-01",
    )
    .expect("scada resolves");

    // 100,000 topics, each with the subject of the device that owns it.
    let topics: Vec<(usize, String)> = (0..DEVICES)
        .flat_map(|i| {
            (0..TOPICS_PER_DEVICE)
                .map(move |k| (i, format!("plant/{}/{}/telemetry/t{k}", zone(i), device(i))))
        })
        .collect();
    let zones: Vec<String> = (0..DEVICES).map(zone).collect();
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);

    let mut g = c.benchmark_group("policy_scale");
    g.throughput(Throughput::Elements(topics.len() as u64));
    g.bench_function("publish_allowed_100k_topics", |b| {
        b.iter(|| {
            let mut allowed = 0usize;
            for (i, topic) in &topics {
                let d = evaluate(
                    &policy,
                    &subjects[*i],
                    &Request::Publish {
                        topic,
                        qos: 1,
                        retain: false,
                        payload_len: 200,
                    },
                    now,
                );
                allowed += usize::from(d.is_allowed());
            }
            assert_eq!(allowed, topics.len());
            allowed
        })
    });
    g.bench_function("publish_denied_foreign_topics_100k", |b| {
        b.iter(|| {
            let mut denied = 0usize;
            for (i, topic) in &topics {
                // The next device's topics: same zone or the next, never its own.
                let other = &subjects[(*i + 1) % DEVICES];
                let d = evaluate(
                    &policy,
                    other,
                    &Request::Publish {
                        topic,
                        qos: 1,
                        retain: false,
                        payload_len: 200,
                    },
                    now,
                );
                denied += usize::from(!d.is_allowed());
            }
            assert_eq!(denied, topics.len());
            denied
        })
    });
    g.bench_function("deliver_to_scada_through_conduits_100k", |b| {
        b.iter(|| {
            let mut delivered = 0usize;
            for (i, topic) in &topics {
                let d = evaluate(
                    &policy,
                    &scada,
                    &Request::Deliver {
                        topic,
                        publisher_zone: &zones[*i],
                        qos: 1,
                        payload_len: 200,
                    },
                    now,
                );
                delivered += usize::from(d.is_allowed());
            }
            assert_eq!(delivered, topics.len());
            delivered
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
