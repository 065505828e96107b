//! The metric definitions of one node or device (`Scope`), built from its
//! BIRTH, and the points its BIRTH, DATA and DEATH messages turn into.

use std::collections::HashMap;

use crate::encoding::{Point, Quality, Timestamp, Value, ValueType};
use crate::ingest::sparkplug::proto::payload::Metric;
use crate::ingest::sparkplug::proto::DataType;
use crate::ingest::sparkplug::value::{self, Storage};
use crate::ingest::sparkplug::{ms_to_timestamp, request_rebirth, Ctx, BD_SEQ_METRIC};
use crate::ingest::template::{SparkplugVars, Vars};
use crate::ingest::{
    check_len, rule_meta, zero, Candidate, IngestError, Sink, TagMeta, TagPoint, NULL_QUALITY,
    STALE_QUALITY,
};

/// The metrics of one node or device, from its BIRTH.
#[derive(Debug, Default)]
pub(super) struct Scope {
    pub(super) defs: Vec<MetricDef>,
    by_name: HashMap<String, usize>,
    by_alias: HashMap<u64, usize>,
}

#[derive(Debug)]
pub(super) struct MetricDef {
    datatype: DataType,
    storage: Storage,
    /// Defined transient in the BIRTH: never stored, so no stale mark either.
    transient: bool,
    tag: String,
    meta: TagMeta,
    /// Last value stored and its time, for null values and stale marks.
    last: Option<(Value, Timestamp)>,
}

/// Builds the definitions of a BIRTH. `held` is the number of definitions
/// other nodes and devices hold.
pub(super) fn define(
    ctx: &Ctx<'_, '_>,
    metrics: &[Metric],
    held: usize,
    sink: &mut Sink<'_>,
) -> Result<Scope, IngestError> {
    let limits = ctx.input.limits;
    if held.saturating_add(metrics.len()) > limits.max_tracked_tags {
        return Err(IngestError::TooManyTracked {
            what: "Sparkplug metrics",
            max: limits.max_tracked_tags,
        });
    }
    let mut scope = Scope::default();
    for metric in metrics {
        match definition(ctx, metric) {
            Ok(Some((name, def))) => {
                if let Some(alias) = metric.alias {
                    if scope.by_alias.contains_key(&alias) {
                        sink.rejected.push(IngestError::DuplicateAlias(alias));
                        continue;
                    }
                    scope.by_alias.insert(alias, scope.defs.len());
                }
                scope.by_name.insert(name, scope.defs.len());
                scope.defs.push(def);
            }
            Ok(None) => {}
            Err(e) => sink.rejected.push(e),
        }
    }
    Ok(scope)
}

/// One BIRTH metric's definition; `None` for the bdSeq metric.
fn definition(
    ctx: &Ctx<'_, '_>,
    metric: &Metric,
) -> Result<Option<(String, MetricDef)>, IngestError> {
    let name = metric
        .name
        .as_deref()
        .ok_or(IngestError::MissingMetricName)?;
    let topic = ctx.topic;
    if name == BD_SEQ_METRIC && topic.device.is_none() {
        return Ok(None);
    }
    check_len(name, ctx.input.limits)?;
    let datatype = value::datatype(metric.datatype.unwrap_or(0))?;
    let storage = value::storage(datatype);
    let base = match topic.device {
        None => format!("{}/{}/{name}", topic.group, topic.edge_node),
        Some(d) => format!("{}/{}/{d}/{name}", topic.group, topic.edge_node),
    };
    let rule = ctx.input.rule;
    let tag = rule.template.render(&Vars {
        topic: ctx.input.topic,
        name: None,
        sparkplug: Some(SparkplugVars {
            tag: &base,
            group: topic.group,
            node: topic.edge_node,
            device: topic.device,
            metric: name,
        }),
    })?;
    let value_type = match storage {
        Storage::As(t) => t,
        // Never stored; the type is only a placeholder.
        Storage::Unsupported => ValueType::Str,
    };
    let mut meta = rule_meta(rule, value_type);
    if meta.description.is_none() {
        if let Some(d) = metric
            .metadata
            .as_ref()
            .and_then(|m| m.description.as_deref())
        {
            check_len(d, ctx.input.limits)?;
            meta.description = Some(d.into());
        }
    }
    Ok(Some((
        name.to_owned(),
        MetricDef {
            datatype,
            storage,
            transient: metric.is_transient == Some(true),
            tag,
            meta,
            last: None,
        },
    )))
}

/// Turns the metrics of a BIRTH or DATA into points.
pub(super) fn emit_values(
    ctx: &Ctx<'_, '_>,
    scope: &mut Scope,
    metrics: &[Metric],
    birth: bool,
    sink: &mut Sink<'_>,
) {
    for metric in metrics {
        let index = match (&metric.name, metric.alias) {
            (Some(name), _) if birth && name == BD_SEQ_METRIC && ctx.topic.device.is_none() => {
                continue
            }
            // Rejected in `define`.
            (None, _) if birth => continue,
            (Some(name), alias) => match scope.by_name.get(name) {
                Some(i) => Some(*i),
                // A BIRTH metric not defined was already rejected in `define`.
                None if birth => continue,
                None => alias.and_then(|a| scope.by_alias.get(&a).copied()),
            },
            (None, Some(alias)) => scope.by_alias.get(&alias).copied(),
            (None, None) => {
                sink.rejected.push(IngestError::MissingMetricName);
                continue;
            }
        };
        let Some(def) = index.and_then(|i| scope.defs.get_mut(i)) else {
            let counter = if metric.name.is_some() {
                &mut sink.counters.unknown_metrics
            } else {
                &mut sink.counters.unknown_aliases
            };
            *counter = counter.saturating_add(1);
            request_rebirth(ctx, sink);
            continue;
        };
        match metric_point(ctx, def, metric, birth, sink) {
            Ok(Some(c)) => sink.points.push(c),
            Ok(None) => {}
            Err(e) => sink.rejected.push(e),
        }
    }
}

/// One metric's point, if it is stored.
fn metric_point(
    ctx: &Ctx<'_, '_>,
    def: &mut MetricDef,
    metric: &Metric,
    birth: bool,
    sink: &mut Sink<'_>,
) -> Result<Option<Candidate>, IngestError> {
    if metric.is_transient == Some(true) || def.transient {
        sink.counters.transient_skipped = sink.counters.transient_skipped.saturating_add(1);
        return Ok(None);
    }
    let Storage::As(value_type) = def.storage else {
        sink.counters.unsupported_skipped = sink.counters.unsupported_skipped.saturating_add(1);
        return Ok(None);
    };
    let ts = match metric.timestamp {
        Some(ms) => ms_to_timestamp(ms)?,
        None => ctx.default_ts,
    };
    let (value, quality) = if metric.is_null == Some(true) {
        let last = def.last.as_ref().map(|(v, _)| v.clone());
        (last.unwrap_or_else(|| zero(value_type)), NULL_QUALITY)
    } else {
        match &metric.value {
            Some(v) => (
                value::convert(def.datatype, v, ctx.input.limits)?,
                Quality::GOOD,
            ),
            // A BIRTH may define a metric without a current value.
            None if birth => return Ok(None),
            None => return Err(IngestError::EmptyValue),
        }
    };
    let historical = metric.is_historical == Some(true);
    if !historical && def.last.as_ref().is_none_or(|(_, t)| ts >= *t) {
        def.last = Some((value.clone(), ts));
    }
    Ok(Some(Candidate {
        tag_point: TagPoint {
            tag: def.tag.clone(),
            point: Point { ts, value, quality },
            meta: def.meta.clone(),
        },
        historical,
    }))
}

/// A stale point for every stored tag of `scope`, no earlier than its last
/// value so that it is the tag's latest state even if clocks disagree.
pub(super) fn stale_marks(scope: &Scope, ts: Timestamp, sink: &mut Sink<'_>) {
    for def in &scope.defs {
        let Storage::As(value_type) = def.storage else {
            continue;
        };
        if def.transient {
            continue;
        }
        let (value, ts) = match &def.last {
            Some((v, last_ts)) => (v.clone(), ts.max(*last_ts)),
            None => (zero(value_type), ts),
        };
        sink.push(TagPoint {
            tag: def.tag.clone(),
            point: Point {
                ts,
                value,
                quality: STALE_QUALITY,
            },
            meta: def.meta.clone(),
        });
        sink.counters.stale_marks = sink.counters.stale_marks.saturating_add(1);
    }
}
