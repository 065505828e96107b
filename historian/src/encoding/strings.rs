//! String values: a dictionary of the distinct strings in first-seen order,
//! then each point's index into it as a numeric column (constant when the
//! block has one distinct string, run-length for rarely changing states,
//! pco otherwise).
//!
//! Section `0` Dictionary: entry count varint, each entry as byte length
//! varint + UTF-8 bytes, then a nested numeric section of `n` u32 indices.
//!
//! Decoding checks, before allocating, that the expanded strings stay under
//! `MAX_BLOCK_STRING_BYTES`: one long dictionary entry repeated 65,536 times
//! must not turn a small block into gigabytes.

use std::collections::HashMap;

use crate::encoding::column;
use crate::encoding::reader::{put_section, put_usize, Reader};
use crate::encoding::{DecodeError, EncodeError, MAX_BLOCK_STRING_BYTES};

const ENC_DICTIONARY: u8 = 0;

/// Appends the values section; returns the encoding tag of the index column.
pub(crate) fn encode(values: &[&str], out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut dict: Vec<&str> = Vec::new();
    let mut indices: Vec<u32> = Vec::with_capacity(values.len());
    for &s in values {
        let next = u32::try_from(dict.len()).map_err(|_| EncodeError::TooManyPoints {
            count: values.len(),
            limit: crate::encoding::MAX_POINTS_PER_BLOCK,
        })?;
        let id = *ids.entry(s).or_insert_with(|| {
            dict.push(s);
            next
        });
        indices.push(id);
    }
    let mut payload = Vec::new();
    put_usize(&mut payload, dict.len());
    for s in &dict {
        put_usize(&mut payload, s.len());
        payload.extend_from_slice(s.as_bytes());
    }
    let tag = column::encode(&indices, &mut payload)?;
    put_section(out, ENC_DICTIONARY, &payload);
    Ok(tag)
}

/// Decodes a values section of `n` strings.
pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<String>, DecodeError> {
    let (tag, mut p) = r.section()?;
    if tag != ENC_DICTIONARY {
        return Err(DecodeError::UnknownEncoding {
            section: "values",
            tag,
        });
    }
    // Every entry takes at least its one-byte length.
    let entries = p.varint_at_most(p.remaining().min(n), "dictionary larger than block")?;
    let mut dict: Vec<&str> = Vec::with_capacity(entries);
    for _ in 0..entries {
        let len = p.varint_at_most(p.remaining(), "string longer than section")?;
        let bytes = p.bytes(len)?;
        dict.push(
            std::str::from_utf8(bytes).map_err(|_| DecodeError::Corrupt("string not UTF-8"))?,
        );
    }
    let indices = column::decode::<u32>(&mut p, n, "indices")?;
    p.finish("trailing bytes in string section")?;

    let mut total: u64 = 0;
    for &i in &indices {
        let s = usize::try_from(i)
            .ok()
            .and_then(|i| dict.get(i))
            .ok_or(DecodeError::Corrupt("string index outside dictionary"))?;
        total = total.saturating_add(s.len() as u64);
    }
    if total > MAX_BLOCK_STRING_BYTES {
        return Err(DecodeError::StringsTooLarge(total));
    }
    indices
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| dict.get(i))
                .map(|s| (*s).to_owned())
                .ok_or(DecodeError::Corrupt("string index outside dictionary"))
        })
        .collect()
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: &[&str]) -> u8 {
        let mut out = Vec::new();
        let tag = encode(v, &mut out).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(decode(&mut r, v.len()).unwrap(), v);
        assert_eq!(r.remaining(), 0);
        tag
    }

    #[test]
    fn states_use_few_bytes() {
        let states: Vec<&str> = (0..1000)
            .map(|i| ["RUNNING", "STOPPED", "FAULT"][i / 334])
            .collect();
        let mut out = Vec::new();
        encode(&states, &mut out).unwrap();
        assert!(out.len() <= 46, "{} bytes", out.len());
        round_trip(&states);
        assert_eq!(round_trip(&["", ""]), column::ENC_CONSTANT);
    }

    #[test]
    fn expansion_limit_is_enforced() {
        // One 1 MiB entry referenced by 65,536 constant indices: 64 GiB expanded.
        let big = "x".repeat(1 << 20);
        let mut out = Vec::new();
        encode(&[big.as_str()], &mut out).unwrap();
        let mut r = Reader::new(&out);
        assert!(matches!(
            decode(&mut r, 65_536),
            Err(DecodeError::StringsTooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn strings_round_trip(pool in prop::collection::vec(".{0,40}", 1..8), picks in prop::collection::vec(any::<prop::sample::Index>(), 1..300)) {
            let v: Vec<&str> = picks.iter().map(|i| pool[i.index(pool.len())].as_str()).collect();
            round_trip(&v);
        }
    }
}
