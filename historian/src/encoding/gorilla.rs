//! Plain Gorilla (Pelkonen et al., VLDB 2015): XOR-encoded floats and
//! delta-of-delta timestamps. Kept only as the baseline that benchmarks and
//! `examples/measure.rs` compare against; blocks never use it, and its bytes
//! are not part of the stable format.
//!
//! Deviations from the paper: timestamps are i64 microseconds, so the first
//! timestamp is 64 bits, the first delta goes through the same buckets as
//! the rest, and the widest bucket holds 64 bits instead of 32.

use crate::encoding::DecodeError;

/// XOR-encodes `values` (bit-exact).
pub fn encode_values(values: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut iter = values.iter();
    let Some(first) = iter.next() else {
        return w.finish();
    };
    let mut prev = first.to_bits();
    w.write(prev, 64);
    // (leading zeros, meaningful bits) of the current window; none yet.
    let mut window: Option<(u32, u32)> = None;
    for v in iter {
        let bits = v.to_bits();
        let xor = bits ^ prev;
        prev = bits;
        if xor == 0 {
            w.write(0, 1);
            continue;
        }
        // The paper stores leading zeros in 5 bits.
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        match window {
            Some((wl, wm)) if leading >= wl && trailing >= 64 - wl - wm => {
                w.write(0b10, 2);
                w.write(xor >> (64 - wl - wm), wm);
            }
            _ => {
                let meaningful = 64 - leading - trailing;
                w.write(0b11, 2);
                w.write(u64::from(leading), 5);
                // 64 meaningful bits do not fit in 6 bits; 0 stands for 64.
                w.write(u64::from(meaningful & 63), 6);
                w.write(xor >> trailing, meaningful);
                window = Some((leading, meaningful));
            }
        }
    }
    w.finish()
}

/// Decodes `n` values written by `encode_values`.
pub fn decode_values(bytes: &[u8], n: usize) -> Result<Vec<f64>, DecodeError> {
    let mut r = BitReader::new(bytes);
    // At least one bit per value: bounds the allocation by the input.
    let mut out = Vec::with_capacity(n.min(bytes.len().saturating_mul(8)));
    if n == 0 {
        return Ok(out);
    }
    let mut prev = r.read(64)?;
    out.push(f64::from_bits(prev));
    let mut window: Option<(u32, u32)> = None;
    while out.len() < n {
        if r.read(1)? == 1 {
            let xor = if r.read(1)? == 0 {
                let (wl, wm) =
                    window.ok_or(DecodeError::Corrupt("gorilla window reused before set"))?;
                r.read(wm)? << (64 - wl - wm)
            } else {
                // Both reads are at most 6 bits wide, so the values fit.
                let leading = r.read(5)? as u32;
                let meaningful = match r.read(6)? as u32 {
                    0 => 64,
                    m => m,
                };
                if leading + meaningful > 64 {
                    return Err(DecodeError::Corrupt("gorilla window wider than 64 bits"));
                }
                window = Some((leading, meaningful));
                r.read(meaningful)? << (64 - leading - meaningful)
            };
            prev ^= xor;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(out)
}

/// Delta-of-delta encodes sorted or unsorted `ts` (wrapping arithmetic).
pub fn encode_timestamps(ts: &[i64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut iter = ts.iter();
    let Some(&first) = iter.next() else {
        return w.finish();
    };
    w.write(first as u64, 64);
    let (mut prev, mut prev_delta) = (first, 0i64);
    for &t in iter {
        let delta = t.wrapping_sub(prev);
        let dod = delta.wrapping_sub(prev_delta);
        (prev, prev_delta) = (t, delta);
        if dod == 0 {
            w.write(0, 1);
            continue;
        }
        match BUCKETS.iter().find(|&&(_, _, bits)| fits(dod, bits)) {
            Some(&(prefix, prefix_len, bits)) => {
                w.write(prefix, prefix_len);
                w.write(dod as u64 & mask(bits), bits);
            }
            None => {
                w.write(0b1111, 4);
                w.write(dod as u64, 64);
            }
        }
    }
    w.finish()
}

/// Decodes `n` timestamps written by `encode_timestamps`.
pub fn decode_timestamps(bytes: &[u8], n: usize) -> Result<Vec<i64>, DecodeError> {
    let mut r = BitReader::new(bytes);
    let mut out = Vec::with_capacity(n.min(bytes.len().saturating_mul(8)));
    if n == 0 {
        return Ok(out);
    }
    let mut prev = r.read(64)? as i64;
    out.push(prev);
    let mut prev_delta = 0i64;
    while out.len() < n {
        let mut ones = 0;
        while ones < 4 && r.read(1)? == 1 {
            ones += 1;
        }
        let dod = match BUCKETS.iter().find(|&&(_, len, _)| len == ones + 1) {
            _ if ones == 0 => 0,
            Some(&(_, _, bits)) => sign_extend(r.read(bits)?, bits),
            None => r.read(64)? as i64,
        };
        prev_delta = prev_delta.wrapping_add(dod);
        prev = prev.wrapping_add(prev_delta);
        out.push(prev);
    }
    Ok(out)
}

/// (prefix, prefix length, payload bits) for delta-of-delta buckets.
const BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 7), (0b110, 3, 9), (0b1110, 4, 12)];

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// MSB-first bit writer.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    used: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n <= 64).
    fn write(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let v = v & mask(n);
        let free = 64 - self.used;
        if n <= free {
            self.acc |= if n == 64 { v } else { v << (free - n) };
            self.used += n;
        } else {
            self.acc |= v >> (n - free);
            self.used = 64;
            self.flush();
            self.acc = v << (64 - (n - free));
            self.used = n - free;
        }
        if self.used == 64 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.out.extend_from_slice(&self.acc.to_be_bytes());
        self.acc = 0;
        self.used = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        let bytes = self.used.div_ceil(8) as usize;
        self.out
            .extend(self.acc.to_be_bytes().into_iter().take(bytes));
        self.out
    }
}

/// MSB-first bit reader over a slice.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Reads `n` bits (n <= 64), MSB first.
    fn read(&mut self, n: u32) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = *self.bytes.get(self.pos / 8).ok_or(DecodeError::Truncated)?;
            let offset = (self.pos % 8) as u32;
            let take = (8 - offset).min(left);
            let chunk = (u64::from(byte) >> (8 - offset - take)) & mask(take);
            v = if take == 64 {
                chunk
            } else {
                (v << take) | chunk
            };
            left -= take;
            self.pos += take as usize;
        }
        Ok(v)
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constant_series_costs_a_bit_per_point() {
        let v = vec![21.5f64; 1001];
        let enc = encode_values(&v);
        assert_eq!(enc.len(), 8 + 1000 / 8);
        let ts: Vec<i64> = (0..1001).map(|i| i * 60_000_000).collect();
        let enc_ts = encode_timestamps(&ts);
        // 64 bits first, 68 bits for the first delta, then one bit per point.
        assert_eq!(enc_ts.len(), (64 + 68 + 999usize).div_ceil(8));
        assert_eq!(decode_timestamps(&enc_ts, ts.len()).unwrap(), ts);
    }

    proptest! {
        #[test]
        fn values_round_trip(raw in prop::collection::vec(prop_oneof![any::<u64>(), (0u64..4).prop_map(|x| x << 62), Just(0), Just(1)], 0..200)) {
            let v: Vec<f64> = raw.iter().map(|&b| f64::from_bits(b)).collect();
            let back = decode_values(&encode_values(&v), v.len()).unwrap();
            prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), raw);
        }

        #[test]
        fn timestamps_round_trip(ts in prop::collection::vec(prop_oneof![any::<i64>(), -3000i64..3000], 0..200)) {
            prop_assert_eq!(decode_timestamps(&encode_timestamps(&ts), ts.len()).unwrap(), ts);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), n in 0usize..100) {
            let _ = decode_values(&bytes, n);
            let _ = decode_timestamps(&bytes, n);
        }
    }
}
