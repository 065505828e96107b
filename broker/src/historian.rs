//! The broker's side of the historian (the `converge-historian` crate does the rest).
//!
//! - At routing (`Broker::publish`), `Historian::decode` turns a PUBLISH into tag points with
//!   the configured rules. It runs on the publishing connection's task, before the router lock.
//! - The points travel as `persist::Op::Historize` with the routing's other writes, so the
//!   store's group-commit writer puts them in the same `WriteBatch` and WAL sync as the rest
//!   (`plan_points`): a QoS 1/2 PUBLISH is acknowledged only once its points are durable.
//! - The server starts the HTTP query API over the same storage and a retention task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use converge_historian::encoding::Timestamp;
use converge_historian::ingest::{Counters, Ingest, RebirthRequest, Rules, TagPoint};
use converge_historian::storage::{Storage, StorageError, TagMeta, TagRef, WriteSet};

use crate::config::HistorianConfig;
use crate::metrics::Metrics;

/// Edge nodes whose last rebirth request is remembered. Past it the memory is cleared: the
/// worst case is one extra rebirth request per node.
const MAX_REBIRTH_MEMORY: usize = 10_000;

/// Decoding state plus the storage that the store's writer fills.
pub struct Historian {
    /// The decoders, and their totals as last copied into `historian_ingest_events`.
    ingest: Mutex<(Ingest, Counters)>,
    storage: Arc<Storage>,
    rebirth_interval: Duration,
    rebirths: Mutex<HashMap<(String, String), Instant>>,
    metrics: Arc<Metrics>,
}

/// What one PUBLISH gives the historian.
#[derive(Debug, Default)]
pub struct Historized {
    /// Points to write with the message's other records.
    pub points: Vec<TagPoint>,
    /// A Sparkplug edge node to ask for a rebirth (rate-limited already).
    pub rebirth: Option<RebirthRequest>,
}

impl Historian {
    /// `rules` were checked when the configuration was loaded.
    pub fn new(
        config: &HistorianConfig,
        rules: Rules,
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
    ) -> Historian {
        metrics.historian_tags.set(storage.tags().len() as i64);
        Historian {
            ingest: Mutex::new((Ingest::new(rules), Counters::default())),
            storage,
            rebirth_interval: Duration::from_secs(config.rebirth_interval_secs),
            rebirths: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Totals of the decoders since start.
    pub fn counters(&self) -> Counters {
        self.ingest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .counters()
            .clone()
    }

    /// Decodes one PUBLISH received at `received_ms` (wall clock). Points whose value type is
    /// not their existing tag's are dropped here and counted, so that the group commit never
    /// meets them.
    pub fn decode(&self, topic: &str, payload: &[u8], received_ms: u64) -> Historized {
        let received = timestamp_ms(received_ms);
        let decoded = {
            let mut guard = self.ingest.lock().unwrap_or_else(PoisonError::into_inner);
            let (ingest, copied) = &mut *guard;
            let decoded = ingest.decode(topic, payload, received);
            let now = events(ingest.counters());
            for ((event, n), (_, was)) in now.iter().zip(events(copied).iter()) {
                if n > was {
                    self.metrics
                        .historian_ingest_events
                        .with_label_values(&[event])
                        .inc_by(n - was);
                }
            }
            *copied = ingest.counters().clone();
            decoded
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.rejected(e.kind().as_str(), 1);
                tracing::debug!(topic, error = %e, "historian: message not decoded");
                return Historized::default();
            }
        };
        for e in &decoded.rejected {
            self.rejected(e.kind().as_str(), 1);
        }
        let mut points = decoded.points;
        let before = points.len();
        points.retain(|p| match self.storage.tag_by_name(&p.tag) {
            Some(tag) => tag.meta.value_type == p.point.value.value_type(),
            None => true,
        });
        if points.len() < before {
            self.rejected("type_mismatch", before - points.len());
            tracing::debug!(
                topic,
                "historian: points whose type differs from their tag's"
            );
        }
        let rebirth = decoded.rebirth.filter(|r| self.rebirth_due(r));
        Historized { points, rebirth }
    }

    fn rejected(&self, reason: &str, n: usize) {
        self.metrics
            .historian_points_rejected
            .with_label_values(&[reason])
            .inc_by(n as u64);
    }

    fn rebirth_due(&self, r: &RebirthRequest) -> bool {
        let now = Instant::now();
        let mut seen = self.rebirths.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (r.group.clone(), r.edge_node.clone());
        if let Some(last) = seen.get(&key) {
            if now.duration_since(*last) < self.rebirth_interval {
                return false;
            }
        }
        if seen.len() >= MAX_REBIRTH_MEMORY {
            seen.clear();
        }
        seen.insert(key, now);
        self.metrics.historian_rebirth_requests.inc();
        true
    }
}

/// A wall-clock time in Unix milliseconds as a historian timestamp.
pub fn timestamp_ms(ms: u64) -> Timestamp {
    Timestamp::from_micros(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1_000))
}

/// The decoder totals by metric label.
fn events(c: &Counters) -> [(&'static str, u64); 14] {
    [
        ("message", c.messages),
        ("unrouted", c.unrouted),
        ("ignored", c.ignored),
        ("point", c.points),
        ("deadband_dropped", c.deadband_dropped),
        ("exception_dropped", c.exception_dropped),
        ("sparkplug_seq_gap", c.seq_gaps),
        ("sparkplug_unknown_alias", c.unknown_aliases),
        ("sparkplug_unknown_metric", c.unknown_metrics),
        ("sparkplug_unknown_node", c.unknown_nodes),
        ("sparkplug_transient_skipped", c.transient_skipped),
        ("unsupported_type_skipped", c.unsupported_skipped),
        ("sparkplug_stale_mark", c.stale_marks),
        ("sparkplug_stale_death_ignored", c.stale_deaths_ignored),
    ]
}

/// Adds one job's points to the writer's plan. Points the plan refuses (a tag name storage
/// does not accept, say) are counted and skipped; they never fail the job: the message itself
/// was routed, and a bad tag must not stop the acknowledgement of good data.
pub fn plan_points(ws: &mut WriteSet<'_>, points: &[TagPoint], metrics: &Metrics) {
    let mut refs = Vec::with_capacity(points.len());
    for p in points {
        let meta = TagMeta {
            name: p.tag.clone(),
            value_type: p.meta.value_type,
            unit: p.meta.unit.as_deref().unwrap_or_default().to_owned(),
            description: p.meta.description.as_deref().unwrap_or_default().to_owned(),
            retention: p.meta.retention,
            lossy: p.meta.lossy.unwrap_or_default(),
        };
        // A rule's compression settings follow the rule when it changes.
        let lossy = p.meta.lossy;
        match ws
            .ensure_tag(meta)
            .and_then(|id| lossy.map_or(Ok(()), |l| ws.set_lossy(id, l)).map(|()| id))
        {
            Ok(id) => refs.push((TagRef::Id(id), p.point.clone())),
            Err(e) => {
                metrics
                    .historian_points_rejected
                    .with_label_values(&[storage_reason(&e)])
                    .inc();
                tracing::debug!(tag = %p.tag, error = %e, "historian: point refused");
            }
        }
    }
    if let Err(e) = ws.add(&refs) {
        metrics
            .historian_points_rejected
            .with_label_values(&[storage_reason(&e)])
            .inc_by(refs.len() as u64);
        tracing::warn!(error = %e, "historian: points refused");
    }
}

fn storage_reason(e: &StorageError) -> &'static str {
    match e {
        StorageError::TypeMismatch { .. } | StorageError::TagTypeConflict { .. } => "type_mismatch",
        StorageError::Poisoned | StorageError::Db(_) => "storage",
        _ => "invalid_tag",
    }
}
