//! Boolean values (digital states). A section holds `n` booleans as
//!
//! * `0` Constant: one byte, 0 or 1;
//! * `1` RunLength: first value byte (0/1), run count varint, then each run
//!   length varint; runs alternate in value;
//! * `2` Bitmap: `ceil(n/8)` bytes, point `i` in bit `i % 8` (LSB first) of
//!   byte `i / 8`; unused high bits of the last byte are 0.
//!
//! States change rarely, so run-length usually wins; a chattering signal
//! falls back to the bitmap's 1 bit per point.

use crate::encoding::reader::{put_section, put_usize, varint_len, Reader};
use crate::encoding::DecodeError;

const ENC_CONSTANT: u8 = 0;
const ENC_RUN_LENGTH: u8 = 1;
const ENC_BITMAP: u8 = 2;

/// Appends the values section; returns the encoding tag chosen.
pub(crate) fn encode(values: &[bool], out: &mut Vec<u8>) -> u8 {
    let mut runs: Vec<usize> = Vec::new();
    let mut prev = None;
    for &v in values {
        if prev == Some(v) {
            if let Some(last) = runs.last_mut() {
                *last += 1;
            }
        } else {
            runs.push(1);
            prev = Some(v);
        }
    }
    let first = values.first().copied().unwrap_or(false);
    if runs.len() == 1 {
        put_section(out, ENC_CONSTANT, &[u8::from(first)]);
        return ENC_CONSTANT;
    }
    let rle_size = 1
        + varint_len(runs.len() as u64)
        + runs.iter().map(|&l| varint_len(l as u64)).sum::<usize>();
    let bitmap_size = values.len().div_ceil(8);
    if rle_size <= bitmap_size {
        let mut payload = Vec::with_capacity(rle_size);
        payload.push(u8::from(first));
        put_usize(&mut payload, runs.len());
        for len in runs {
            put_usize(&mut payload, len);
        }
        put_section(out, ENC_RUN_LENGTH, &payload);
        ENC_RUN_LENGTH
    } else {
        let mut payload = vec![0u8; bitmap_size];
        for (byte, chunk) in payload.iter_mut().zip(values.chunks(8)) {
            for (bit, &v) in chunk.iter().enumerate() {
                *byte |= u8::from(v) << bit;
            }
        }
        put_section(out, ENC_BITMAP, &payload);
        ENC_BITMAP
    }
}

/// Decodes a values section of `n` booleans.
pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<bool>, DecodeError> {
    let (tag, mut p) = r.section()?;
    let values = match tag {
        ENC_CONSTANT => vec![read_bool(&mut p)?; n],
        ENC_RUN_LENGTH => {
            let mut v = read_bool(&mut p)?;
            let runs = p.varint_at_most(p.remaining(), "run count exceeds section")?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..runs {
                let len = p.varint_at_most(n - values.len(), "runs exceed point count")?;
                if len == 0 {
                    return Err(DecodeError::Corrupt("empty run"));
                }
                values.resize(values.len() + len, v);
                v = !v;
            }
            if values.len() != n {
                return Err(DecodeError::Corrupt("runs short of point count"));
            }
            values
        }
        ENC_BITMAP => {
            let bytes = p.bytes(n.div_ceil(8))?;
            let mut values = Vec::with_capacity(n);
            for &byte in bytes {
                for bit in 0..8 {
                    values.push(byte >> bit & 1 == 1);
                }
            }
            if values.iter().skip(n).any(|&b| b) {
                return Err(DecodeError::Corrupt("bitmap padding not zero"));
            }
            values.truncate(n);
            values
        }
        tag => {
            return Err(DecodeError::UnknownEncoding {
                section: "values",
                tag,
            })
        }
    };
    p.finish("trailing bytes in boolean section")?;
    Ok(values)
}

/// How many values are true / false: (any false, any true).
pub(crate) fn range(values: &[bool]) -> Option<(bool, bool)> {
    let any_true = values.iter().any(|&v| v);
    let any_false = values.iter().any(|&v| !v);
    match (any_false, any_true) {
        (false, false) => None,
        (f, t) => Some((!f, t)),
    }
}

fn read_bool(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Corrupt("boolean byte not 0 or 1")),
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: &[bool]) -> u8 {
        let mut out = Vec::new();
        let tag = encode(v, &mut out);
        let mut r = Reader::new(&out);
        assert_eq!(decode(&mut r, v.len()).unwrap(), v);
        assert_eq!(r.remaining(), 0);
        tag
    }

    #[test]
    fn picks_each_encoding() {
        assert_eq!(round_trip(&[true; 50]), ENC_CONSTANT);
        let steps: Vec<bool> = (0..1000).map(|i| i / 100 % 2 == 0).collect();
        assert_eq!(round_trip(&steps), ENC_RUN_LENGTH);
        let chatter: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        assert_eq!(round_trip(&chatter), ENC_BITMAP);
    }

    #[test]
    fn range_reports_min_and_max() {
        assert_eq!(range(&[true, true]), Some((true, true)));
        assert_eq!(range(&[false, true]), Some((false, true)));
        assert_eq!(range(&[false]), Some((false, false)));
        assert_eq!(range(&[]), None);
    }

    proptest! {
        #[test]
        fn bools_round_trip(v in prop::collection::vec(any::<bool>(), 1..500), stretch in 1usize..20) {
            let v: Vec<bool> = v.iter().flat_map(|&b| std::iter::repeat_n(b, stretch)).collect();
            round_trip(&v);
        }
    }
}
