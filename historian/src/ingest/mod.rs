//! Ingest: MQTT PUBLISHes in, tag points out. Pure: no IO, no clock, no
//! RocksDB; the server feeds each PUBLISH with the broker's receive time and
//! hands the points to `storage`.
//!
//! The flow of one message through `Ingest::decode`:
//!
//! 1. `Rules::route` picks the first rule whose topic filter matches; no
//!    rule, no points (most topics are not historised).
//! 2. The rule's decoder turns the payload into points: `plain` (one bare
//!    value), `json` (values, timestamps and qualities at JSON pointers,
//!    arrays as batches) or `sparkplug` (Sparkplug B 3.0 with per-edge-node
//!    BIRTH/DEATH state, aliases and `seq` checks). The rule's template names
//!    each tag and the rule supplies unit, description and retention
//!    (`TagMeta`), so storage can create a tag the first time it sees it.
//! 3. The rule's deadband drops points too close to the last stored one; or
//!    PI's exception test (`exc_dev`, `exc_max`) holds them back and stores
//!    the last held one when a later point passes (see `deadband`). Each
//!    point is stored or not when its message is decoded. Swinging-door
//!    compression (`comp_dev`) is not applied here: the rule puts it in the
//!    tag's metadata and storage applies it when it seals a block.
//!
//! A message that cannot be read at all is an `Err`; a bad point or metric
//! inside a good message is dropped and listed in `Decoded::rejected`. Either
//! way `Counters` records it, for the server's Prometheus metrics.
//!
//! Everything a peer controls is bounded by `IngestLimits`, and nothing here
//! panics on any payload (proptests in `tests/ingest_*.rs`).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod deadband;
mod error;
mod filter;
mod json;
mod plain;
mod rules;
pub mod sparkplug;
mod template;

use std::sync::Arc;
use std::time::Duration;

use crate::encoding::lossy::LossyConfig;
use crate::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};

pub use error::{ErrorKind, IngestError, RuleError, RuleErrorKind};
pub use filter::{TopicFilter, MAX_FILTER_LEN};
pub use json::quality_from_status_code;
pub use rules::{
    parse_duration, Decoder, Rule, RuleConfig, RuleId, Rules, ValueTypeName,
    DEFAULT_QUALITY_POINTER, DEFAULT_TIMESTAMP_POINTER, DEFAULT_VALUE_POINTER,
};
pub use sparkplug::RebirthRequest;
pub use template::MAX_TAG_NAME_LEN;

use deadband::{Exception, LastValues};

/// Default `IngestLimits::max_points_per_message`: a Sparkplug BIRTH of a
/// large PLC has a few thousand metrics; more in one PUBLISH is a mistake
/// or an attack on memory.
pub const MAX_POINTS_PER_MESSAGE: usize = 10_000;
/// Default `IngestLimits::max_string_len`: string values and metric names,
/// in bytes. Text tags hold states and messages, not documents.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Default `IngestLimits::max_edge_nodes`: Sparkplug edge nodes with BIRTH
/// state held at once.
pub const MAX_EDGE_NODES: usize = 10_000;
/// Default `IngestLimits::max_devices_per_node`: Sparkplug devices under one
/// edge node.
pub const MAX_DEVICES_PER_NODE: usize = 1_000;
/// Default `IngestLimits::max_tracked_tags`: tags whose last value is kept
/// (for deadbands, null values and Sparkplug DEATH marks), and separately
/// Sparkplug metric definitions. Each costs roughly 100–200 bytes.
pub const MAX_TRACKED_TAGS: usize = 1_000_000;

/// Quality of a value the source sent as null (JSON `null`, Sparkplug
/// `is_null`): Bad with no substatus, the generic "no usable value".
pub const NULL_QUALITY: Quality = Quality::BAD;

/// Substatus of the stale marks written when a Sparkplug edge node or device
/// dies: 0x031, the sub-code of OPC UA `Bad_NoCommunication` (0x80310000),
/// the status OPC UA gives classic OPC's "Bad - Comm Failure".
pub const STALE_SUBSTATUS: u16 = 0x031;

/// Quality of the stale marks: Bad, `STALE_SUBSTATUS`.
pub const STALE_QUALITY: Quality = Quality::new(Severity::Bad, STALE_SUBSTATUS);

/// Bounds on what peers can make the decoders hold. See the constants for
/// the defaults and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    /// Points in one JSON batch, metrics in one Sparkplug payload.
    pub max_points_per_message: usize,
    /// Bytes of one string value or metric name.
    pub max_string_len: usize,
    /// Sparkplug edge nodes tracked at once.
    pub max_edge_nodes: usize,
    /// Sparkplug devices per edge node.
    pub max_devices_per_node: usize,
    /// Tags with a remembered last value; also the total of Sparkplug metric
    /// definitions held.
    pub max_tracked_tags: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_points_per_message: MAX_POINTS_PER_MESSAGE,
            max_string_len: MAX_STRING_LEN,
            max_edge_nodes: MAX_EDGE_NODES,
            max_devices_per_node: MAX_DEVICES_PER_NODE,
            max_tracked_tags: MAX_TRACKED_TAGS,
        }
    }
}

/// What storage needs to create a tag on first sight.
#[derive(Clone, Debug, PartialEq)]
pub struct TagMeta {
    /// The type of every point of the tag.
    pub value_type: ValueType,
    /// Engineering unit, from the rule.
    pub unit: Option<Arc<str>>,
    /// Description, from the rule (or the Sparkplug metric's metadata).
    pub description: Option<Arc<str>>,
    /// How long points are kept; `None` = forever.
    pub retention: Option<Duration>,
    /// The rule's exception and compression settings (both off unless
    /// configured); storage keeps the compression setting with the tag and
    /// follows the rule when it changes. `None`: no rule (CSV import), the
    /// tag keeps its own settings.
    pub lossy: Option<LossyConfig>,
}

/// One point of one tag.
#[derive(Clone, Debug, PartialEq)]
pub struct TagPoint {
    /// The tag's name, rendered by the rule's template.
    pub tag: String,
    /// The point.
    pub point: Point,
    /// The tag's metadata.
    pub meta: TagMeta,
}

/// The result of one PUBLISH.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The rule that matched; `None` when no rule did (nothing to store).
    pub rule: Option<RuleId>,
    /// Points to store, in payload order.
    pub points: Vec<TagPoint>,
    /// Points or metrics of this message that were dropped, and why.
    pub rejected: Vec<IngestError>,
    /// A Sparkplug edge node whose state is unknown (DATA before BIRTH, e.g.
    /// after a server restart, or an unknown alias): the server should
    /// publish a rebirth request to it.
    pub rebirth: Option<RebirthRequest>,
}

/// Running totals since start, for Prometheus counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages routed to a rule and decoded (possibly with rejected points).
    pub messages: u64,
    /// Messages no rule matched.
    pub unrouted: u64,
    /// Sparkplug messages that carry no data (NCMD, DCMD, STATE).
    pub ignored: u64,
    /// Points returned for storage.
    pub points: u64,
    /// Points dropped by a deadband.
    pub deadband_dropped: u64,
    /// Points dropped by the exception test (held back, then replaced by a
    /// later held point; the one held now is not counted until then).
    pub exception_dropped: u64,
    /// Sparkplug `seq` values that did not follow the previous one.
    pub seq_gaps: u64,
    /// Sparkplug DATA metrics with an alias absent from the BIRTH.
    pub unknown_aliases: u64,
    /// Sparkplug DATA metrics with a name absent from the BIRTH.
    pub unknown_metrics: u64,
    /// Sparkplug DATA or DEATH for an edge node or device without a BIRTH.
    pub unknown_nodes: u64,
    /// Sparkplug metrics flagged `is_transient`, not stored.
    pub transient_skipped: u64,
    /// Sparkplug metrics of a type not stored (DataSet, Template, Bytes, File, arrays).
    pub unsupported_skipped: u64,
    /// Stale (Bad) points written for tags of a dead edge node or device.
    pub stale_marks: u64,
    /// NDEATHs ignored because their bdSeq is not that of the current NBIRTH.
    pub stale_deaths_ignored: u64,
    /// Errors, whole messages and single points alike.
    pub errors: ErrorCounts,
}

/// Errors by `ErrorKind`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Unparseable bytes or topic.
    pub malformed: u64,
    /// Missing, mistyped or out-of-range values.
    pub value: u64,
    /// Bad timestamps.
    pub timestamp: u64,
    /// Bad qualities.
    pub quality: u64,
    /// Bad tag names.
    pub tag_name: u64,
    /// Limits hit.
    pub limit: u64,
}

impl ErrorCounts {
    /// Adds one error of `kind`.
    pub fn record(&mut self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::Malformed => &mut self.malformed,
            ErrorKind::Value => &mut self.value,
            ErrorKind::Timestamp => &mut self.timestamp,
            ErrorKind::Quality => &mut self.quality,
            ErrorKind::TagName => &mut self.tag_name,
            ErrorKind::Limit => &mut self.limit,
        };
        *slot = slot.saturating_add(1);
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        [
            self.malformed,
            self.value,
            self.timestamp,
            self.quality,
            self.tag_name,
            self.limit,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The ingest state of one server: rules, Sparkplug sessions and last values.
#[derive(Debug)]
pub struct Ingest {
    rules: Rules,
    limits: IngestLimits,
    sparkplug: sparkplug::SparkplugState,
    last: LastValues,
    counters: Counters,
}

impl Ingest {
    /// An ingest with default limits.
    pub fn new(rules: Rules) -> Self {
        Ingest::with_limits(rules, IngestLimits::default())
    }

    /// An ingest with the given limits.
    pub fn with_limits(rules: Rules, limits: IngestLimits) -> Self {
        Ingest {
            rules,
            limits,
            sparkplug: sparkplug::SparkplugState::default(),
            last: LastValues::new(limits.max_tracked_tags),
            counters: Counters::default(),
        }
    }

    /// Decodes one PUBLISH received by the broker at `received`.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        received: Timestamp,
    ) -> Result<Decoded, IngestError> {
        let Some(id) = self.rules.route_id(topic) else {
            bump(&mut self.counters.unrouted, 1);
            return Ok(Decoded::default());
        };
        let Some(rule) = self.rules.get(id) else {
            // route_id only returns positions of existing rules.
            return Ok(Decoded::default());
        };
        let mut sink = Sink::new(&mut self.counters);
        let input = Input {
            rule,
            topic,
            payload,
            received,
            limits: &self.limits,
        };
        let result = match rule.decoder {
            Decoder::Plain => plain::decode(&input, &mut sink),
            Decoder::Json => json::decode(&input, &self.last, &mut sink),
            Decoder::Sparkplug => self.sparkplug.decode(&input, &mut sink),
        };
        let Sink {
            points: candidates,
            rejected,
            rebirth,
            counters,
        } = sink;
        if let Err(e) = result {
            counters.errors.record(e.kind());
            return Err(e);
        }
        for e in &rejected {
            counters.errors.record(e.kind());
        }
        let mut points = Vec::with_capacity(candidates.len());
        for c in candidates {
            if c.historical {
                points.push(c.tag_point);
                continue;
            }
            if let Some(exception) = &rule.lossy.exception {
                match self.last.exception(&c.tag_point, exception) {
                    Exception::Hold { dropped_held } => {
                        bump(&mut counters.exception_dropped, usize::from(dropped_held));
                        continue;
                    }
                    Exception::Report { held: Some(held) } => points.push(TagPoint {
                        tag: c.tag_point.tag.clone(),
                        point: held,
                        meta: c.tag_point.meta.clone(),
                    }),
                    Exception::Report { held: None } => {}
                }
                points.push(c.tag_point);
                continue;
            }
            if let Some(band) = rule.deadband {
                if self.last.within_deadband(&c.tag_point, band) {
                    bump(&mut counters.deadband_dropped, 1);
                    continue;
                }
            }
            self.last.update(&c.tag_point);
            points.push(c.tag_point);
        }
        bump(&mut counters.messages, 1);
        bump(&mut counters.points, points.len());
        Ok(Decoded {
            rule: Some(id),
            points,
            rejected,
            rebirth,
        })
    }

    /// Totals since this `Ingest` was made.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

/// What a decoder gets.
pub(crate) struct Input<'a> {
    pub rule: &'a Rule,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub received: Timestamp,
    pub limits: &'a IngestLimits,
}

/// A point a decoder produced, before the deadband.
pub(crate) struct Candidate {
    pub tag_point: TagPoint,
    /// Sparkplug `is_historical`: backfill, which neither meets the deadband
    /// nor becomes the tag's last value.
    pub historical: bool,
}

/// Where decoders put their output.
pub(crate) struct Sink<'a> {
    pub points: Vec<Candidate>,
    pub rejected: Vec<IngestError>,
    pub rebirth: Option<RebirthRequest>,
    pub counters: &'a mut Counters,
}

impl<'a> Sink<'a> {
    fn new(counters: &'a mut Counters) -> Self {
        Sink {
            points: Vec::new(),
            rejected: Vec::new(),
            rebirth: None,
            counters,
        }
    }

    pub(crate) fn push(&mut self, tag_point: TagPoint) {
        self.points.push(Candidate {
            tag_point,
            historical: false,
        });
    }
}

/// The `TagMeta` a rule gives a tag of `value_type`.
pub(crate) fn rule_meta(rule: &Rule, value_type: ValueType) -> TagMeta {
    TagMeta {
        value_type,
        unit: rule.unit.clone(),
        description: rule.description.clone(),
        retention: rule.retention,
        lossy: Some(rule.lossy),
    }
}

/// The value written with a Bad quality when none is known: zero of its type.
pub(crate) fn zero(value_type: ValueType) -> Value {
    match value_type {
        ValueType::I64 => Value::I64(0),
        ValueType::Bool => Value::Bool(false),
        ValueType::Str => Value::Str(String::new()),
        // F64, and any type added later.
        _ => Value::F64(0.0),
    }
}

/// Checks a string from a payload against `max_string_len`.
pub(crate) fn check_len(s: &str, limits: &IngestLimits) -> Result<(), IngestError> {
    if s.len() > limits.max_string_len {
        return Err(IngestError::StringTooLong {
            len: s.len(),
            max: limits.max_string_len,
        });
    }
    Ok(())
}

/// Epoch milliseconds to a `Timestamp`, refusing what overflows.
pub(crate) fn millis_to_timestamp(ms: i64) -> Result<Timestamp, IngestError> {
    ms.checked_mul(1_000)
        .map(Timestamp::from_micros)
        .ok_or(IngestError::InvalidTimestamp("milliseconds out of range"))
}

fn bump(counter: &mut u64, n: usize) {
    *counter = counter.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
}
