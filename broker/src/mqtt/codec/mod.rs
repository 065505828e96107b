//! The MQTT 3.1.1 and 5.0 wire format: bytes to `Packet` and back, with no IO.
//!
//! `decode` takes bytes the transport has buffered and returns at most one packet, `Ok(None)`
//! while it is incomplete, or an error that carries the reason code to close with. `encode`
//! appends one packet to an output buffer. Both are pure functions of their arguments.
//!
//! What this module judges: everything the specifications call a malformed packet or a protocol
//! error that can be seen in one packet on its own (flags, lengths, UTF-8, property placement
//! and values, packet identifiers, topic names in PUBLISH). What it leaves to the session:
//! anything that needs state or direction, e.g. topic alias ranges, receive maximum, a
//! subscription identifier in a PUBLISH from a client (MQTT-3.3.4-6), topic *filter* syntax
//! (answered per filter in SUBACK with 0x8F / 0x80, see `topic::valid_topic_filter`), client id
//! rules and packets that only a server may send.
//!
//! A SUBSCRIBE, UNSUBSCRIBE, SUBACK or v5 UNSUBACK with no entries is a `Protocol` error
//! (MQTT-3.8.3-2 / 3.1.1 MQTT-3.8.3-3, MQTT-3.10.3-2): the bytes parse, the act is illegal.
//! A property in a packet that does not allow it is `Malformed` (5.0 2.2.2.2); a repeated
//! single-valued property or a forbidden value (0 where 0 is not allowed, a flag byte other
//! than 0 or 1) is a `Protocol` error, as the property definitions in 3.1.2.11 etc. say.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod decode;
mod encode;
mod properties;
pub(crate) mod reader;

pub use decode::decode;
pub use encode::{connack_return_code_v311, encode, encoded_len};

use crate::mqtt::packet::ReasonCode;

/// The largest Remaining Length a four-byte Variable Byte Integer can carry (2.1.4 / 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Limits the decoder enforces before it buffers or parses a body.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The whole packet, fixed header included (the MQTT 5 Maximum Packet Size, 3.1.2.11.4).
    pub max_packet_size: u32,
}

/// Why bytes from a peer could not be accepted. Each variant maps to the reason code to send
/// (CONNACK or DISCONNECT) before closing, see `reason_code`.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not form a packet (0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that the protocol forbids here (0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The fixed header announces more than the configured maximum (0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: u32 },
    /// CONNECT with a protocol name/level other than "MQTT" 4 or 5; the level is carried (0x84,
    /// 3.1.1 return code 0x01).
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocolVersion(u8),
    /// A PUBLISH or will topic that is empty or holds a wildcard where that is not allowed (0x90).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
}

impl DecodeError {
    /// The reason code to send before closing the connection.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// Why a packet could not be encoded. These are bugs or limits on our side, not peer input.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum EncodeError {
    /// A UTF-8 string longer than 65,535 bytes (1.5.4).
    #[error("string longer than 65535 bytes")]
    StringTooLong,
    /// Binary data longer than 65,535 bytes (1.5.6).
    #[error("binary data longer than 65535 bytes")]
    BinaryTooLong,
    /// The Remaining Length would be this many bytes, over `MAX_REMAINING_LENGTH`.
    #[error("packet body of {0} bytes exceeds the maximum remaining length")]
    PacketTooLarge(usize),
    /// The packet or field does not exist in the version asked for (AUTH under 3.1.1).
    #[error("not representable in this protocol version: {0}")]
    NotInVersion(&'static str),
    /// A property set on a packet type that does not allow it; carries the property identifier.
    #[error("property 0x{id:02x} is not allowed in {packet}")]
    PropertyNotAllowed { id: u8, packet: &'static str },
    /// A Variable Byte Integer field (e.g. a subscription identifier) above 268,435,455.
    #[error("value {0} does not fit a variable byte integer")]
    VarIntTooLarge(usize),
    /// The packet breaks a rule that makes it unencodable, e.g. QoS 1 without a packet id.
    #[error("invalid packet: {0}")]
    InvalidPacket(&'static str),
}

#[cfg(test)]
mod tests;
