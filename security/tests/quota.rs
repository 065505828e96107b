//! Per-device and per-conduit quotas on fake time, sized by the example plant policy.

use std::time::{Duration, Instant, UNIX_EPOCH};

use converge_security::policy::reason::{QUOTA_EXCEEDED, SUCCESS};
use converge_security::{
    compile, evaluate, resolve, CertAttributes, CompiledPolicy, ConduitQuotas, Quota, Request,
    Subject,
};

fn plant() -> CompiledPolicy {
    compile(include_str!("../examples/plant.toml"), "plant.toml").unwrap()
}

fn press(policy: &CompiledPolicy) -> Subject {
    let mut c = CertAttributes::default();
    c.issuer = vec![
        ("CN".into(), "Plant1 Device CA".into()),
        ("O".into(), "ACME Plant1".into()),
    ];
    c.policy_oids = vec!["1.3.6.1.4.1.55555.1.1".into()];
    c.san_uris = vec!["urn:dev:plant1:cell-a:press-01".into()];
    c.not_after = i64::MAX;
    resolve(policy, &c, "cell-a.press-01").unwrap()
}

#[test]
fn message_rate_and_burst() {
    let policy = plant();
    let s = press(&policy);
    let limits = s.rights().limits();
    assert_eq!(limits.messages().per_second(), 20);
    assert_eq!(limits.messages().burst(), 40);
    let t0 = Instant::now();
    let mut q = Quota::new(&s, t0);
    for i in 0..40 {
        assert!(q.charge(t0, 10).is_allowed(), "message {i}");
    }
    let d = q.charge(t0, 10);
    assert!(!d.is_allowed());
    assert_eq!(d.reason_code(), QUOTA_EXCEEDED);
    assert_eq!(
        policy.describe(d.rule()).to_string(),
        "profile \"cell-device\" messages_per_second"
    );
    // 20 per second: one more token every 50 ms.
    assert!(!q.charge(t0 + Duration::from_millis(49), 10).is_allowed());
    assert!(q.charge(t0 + Duration::from_millis(50), 10).is_allowed());
    assert!(!q.charge(t0 + Duration::from_millis(50), 10).is_allowed());
    // After two idle seconds the burst is back, and no more.
    let t2 = t0 + Duration::from_millis(2_050);
    let allowed = (0..100).filter(|_| q.charge(t2, 10).is_allowed()).count();
    assert_eq!(allowed, 40);
}

#[test]
fn byte_rate_and_burst() {
    let policy = plant();
    let s = press(&policy);
    // 64 KiB/s with a burst of 64 KiB; the largest payload is 16 KiB.
    let t0 = Instant::now();
    let mut q = Quota::new(&s, t0);
    for _ in 0..4 {
        assert_eq!(q.charge(t0, 16_384).reason_code(), SUCCESS);
    }
    let d = q.charge(t0, 1);
    assert_eq!(d.reason_code(), QUOTA_EXCEEDED);
    assert_eq!(
        policy.describe(d.rule()).to_string(),
        "profile \"cell-device\" bytes_per_second"
    );
    // A refused message takes nothing from the message bucket either: after
    // 100 ms, 36 + 2 message tokens are there (37 if the refusal had cost one).
    let t1 = t0 + Duration::from_millis(100);
    let allowed = (0..100).filter(|_| q.charge(t1, 0).is_allowed()).count();
    assert_eq!(allowed, 38);
}

#[test]
fn conduit_rate_is_charged_once_per_message_and_conduit() {
    let policy = plant();
    let s = press(&policy);
    let t0 = Instant::now();
    let mut conduits = ConduitQuotas::new(&policy, t0);
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    // scada-to-cell-a: 50 messages per second.
    let d = evaluate(
        &policy,
        &s,
        &Request::Deliver {
            topic: "plant1/cell-a/press-01/cmd/start",
            publisher_zone: "scada",
            qos: 1,
            payload_len: 10,
        },
        now,
    );
    assert!(d.is_allowed());
    for _ in 0..50 {
        assert!(conduits.charge(&policy, d.rule(), t0, 10).is_allowed());
    }
    let refused = conduits.charge(&policy, d.rule(), t0, 10);
    assert_eq!(refused.reason_code(), QUOTA_EXCEEDED);
    assert_eq!(
        policy.describe(refused.rule()).to_string(),
        "conduit \"scada-to-cell-a\" messages_per_second"
    );
    assert!(conduits
        .charge(&policy, d.rule(), t0 + Duration::from_millis(20), 10)
        .is_allowed());

    // Same-zone traffic crosses no conduit and is never charged.
    let same = evaluate(
        &policy,
        &s,
        &Request::Deliver {
            topic: "plant1/cell-a/broadcast/x",
            publisher_zone: "cell-a",
            qos: 1,
            payload_len: 10,
        },
        now,
    );
    for _ in 0..1000 {
        assert!(conduits.charge(&policy, same.rule(), t0, 10).is_allowed());
    }

    // Quotas built for another policy refuse rather than guess.
    let reloaded = plant();
    assert!(!conduits.charge(&reloaded, d.rule(), t0, 10).is_allowed());
}
