//! The Sparkplug B decoder (Eclipse Sparkplug 3.0) as a host application
//! that only listens: it keeps each edge node's BIRTH state and turns DATA
//! into points; it never publishes (the server may send the NCMD of a
//! `RebirthRequest`).
//!
//! * NBIRTH / DBIRTH define the metrics of a node or device: name, datatype
//!   and optional alias (aliases are per edge node, 6.4.2). Their values are
//!   stored like DATA. An NBIRTH starts a new session and forgets the node's
//!   devices; its `bdSeq` metric is remembered and not stored as a tag.
//! * NDATA / DDATA carry values by name or alias. Timestamps: the metric's,
//!   else the payload's, else the broker's receive time (milliseconds in
//!   Sparkplug). `is_null` stores a Bad point (`NULL_QUALITY`) with the last
//!   value; `is_historical` points are stored as backfill; `is_transient`
//!   ones are counted and not stored.
//! * NDEATH / DDEATH write a stale point (`STALE_QUALITY`) for every tag of
//!   the node and its devices, or of the device, with the tag's last value
//!   (zero of its type if none), then forget them. An NDEATH whose bdSeq is
//!   not the current NBIRTH's is a late Will of an older session: ignored.
//! * `seq` (0..=255, wrapping) must grow by one per message of an edge node
//!   (NBIRTH, DBIRTH, NDATA, DDATA, DDEATH); a gap is counted and logged.
//! * NCMD, DCMD and STATE carry no data and are ignored.
//!
//! Tags are named `group/edge_node/metric` or `group/edge_node/device/metric`
//! (`{tag}`), then passed through the rule's template.
//!
//! Not here: DataSet, Template, Bytes, File and array metrics (counted and
//! skipped); metric properties (`engUnit` etc.); DATA before BIRTH, which is
//! dropped with a `RebirthRequest` since its datatypes and aliases are unknown.

#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
pub mod proto;
mod rebirth;
mod scope;
mod topic;
mod value;

use std::collections::HashMap;

use prost::Message;

use crate::encoding::Timestamp;
use crate::ingest::{millis_to_timestamp, IngestError, Input, Sink};
use proto::Payload;
use scope::{define, emit_values, stale_marks, Scope};
use topic::{MessageType, SparkplugTopic};

pub use rebirth::RebirthRequest;
pub use topic::NAMESPACE;

/// Name of the NBIRTH/NDEATH metric that pairs a death with its birth (3.0, 6.4.1).
pub const BD_SEQ_METRIC: &str = "bdSeq";

/// Name of the NCMD metric that asks an edge node to publish its BIRTHs again.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// BIRTH state of every edge node seen.
#[derive(Debug, Default)]
pub(crate) struct SparkplugState {
    /// Keyed by `group/edge_node` (neither may contain `/`).
    nodes: HashMap<String, EdgeNode>,
    /// Metric definitions held, over all nodes and devices.
    metrics_held: usize,
}

#[derive(Debug)]
struct EdgeNode {
    bd_seq: Option<u64>,
    last_seq: Option<u64>,
    metrics: Scope,
    devices: HashMap<String, Scope>,
}

impl EdgeNode {
    fn metric_count(&self) -> usize {
        self.devices.values().fold(self.metrics.defs.len(), |n, d| {
            n.saturating_add(d.defs.len())
        })
    }
}

/// Message-wide context for the metric helpers.
struct Ctx<'a, 'i> {
    input: &'a Input<'i>,
    topic: SparkplugTopic<'i>,
    /// The payload's timestamp, or the receive time.
    default_ts: Timestamp,
}

impl SparkplugState {
    pub(crate) fn decode(
        &mut self,
        input: &Input<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let topic = SparkplugTopic::parse(input.topic)?;
        if matches!(
            topic.message_type,
            MessageType::NCmd | MessageType::DCmd | MessageType::State
        ) {
            sink.counters.ignored = sink.counters.ignored.saturating_add(1);
            return Ok(());
        }
        // The broker's maximum packet size bounds the payload, and so what
        // prost allocates; the metric count is checked after decoding.
        let payload = Payload::decode(input.payload).map_err(IngestError::InvalidProtobuf)?;
        let max = input.limits.max_points_per_message;
        if payload.metrics.len() > max {
            return Err(IngestError::TooManyPoints {
                count: payload.metrics.len(),
                max,
            });
        }
        let default_ts = match (topic.message_type, payload.timestamp) {
            // An NDEATH's timestamp is not used (see `node_death`), so a bad
            // one must not cost the stale marks.
            (MessageType::NDeath, _) | (_, None) => input.received,
            (_, Some(ms)) => ms_to_timestamp(ms)?,
        };
        let ctx = Ctx {
            input,
            topic,
            default_ts,
        };
        let key = format!("{}/{}", topic.group, topic.edge_node);
        match topic.message_type {
            MessageType::NBirth => self.node_birth(&ctx, key, &payload, sink),
            MessageType::DBirth => self.device_birth(&ctx, &key, &payload, sink),
            MessageType::NData | MessageType::DData => self.data(&ctx, &key, &payload, sink),
            MessageType::NDeath => self.node_death(&ctx, &key, &payload, sink),
            MessageType::DDeath => self.device_death(&ctx, &key, &payload, sink),
            MessageType::NCmd | MessageType::DCmd | MessageType::State => Ok(()),
        }
    }

    fn node_birth(
        &mut self,
        ctx: &Ctx<'_, '_>,
        key: String,
        payload: &Payload,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let limits = ctx.input.limits;
        let old = self.nodes.get(&key).map(EdgeNode::metric_count);
        if old.is_none() && self.nodes.len() >= limits.max_edge_nodes {
            return Err(IngestError::TooManyTracked {
                what: "edge nodes",
                max: limits.max_edge_nodes,
            });
        }
        let held = self.metrics_held.saturating_sub(old.unwrap_or(0));
        let mut scope = define(ctx, &payload.metrics, held, sink)?;
        let bd_seq = payload
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some(BD_SEQ_METRIC))
            .and_then(|m| value::raw_u64(m.value.as_ref()));
        emit_values(ctx, &mut scope, &payload.metrics, true, sink);
        self.metrics_held = held.saturating_add(scope.defs.len());
        self.nodes.insert(
            key,
            EdgeNode {
                bd_seq,
                last_seq: payload.seq,
                metrics: scope,
                devices: HashMap::new(),
            },
        );
        Ok(())
    }

    fn device_birth(
        &mut self,
        ctx: &Ctx<'_, '_>,
        key: &str,
        payload: &Payload,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let limits = ctx.input.limits;
        let Some(node) = self.nodes.get_mut(key) else {
            unknown_node(ctx, sink);
            return Ok(());
        };
        check_seq(ctx, node, payload.seq, sink);
        let device = ctx.topic.device.unwrap_or_default();
        let old = node.devices.get(device).map(|s| s.defs.len());
        if old.is_none() && node.devices.len() >= limits.max_devices_per_node {
            return Err(IngestError::TooManyTracked {
                what: "devices per edge node",
                max: limits.max_devices_per_node,
            });
        }
        let held = self.metrics_held.saturating_sub(old.unwrap_or(0));
        let mut scope = define(ctx, &payload.metrics, held, sink)?;
        emit_values(ctx, &mut scope, &payload.metrics, true, sink);
        self.metrics_held = held.saturating_add(scope.defs.len());
        node.devices.insert(device.to_owned(), scope);
        Ok(())
    }

    fn data(
        &mut self,
        ctx: &Ctx<'_, '_>,
        key: &str,
        payload: &Payload,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let Some(node) = self.nodes.get_mut(key) else {
            unknown_node(ctx, sink);
            return Ok(());
        };
        check_seq(ctx, node, payload.seq, sink);
        let scope = match ctx.topic.device {
            None => &mut node.metrics,
            Some(d) => match node.devices.get_mut(d) {
                Some(scope) => scope,
                None => {
                    unknown_node(ctx, sink);
                    return Ok(());
                }
            },
        };
        emit_values(ctx, scope, &payload.metrics, false, sink);
        Ok(())
    }

    fn node_death(
        &mut self,
        ctx: &Ctx<'_, '_>,
        key: &str,
        payload: &Payload,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let Some(node) = self.nodes.get(key) else {
            // Nothing known, nothing to mark; no rebirth request to a dead node.
            sink.counters.unknown_nodes = sink.counters.unknown_nodes.saturating_add(1);
            return Ok(());
        };
        let bd_seq = payload
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some(BD_SEQ_METRIC))
            .and_then(|m| value::raw_u64(m.value.as_ref()));
        if let (Some(birth), Some(death)) = (node.bd_seq, bd_seq) {
            if birth != death {
                // The Will of an earlier session, delivered after the node
                // reconnected (3.0, 7.1): the current session is alive.
                sink.counters.stale_deaths_ignored =
                    sink.counters.stale_deaths_ignored.saturating_add(1);
                return Ok(());
            }
        }
        let Some(node) = self.nodes.remove(key) else {
            return Ok(());
        };
        // An NDEATH is usually the MQTT Will, whose payload was written at
        // CONNECT time: the broker's receive time is when the node died.
        let ts = ctx.input.received;
        stale_marks(&node.metrics, ts, sink);
        for device in node.devices.values() {
            stale_marks(device, ts, sink);
        }
        self.metrics_held = self.metrics_held.saturating_sub(node.metric_count());
        Ok(())
    }

    fn device_death(
        &mut self,
        ctx: &Ctx<'_, '_>,
        key: &str,
        payload: &Payload,
        sink: &mut Sink<'_>,
    ) -> Result<(), IngestError> {
        let Some(node) = self.nodes.get_mut(key) else {
            sink.counters.unknown_nodes = sink.counters.unknown_nodes.saturating_add(1);
            return Ok(());
        };
        check_seq(ctx, node, payload.seq, sink);
        let device = ctx.topic.device.unwrap_or_default();
        let Some(scope) = node.devices.remove(device) else {
            sink.counters.unknown_nodes = sink.counters.unknown_nodes.saturating_add(1);
            return Ok(());
        };
        // The edge node publishes DDEATH itself, so its timestamp is current.
        stale_marks(&scope, ctx.default_ts, sink);
        self.metrics_held = self.metrics_held.saturating_sub(scope.defs.len());
        Ok(())
    }
}

/// Checks that `seq` follows the edge node's previous one (3.0, 7.3).
fn check_seq(ctx: &Ctx<'_, '_>, node: &mut EdgeNode, seq: Option<u64>, sink: &mut Sink<'_>) {
    let Some(seq) = seq else {
        return;
    };
    if let Some(last) = node.last_seq {
        let expected = (last % 256 + 1) % 256;
        if seq != expected {
            sink.counters.seq_gaps = sink.counters.seq_gaps.saturating_add(1);
            tracing::warn!(
                group = ctx.topic.group,
                edge_node = ctx.topic.edge_node,
                expected,
                seq,
                "Sparkplug seq gap: messages lost or reordered"
            );
        }
    }
    node.last_seq = Some(seq);
}

fn unknown_node(ctx: &Ctx<'_, '_>, sink: &mut Sink<'_>) {
    sink.counters.unknown_nodes = sink.counters.unknown_nodes.saturating_add(1);
    request_rebirth(ctx, sink);
}

fn request_rebirth(ctx: &Ctx<'_, '_>, sink: &mut Sink<'_>) {
    if sink.rebirth.is_none() {
        sink.rebirth = Some(RebirthRequest {
            group: ctx.topic.group.to_owned(),
            edge_node: ctx.topic.edge_node.to_owned(),
        });
    }
}

/// Sparkplug milliseconds (u64) to a `Timestamp`.
fn ms_to_timestamp(ms: u64) -> Result<Timestamp, IngestError> {
    let ms = i64::try_from(ms)
        .map_err(|_| IngestError::InvalidTimestamp("milliseconds out of range"))?;
    millis_to_timestamp(ms)
}
