//! Fuzzes `mqtt::codec::decode` on a stream of bytes from a peer.
//!
//! The first input byte selects the state (`% 3`): 0 = before CONNECT, 1 = MQTT 3.1.1,
//! 2 = MQTT 5.0; the rest is decoded packet after packet until more bytes are needed or an
//! error. Beyond "never panics", every packet that decodes must encode again and decode to
//! the same value, so decoder and encoder agree on what a legal packet is.

#![no_main]

use bytes::BytesMut;
use converge_broker::mqtt::codec::{decode, encode, DecodeLimits};
use converge_broker::mqtt::packet::{Packet, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer also reaches `PacketTooLarge`.
const LIMITS: DecodeLimits = DecodeLimits {
    max_packet_size: 64 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut version = match selector % 3 {
        0 => None,
        1 => Some(ProtocolVersion::V311),
        _ => Some(ProtocolVersion::V5),
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(packet)) = decode(&mut buf, version, &LIMITS) {
        let negotiated = match (&packet, version) {
            (Packet::Connect(connect), _) => connect.protocol,
            (_, Some(v)) => v,
            (_, None) => panic!("decoded {} before CONNECT", packet.name()),
        };
        let mut again = BytesMut::new();
        if let Err(e) = encode(&packet, negotiated, &mut again) {
            panic!("decoded {packet:?} does not encode: {e}");
        }
        let unlimited = DecodeLimits {
            max_packet_size: u32::MAX,
        };
        match decode(&mut again, version, &unlimited) {
            Ok(Some(round_tripped)) => assert_eq!(round_tripped, packet),
            other => panic!("re-encoded {packet:?} decodes to {other:?}"),
        }
        assert!(again.is_empty(), "re-encoded packet left bytes behind");
        version = Some(negotiated);
    }
});
