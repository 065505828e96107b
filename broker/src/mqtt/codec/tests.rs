//! Codec tests: golden bytes per packet and version, one case per decoder check, encoder
//! errors, and proptests (round trip, prefixes, random and mutated input never panics).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::properties::{allowed, Context};
use super::*;
use crate::mqtt::packet::*;

use ProtocolVersion::{V311, V5};

const LIMITS: DecodeLimits = DecodeLimits {
    max_packet_size: 1 << 20,
};

/// The version argument `decode` needs for a packet: CONNECT comes first, before any version.
fn decode_version(p: &Packet, v: ProtocolVersion) -> Option<ProtocolVersion> {
    match p {
        Packet::Connect(_) => None,
        _ => Some(v),
    }
}

fn decode_one(bytes: &[u8], version: Option<ProtocolVersion>) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, &LIMITS)?.expect("a whole packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(p)
}

fn encode_vec(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = encode(p, v, &mut out).unwrap();
    assert_eq!(n, out.len());
    assert_eq!(encoded_len(p, v).unwrap(), n);
    out.to_vec()
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

fn none() -> Properties {
    Properties::default()
}

fn publish(qos: QoS, id: Option<u16>, topic: &str, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s(topic),
        packet_id: id.map(pid),
        properties: none(),
        payload: b(payload),
    }
}

fn pubresp(kind: PubRespKind, id: u16, reason: u8, properties: Properties) -> Packet {
    Packet::PubResp(PubResp {
        kind,
        packet_id: pid(id),
        reason: ReasonCode(reason),
        properties,
    })
}

// ---------------------------------------------------------------------------------------------
// Golden vectors

struct Golden {
    name: &'static str,
    version: ProtocolVersion,
    bytes: &'static [u8],
    packet: Packet,
}

fn goldens() -> Vec<Golden> {
    let g = |name, version, bytes, packet| Golden {
        name,
        version,
        bytes,
        packet,
    };
    vec![
        // ----- MQTT 3.1.1 -----
        // The CONNECT of 3.1.2.10 (flags 0xCE: user name, password, will QoS 1, will, clean
        // session; keep alive 10) with a payload for each of those flags.
        g(
            "v311-connect",
            V311,
            &[
                0x10, 0x1D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, 0x00, 0x03,
                b'c', b'i', b'd', 0x00, 0x02, b'w', b't', 0x00, 0x02, b'w', b'p', 0x00, 0x01, b'u',
                0x00, 0x01, b'p',
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: true,
                keep_alive: 10,
                properties: none(),
                client_id: s("cid"),
                will: Some(Will {
                    topic: s("wt"),
                    payload: b(b"wp"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: none(),
                }),
                username: Some(s("u")),
                password: Some(b(b"p")),
            })),
        ),
        g(
            "v311-connect-minimal",
            V311,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: true,
                keep_alive: 60,
                properties: none(),
                client_id: String::new(),
                will: None,
                username: None,
                password: None,
            })),
        ),
        g(
            "v311-connack",
            V311,
            &[0x20, 0x02, 0x01, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::SUCCESS,
                properties: none(),
            }),
        ),
        g(
            "v311-connack-not-authorized",
            V311,
            &[0x20, 0x02, 0x00, 0x05],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::NOT_AUTHORIZED,
                properties: none(),
            }),
        ),
        g(
            "v311-publish-qos1",
            V311,
            &[
                0x32, 0x0C, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'e', b'l', b'l', b'o',
            ],
            Packet::Publish(publish(QoS::AtLeastOnce, Some(10), "a/b", b"hello")),
        ),
        g(
            "v311-publish-qos0-retain",
            V311,
            &[0x31, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
            Packet::Publish(Publish {
                retain: true,
                ..publish(QoS::AtMostOnce, None, "a/b", b"hi")
            }),
        ),
        g(
            "v311-publish-qos2-dup",
            V311,
            &[0x3C, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'x'],
            Packet::Publish(Publish {
                dup: true,
                ..publish(QoS::ExactlyOnce, Some(1), "a/b", b"x")
            }),
        ),
        g(
            "v311-puback",
            V311,
            &[0x40, 0x02, 0x00, 0x01],
            pubresp(PubRespKind::PubAck, 1, 0, none()),
        ),
        g(
            "v311-pubrec",
            V311,
            &[0x50, 0x02, 0x00, 0x02],
            pubresp(PubRespKind::PubRec, 2, 0, none()),
        ),
        g(
            "v311-pubrel",
            V311,
            &[0x62, 0x02, 0x00, 0x03],
            pubresp(PubRespKind::PubRel, 3, 0, none()),
        ),
        g(
            "v311-pubcomp",
            V311,
            &[0x70, 0x02, 0xFF, 0xFF],
            pubresp(PubRespKind::PubComp, 0xFFFF, 0, none()),
        ),
        g(
            "v311-subscribe",
            V311,
            &[
                0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/',
                b'#', 0x02,
            ],
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                properties: none(),
                filters: vec![
                    SubscribeFilter {
                        filter: s("a/b"),
                        options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                    },
                    SubscribeFilter {
                        filter: s("c/#"),
                        options: SubscriptionOptions::with_qos(QoS::ExactlyOnce),
                    },
                ],
            }),
        ),
        g(
            "v311-suback",
            V311,
            &[0x90, 0x04, 0x00, 0x0A, 0x01, 0x80],
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                properties: none(),
                reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
            }),
        ),
        g(
            "v311-unsubscribe",
            V311,
            &[0xA2, 0x07, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b'],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(11),
                properties: none(),
                filters: vec![s("a/b")],
            }),
        ),
        g(
            "v311-unsuback",
            V311,
            &[0xB0, 0x02, 0x00, 0x0B],
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(11),
                properties: none(),
                reasons: vec![],
            }),
        ),
        g("v311-pingreq", V311, &[0xC0, 0x00], Packet::PingReq),
        g("v311-pingresp", V311, &[0xD0, 0x00], Packet::PingResp),
        g(
            "v311-disconnect",
            V311,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: none(),
            }),
        ),
        // ----- MQTT 5.0 -----
        // Session Expiry 10 and Receive Maximum 20; will with Payload Format 1 and Will Delay 5.
        g(
            "v5-connect",
            V5,
            &[
                0x10, 0x26, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x0E, 0x00, 0x3C, 0x08, 0x11,
                0x00, 0x00, 0x00, 0x0A, 0x21, 0x00, 0x14, 0x00, 0x02, b'c', b'1', 0x07, 0x01, 0x01,
                0x18, 0x00, 0x00, 0x00, 0x05, 0x00, 0x01, b't', 0x00, 0x02, b'h', b'i',
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 60,
                properties: Properties {
                    session_expiry_interval: Some(10),
                    receive_maximum: Some(20),
                    ..none()
                },
                client_id: s("c1"),
                will: Some(Will {
                    topic: s("t"),
                    payload: b(b"hi"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties {
                        payload_format_indicator: Some(1),
                        will_delay_interval: Some(5),
                        ..none()
                    },
                }),
                username: None,
                password: None,
            })),
        ),
        // 5.0 allows a password without a user name (3.1.2.9).
        g(
            "v5-connect-password-only",
            V5,
            &[
                0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x02, b'p', b'w',
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 0,
                properties: none(),
                client_id: String::new(),
                will: None,
                username: None,
                password: Some(b(b"pw")),
            })),
        ),
        g(
            "v5-connack",
            V5,
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x22, 0x00, 0x0A, 0x24, 0x01],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::SUCCESS,
                properties: Properties {
                    topic_alias_maximum: Some(10),
                    maximum_qos: Some(1),
                    ..none()
                },
            }),
        ),
        g(
            "v5-connack-not-authorized",
            V5,
            &[0x20, 0x03, 0x00, 0x87, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::NOT_AUTHORIZED,
                properties: none(),
            }),
        ),
        // Empty topic name standing for Topic Alias 5.
        g(
            "v5-publish-alias",
            V5,
            &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x'],
            Packet::Publish(Publish {
                properties: Properties {
                    topic_alias: Some(5),
                    ..none()
                },
                ..publish(QoS::AtMostOnce, None, "", b"x")
            }),
        ),
        g(
            "v5-publish-qos1",
            V5,
            &[
                0x32, 0x16, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, 0x0C, 0x02, 0x00, 0x00, 0x00,
                0x3C, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', b'h', b'i',
            ],
            Packet::Publish(Publish {
                properties: Properties {
                    message_expiry_interval: Some(60),
                    user_properties: vec![(s("k"), s("v"))],
                    ..none()
                },
                ..publish(QoS::AtLeastOnce, Some(7), "a/b", b"hi")
            }),
        ),
        // Short form: success without properties is just the packet identifier (3.4.2.1).
        g(
            "v5-puback",
            V5,
            &[0x40, 0x02, 0x00, 0x01],
            pubresp(PubRespKind::PubAck, 1, 0, none()),
        ),
        g(
            "v5-pubrec-no-subscribers",
            V5,
            &[0x50, 0x04, 0x00, 0x01, 0x10, 0x00],
            pubresp(PubRespKind::PubRec, 1, 0x10, none()),
        ),
        g(
            "v5-pubrel-reason-string",
            V5,
            &[
                0x62, 0x09, 0x00, 0x01, 0x92, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
            ],
            pubresp(
                PubRespKind::PubRel,
                1,
                0x92,
                Properties {
                    reason_string: Some(s("no")),
                    ..none()
                },
            ),
        ),
        g(
            "v5-pubcomp",
            V5,
            &[0x70, 0x02, 0x12, 0x34],
            pubresp(PubRespKind::PubComp, 0x1234, 0, none()),
        ),
        // Subscription Identifier 7; options QoS 1, No Local, Retain As Published, Retain
        // Handling 2 (0x2D).
        g(
            "v5-subscribe",
            V5,
            &[
                0x82, 0x0B, 0x00, 0x0A, 0x02, 0x0B, 0x07, 0x00, 0x03, b'a', b'/', b'#', 0x2D,
            ],
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                properties: Properties {
                    subscription_identifiers: vec![7],
                    ..none()
                },
                filters: vec![SubscribeFilter {
                    filter: s("a/#"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::Never,
                    },
                }],
            }),
        ),
        g(
            "v5-suback",
            V5,
            &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x01, 0x8F],
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                properties: none(),
                reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::TOPIC_FILTER_INVALID],
            }),
        ),
        g(
            "v5-unsubscribe",
            V5,
            &[0xA2, 0x08, 0x00, 0x0B, 0x00, 0x00, 0x03, b'a', b'/', b'b'],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(11),
                properties: none(),
                filters: vec![s("a/b")],
            }),
        ),
        g(
            "v5-unsuback",
            V5,
            &[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11],
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(11),
                properties: none(),
                reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
            }),
        ),
        g("v5-pingreq", V5, &[0xC0, 0x00], Packet::PingReq),
        g("v5-pingresp", V5, &[0xD0, 0x00], Packet::PingResp),
        // Short form: normal disconnection without properties (3.14.2.1).
        g(
            "v5-disconnect",
            V5,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: none(),
            }),
        ),
        g(
            "v5-disconnect-with-will",
            V5,
            &[0xE0, 0x02, 0x04, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL,
                properties: none(),
            }),
        ),
        g(
            "v5-disconnect-session-expiry",
            V5,
            &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    ..none()
                },
            }),
        ),
        g(
            "v5-auth-success",
            V5,
            &[0xF0, 0x00],
            Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: none(),
            }),
        ),
        g(
            "v5-auth-continue",
            V5,
            &[
                0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M',
            ],
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some(s("SCRAM")),
                    ..none()
                },
            }),
        ),
    ]
}

/// The forms without a property length that the spec allows are decoded, even though the
/// encoder always writes the property length after a reason code (for clients that need it).
#[test]
fn short_forms_without_property_length_decode() {
    let got = decode_one(&[0x50, 0x03, 0x00, 0x01, 0x10], Some(V5));
    assert_eq!(got, Ok(pubresp(PubRespKind::PubRec, 1, 0x10, none())));
    let got = decode_one(&[0xE0, 0x01, 0x8E], Some(V5));
    assert_eq!(
        got,
        Ok(Packet::Disconnect(Disconnect {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            properties: none(),
        }))
    );
}

#[test]
fn golden_vectors_decode_and_encode() {
    for g in goldens() {
        let got = decode_one(g.bytes, decode_version(&g.packet, g.version));
        assert_eq!(got.as_ref(), Ok(&g.packet), "decode {}", g.name);
        assert_eq!(
            encode_vec(&g.packet, g.version),
            g.bytes,
            "encode {}",
            g.name
        );
    }
}

/// Legal encodings other than the one the encoder picks.
#[test]
fn non_canonical_forms_decode() {
    let cases: &[(ProtocolVersion, &[u8], Packet)] = &[
        // Reason code success written out, with an empty property section or none.
        (
            V5,
            &[0x40, 0x04, 0x00, 0x01, 0x00, 0x00],
            pubresp(PubRespKind::PubAck, 1, 0, none()),
        ),
        (
            V5,
            &[0x40, 0x03, 0x00, 0x01, 0x00],
            pubresp(PubRespKind::PubAck, 1, 0, none()),
        ),
        (
            V5,
            &[0xE0, 0x02, 0x00, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: none(),
            }),
        ),
        (
            V5,
            &[0xF0, 0x02, 0x00, 0x00],
            Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: none(),
            }),
        ),
        // Properties in another order.
        (
            V5,
            &[0x20, 0x08, 0x00, 0x00, 0x05, 0x24, 0x01, 0x22, 0x00, 0x0A],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::SUCCESS,
                properties: Properties {
                    topic_alias_maximum: Some(10),
                    maximum_qos: Some(1),
                    ..none()
                },
            }),
        ),
    ];
    for (v, bytes, want) in cases {
        assert_eq!(
            decode_one(bytes, Some(*v)).as_ref(),
            Ok(want),
            "{bytes:02x?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder checks

const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");
const TRAILING: DecodeError = DecodeError::Malformed("trailing bytes after the last field");

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::Malformed(what)
}

fn protocol(what: &'static str) -> DecodeError {
    DecodeError::Protocol(what)
}

#[test]
fn decoder_checks() {
    let not_allowed = malformed("property not allowed in this packet type");
    let cases: Vec<(&str, Option<ProtocolVersion>, &[u8], DecodeError)> = vec![
        // --- fixed header ---
        (
            "type 0",
            Some(V5),
            &[0x00, 0x00],
            malformed("reserved packet type 0"),
        ),
        (
            "type 0 first",
            None,
            &[0x00],
            malformed("reserved packet type 0"),
        ),
        (
            "first packet not CONNECT",
            None,
            &[0x30, 0x02, 0x00, 0x00],
            protocol("first packet is not CONNECT"),
        ),
        (
            "first packet not CONNECT, one byte",
            None,
            &[0xC0],
            protocol("first packet is not CONNECT"),
        ),
        (
            "second CONNECT",
            Some(V311),
            &[0x10],
            protocol("second CONNECT"),
        ),
        (
            "AUTH in 3.1.1",
            Some(V311),
            &[0xF0, 0x00],
            malformed("reserved packet type 15"),
        ),
        (
            "PUBLISH QoS 3",
            Some(V5),
            &[0x36],
            malformed("PUBLISH with QoS 3"),
        ),
        (
            "PUBLISH DUP QoS 0",
            Some(V311),
            &[0x38],
            malformed("PUBLISH with DUP and QoS 0"),
        ),
        (
            "remaining length with a fifth byte",
            Some(V5),
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            malformed("variable byte integer longer than four bytes"),
        ),
        (
            "remaining length non-minimal",
            Some(V5),
            &[0xC0, 0x80, 0x00],
            malformed("variable byte integer not in its shortest form"),
        ),
        (
            "PINGREQ with a body",
            Some(V311),
            &[0xC0, 0x01, 0x00],
            TRAILING,
        ),
        (
            "PINGRESP with a body",
            Some(V5),
            &[0xD0, 0x01, 0x00],
            TRAILING,
        ),
        // --- CONNECT ---
        (
            "MQIsdp level 3",
            None,
            &[
                0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
                0x00, 0x00,
            ],
            DecodeError::UnsupportedProtocolVersion(3),
        ),
        (
            "MQTT level 3",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
            DecodeError::UnsupportedProtocolVersion(3),
        ),
        (
            "MQTT level 6",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
            DecodeError::UnsupportedProtocolVersion(6),
        ),
        (
            "other protocol name",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
            DecodeError::UnsupportedProtocolVersion(4),
        ),
        (
            "protocol name past the end",
            None,
            &[0x10, 0x03, 0x00, 0x04, b'M'],
            TRUNCATED,
        ),
        (
            "CONNECT reserved flag",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00,
            ],
            malformed("CONNECT reserved flag set"),
        ),
        (
            "will QoS without will flag",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x0A, 0x00, 0x3C, 0x00, 0x00,
            ],
            malformed("will QoS or retain set without will flag"),
        ),
        (
            "will retain without will flag",
            None,
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x22, 0x00, 0x3C, 0x00, 0x00,
                0x00,
            ],
            malformed("will QoS or retain set without will flag"),
        ),
        (
            "will QoS 3",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x00,
            ],
            malformed("will QoS 3"),
        ),
        (
            "3.1.1 password without user name",
            None,
            &[
                0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x3C, 0x00, 0x00,
                0x00, 0x01, b'p',
            ],
            malformed("password flag without user name flag"),
        ),
        (
            "will topic with a wildcard",
            None,
            &[
                0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x3C, 0x00, 0x00,
                0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00,
            ],
            DecodeError::TopicNameInvalid("will topic is not a topic name"),
        ),
        (
            "client id with U+0000",
            None,
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01,
                0x00,
            ],
            malformed("string contains U+0000"),
        ),
        (
            "client id not UTF-8",
            None,
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01,
                0xFF,
            ],
            malformed("string is not well-formed UTF-8"),
        ),
        (
            "client id past the end",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x05,
            ],
            TRUNCATED,
        ),
        (
            "user name flag without user name",
            None,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x82, 0x00, 0x3C, 0x00, 0x00,
            ],
            TRUNCATED,
        ),
        (
            "CONNECT trailing byte",
            None,
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
                0x00,
            ],
            TRAILING,
        ),
        (
            "v5 CONNECT with topic alias",
            None,
            &[
                0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x03, 0x23,
                0x00, 0x01, 0x00, 0x00,
            ],
            not_allowed.clone(),
        ),
        (
            "v5 CONNECT receive maximum 0",
            None,
            &[
                0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x03, 0x21,
                0x00, 0x00, 0x00, 0x00,
            ],
            protocol("property value 0 is not allowed"),
        ),
        (
            "v5 CONNECT maximum packet size 0",
            None,
            &[
                0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x27,
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
            protocol("maximum packet size 0"),
        ),
        (
            "v5 CONNECT duplicate session expiry",
            None,
            &[
                0x10, 0x17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x0A, 0x11,
                0x00, 0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            ],
            protocol("duplicate property"),
        ),
        (
            "v5 CONNECT request problem information 2",
            None,
            &[
                0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x02, 0x17,
                0x02, 0x00, 0x00,
            ],
            protocol("property value must be 0 or 1"),
        ),
        (
            "v5 CONNECT property length past the end",
            None,
            &[
                0x10, 0x0B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x7F,
            ],
            TRUNCATED,
        ),
        (
            "v5 will properties with session expiry",
            None,
            &[
                0x10, 0x18, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00,
                0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b't', 0x00, 0x00,
            ][..],
            not_allowed.clone(),
        ),
        // --- CONNACK ---
        (
            "CONNACK reserved flags",
            Some(V311),
            &[0x20, 0x02, 0x02, 0x00],
            malformed("CONNACK reserved flags set"),
        ),
        (
            "3.1.1 CONNACK return code 6",
            Some(V311),
            &[0x20, 0x02, 0x00, 0x06],
            malformed("reserved CONNACK return code"),
        ),
        (
            "v5 CONNACK without properties",
            Some(V5),
            &[0x20, 0x02, 0x00, 0x00],
            TRUNCATED,
        ),
        // --- PUBLISH ---
        (
            "topic with +",
            Some(V311),
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
            DecodeError::TopicNameInvalid("wildcard in topic name"),
        ),
        (
            "topic with #",
            Some(V5),
            &[0x30, 0x04, 0x00, 0x01, b'#', 0x00],
            DecodeError::TopicNameInvalid("wildcard in topic name"),
        ),
        (
            "3.1.1 empty topic",
            Some(V311),
            &[0x30, 0x02, 0x00, 0x00],
            DecodeError::TopicNameInvalid("empty topic name"),
        ),
        (
            "v5 empty topic without alias",
            Some(V5),
            &[0x30, 0x03, 0x00, 0x00, 0x00],
            DecodeError::TopicNameInvalid("empty topic name"),
        ),
        (
            "PUBLISH packet identifier 0",
            Some(V311),
            &[0x32, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00],
            malformed("packet identifier 0"),
        ),
        (
            "PUBLISH QoS 1 without packet identifier",
            Some(V311),
            &[0x32, 0x04, 0x00, 0x02, b'a', b'b'],
            TRUNCATED,
        ),
        (
            "topic length past the end",
            Some(V311),
            &[0x30, 0x03, 0x00, 0x05, b'a'],
            TRUNCATED,
        ),
        (
            "topic with U+0000",
            Some(V311),
            &[0x30, 0x03, 0x00, 0x01, 0x00],
            malformed("string contains U+0000"),
        ),
        (
            "v5 PUBLISH with session expiry",
            Some(V5),
            &[
                0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01,
            ],
            not_allowed.clone(),
        ),
        (
            "v5 topic alias 0",
            Some(V5),
            &[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x00],
            protocol("property value 0 is not allowed"),
        ),
        (
            "v5 subscription identifier 0",
            Some(V5),
            &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x00],
            protocol("subscription identifier 0"),
        ),
        (
            "v5 payload format 2",
            Some(V5),
            &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02],
            protocol("property value must be 0 or 1"),
        ),
        (
            "v5 PUBLISH without property length",
            Some(V5),
            &[0x30, 0x03, 0x00, 0x01, b't'],
            TRUNCATED,
        ),
        // --- PUBACK, PUBREC, PUBREL, PUBCOMP ---
        (
            "PUBACK packet identifier 0",
            Some(V5),
            &[0x40, 0x02, 0x00, 0x00],
            malformed("packet identifier 0"),
        ),
        (
            "PUBREC packet identifier 0",
            Some(V311),
            &[0x50, 0x02, 0x00, 0x00],
            malformed("packet identifier 0"),
        ),
        (
            "3.1.1 PUBACK with a reason",
            Some(V311),
            &[0x40, 0x03, 0x00, 0x01, 0x00],
            TRAILING,
        ),
        (
            "PUBCOMP truncated",
            Some(V311),
            &[0x70, 0x01, 0x00],
            TRUNCATED,
        ),
        (
            "v5 PUBACK with topic alias",
            Some(V5),
            &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            not_allowed.clone(),
        ),
        (
            "v5 PUBREL property length past the end",
            Some(V5),
            &[0x62, 0x05, 0x00, 0x01, 0x00, 0x05, 0x1F],
            TRUNCATED,
        ),
        // --- SUBSCRIBE ---
        (
            "3.1.1 SUBSCRIBE without filters",
            Some(V311),
            &[0x82, 0x02, 0x00, 0x01],
            protocol("SUBSCRIBE without a topic filter"),
        ),
        (
            "v5 SUBSCRIBE without filters",
            Some(V5),
            &[0x82, 0x03, 0x00, 0x01, 0x00],
            protocol("SUBSCRIBE without a topic filter"),
        ),
        (
            "3.1.1 requested QoS upper bits",
            Some(V311),
            &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x04],
            malformed("reserved bits set in requested QoS"),
        ),
        (
            "3.1.1 requested QoS 3",
            Some(V311),
            &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x03],
            malformed("subscription QoS 3"),
        ),
        (
            "v5 subscription QoS 3",
            Some(V5),
            &[
                0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x03,
            ],
            malformed("subscription QoS 3"),
        ),
        (
            "v5 retain handling 3",
            Some(V5),
            &[
                0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x30,
            ],
            malformed("retain handling 3"),
        ),
        (
            "v5 subscription options reserved bits",
            Some(V5),
            &[
                0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x40,
            ],
            malformed("reserved bits set in subscription options"),
        ),
        (
            "SUBSCRIBE packet identifier 0",
            Some(V311),
            &[0x82, 0x08, 0x00, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x00],
            malformed("packet identifier 0"),
        ),
        (
            "SUBSCRIBE filter without options",
            Some(V311),
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b'],
            TRUNCATED,
        ),
        (
            "v5 SUBSCRIBE two subscription identifiers",
            Some(V5),
            &[
                0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
            ][..],
            protocol("duplicate property"),
        ),
        // --- SUBACK ---
        (
            "3.1.1 SUBACK return code 3",
            Some(V311),
            &[0x90, 0x03, 0x00, 0x01, 0x03],
            malformed("reserved SUBACK return code"),
        ),
        (
            "SUBACK without reason codes",
            Some(V311),
            &[0x90, 0x02, 0x00, 0x01],
            protocol("SUBACK without a reason code"),
        ),
        // --- UNSUBSCRIBE, UNSUBACK ---
        (
            "UNSUBSCRIBE without filters",
            Some(V311),
            &[0xA2, 0x02, 0x00, 0x01],
            protocol("UNSUBSCRIBE without a topic filter"),
        ),
        (
            "v5 UNSUBSCRIBE with subscription identifier",
            Some(V5),
            &[0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b'a'],
            not_allowed.clone(),
        ),
        (
            "3.1.1 UNSUBACK with a reason",
            Some(V311),
            &[0xB0, 0x03, 0x00, 0x01, 0x00],
            TRAILING,
        ),
        (
            "v5 UNSUBACK without reason codes",
            Some(V5),
            &[0xB0, 0x03, 0x00, 0x01, 0x00],
            protocol("UNSUBACK without a reason code"),
        ),
        // --- DISCONNECT, AUTH ---
        (
            "3.1.1 DISCONNECT with a body",
            Some(V311),
            &[0xE0, 0x01, 0x00],
            TRAILING,
        ),
        (
            "v5 DISCONNECT with topic alias",
            Some(V5),
            &[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01],
            not_allowed.clone(),
        ),
        (
            "v5 AUTH with a reason only",
            Some(V5),
            &[0xF0, 0x01, 0x18],
            TRUNCATED,
        ),
        (
            "v5 AUTH with session expiry",
            Some(V5),
            &[0xF0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01],
            not_allowed.clone(),
        ),
        (
            "v5 AUTH data without method",
            Some(V5),
            &[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0x01],
            protocol("authentication data without authentication method"),
        ),
    ];
    for (name, version, bytes, want) in cases {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode(&mut buf, version, &LIMITS),
            Err(want.clone()),
            "{name}: {bytes:02x?}"
        );
    }
}

#[test]
fn fixed_header_flags() {
    // (type nibble, the only legal flags)
    let table: &[(u8, u8)] = &[
        (2, 0),
        (4, 0),
        (5, 0),
        (6, 2),
        (7, 0),
        (8, 2),
        (9, 0),
        (10, 2),
        (11, 0),
        (12, 0),
        (13, 0),
        (14, 0),
        (15, 0),
    ];
    for &(packet_type, legal) in table {
        for flags in 0..16u8 {
            let mut buf = BytesMut::from(&[packet_type << 4 | flags][..]);
            let got = decode(&mut buf, Some(V5), &LIMITS);
            if flags == legal {
                assert_eq!(got, Ok(None), "type {packet_type} flags {flags:04b}");
            } else {
                assert_eq!(
                    got,
                    Err(malformed("invalid fixed header flags")),
                    "type {packet_type} flags {flags:04b}"
                );
            }
        }
    }
    for flags in 1..16u8 {
        let mut buf = BytesMut::from(&[0x10 | flags][..]);
        assert_eq!(
            decode(&mut buf, None, &LIMITS),
            Err(malformed("invalid fixed header flags"))
        );
    }
}

#[test]
fn packet_too_large_from_the_header_alone() {
    let limits = DecodeLimits {
        max_packet_size: 100,
    };
    let too_large = |size| DecodeError::PacketTooLarge { size, max: 100 };
    // (version, the only bytes buffered, Some(announced size) if refused, None if waiting)
    let cases: &[(Option<ProtocolVersion>, &[u8], Option<usize>)] = &[
        // Two header bytes: 1 + 1 + 99 = 101 > 100.
        (Some(V5), &[0x30, 0x63], Some(101)),
        // Exactly the maximum is fine: wait for the body.
        (Some(V5), &[0x30, 0x62], None),
        (Some(V311), &[0x30, 0x80, 0x01], Some(131)),
        (
            Some(V311),
            &[0x32, 0xFF, 0xFF, 0x7F],
            Some(1 + 3 + 2_097_151),
        ),
        // Five header bytes, the largest remaining length there is.
        (
            Some(V5),
            &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            Some(1 + 4 + MAX_REMAINING_LENGTH),
        ),
        (
            None,
            &[0x10, 0xFF, 0xFF, 0xFF, 0x7F],
            Some(1 + 4 + MAX_REMAINING_LENGTH),
        ),
        (Some(V5), &[0xE0, 0xFF, 0xFF, 0x01], Some(1 + 3 + 32_767)),
        // The varint is not finished yet: nothing to judge.
        (Some(V5), &[0x30, 0xFF, 0xFF, 0xFF], None),
    ];
    for (version, bytes, refused) in cases {
        let mut buf = BytesMut::from(*bytes);
        let want = match refused {
            Some(size) => Err(too_large(*size)),
            None => Ok(None),
        };
        assert_eq!(decode(&mut buf, *version, &limits), want, "{bytes:02x?}");
    }
    assert_eq!(too_large(101).reason_code(), ReasonCode::PACKET_TOO_LARGE);
}

#[test]
fn reason_codes() {
    assert_eq!(malformed("x").reason_code(), ReasonCode(0x81));
    assert_eq!(protocol("x").reason_code(), ReasonCode(0x82));
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(3).reason_code(),
        ReasonCode(0x84)
    );
    assert_eq!(
        DecodeError::TopicNameInvalid("x").reason_code(),
        ReasonCode(0x90)
    );
}

#[test]
fn decodes_one_packet_at_a_time() {
    let mut buf = BytesMut::new();
    let first = Packet::Publish(publish(QoS::AtLeastOnce, Some(3), "a", b"12345"));
    let second = pubresp(PubRespKind::PubRel, 3, 0, none());
    encode(&first, V311, &mut buf).unwrap();
    encode(&second, V311, &mut buf).unwrap();
    buf.extend_from_slice(&[0xC0]);
    assert_eq!(decode(&mut buf, Some(V311), &LIMITS), Ok(Some(first)));
    assert_eq!(decode(&mut buf, Some(V311), &LIMITS), Ok(Some(second)));
    assert_eq!(decode(&mut buf, Some(V311), &LIMITS), Ok(None));
    assert_eq!(&buf[..], &[0xC0]);
    buf.extend_from_slice(&[0x00]);
    assert_eq!(
        decode(&mut buf, Some(V311), &LIMITS),
        Ok(Some(Packet::PingReq))
    );
    assert!(buf.is_empty());
}

#[test]
fn publish_payload_is_zero_copy() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x01, b't', b'a', b'b', b'c', b'd'][..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(V311), &LIMITS).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(&p.payload[..], b"abcd");
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
}

// ---------------------------------------------------------------------------------------------
// Encoder

#[test]
fn connack_return_codes_v311() {
    let table: &[(u8, u8)] = &[
        (0x00, 0x00),
        (0x84, 0x01),
        (0x85, 0x02),
        (0x88, 0x03),
        (0x89, 0x03),
        (0x86, 0x04),
        (0x87, 0x05),
        (0x80, 0x05),
        (0x8A, 0x05),
        (0x9F, 0x05),
    ];
    for &(reason, code) in table {
        assert_eq!(connack_return_code_v311(ReasonCode(reason)), code);
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode(reason),
            properties: Properties {
                reason_string: Some(s("left out under 3.1.1")),
                ..none()
            },
        });
        assert_eq!(encode_vec(&p, V311), vec![0x20, 0x02, 0x00, code]);
    }
}

#[test]
fn v311_leaves_out_v5_fields() {
    let props = Properties {
        reason_string: Some(s("x")),
        user_properties: vec![(s("k"), s("v"))],
        ..none()
    };
    let suback = Packet::SubAck(SubAck {
        packet_id: pid(1),
        properties: props.clone(),
        reasons: vec![
            ReasonCode(0),
            ReasonCode(2),
            ReasonCode(0x8F),
            ReasonCode(0x97),
        ],
    });
    assert_eq!(
        encode_vec(&suback, V311),
        vec![0x90, 0x06, 0x00, 0x01, 0x00, 0x02, 0x80, 0x80]
    );
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: pid(1),
        properties: props.clone(),
        reasons: vec![ReasonCode(0x11)],
    });
    assert_eq!(encode_vec(&unsuback, V311), vec![0xB0, 0x02, 0x00, 0x01]);
    let puback = pubresp(PubRespKind::PubAck, 1, 0x10, props.clone());
    assert_eq!(encode_vec(&puback, V311), vec![0x40, 0x02, 0x00, 0x01]);
    let disconnect = Packet::Disconnect(Disconnect {
        reason: ReasonCode(0x8E),
        properties: props.clone(),
    });
    assert_eq!(encode_vec(&disconnect, V311), vec![0xE0, 0x00]);
    let publish = Packet::Publish(Publish {
        properties: Properties {
            topic_alias: Some(1),
            ..props
        },
        ..publish(QoS::AtMostOnce, None, "t", b"")
    });
    assert_eq!(
        encode_vec(&publish, V311),
        vec![0x30, 0x03, 0x00, 0x01, b't']
    );
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: none(),
        filters: vec![SubscribeFilter {
            filter: s("t"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::Never,
            },
        }],
    });
    assert_eq!(
        encode_vec(&subscribe, V311),
        vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x02]
    );
}

#[test]
fn encoder_errors_leave_the_buffer_alone() {
    let auth = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: none(),
    });
    let long = "a".repeat(65_536);
    let cases: Vec<(Packet, ProtocolVersion, EncodeError)> = vec![
        (auth, V311, EncodeError::NotInVersion("AUTH")),
        (
            Packet::Publish(publish(QoS::AtMostOnce, None, &long, b"")),
            V5,
            EncodeError::StringTooLong,
        ),
        (
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: false,
                keep_alive: 0,
                properties: none(),
                client_id: s("c"),
                will: None,
                username: None,
                password: Some(Bytes::from(vec![0; 65_536])),
            })),
            V5,
            EncodeError::BinaryTooLong,
        ),
        (
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: false,
                keep_alive: 0,
                properties: none(),
                client_id: s("c"),
                will: None,
                username: None,
                password: Some(b(b"p")),
            })),
            V311,
            EncodeError::NotInVersion("password without user name"),
        ),
        (
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: false,
                keep_alive: 0,
                properties: none(),
                client_id: s("c"),
                will: None,
                username: None,
                password: None,
            })),
            V5,
            EncodeError::InvalidPacket("CONNECT protocol differs from the encoding version"),
        ),
        (
            Packet::Publish(publish(QoS::AtLeastOnce, None, "t", b"")),
            V311,
            EncodeError::InvalidPacket(
                "PUBLISH packet identifier must be present exactly when QoS > 0",
            ),
        ),
        (
            Packet::Publish(publish(QoS::AtMostOnce, Some(1), "t", b"")),
            V311,
            EncodeError::InvalidPacket(
                "PUBLISH packet identifier must be present exactly when QoS > 0",
            ),
        ),
        (
            Packet::Publish(Publish {
                dup: true,
                ..publish(QoS::AtMostOnce, None, "t", b"")
            }),
            V5,
            EncodeError::InvalidPacket("DUP set on a QoS 0 PUBLISH"),
        ),
        (
            Packet::Publish(Publish {
                properties: Properties {
                    subscription_identifiers: vec![1, 268_435_456],
                    ..none()
                },
                ..publish(QoS::AtMostOnce, None, "t", b"")
            }),
            V5,
            EncodeError::VarIntTooLarge(268_435_456),
        ),
        (
            Packet::Publish(Publish {
                properties: Properties {
                    session_expiry_interval: Some(1),
                    ..none()
                },
                ..publish(QoS::AtMostOnce, None, "t", b"")
            }),
            V5,
            EncodeError::PropertyNotAllowed {
                id: 0x11,
                packet: "PUBLISH",
            },
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: none(),
                filters: vec![],
            }),
            V311,
            EncodeError::InvalidPacket("SUBSCRIBE without a topic filter"),
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                properties: none(),
                reasons: vec![],
            }),
            V5,
            EncodeError::InvalidPacket("UNSUBACK without a reason code"),
        ),
    ];
    for (packet, version, want) in cases {
        let mut out = BytesMut::from(&b"kept"[..]);
        assert_eq!(
            encode(&packet, version, &mut out),
            Err(want.clone()),
            "{packet:?}"
        );
        assert_eq!(&out[..], b"kept");
        assert_eq!(encoded_len(&packet, version), Err(want));
    }
}

#[test]
fn encode_appends_and_counts() {
    let mut out = BytesMut::from(&b"xy"[..]);
    let n = encode(&Packet::PingResp, V5, &mut out).unwrap();
    assert_eq!(n, 2);
    assert_eq!(&out[..], &[b'x', b'y', 0xD0, 0x00]);
}

#[test]
fn oversize_body_is_refused() {
    // A zeroed allocation is not touched by `encoded_len`, so this costs no real memory.
    let payload = Bytes::from(vec![0u8; MAX_REMAINING_LENGTH]);
    let p = Packet::Publish(Publish {
        payload,
        ..publish(QoS::AtMostOnce, None, "t", b"")
    });
    assert_eq!(
        encoded_len(&p, V311),
        Err(EncodeError::PacketTooLarge(MAX_REMAINING_LENGTH + 3))
    );
}

#[test]
fn largest_varint_lengths() {
    // A PUBLISH whose remaining length needs 3 bytes round-trips.
    let payload = Bytes::from(vec![7u8; 20_000]);
    let p = Packet::Publish(Publish {
        payload,
        ..publish(QoS::AtLeastOnce, Some(9), "big", b"")
    });
    let bytes = encode_vec(&p, V5);
    assert_eq!(&bytes[..4], &[0x32, 0xA8, 0x9C, 0x01]);
    assert_eq!(decode_one(&bytes, Some(V5)), Ok(p));
}

// ---------------------------------------------------------------------------------------------
// Property-based tests

fn text() -> impl Strategy<Value = String> {
    // Any characters but controls (so never U+0000), including multi-byte ones.
    "\\PC{0,8}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9$/ é]{1,12}".prop_filter("not a wildcard", |t| !t.contains(['+', '#']))
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).unwrap())
}

fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

/// Properties with legal values, only those `ctx` allows.
fn properties(version: ProtocolVersion, ctx: Context) -> BoxedStrategy<Properties> {
    if version == V311 {
        return Just(Properties::default()).boxed();
    }
    let a = (
        flag(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
    );
    let b_ = (
        option::of(text()),
        option::of(binary()),
        flag(),
        option::of(any::<u32>()),
        flag(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1u16..),
    );
    let c = (
        option::of(any::<u16>()),
        option::of(1u16..),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1u32..),
        flag(),
        flag(),
        flag(),
    );
    (a, b_, c)
        .prop_map(move |(a, b_, c)| {
            let p = Properties {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: b_.0,
                authentication_data: b_.1,
                request_problem_information: b_.2,
                will_delay_interval: b_.3,
                request_response_information: b_.4,
                response_information: b_.5,
                server_reference: b_.6,
                reason_string: b_.7,
                receive_maximum: b_.8,
                topic_alias_maximum: c.0,
                topic_alias: c.1,
                maximum_qos: c.2,
                retain_available: c.3,
                user_properties: c.4,
                maximum_packet_size: c.5,
                wildcard_subscription_available: c.6,
                subscription_identifier_available: c.7,
                shared_subscription_available: c.8,
            };
            restrict(p, ctx)
        })
        .boxed()
}

/// Clears what `ctx` does not allow, and what would be a protocol error.
fn restrict(mut p: Properties, ctx: Context) -> Properties {
    let ok = |id| allowed(id, ctx);
    macro_rules! keep {
        ($($id:literal => $field:ident),* $(,)?) => {
            $(if !ok($id) { p.$field = Default::default(); })*
        };
    }
    keep!(
        0x01 => payload_format_indicator,
        0x02 => message_expiry_interval,
        0x03 => content_type,
        0x08 => response_topic,
        0x09 => correlation_data,
        0x0B => subscription_identifiers,
        0x11 => session_expiry_interval,
        0x12 => assigned_client_identifier,
        0x13 => server_keep_alive,
        0x15 => authentication_method,
        0x16 => authentication_data,
        0x17 => request_problem_information,
        0x18 => will_delay_interval,
        0x19 => request_response_information,
        0x1A => response_information,
        0x1C => server_reference,
        0x1F => reason_string,
        0x21 => receive_maximum,
        0x22 => topic_alias_maximum,
        0x23 => topic_alias,
        0x24 => maximum_qos,
        0x25 => retain_available,
        0x26 => user_properties,
        0x27 => maximum_packet_size,
        0x28 => wildcard_subscription_available,
        0x29 => subscription_identifier_available,
        0x2A => shared_subscription_available,
    );
    if ctx == Context::Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p
}

fn will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(version, Context::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        properties(version, Context::Connect),
        text(),
        option::of(will(version)),
        option::of(text()),
        option::of(binary()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.1.1 has no password without a user name.
                let username = match (version, &username, &password) {
                    (V311, None, Some(_)) => Some(s("u")),
                    _ => username,
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version == V311 {
        // The reasons that survive the 3.1.1 return code mapping unchanged.
        proptest::sample::select(vec![0x00, 0x84, 0x85, 0x86, 0x87, 0x88])
            .prop_map(ReasonCode)
            .boxed()
    } else {
        reason().boxed()
    };
    (any::<bool>(), reason, properties(version, Context::ConnAck)).prop_map(
        |(session_present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        },
    )
}

fn publish_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        properties(version, Context::Publish),
        vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, alias_only)| {
                let qos0 = qos == QoS::AtMostOnce;
                // 5.0: an empty topic name stands for the topic alias.
                let topic = if alias_only && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { None } else { Some(id) },
                    properties,
                    payload: Bytes::from(payload),
                })
            },
        )
}

fn pubresp_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let kind = prop_oneof![
        Just(PubRespKind::PubAck),
        Just(PubRespKind::PubRec),
        Just(PubRespKind::PubRel),
        Just(PubRespKind::PubComp)
    ];
    (
        kind,
        packet_id(),
        reason(),
        properties(version, Context::PubResp),
    )
        .prop_map(move |(kind, packet_id, reason, properties)| {
            Packet::PubResp(PubResp {
                kind,
                packet_id,
                reason: if version == V311 {
                    ReasonCode::SUCCESS
                } else {
                    reason
                },
                properties,
            })
        })
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscribe),
        Just(RetainHandling::Never)
    ];
    (qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version == V311 {
                SubscriptionOptions::with_qos(qos)
            } else {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let filter = (text(), subscription_options(version))
        .prop_map(|(filter, options)| SubscribeFilter { filter, options });
    (
        packet_id(),
        properties(version, Context::Subscribe),
        vec(filter, 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version == V311 {
        proptest::sample::select(vec![0x00, 0x01, 0x02, 0x80])
            .prop_map(ReasonCode)
            .boxed()
    } else {
        reason().boxed()
    };
    (
        packet_id(),
        properties(version, Context::SubAck),
        vec(reason, 1..4),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(version, Context::Unsubscribe),
        vec(text(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(version, Context::UnsubAck),
        vec(reason(), 1..4),
    )
        .prop_map(move |(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons: if version == V311 { vec![] } else { reasons },
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (reason(), properties(version, Context::Disconnect)).prop_map(move |(reason, properties)| {
        Packet::Disconnect(Disconnect {
            reason: if version == V311 {
                ReasonCode::NORMAL_DISCONNECTION
            } else {
                reason
            },
            properties,
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(), properties(V5, Context::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any packet that round-trips under `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish_packet(version),
        pubresp_packet(version),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version == V5 {
        prop_oneof![10 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V311), Just(V5)]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

/// Decodes until more bytes are needed or an error; anything decoded must re-encode and decode
/// to the same packet. This is also what the fuzz target checks.
fn decode_stream(bytes: &[u8], mut version: Option<ProtocolVersion>, limits: &DecodeLimits) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(p)) = decode(&mut buf, version, limits) {
        let v = match (&p, version) {
            (Packet::Connect(c), _) => c.protocol,
            (_, Some(v)) => v,
            (_, None) => panic!("non-CONNECT decoded before CONNECT"),
        };
        let mut again = BytesMut::new();
        encode(&p, v, &mut again).unwrap();
        assert_eq!(decode_one(&again, version), Ok(p));
        version = Some(v);
    }
}

proptest! {
    #[test]
    fn round_trip((v, p) in versioned_packet()) {
        let bytes = encode_vec(&p, v);
        let dv = decode_version(&p, v);
        prop_assert_eq!(decode_one(&bytes, dv), Ok(p));
        // Every strict prefix asks for more and leaves the buffer alone.
        for len in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..len]);
            prop_assert_eq!(decode(&mut buf, dv, &LIMITS), Ok(None));
            prop_assert_eq!(&buf[..], &bytes[..len]);
        }
    }

    #[test]
    fn streams_of_packets(
        (v, packets) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..6))),
    ) {
        // Several packets in one buffer come out one at a time, in order.
        let packets: Vec<Packet> = packets
            .into_iter()
            .filter(|p| !matches!(p, Packet::Connect(_)))
            .collect();
        let mut buf = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut buf).unwrap();
        }
        for p in &packets {
            prop_assert_eq!(decode(&mut buf, Some(v), &LIMITS), Ok(Some(p.clone())));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), max in prop_oneof![Just(64u32), Just(1 << 20)]) {
        let limits = DecodeLimits { max_packet_size: max };
        decode_stream(&bytes, None, &limits);
        decode_stream(&bytes, Some(V311), &limits);
        decode_stream(&bytes, Some(V5), &limits);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        first in any::<u8>(),
        bytes in vec(any::<u8>(), 0..256),
    ) {
        // A plausible first byte and a remaining length that fits, so bodies get parsed.
        let mut input = vec![first, u8::try_from(bytes.len().min(127)).unwrap()];
        input.extend_from_slice(&bytes);
        decode_stream(&input, Some(V311), &LIMITS);
        decode_stream(&input, Some(V5), &LIMITS);
        input[0] = 0x10;
        decode_stream(&input, None, &LIMITS);
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_vec(&p, v);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        decode_stream(&bytes, decode_version(&p, v), &LIMITS);
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz corpus

/// Writes the seed corpus for `fuzz/fuzz_targets/mqtt_decode.rs`: the first byte selects the
/// version (0 before CONNECT, 1 = 3.1.1, 2 = 5.0), the rest is packets. Run with
/// `cargo test -p converge-broker write_fuzz_corpus -- --ignored`; set CONVERGE_FUZZ_CORPUS to
/// write elsewhere.
#[test]
#[ignore = "writes files; run by hand to refresh fuzz/corpus/mqtt_decode"]
fn write_fuzz_corpus() {
    let dir = std::env::var("CONVERGE_FUZZ_CORPUS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/mqtt_decode").to_owned()
    });
    std::fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::HashSet::new();
    for g in goldens() {
        // One seed per packet type and version keeps the corpus small.
        if !seen.insert((g.version, g.packet.name())) {
            continue;
        }
        let selector = match (&g.packet, g.version) {
            (Packet::Connect(_), _) => 0,
            (_, V311) => 1,
            (_, V5) => 2,
        };
        let mut data = vec![selector];
        data.extend_from_slice(g.bytes);
        std::fs::write(format!("{dir}/{}", g.name), data).unwrap();
    }
    // Whole sessions: CONNECT, then packets in the version it chose.
    for (name, version) in [("v311-session", V311), ("v5-session", V5)] {
        let mut data = vec![0u8];
        for g in goldens() {
            let wanted = matches!(
                g.packet,
                Packet::Connect(_)
                    | Packet::Subscribe(_)
                    | Packet::Publish(_)
                    | Packet::PingReq
                    | Packet::Disconnect(_)
            );
            if g.version == version
                && wanted
                && !(matches!(g.packet, Packet::Connect(_)) && data.len() > 1)
            {
                data.extend_from_slice(g.bytes);
            }
        }
        std::fs::write(format!("{dir}/{name}"), data).unwrap();
    }
}
