//! Sparkplug B topic names (Sparkplug 3.0, 4.1):
//! `spBv1.0/{group}/{message_type}/{edge_node}[/{device}]`, and the host
//! application's `spBv1.0/STATE/{host_id}`.

use crate::ingest::IngestError;

/// The Sparkplug B namespace, the first topic level.
pub const NAMESPACE: &str = "spBv1.0";

/// The message types of the topic's third level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageType {
    NBirth,
    NData,
    NDeath,
    NCmd,
    DBirth,
    DData,
    DDeath,
    DCmd,
    State,
}

impl MessageType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NBIRTH" => MessageType::NBirth,
            "NDATA" => MessageType::NData,
            "NDEATH" => MessageType::NDeath,
            "NCMD" => MessageType::NCmd,
            "DBIRTH" => MessageType::DBirth,
            "DDATA" => MessageType::DData,
            "DDEATH" => MessageType::DDeath,
            "DCMD" => MessageType::DCmd,
            _ => return None,
        })
    }

    fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DData | MessageType::DDeath | MessageType::DCmd
        )
    }
}

/// A parsed topic, borrowing the topic's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SparkplugTopic<'a> {
    pub group: &'a str,
    pub message_type: MessageType,
    pub edge_node: &'a str,
    pub device: Option<&'a str>,
}

impl<'a> SparkplugTopic<'a> {
    pub(crate) fn parse(topic: &'a str) -> Result<Self, IngestError> {
        let bad = IngestError::InvalidSparkplugTopic;
        let mut levels = topic.split('/');
        if levels.next() != Some(NAMESPACE) {
            return Err(bad("namespace is not spBv1.0"));
        }
        let group = levels.next().ok_or(bad("no group"))?;
        let second = levels.next().ok_or(bad("no message type"))?;
        if group == "STATE" {
            // Host application state (3.0, 4.2): `spBv1.0/STATE/{host_id}`.
            if levels.next().is_some() {
                return Err(bad("STATE topic with extra levels"));
            }
            return Ok(SparkplugTopic {
                group,
                message_type: MessageType::State,
                edge_node: second,
                device: None,
            });
        }
        let message_type = MessageType::parse(second).ok_or(bad("unknown message type"))?;
        let edge_node = levels.next().ok_or(bad("no edge node"))?;
        let device = levels.next();
        if levels.next().is_some() {
            return Err(bad("too many levels"));
        }
        if message_type.is_device() != device.is_some() {
            return Err(bad("device level does not match the message type"));
        }
        if group.is_empty() || edge_node.is_empty() || device == Some("") {
            return Err(bad("empty group, edge node or device"));
        }
        Ok(SparkplugTopic {
            group,
            message_type,
            edge_node,
            device,
        })
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let t = SparkplugTopic::parse("spBv1.0/G/DDATA/N/D").unwrap();
        assert_eq!(
            (t.group, t.message_type, t.edge_node, t.device),
            ("G", MessageType::DData, "N", Some("D"))
        );
        let t = SparkplugTopic::parse("spBv1.0/G/NBIRTH/N").unwrap();
        assert_eq!((t.message_type, t.device), (MessageType::NBirth, None));
        let t = SparkplugTopic::parse("spBv1.0/STATE/host").unwrap();
        assert_eq!(t.message_type, MessageType::State);
    }

    #[test]
    fn rejects() {
        for bad in [
            "spAv1.0/G/NDATA/N",
            "spBv1.0/G",
            "spBv1.0/G/NDATA",
            "spBv1.0/G/XDATA/N",
            "spBv1.0/G/NDATA/N/D",
            "spBv1.0/G/DDATA/N",
            "spBv1.0/G/DDATA/N/D/E",
            "spBv1.0//NDATA/N",
            "spBv1.0/G/DDATA/N/",
        ] {
            assert!(SparkplugTopic::parse(bad).is_err(), "{bad}");
        }
    }
}
