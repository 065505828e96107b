//! The per-message checks (PUBLISH, SUBSCRIBE, delivery, quotas) allocate
//! nothing: counted with a global allocator wrapper in this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant, UNIX_EPOCH};

use converge_security::{
    compile, evaluate, resolve, CertAttributes, ConduitQuotas, Quota, Request,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn per_message_checks_do_not_allocate() {
    let policy = compile(include_str!("../examples/plant.toml"), "plant.toml").unwrap();
    let mut c = CertAttributes::default();
    c.issuer = vec![
        ("CN".into(), "Plant1 Device CA".into()),
        ("O".into(), "ACME Plant1".into()),
    ];
    c.policy_oids = vec!["1.3.6.1.4.1.55555.1.1".into()];
    c.san_uris = vec!["urn:dev:plant1:cell-a:press-01".into()];
    c.not_after = i64::MAX;
    let s = resolve(&policy, &c, "cell-a.press-01").unwrap();
    let t0 = Instant::now();
    let mut quota = Quota::new(&s, t0);
    let mut conduits = ConduitQuotas::new(&policy, t0);
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let requests = [
        Request::Publish {
            topic: "plant1/cell-a/press-01/telemetry/temp",
            qos: 1,
            retain: false,
            payload_len: 100,
        },
        Request::Publish {
            topic: "plant1/cell-a/press-02/telemetry/temp",
            qos: 1,
            retain: false,
            payload_len: 100,
        },
        Request::Subscribe {
            filter: "$share/g/plant1/cell-a/press-01/cmd/#",
            qos: 2,
            active_subscriptions: 1,
        },
        Request::Subscribe {
            filter: "plant1/#",
            qos: 1,
            active_subscriptions: 1,
        },
        Request::Deliver {
            topic: "plant1/cell-a/press-01/cmd/start",
            publisher_zone: "scada",
            qos: 2,
            payload_len: 10,
        },
        Request::Deliver {
            topic: "acme/enterprise/x",
            publisher_zone: "enterprise",
            qos: 1,
            payload_len: 10,
        },
    ];

    let before = allocations();
    let mut allowed = 0;
    for i in 0..1000u64 {
        let at = t0 + Duration::from_millis(i);
        for req in &requests {
            let d = evaluate(&policy, &s, req, now);
            if d.is_allowed() {
                allowed += 1;
                let _ = conduits.charge(&policy, d.rule(), at, 10);
            }
        }
        let _ = quota.charge(at, 100);
    }
    let after = allocations();
    assert_eq!(allowed, 3 * 1000);
    assert_eq!(after - before, 0, "allocations on the per-message path");
    // The counter does count.
    let v = std::hint::black_box(vec![1u8; 8]);
    assert!(allocations() > after, "{v:?}");
}
