//! Codec throughput: decode and encode of one PUBLISH, the packet on the hot path.
//!
//! Cases: MQTT 3.1.1 and MQTT 5 (with a message expiry, a content type and a user property),
//! each with a 64-byte and a 1 KiB payload. Decode includes copying the encoded bytes into a
//! fresh receive buffer (`iter_batched` setup, not timed); encode reuses one output buffer.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use converge_broker::mqtt::codec::{decode, encode, DecodeLimits};
use converge_broker::mqtt::packet::{Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const LIMITS: DecodeLimits = DecodeLimits {
    max_packet_size: 1 << 20,
};

fn publish(version: ProtocolVersion, payload_len: usize) -> Packet {
    let properties = match version {
        ProtocolVersion::V311 => Properties::default(),
        ProtocolVersion::V5 => Properties {
            message_expiry_interval: Some(3_600),
            content_type: Some("application/json".to_owned()),
            user_properties: vec![("site".to_owned(), "plant-7".to_owned())],
            ..Properties::default()
        },
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "plant-7/line-3/press-12/temperature".to_owned(),
        packet_id: PacketId::new(42),
        properties,
        payload: Bytes::from(vec![0x5A; payload_len]),
    })
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("v311/64B", ProtocolVersion::V311, 64),
        ("v311/1KiB", ProtocolVersion::V311, 1024),
        ("v5/64B", ProtocolVersion::V5, 64),
        ("v5/1KiB", ProtocolVersion::V5, 1024),
    ];
    let mut group = c.benchmark_group("publish");
    for (name, version, payload_len) in cases {
        let packet = publish(version, payload_len);
        let mut encoded = BytesMut::new();
        let len = encode(&packet, version, &mut encoded).expect("benchmark packet encodes");
        let encoded = encoded.freeze();
        group.throughput(Throughput::Bytes(u64::try_from(len).unwrap_or(u64::MAX)));

        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&encoded[..]),
                |mut buf| decode(black_box(&mut buf), Some(version), &LIMITS),
                BatchSize::SmallInput,
            )
        });

        let mut out = BytesMut::with_capacity(2 * len);
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&packet), version, &mut out)
            })
        });
    }
    group.finish();
}

/// The same packets through rumqttc's codec (mqttbytes), the peer measured in the same run.
fn peer_rumqttc(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_rumqttc");
    for (name, version, payload_len) in [
        ("v311/64B", ProtocolVersion::V311, 64),
        ("v311/1KiB", ProtocolVersion::V311, 1024),
        ("v5/64B", ProtocolVersion::V5, 64),
        ("v5/1KiB", ProtocolVersion::V5, 1024),
    ] {
        let mut encoded = BytesMut::new();
        encode(&publish(version, payload_len), version, &mut encoded).expect("encodes");
        let encoded = encoded.freeze();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        match version {
            ProtocolVersion::V311 => {
                let packet = rumqttc::mqttbytes::v4::Packet::read(
                    &mut BytesMut::from(&encoded[..]),
                    1 << 20,
                )
                .expect("rumqttc decodes our PUBLISH");
                group.bench_function(format!("decode/{name}"), |b| {
                    b.iter_batched(
                        || BytesMut::from(&encoded[..]),
                        |mut buf| {
                            rumqttc::mqttbytes::v4::Packet::read(black_box(&mut buf), 1 << 20)
                        },
                        BatchSize::SmallInput,
                    )
                });
                let mut out = BytesMut::with_capacity(2 * encoded.len());
                group.bench_function(format!("encode/{name}"), |b| {
                    b.iter(|| {
                        out.clear();
                        black_box(&packet).write(&mut out, 1 << 20)
                    })
                });
            }
            ProtocolVersion::V5 => {
                let packet = rumqttc::v5::mqttbytes::v5::Packet::read(
                    &mut BytesMut::from(&encoded[..]),
                    Some(1 << 20),
                )
                .expect("rumqttc decodes our PUBLISH");
                group.bench_function(format!("decode/{name}"), |b| {
                    b.iter_batched(
                        || BytesMut::from(&encoded[..]),
                        |mut buf| {
                            rumqttc::v5::mqttbytes::v5::Packet::read(
                                black_box(&mut buf),
                                Some(1 << 20),
                            )
                        },
                        BatchSize::SmallInput,
                    )
                });
                let mut out = BytesMut::with_capacity(2 * encoded.len());
                group.bench_function(format!("encode/{name}"), |b| {
                    b.iter(|| {
                        out.clear();
                        black_box(&packet).write(&mut out, Some(1 << 20))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, codec, peer_rumqttc);
criterion_main!(benches);
