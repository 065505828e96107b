//! MQTT 5 reason codes that policy decisions carry (MQTT 5 §2.4).
//!
//! Kept as plain `u8` constants so this crate does not depend on the broker;
//! the broker turns them into its own `ReasonCode` in one place.

/// CONNACK/PUBACK success; also SUBACK "granted QoS 0".
pub const SUCCESS: u8 = 0x00;
/// SUBACK: granted QoS 0.
pub const GRANTED_QOS_0: u8 = 0x00;
/// SUBACK: granted QoS 1.
pub const GRANTED_QOS_1: u8 = 0x01;
/// SUBACK: granted QoS 2.
pub const GRANTED_QOS_2: u8 = 0x02;
/// CONNACK: the client identifier is not allowed for this certificate.
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
/// CONNACK/PUBACK/SUBACK/DISCONNECT: not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;
/// SUBACK: the topic filter is malformed.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// PUBACK/DISCONNECT: the topic name is malformed.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// DISCONNECT: the packet exceeds the allowed size.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// PUBACK/SUBACK/DISCONNECT: a rate or count quota is exhausted.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// DISCONNECT: retain was requested but is not allowed.
pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
/// DISCONNECT: the QoS is above the allowed maximum.
pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
