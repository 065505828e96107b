//! Bytes to packet, for either protocol version.
//!
//! `decode` looks at the fixed header first: packet type, flags and Remaining Length are judged
//! (and an oversize packet refused) before any of the body is needed. Only when the whole
//! packet is buffered is it split off the input and parsed with a bounds-checked `Reader`;
//! every field must be inside the packet and the packet must be consumed exactly.

use bytes::{Buf, BytesMut};

use crate::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp,
    PubRespKind, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use crate::mqtt::topic;

use super::properties::{self, Context};
use super::reader::{peek_varint, Reader};
use super::{DecodeError, DecodeLimits};

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Decodes one packet from the front of `buf`.
///
/// `version` is `None` until CONNECT has been received; then only CONNECT is accepted
/// (MQTT-3.1.0-1). Afterwards pass the negotiated version; a second CONNECT is then a protocol
/// error (MQTT-3.1.0-2). `Ok(None)`: more bytes are needed and `buf` is untouched.
/// `Ok(Some(packet))`: exactly that packet's bytes were taken from `buf`. Binary fields and the
/// PUBLISH payload share `buf`'s allocation. `Err`: close the connection with
/// `err.reason_code()`; `buf` is then in an unspecified state.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    limits: &DecodeLimits,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_fixed_header(packet_type, flags, version)?;

    let Some((remaining, len_bytes)) = peek_varint(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let size = 1 + len_bytes + remaining;
    let max = usize::try_from(limits.max_packet_size).unwrap_or(usize::MAX);
    if size > max {
        // Refused from the header alone, before the body is buffered.
        return Err(DecodeError::PacketTooLarge {
            size,
            max: limits.max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }

    // `size <= buf.len()` and `1 + len_bytes <= size` were checked above.
    let mut body = buf.split_to(size).freeze();
    body.advance(1 + len_bytes);
    let mut r = Reader::new(body);

    let packet = match version {
        None => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        Some(v) => decode_body(&mut r, packet_type, flags, v)?,
    };
    r.finish()?;
    Ok(Some(packet))
}

/// Checks the first byte: a known type, legal in this state and version, with its flags.
fn check_fixed_header(
    packet_type: u8,
    flags: u8,
    version: Option<ProtocolVersion>,
) -> Result<(), DecodeError> {
    match (version, packet_type) {
        (_, 0) => return Err(DecodeError::Malformed("reserved packet type 0")),
        (None, CONNECT) => {}
        (None, _) => {
            return Err(DecodeError::Protocol("first packet is not CONNECT"));
        }
        (Some(_), CONNECT) => return Err(DecodeError::Protocol("second CONNECT")),
        // 3.1.1 2.2.1: type 15 is reserved there.
        (Some(ProtocolVersion::V311), AUTH) => {
            return Err(DecodeError::Malformed("reserved packet type 15"));
        }
        (Some(_), _) => {}
    }
    let expected = match packet_type {
        PUBLISH => {
            // MQTT-3.3.1-4: QoS 3 is malformed. MQTT-3.3.1-2: DUP only with QoS > 0.
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::Malformed("PUBLISH with DUP and QoS 0"));
            }
            return Ok(());
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    // MQTT-2.2.2-2 (3.1.1), 2.1.3 (5.0).
    if flags != expected {
        return Err(DecodeError::Malformed("invalid fixed header flags"));
    }
    Ok(())
}

fn decode_body(
    r: &mut Reader,
    packet_type: u8,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let v5 = version == ProtocolVersion::V5;
    Ok(match packet_type {
        CONNACK => Packet::ConnAck(decode_connack(r, v5)?),
        PUBLISH => Packet::Publish(decode_publish(r, flags, v5)?),
        PUBACK => Packet::PubResp(decode_pubresp(r, PubRespKind::PubAck, v5)?),
        PUBREC => Packet::PubResp(decode_pubresp(r, PubRespKind::PubRec, v5)?),
        PUBREL => Packet::PubResp(decode_pubresp(r, PubRespKind::PubRel, v5)?),
        PUBCOMP => Packet::PubResp(decode_pubresp(r, PubRespKind::PubComp, v5)?),
        SUBSCRIBE => Packet::Subscribe(decode_subscribe(r, v5)?),
        SUBACK => Packet::SubAck(decode_suback(r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(decode_unsubscribe(r, v5)?),
        UNSUBACK => Packet::UnsubAck(decode_unsuback(r, v5)?),
        // MQTT-3.12 / 3.13: no variable header, no payload; `finish` checks the length is 0.
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(decode_disconnect(r, v5)?),
        AUTH => Packet::Auth(decode_auth(r)?),
        // CONNECT and type 0 were refused by `check_fixed_header`; a nibble has no other value.
        _ => return Err(DecodeError::Protocol("unexpected packet type")),
    })
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    // 3.1.2.1 / 3.1.2.2. The name is read as raw bytes so that "MQIsdp" (3.1) and other
    // protocols get a version answer rather than a UTF-8 complaint.
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (name.as_ref(), level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocolVersion(level)),
    };
    let v5 = protocol == ProtocolVersion::V5;

    let flags = r.u8()?;
    // MQTT-3.1.2-3: the reserved flag is 0.
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        // MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15.
        return Err(DecodeError::Malformed(
            "will QoS or retain set without will flag",
        ));
    }
    // MQTT-3.1.2-14.
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if !v5 && password_flag && !username_flag {
        // 3.1.1 MQTT-3.1.2-22; 5.0 allows a password alone.
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        properties::read(r, Context::Connect)?
    } else {
        Properties::default()
    };

    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            properties::read(r, Context::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            // MQTT-3.1.3-11 (a topic name: no wildcards, not empty).
            return Err(DecodeError::TopicNameInvalid(
                "will topic is not a topic name",
            ));
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let ack_flags = r.u8()?;
    // MQTT-3.2.2-1 (5.0 3.2.2.1): bits 7-1 reserved.
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let code = r.u8()?;
    if v5 {
        let properties = properties::read(r, Context::ConnAck)?;
        return Ok(ConnAck {
            session_present: ack_flags == 1,
            reason: ReasonCode(code),
            properties,
        });
    }
    // The inverse of `connack_return_code_v311` (3.1.1 table 3.1).
    let reason = match code {
        0x00 => ReasonCode::SUCCESS,
        0x01 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        0x02 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        0x03 => ReasonCode::SERVER_UNAVAILABLE,
        0x04 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        0x05 => ReasonCode::NOT_AUTHORIZED,
        _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
    };
    Ok(ConnAck {
        session_present: ack_flags == 1,
        reason,
        properties: Properties::default(),
    })
}

fn decode_publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    // QoS 3 and DUP with QoS 0 were refused by `check_fixed_header`.
    let qos =
        QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let topic = r.string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(r)?),
    };
    let properties = if v5 {
        properties::read(r, Context::Publish)?
    } else {
        Properties::default()
    };
    if topic.is_empty() {
        // 5.0 3.3.2.1: empty only when a topic alias stands for it. 3.1.1 MQTT-4.7.3-1.
        if !(v5 && properties.topic_alias.is_some()) {
            return Err(DecodeError::TopicNameInvalid("empty topic name"));
        }
    } else if !topic::valid_topic_name(&topic) {
        // MQTT-3.3.2-2.
        return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
    }
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn decode_pubresp(r: &mut Reader, kind: PubRespKind, v5: bool) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(r)?;
    // 5.0 3.4.2.1 / 3.4.2.2.1: without a reason code it is success; without a property length
    // there are no properties. 3.1.1 has neither (`finish` refuses extra bytes).
    let reason = if v5 && r.remaining() > 0 {
        ReasonCode(r.u8()?)
    } else {
        ReasonCode::SUCCESS
    };
    let properties = if v5 && r.remaining() > 0 {
        properties::read(r, Context::PubResp)?
    } else {
        Properties::default()
    };
    Ok(PubResp {
        kind,
        packet_id,
        reason,
        properties,
    })
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, Context::Subscribe)?
    } else {
        Properties::default()
    };
    // Each entry takes at least three bytes of input, so this grows only with real data.
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        // MQTT-3.8.3-2 (5.0), MQTT-3.8.3-3 (3.1.1).
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    if !v5 && byte & 0xFC != 0 {
        // 3.1.1 MQTT-3.8.3-4: the upper six bits are reserved.
        return Err(DecodeError::Malformed("reserved bits set in requested QoS"));
    }
    if byte & 0xC0 != 0 {
        // 5.0 MQTT-3.8.3-5.
        return Err(DecodeError::Malformed(
            "reserved bits set in subscription options",
        ));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::Malformed("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, Context::SubAck)?
    } else {
        Properties::default()
    };
    let mut reasons = Vec::new();
    while r.remaining() > 0 {
        let code = r.u8()?;
        if !v5 && !matches!(code, 0x00 | 0x01 | 0x02 | 0x80) {
            // 3.1.1 MQTT-3.9.3-2.
            return Err(DecodeError::Malformed("reserved SUBACK return code"));
        }
        reasons.push(ReasonCode(code));
    }
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without a reason code"));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        properties::read(r, Context::Unsubscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        // MQTT-3.10.3-2.
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        // 3.1.1: the packet identifier only; `finish` refuses anything after it.
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reasons: Vec::new(),
        });
    }
    let properties = properties::read(r, Context::UnsubAck)?;
    let mut reasons = Vec::new();
    while r.remaining() > 0 {
        reasons.push(ReasonCode(r.u8()?));
    }
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without a reason code"));
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn decode_disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    // 5.0 3.14.2.1: remaining length 0 is a normal disconnection, and without a property
    // length there are no properties. 3.1.1 has no variable header (`finish` checks).
    let reason = if v5 && r.remaining() > 0 {
        ReasonCode(r.u8()?)
    } else {
        ReasonCode::NORMAL_DISCONNECTION
    };
    let properties = if v5 && r.remaining() > 0 {
        properties::read(r, Context::Disconnect)?
    } else {
        Properties::default()
    };
    Ok(Disconnect { reason, properties })
}

fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    // 3.15.2.1: remaining length 0 is success without properties. Otherwise both the reason
    // code and the property length are present (a lone reason code is truncated).
    if r.remaining() == 0 {
        return Ok(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        });
    }
    let reason = ReasonCode(r.u8()?);
    let properties = properties::read(r, Context::Auth)?;
    Ok(Auth { reason, properties })
}

/// A packet identifier, never 0 (MQTT-2.2.1-3, 5.0 MQTT-2.2.1-3).
fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::Malformed("packet identifier 0"))
}
