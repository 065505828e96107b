//! Damaged blocks and records never panic a decoder. A flipped bit or a cut
//! anywhere in a block is reported (two CRC-32Cs cover every byte); blocks
//! whose checksums were recomputed after damage (what a hostile writer could
//! produce) reach the inner decoders, which must still return, not panic.

mod common;

use converge_historian::encoding::{
    block_header, crc32c, decode_block, decode_block_window, decode_recent_point, encode_block,
    encode_recent_point, DecodeError, Point, Timestamp, Value,
};
use proptest::prelude::*;

/// Sample blocks covering every section encoding.
fn samples() -> Vec<Vec<u8>> {
    let t = |i: i64| Timestamp::from_micros(1_700_000_000_000_000 + i * 1_000_000);
    let mut blocks = Vec::new();
    let mut add = |pts: Vec<Point>| blocks.push(encode_block(&pts).unwrap());
    add((0..300)
        .map(|i| Point::good(t(i), Value::F64((i as f64 * 0.1).sin())))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i * i), Value::F64(20.0)))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i), Value::F64(f64::from(i as i32 / 50))))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i), Value::I64(i * i * 7 - 1000)))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i), Value::Bool(i / 40 % 2 == 0)))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i), Value::Bool(i % 3 == 0)))
        .collect());
    add((0..300)
        .map(|i| Point::good(t(i), Value::Str(format!("state-{}", i % 5))))
        .collect());
    add((0..300)
        .map(|i| Point {
            ts: t(i),
            value: Value::F64(i as f64),
            quality: converge_historian::encoding::Quality::from_code((i as u32 / 100) << 16)
                .unwrap(),
        })
        .collect());
    blocks
}

fn first_ts(block: &[u8]) -> Timestamp {
    block_header(block).unwrap().first_ts
}

#[test]
fn every_bit_flip_is_detected() {
    for block in samples() {
        for byte in 0..block.len() {
            for bit in 0..8 {
                let mut bad = block.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_block(&bad).is_err(),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
                // A window skips the tail of the values, not the checksums.
                assert!(
                    decode_block_window(&bad, Timestamp::from_micros(i64::MIN), first_ts(&block))
                        .is_err(),
                    "flip at byte {byte} bit {bit} went unnoticed by a window"
                );
            }
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    for block in samples() {
        for len in 0..block.len() {
            assert!(
                decode_block(&block[..len]).is_err(),
                "cut at {len} went unnoticed"
            );
        }
        let mut longer = block.clone();
        longer.push(0);
        assert!(decode_block(&longer).is_err());
    }
}

#[test]
fn header_errors_are_specific() {
    let block = &samples()[0];
    let mut bad = block.clone();
    bad[0] = b'X';
    assert_eq!(decode_block(&bad), Err(DecodeError::BadMagic));
    let mut bad = block.clone();
    bad[3] = 2;
    assert_eq!(decode_block(&bad), Err(DecodeError::UnsupportedVersion(2)));
    assert_eq!(decode_block(&block[..3]), Err(DecodeError::Truncated));
    let mut bad = block.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        decode_block(&bad),
        Err(DecodeError::ChecksumMismatch("body"))
    );
}

/// Rewrites both checksums so damage reaches the section decoders.
fn reseal(bytes: &mut [u8]) {
    let Ok(h) = block_header(bytes) else { return };
    let hl = h.header_len;
    if bytes.len() < hl + 4 {
        return;
    }
    let crc = crc32c(&bytes[..hl - 4]);
    bytes[hl - 4..hl].copy_from_slice(&crc.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32c(&bytes[hl..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn resealed_single_byte_damage_never_panics() {
    for block in samples() {
        let hl = block_header(&block).unwrap().header_len;
        for pos in hl..block.len() - 4 {
            for v in [0x00, 0x01, 0x7F, 0x80, 0xFF, block[pos] ^ 0x10] {
                let mut bad = block.clone();
                bad[pos] = v;
                reseal(&mut bad);
                let _ = decode_block(&bad);
                let _ = decode_block_window(&bad, first_ts(&block), first_ts(&block));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn resealed_random_damage_never_panics(points in common::block_points(300), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = encode_block(&points).unwrap();
        let hl = block_header(&bytes).unwrap().header_len;
        let body = bytes.len() - 4 - hl;
        for (i, v) in edits {
            let pos = hl + i.index(body);
            bytes[pos] = v;
        }
        reseal(&mut bytes);
        let _ = decode_block(&bytes);
        let _ = decode_block_window(&bytes, points[0].ts, points[points.len() / 2].ts);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200), magic in any::<bool>()) {
        if magic && bytes.len() > 4 {
            bytes[..4].copy_from_slice(b"CVB\x01");
        }
        let _ = decode_block(&bytes);
        let _ = block_header(&bytes);
        let _ = decode_recent_point(&bytes);
    }

    #[test]
    fn recent_records_round_trip_and_survive_damage(points in common::block_points(20), flip in any::<prop::sample::Index>()) {
        let mut log = Vec::new();
        for p in &points {
            encode_recent_point(p, &mut log).unwrap();
        }
        let mut at = 0;
        for p in &points {
            let (q, used) = decode_recent_point(&log[at..]).unwrap();
            prop_assert_eq!(&q, p);
            at += used;
        }
        prop_assert_eq!(at, log.len());
        let i = flip.index(log.len());
        log[i] ^= 0xA5;
        let mut at = 0;
        while at < log.len() {
            match decode_recent_point(&log[at..]) {
                Ok((_, used)) => at += used,
                Err(_) => break,
            }
        }
    }
}
