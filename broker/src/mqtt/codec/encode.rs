//! Packet to bytes, for either protocol version.
//!
//! The body is written by one generic function over a `Sink`, run first against a `Counter`
//! (for the Remaining Length and `encoded_len`) and then against the output buffer, so the
//! length and the bytes cannot disagree. Under 3.1.1 properties and v5-only fields are left
//! out and reason codes are mapped to 3.1.1 return codes; under 5.0 acknowledgements use the
//! short forms the specification allows when there is nothing but success to say.

use bytes::{BufMut, BytesMut};

use crate::mqtt::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, PubRespKind, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

use super::properties::{self, Context};
use super::{EncodeError, MAX_REMAINING_LENGTH};

/// Appends one encoded packet to `out` and returns the number of bytes written. On error
/// `out` is left as it was.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, version)?;
    let first = first_byte(packet, version)?;
    let start = out.len();
    out.reserve(1 + varint_len(remaining) + remaining);
    BufMut::put_u8(out, first);
    let result = write_varint(out, remaining).and_then(|()| write_body(out, packet, version));
    if let Err(e) = result {
        out.truncate(start);
        return Err(e);
    }
    Ok(out.len() - start)
}

/// The number of bytes `encode` would write for `packet`, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, version)?;
    first_byte(packet, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

/// The 3.1.1 CONNACK return code (3.2.2.3) for a 5.0 reason code.
pub fn connack_return_code_v311(reason: ReasonCode) -> u8 {
    match reason.0 {
        0x00 => 0x00,
        // Unacceptable protocol version.
        0x84 => 0x01,
        // Identifier rejected.
        0x85 => 0x02,
        // Server unavailable.
        0x88 | 0x89 => 0x03,
        // Bad user name or password.
        0x86 => 0x04,
        // Not authorized, and the nearest answer for every other refusal.
        _ => 0x05,
    }
}

/// Where encoded bytes go: the output buffer, or a `Counter` that only adds up lengths.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, v: &[u8]);
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, v: &[u8]) {
        BufMut::put_slice(self, v);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counter {
    pub(crate) len: usize,
}

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.len = self.len.saturating_add(1);
    }
    fn put_u16(&mut self, _: u16) {
        self.len = self.len.saturating_add(2);
    }
    fn put_u32(&mut self, _: u32) {
        self.len = self.len.saturating_add(4);
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.len = self.len.saturating_add(v.len());
    }
}

/// A Variable Byte Integer (1.5.5), refusing values above 268,435,455.
pub(crate) fn write_varint<S: Sink>(s: &mut S, value: usize) -> Result<(), EncodeError> {
    if value > MAX_REMAINING_LENGTH {
        return Err(EncodeError::VarIntTooLarge(value));
    }
    let mut v = value;
    loop {
        // The mask keeps 7 bits, so the conversion cannot fail.
        let mut byte = u8::try_from(v & 0x7F).unwrap_or(0x7F);
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        s.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

/// A UTF-8 Encoded String (1.5.4).
pub(crate) fn write_string<S: Sink>(s: &mut S, v: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::StringTooLong)?;
    s.put_u16(len);
    s.put_slice(v.as_bytes());
    Ok(())
}

/// Binary Data (1.5.6).
pub(crate) fn write_binary<S: Sink>(s: &mut S, v: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::BinaryTooLong)?;
    s.put_u16(len);
    s.put_slice(v);
    Ok(())
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    write_body(&mut counter, packet, version)?;
    if counter.len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(counter.len));
    }
    Ok(counter.len)
}

/// Packet type in the high nibble, flags in the low one (2.1.2, 2.1.3).
fn first_byte(packet: &Packet, version: ProtocolVersion) -> Result<u8, EncodeError> {
    Ok(match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubResp(r) => match r.kind {
            PubRespKind::PubAck => 0x40,
            PubRespKind::PubRec => 0x50,
            // MQTT-3.6.1-1: reserved bits 0010.
            PubRespKind::PubRel => 0x62,
            PubRespKind::PubComp => 0x70,
        },
        // MQTT-3.8.1-1, MQTT-3.10.1-1.
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => match version {
            ProtocolVersion::V5 => 0xF0,
            ProtocolVersion::V311 => return Err(EncodeError::NotInVersion("AUTH")),
        },
    })
}

fn write_body<S: Sink>(
    s: &mut S,
    packet: &Packet,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    match packet {
        Packet::Connect(c) => write_connect(s, c, version),
        Packet::ConnAck(c) => write_connack(s, c, v5),
        Packet::Publish(p) => write_publish(s, p, v5),
        Packet::PubResp(r) => write_pubresp(s, r, v5),
        Packet::Subscribe(sub) => write_subscribe(s, sub, v5),
        Packet::SubAck(a) => write_suback(s, a, v5),
        Packet::Unsubscribe(u) => write_unsubscribe(s, u, v5),
        Packet::UnsubAck(a) => write_unsuback(s, a, v5),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => write_disconnect(s, d, v5),
        Packet::Auth(a) => write_auth(s, a, v5),
    }
}

fn write_connect<S: Sink>(
    s: &mut S,
    c: &Connect,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if c.protocol != version {
        return Err(EncodeError::InvalidPacket(
            "CONNECT protocol differs from the encoding version",
        ));
    }
    let v5 = version == ProtocolVersion::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        // MQTT-3.1.2-22.
        return Err(EncodeError::NotInVersion("password without user name"));
    }
    write_string(s, "MQTT")?;
    s.put_u8(version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        properties::write(s, &c.properties, Context::Connect)?;
    }
    write_string(s, &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            properties::write(s, &will.properties, Context::Will)?;
        }
        write_string(s, &will.topic)?;
        write_binary(s, &will.payload)?;
    }
    if let Some(username) = &c.username {
        write_string(s, username)?;
    }
    if let Some(password) = &c.password {
        write_binary(s, password)?;
    }
    Ok(())
}

fn write_connack<S: Sink>(s: &mut S, c: &ConnAck, v5: bool) -> Result<(), EncodeError> {
    s.put_u8(u8::from(c.session_present));
    if v5 {
        s.put_u8(c.reason.0);
        properties::write(s, &c.properties, Context::ConnAck)
    } else {
        s.put_u8(connack_return_code_v311(c.reason));
        Ok(())
    }
}

fn write_publish<S: Sink>(s: &mut S, p: &Publish, v5: bool) -> Result<(), EncodeError> {
    write_string(s, &p.topic)?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {
            if p.dup {
                // MQTT-3.3.1-2.
                return Err(EncodeError::InvalidPacket("DUP set on a QoS 0 PUBLISH"));
            }
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => s.put_u16(id.get()),
        // MQTT-2.2.1-2 (5.0 2.2.1): a packet identifier exactly when QoS > 0.
        _ => {
            return Err(EncodeError::InvalidPacket(
                "PUBLISH packet identifier must be present exactly when QoS > 0",
            ))
        }
    }
    if v5 {
        properties::write(s, &p.properties, Context::Publish)?;
    }
    s.put_slice(&p.payload);
    Ok(())
}

fn write_pubresp<S: Sink>(s: &mut S, r: &PubResp, v5: bool) -> Result<(), EncodeError> {
    s.put_u16(r.packet_id.get());
    if !v5 {
        return Ok(());
    }
    // 3.4.2.1: the reason may be left out when it is success and there are no properties.
    // When a reason is written, so is the property length (even zero): the spec lets it go,
    // but widely used clients (rumqttc 0.25, Paho) fail to parse the three-byte form.
    if r.reason == ReasonCode::SUCCESS && properties::is_empty(&r.properties) {
        return Ok(());
    }
    s.put_u8(r.reason.0);
    properties::write(s, &r.properties, Context::PubResp)
}

fn write_subscribe<S: Sink>(s: &mut S, sub: &Subscribe, v5: bool) -> Result<(), EncodeError> {
    if sub.filters.is_empty() {
        return Err(EncodeError::InvalidPacket(
            "SUBSCRIBE without a topic filter",
        ));
    }
    s.put_u16(sub.packet_id.get());
    if v5 {
        properties::write(s, &sub.properties, Context::Subscribe)?;
    }
    for f in &sub.filters {
        write_string(s, &f.filter)?;
        let o = &f.options;
        let mut byte = o.qos as u8;
        if v5 {
            let retain_handling = match o.retain_handling {
                RetainHandling::OnSubscribe => 0,
                RetainHandling::OnNewSubscribe => 1,
                RetainHandling::Never => 2,
            };
            byte |= (u8::from(o.no_local) << 2)
                | (u8::from(o.retain_as_published) << 3)
                | (retain_handling << 4);
        }
        s.put_u8(byte);
    }
    Ok(())
}

fn write_suback<S: Sink>(s: &mut S, a: &SubAck, v5: bool) -> Result<(), EncodeError> {
    if a.reasons.is_empty() {
        return Err(EncodeError::InvalidPacket("SUBACK without a reason code"));
    }
    s.put_u16(a.packet_id.get());
    if v5 {
        properties::write(s, &a.properties, Context::SubAck)?;
    }
    for reason in &a.reasons {
        let code = match (v5, reason.0) {
            (true, code) => code,
            // 3.1.1 3.9.3: granted QoS 0, 1, 2 or failure.
            (false, code @ (0x00..=0x02)) => code,
            (false, _) => 0x80,
        };
        s.put_u8(code);
    }
    Ok(())
}

fn write_unsubscribe<S: Sink>(s: &mut S, u: &Unsubscribe, v5: bool) -> Result<(), EncodeError> {
    if u.filters.is_empty() {
        return Err(EncodeError::InvalidPacket(
            "UNSUBSCRIBE without a topic filter",
        ));
    }
    s.put_u16(u.packet_id.get());
    if v5 {
        properties::write(s, &u.properties, Context::Unsubscribe)?;
    }
    for f in &u.filters {
        write_string(s, f)?;
    }
    Ok(())
}

fn write_unsuback<S: Sink>(s: &mut S, a: &UnsubAck, v5: bool) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id.get());
    if !v5 {
        // 3.1.1 UNSUBACK is only the packet identifier.
        return Ok(());
    }
    if a.reasons.is_empty() {
        return Err(EncodeError::InvalidPacket("UNSUBACK without a reason code"));
    }
    properties::write(s, &a.properties, Context::UnsubAck)?;
    for reason in &a.reasons {
        s.put_u8(reason.0);
    }
    Ok(())
}

fn write_disconnect<S: Sink>(s: &mut S, d: &Disconnect, v5: bool) -> Result<(), EncodeError> {
    if !v5 {
        return Ok(());
    }
    // 3.14.2.1: remaining length 0 means normal disconnection without properties. With a
    // reason the property length is always written (see `write_pubresp`).
    if d.reason == ReasonCode::NORMAL_DISCONNECTION && properties::is_empty(&d.properties) {
        return Ok(());
    }
    s.put_u8(d.reason.0);
    properties::write(s, &d.properties, Context::Disconnect)
}

fn write_auth<S: Sink>(s: &mut S, a: &Auth, v5: bool) -> Result<(), EncodeError> {
    if !v5 {
        return Err(EncodeError::NotInVersion("AUTH"));
    }
    // 3.15.2.1: remaining length 0 means success without properties. There is no form with
    // a reason code but no property length.
    if a.reason == ReasonCode::SUCCESS && properties::is_empty(&a.properties) {
        return Ok(());
    }
    s.put_u8(a.reason.0);
    properties::write(s, &a.properties, Context::Auth)
}
