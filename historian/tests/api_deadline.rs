//! A query never holds the client past the deadline: a source whose reads
//! block until the test opens a gate gives 503 `deadline_exceeded`, and
//! abandoned queries still count against `max_concurrent_queries` (503
//! `busy`) until storage answers. No sleeps: the gate is a condvar.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api_util;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use api_util::*;
use converge_historian::api::{ApiConfig, ApiState};
use converge_historian::encoding::{Point, Timestamp};
use converge_historian::query::{MemSource, Source, SourceError};

/// Reads wait until the gate opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

struct Blocking {
    inner: MemSource,
    gate: Arc<Gate>,
}

impl Source for Blocking {
    fn range(
        &self,
        tag: &str,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, SourceError> {
        self.gate.wait();
        self.inner.range(tag, start, end, limit)
    }
    fn before(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        self.gate.wait();
        self.inner.before(tag, t, inclusive)
    }
    fn after(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        self.gate.wait();
        self.inner.after(tag, t, inclusive)
    }
    fn latest(&self, tag: &str) -> Result<Option<Point>, SourceError> {
        self.gate.wait();
        self.inner.latest(tag)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_storage_answers_503_at_the_deadline() {
    let (src, cat) = fixture();
    let gate = Arc::new(Gate::default());
    let source = Blocking {
        inner: src,
        gate: gate.clone(),
    };
    let mut config = ApiConfig::default();
    config.deadline_ms = 300;
    config.max_concurrent_queries = 1;
    let s = start_with(config, ApiState::new(Arc::new(source), Arc::new(cat))).await;

    let started = Instant::now();
    let r = get(s.addr, "/api/v1/streams/latest?tag=plant1/temp").await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code()),
        (503, "deadline_exceeded".to_owned()),
        "{}",
        r.body
    );
    assert!(
        took.as_millis() >= 300,
        "answered before the deadline: {took:?}"
    );
    // Generous: the point is that it answers at all while storage is stuck.
    assert!(took.as_secs() < 10, "{took:?}");

    // The abandoned query still holds the only slot.
    let r = get(s.addr, "/api/v1/streams/recorded?tag=plant1/temp").await;
    assert_eq!((r.status, r.code()), (503, "busy".to_owned()), "{}", r.body);

    // Storage answers; the slot frees and queries work again.
    gate.release();
    let r = get(s.addr, "/api/v1/streams/latest?tag=plant1/temp").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.state.metrics().requests("latest", 503), 1);
    assert_eq!(s.state.metrics().requests("recorded", 503), 1);
    s.stop().await.unwrap();
}
