//! Bounds-checked reading and the small write helpers every codec shares:
//! little-endian integers, LEB128 varints, and the section frame
//! `[encoding tag u8][payload length varint][payload]`.
//!
//! Every read checks the bytes left first and returns `Truncated`, so codecs
//! never index into input.

use crate::encoding::DecodeError;

/// A cursor over a byte slice that never reads past its end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(b)
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64_le(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// LEB128, at most 10 bytes; a 10th byte above 1 or an over-long zero
    /// tail is `Corrupt` so each value has exactly one encoding.
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let b = self.u8()?;
            let low = u64::from(b & 0x7F);
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(DecodeError::Corrupt("varint overflows u64"));
            }
            value |= low << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::Corrupt("over-long varint"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Corrupt("varint longer than 10 bytes"))
    }

    /// A varint that must not exceed `max`; returned as usize.
    pub(crate) fn varint_at_most(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let v = self.varint()?;
        match usize::try_from(v) {
            Ok(v) if v <= max => Ok(v),
            _ => Err(DecodeError::Corrupt(what)),
        }
    }

    /// Reads a section frame: its encoding tag and a reader over exactly its payload.
    pub(crate) fn section(&mut self) -> Result<(u8, Reader<'a>), DecodeError> {
        let tag = self.u8()?;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        Ok((tag, Reader::new(self.bytes(len)?)))
    }

    /// Asserts that everything was consumed.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Corrupt(what))
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low 7 bits plus the continuation bit.
        #[allow(clippy::cast_possible_truncation)]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(v as u8);
}

pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_usize(out: &mut Vec<u8>, v: usize) {
    // usize is at most 64 bits on every target we build for.
    put_varint(out, v as u64);
}

/// Appends a section frame around `payload`.
pub(crate) fn put_section(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    put_usize(out, payload.len());
    out.extend_from_slice(payload);
}

/// ZigZag: small magnitudes of either sign become small unsigned numbers.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_is_canonical() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint(),
            Err(DecodeError::Corrupt("over-long varint"))
        );
        assert_eq!(
            Reader::new(&[0xFF; 10]).varint(),
            Err(DecodeError::Corrupt("varint overflows u64"))
        );
        assert_eq!(Reader::new(&[0x80]).varint(), Err(DecodeError::Truncated));
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0, 1, -1, i64::MIN, i64::MAX, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
    }
}
