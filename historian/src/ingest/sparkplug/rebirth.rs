//! `RebirthRequest`: what the server publishes to an edge node whose state
//! the decoder lacks (Sparkplug 3.0, 6.4.6 "Node Control/Rebirth").

use prost::Message;

use crate::encoding::Timestamp;
use crate::ingest::sparkplug::proto::payload::{metric, Metric};
use crate::ingest::sparkplug::proto::{DataType, Payload};
use crate::ingest::sparkplug::{NAMESPACE, REBIRTH_METRIC};

/// An edge node the server should ask to rebirth: its state here is missing
/// (DATA before BIRTH, e.g. after a restart) or out of step (unknown alias).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebirthRequest {
    /// Sparkplug group id.
    pub group: String,
    /// Edge node id.
    pub edge_node: String,
}

impl RebirthRequest {
    /// Topic of the NCMD: `spBv1.0/{group}/NCMD/{edge_node}`.
    pub fn topic(&self) -> String {
        format!("{NAMESPACE}/{}/NCMD/{}", self.group, self.edge_node)
    }

    /// Payload of the NCMD: `Node Control/Rebirth = true` stamped `now`.
    pub fn payload(&self, now: Timestamp) -> Vec<u8> {
        let ms = u64::try_from(now.micros() / 1_000).unwrap_or(0);
        Payload {
            timestamp: Some(ms),
            metrics: vec![Metric {
                name: Some(REBIRTH_METRIC.to_owned()),
                timestamp: Some(ms),
                datatype: Some(DataType::Boolean as u32),
                value: Some(metric::Value::BooleanValue(true)),
                ..Metric::default()
            }],
            ..Payload::default()
        }
        .encode_to_vec()
    }
}
