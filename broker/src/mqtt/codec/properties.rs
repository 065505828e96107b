//! MQTT 5 properties (2.2.2): which identifier each packet type allows, and their bytes.
//!
//! The property section is a Variable Byte Integer length followed by (identifier, value)
//! pairs. Decoding refuses identifiers a packet type does not allow (malformed, 2.2.2.2),
//! repeats of single-valued properties and out-of-range values (protocol errors). Encoding
//! writes present properties in ascending identifier order, so output is deterministic.
//! Under 3.1.1 none of this runs: callers skip the section entirely.

use crate::mqtt::packet::Properties;

use super::encode::{write_binary, write_string, write_varint, Counter, Sink};
use super::reader::Reader;
use super::{DecodeError, EncodeError};

/// The packet (or part of CONNECT) a property section belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    /// The will properties inside the CONNECT payload (3.1.3.2): their own set.
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Connect => "CONNECT",
            Context::Will => "will properties",
            Context::ConnAck => "CONNACK",
            Context::Publish => "PUBLISH",
            Context::PubResp => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            Context::Subscribe => "SUBSCRIBE",
            Context::SubAck => "SUBACK",
            Context::Unsubscribe => "UNSUBSCRIBE",
            Context::UnsubAck => "UNSUBACK",
            Context::Disconnect => "DISCONNECT",
            Context::Auth => "AUTH",
        }
    }
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Whether property `id` may appear in `ctx` (5.0 table 2-4).
pub(crate) fn allowed(id: u8, ctx: Context) -> bool {
    use Context::*;
    match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => matches!(ctx, Publish | Will),
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | ConnAck | Disconnect),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ctx == ConnAck,
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, Connect | ConnAck | Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => ctx == Connect,
        WILL_DELAY_INTERVAL => ctx == Will,
        SERVER_REFERENCE => matches!(ctx, ConnAck | Disconnect),
        REASON_STRING => matches!(
            ctx,
            ConnAck | PubResp | SubAck | UnsubAck | Disconnect | Auth
        ),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | ConnAck)
        }
        TOPIC_ALIAS => ctx == Publish,
        USER_PROPERTY => true,
        _ => false,
    }
}

/// Reads a property length and the properties it covers.
pub(crate) fn read(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("property length"))?;
    // `sub` checks the length against the bytes left before anything is taken.
    let mut r = r.sub(len)?;
    let mut p = Properties::default();
    while r.remaining() > 0 {
        let id = r.varint()?;
        // Every identifier defined so far fits one byte; a longer one is unknown.
        let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
        if !allowed(id, ctx) {
            return Err(DecodeError::Malformed(
                "property not allowed in this packet type",
            ));
        }
        match id {
            PAYLOAD_FORMAT_INDICATOR => once(&mut p.payload_format_indicator, flag(&mut r)?)?,
            MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, r.u32()?)?,
            CONTENT_TYPE => once(&mut p.content_type, r.string()?)?,
            RESPONSE_TOPIC => {
                let topic = r.string()?;
                // MQTT-3.3.2-14: a topic name, so no wildcards.
                if !crate::mqtt::topic::valid_topic_name(&topic) {
                    return Err(DecodeError::Protocol(
                        "response topic is not a valid topic name",
                    ));
                }
                once(&mut p.response_topic, topic)?
            }
            CORRELATION_DATA => once(&mut p.correlation_data, r.binary()?)?,
            SUBSCRIPTION_IDENTIFIER => {
                let v = r.varint()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                // Several in a PUBLISH to a client (3.3.2.3.8), at most one in SUBSCRIBE.
                if ctx == Context::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::Protocol("duplicate property"));
                }
                p.subscription_identifiers.push(v);
            }
            SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, r.u32()?)?,
            ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, r.string()?)?,
            SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?)?,
            AUTHENTICATION_METHOD => once(&mut p.authentication_method, r.string()?)?,
            AUTHENTICATION_DATA => once(&mut p.authentication_data, r.binary()?)?,
            REQUEST_PROBLEM_INFORMATION => once(&mut p.request_problem_information, flag(&mut r)?)?,
            WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, r.u32()?)?,
            REQUEST_RESPONSE_INFORMATION => {
                once(&mut p.request_response_information, flag(&mut r)?)?
            }
            RESPONSE_INFORMATION => once(&mut p.response_information, r.string()?)?,
            SERVER_REFERENCE => once(&mut p.server_reference, r.string()?)?,
            REASON_STRING => once(&mut p.reason_string, r.string()?)?,
            RECEIVE_MAXIMUM => once(&mut p.receive_maximum, nonzero_u16(&mut r)?)?,
            TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?)?,
            TOPIC_ALIAS => once(&mut p.topic_alias, nonzero_u16(&mut r)?)?,
            MAXIMUM_QOS => once(&mut p.maximum_qos, flag(&mut r)?)?,
            RETAIN_AVAILABLE => once(&mut p.retain_available, flag(&mut r)?)?,
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("maximum packet size 0"));
                }
                once(&mut p.maximum_packet_size, v)?
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.wildcard_subscription_available, flag(&mut r)?)?
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                once(&mut p.subscription_identifier_available, flag(&mut r)?)?
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                once(&mut p.shared_subscription_available, flag(&mut r)?)?
            }
            // `allowed` returned false for every other identifier.
            _ => return Err(DecodeError::Malformed("unknown property")),
        }
    }
    // 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3: data without a method is a protocol error.
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "authentication data without authentication method",
        ));
    }
    Ok(p)
}

/// Writes the property length and the properties, or fails on one `ctx` does not allow.
pub(crate) fn write<S: Sink>(s: &mut S, p: &Properties, ctx: Context) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    write_list(&mut counter, p, ctx)?;
    write_varint(s, counter.len)?;
    write_list(s, p, ctx)
}

/// Whether a property section would be empty (lets PUBACK etc. use their short forms).
pub(crate) fn is_empty(p: &Properties) -> bool {
    *p == Properties::default()
}

fn write_list<S: Sink>(s: &mut S, p: &Properties, ctx: Context) -> Result<(), EncodeError> {
    let mut w = ListWriter { s, ctx };
    if let Some(v) = p.payload_format_indicator {
        w.id(PAYLOAD_FORMAT_INDICATOR)?;
        w.s.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        w.id(MESSAGE_EXPIRY_INTERVAL)?;
        w.s.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        w.id(CONTENT_TYPE)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = &p.response_topic {
        w.id(RESPONSE_TOPIC)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = &p.correlation_data {
        w.id(CORRELATION_DATA)?;
        write_binary(w.s, v)?;
    }
    for &v in &p.subscription_identifiers {
        w.id(SUBSCRIPTION_IDENTIFIER)?;
        let v = usize::try_from(v).map_err(|_| EncodeError::VarIntTooLarge(usize::MAX))?;
        write_varint(w.s, v)?;
    }
    if let Some(v) = p.session_expiry_interval {
        w.id(SESSION_EXPIRY_INTERVAL)?;
        w.s.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        w.id(ASSIGNED_CLIENT_IDENTIFIER)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = p.server_keep_alive {
        w.id(SERVER_KEEP_ALIVE)?;
        w.s.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        w.id(AUTHENTICATION_METHOD)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = &p.authentication_data {
        w.id(AUTHENTICATION_DATA)?;
        write_binary(w.s, v)?;
    }
    if let Some(v) = p.request_problem_information {
        w.id(REQUEST_PROBLEM_INFORMATION)?;
        w.s.put_u8(v);
    }
    if let Some(v) = p.will_delay_interval {
        w.id(WILL_DELAY_INTERVAL)?;
        w.s.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        w.id(REQUEST_RESPONSE_INFORMATION)?;
        w.s.put_u8(v);
    }
    if let Some(v) = &p.response_information {
        w.id(RESPONSE_INFORMATION)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = &p.server_reference {
        w.id(SERVER_REFERENCE)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = &p.reason_string {
        w.id(REASON_STRING)?;
        write_string(w.s, v)?;
    }
    if let Some(v) = p.receive_maximum {
        w.id(RECEIVE_MAXIMUM)?;
        w.s.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        w.id(TOPIC_ALIAS_MAXIMUM)?;
        w.s.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        w.id(TOPIC_ALIAS)?;
        w.s.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        w.id(MAXIMUM_QOS)?;
        w.s.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        w.id(RETAIN_AVAILABLE)?;
        w.s.put_u8(v);
    }
    for (key, value) in &p.user_properties {
        w.id(USER_PROPERTY)?;
        write_string(w.s, key)?;
        write_string(w.s, value)?;
    }
    if let Some(v) = p.maximum_packet_size {
        w.id(MAXIMUM_PACKET_SIZE)?;
        w.s.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        w.id(WILDCARD_SUBSCRIPTION_AVAILABLE)?;
        w.s.put_u8(v);
    }
    if let Some(v) = p.subscription_identifier_available {
        w.id(SUBSCRIPTION_IDENTIFIER_AVAILABLE)?;
        w.s.put_u8(v);
    }
    if let Some(v) = p.shared_subscription_available {
        w.id(SHARED_SUBSCRIPTION_AVAILABLE)?;
        w.s.put_u8(v);
    }
    Ok(())
}

struct ListWriter<'a, S> {
    s: &'a mut S,
    ctx: Context,
}

impl<S: Sink> ListWriter<'_, S> {
    /// Writes an identifier (all fit one byte, so its Variable Byte Integer is the byte itself).
    fn id(&mut self, id: u8) -> Result<(), EncodeError> {
        if !allowed(id, self.ctx) {
            return Err(EncodeError::PropertyNotAllowed {
                id,
                packet: self.ctx.name(),
            });
        }
        self.s.put_u8(id);
        Ok(())
    }
}

/// Sets a single-valued property; a second occurrence is a protocol error.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("duplicate property"));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property whose only legal values are 0 and 1.
fn flag(r: &mut Reader) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

/// Receive Maximum and Topic Alias, where 0 is a protocol error (3.1.2.11.3, 3.3.2.3.4).
fn nonzero_u16(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("property value 0 is not allowed")),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use bytes::{Bytes, BytesMut};

    use super::*;

    fn read_bytes(bytes: &'static [u8], ctx: Context) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(Bytes::from_static(bytes));
        let p = read(&mut r, ctx)?;
        r.finish()?;
        Ok(p)
    }

    const ALL_CONTEXTS: [Context; 11] = [
        Context::Connect,
        Context::Will,
        Context::ConnAck,
        Context::Publish,
        Context::PubResp,
        Context::Subscribe,
        Context::SubAck,
        Context::Unsubscribe,
        Context::UnsubAck,
        Context::Disconnect,
        Context::Auth,
    ];

    /// One encoded instance of every property, with a legal value.
    const ONE_OF_EACH: &[(u8, &[u8])] = &[
        (0x01, &[0x01, 0x01]),
        (0x02, &[0x02, 0, 0, 0, 9]),
        (0x03, &[0x03, 0, 1, b'a']),
        (0x08, &[0x08, 0, 1, b'a']),
        (0x09, &[0x09, 0, 1, 7]),
        (0x0B, &[0x0B, 0x05]),
        (0x11, &[0x11, 0, 0, 0, 9]),
        (0x12, &[0x12, 0, 1, b'a']),
        (0x13, &[0x13, 0, 9]),
        (0x15, &[0x15, 0, 1, b'a']),
        (0x17, &[0x17, 0x01]),
        (0x18, &[0x18, 0, 0, 0, 9]),
        (0x19, &[0x19, 0x00]),
        (0x1A, &[0x1A, 0, 1, b'a']),
        (0x1C, &[0x1C, 0, 1, b'a']),
        (0x1F, &[0x1F, 0, 1, b'a']),
        (0x21, &[0x21, 0, 9]),
        (0x22, &[0x22, 0, 9]),
        (0x23, &[0x23, 0, 9]),
        (0x24, &[0x24, 0x00]),
        (0x25, &[0x25, 0x01]),
        (0x26, &[0x26, 0, 1, b'k', 0, 1, b'v']),
        (0x27, &[0x27, 0, 0, 1, 0]),
        (0x28, &[0x28, 0x01]),
        (0x29, &[0x29, 0x01]),
        (0x2A, &[0x2A, 0x01]),
    ];

    #[test]
    fn each_property_only_where_allowed() {
        for &(id, bytes) in ONE_OF_EACH {
            for ctx in ALL_CONTEXTS {
                let mut section = vec![u8::try_from(bytes.len()).unwrap()];
                section.extend_from_slice(bytes);
                let mut r = Reader::new(Bytes::from(section));
                let got = read(&mut r, ctx);
                if allowed(id, ctx) {
                    assert!(got.is_ok(), "0x{id:02x} in {ctx:?}: {got:?}");
                } else {
                    assert_eq!(
                        got,
                        Err(DecodeError::Malformed(
                            "property not allowed in this packet type"
                        )),
                        "0x{id:02x} in {ctx:?}"
                    );
                }
            }
        }
        // Authentication data (0x16) needs a method; tested with one below.
        assert!(read_bytes(&[8, 0x15, 0, 1, b'm', 0x16, 0, 1, 1], Context::Auth).is_ok());
    }

    #[test]
    fn spec_table_spot_checks() {
        assert!(allowed(0x0B, Context::Subscribe));
        assert!(!allowed(0x0B, Context::Unsubscribe));
        assert!(allowed(0x18, Context::Will));
        assert!(!allowed(0x18, Context::Connect));
        assert!(!allowed(0x01, Context::Connect));
        assert!(allowed(0x1F, Context::PubResp));
        assert!(!allowed(0x1F, Context::Connect));
        assert!(!allowed(0x23, Context::Will));
        assert!(allowed(0x26, Context::Unsubscribe));
        assert!(!allowed(0x00, Context::Publish));
        assert!(!allowed(0x2B, Context::ConnAck));
    }

    #[test]
    fn property_errors() {
        let protocol = |what| Err(DecodeError::Protocol(what));
        let cases: &[(&'static [u8], Context, Result<Properties, DecodeError>)] = &[
            // Duplicates of single-valued properties.
            (
                &[6, 0x11, 0, 0, 0, 1, 0x11],
                Context::Connect,
                Err(DecodeError::Malformed(
                    "field runs past the end of the packet",
                )),
            ),
            (
                &[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2],
                Context::Connect,
                protocol("duplicate property"),
            ),
            (
                &[6, 0x23, 0, 1, 0x23, 0, 2],
                Context::Publish,
                protocol("duplicate property"),
            ),
            (
                &[4, 0x0B, 1, 0x0B, 2],
                Context::Subscribe,
                protocol("duplicate property"),
            ),
            // Zero values that are protocol errors.
            (
                &[3, 0x21, 0, 0],
                Context::Connect,
                protocol("property value 0 is not allowed"),
            ),
            (
                &[3, 0x23, 0, 0],
                Context::Publish,
                protocol("property value 0 is not allowed"),
            ),
            (
                &[5, 0x27, 0, 0, 0, 0],
                Context::ConnAck,
                protocol("maximum packet size 0"),
            ),
            (
                &[2, 0x0B, 0],
                Context::Publish,
                protocol("subscription identifier 0"),
            ),
            // Byte properties other than 0/1.
            (
                &[2, 0x01, 2],
                Context::Publish,
                protocol("property value must be 0 or 1"),
            ),
            (
                &[2, 0x17, 2],
                Context::Connect,
                protocol("property value must be 0 or 1"),
            ),
            (
                &[2, 0x19, 0xFF],
                Context::Connect,
                protocol("property value must be 0 or 1"),
            ),
            (
                &[2, 0x24, 2],
                Context::ConnAck,
                protocol("property value must be 0 or 1"),
            ),
            (
                &[2, 0x2A, 2],
                Context::ConnAck,
                protocol("property value must be 0 or 1"),
            ),
            // Data without a method.
            (
                &[4, 0x16, 0, 1, 1],
                Context::Connect,
                protocol("authentication data without authentication method"),
            ),
            // A wildcard in a response topic.
            (
                &[4, 0x08, 0, 1, b'#'],
                Context::Publish,
                protocol("response topic is not a valid topic name"),
            ),
            // Property length past the end, value past the property length, unknown ids.
            (
                &[5, 0x23, 0, 1],
                Context::Publish,
                Err(DecodeError::Malformed(
                    "field runs past the end of the packet",
                )),
            ),
            (
                &[2, 0x23, 0, 1],
                Context::Publish,
                Err(DecodeError::Malformed(
                    "field runs past the end of the packet",
                )),
            ),
            (
                &[2, 0x7F, 0],
                Context::Publish,
                Err(DecodeError::Malformed(
                    "property not allowed in this packet type",
                )),
            ),
            (
                &[3, 0x80, 0x02, 0],
                Context::Publish,
                Err(DecodeError::Malformed("unknown property")),
            ),
        ];
        for (bytes, ctx, want) in cases {
            assert_eq!(&read_bytes(bytes, *ctx), want, "{bytes:02x?} in {ctx:?}");
        }
    }

    #[test]
    fn multi_valued_properties_keep_order() {
        let p = read_bytes(
            &[11, 0x0B, 0x01, 0x26, 0, 1, b'a', 0, 0, 0x0B, 0x80, 0x01],
            Context::Publish,
        );
        let p = p.unwrap();
        assert_eq!(p.subscription_identifiers, vec![1, 128]);
        assert_eq!(p.user_properties, vec![("a".to_owned(), String::new())]);
    }

    #[test]
    fn encoder_refuses_disallowed_and_orders_by_id() {
        let p = Properties {
            session_expiry_interval: Some(1),
            ..Properties::default()
        };
        let mut out = BytesMut::new();
        assert_eq!(
            write(&mut out, &p, Context::Publish),
            Err(EncodeError::PropertyNotAllowed {
                id: 0x11,
                packet: "PUBLISH"
            })
        );
        let p = Properties {
            topic_alias: Some(3),
            payload_format_indicator: Some(1),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        let mut out = BytesMut::new();
        write(&mut out, &p, Context::Publish).unwrap();
        assert_eq!(
            &out[..],
            &[12, 0x01, 1, 0x23, 0, 3, 0x26, 0, 1, b'k', 0, 1, b'v']
        );
    }
}
