//! A bounds-checked reader over the body of one packet.
//!
//! `bytes::Buf` panics on a short read, so every method here checks `remaining()` first and
//! returns `DecodeError::Malformed` instead. Binary fields and the PUBLISH payload come out as
//! `Bytes` slices of the packet buffer (no copy). Knows the MQTT data types (1.5), not packets.

use bytes::{Buf, Bytes};

use super::DecodeError;

const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.remaining() < 1 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.remaining() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.remaining() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer (1.5.5): at most four bytes, minimal encoding.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match peek_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                // At most 28 bits: always fits.
                u32::try_from(value).map_err(|_| DecodeError::Malformed("variable byte integer"))
            }
            None => Err(TRUNCATED),
        }
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.remaining() < n {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary Data (1.5.6): a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// UTF-8 Encoded String (1.5.4): well-formed UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw)
            .map_err(|_| DecodeError::Malformed("string is not well-formed UTF-8"))?;
        // MQTT-1.5.4-2 (5.0), MQTT-1.5.3-2 (3.1.1). Surrogates are already refused by from_utf8
        // (MQTT-1.5.4-1).
        if s.contains('\0') {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        Ok(s.to_owned())
    }

    /// A reader over the next `n` bytes (a length-prefixed section such as the properties).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.bytes(n)?))
    }

    /// Everything left (the PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A packet or section must be consumed exactly: trailing bytes are malformed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "trailing bytes after the last field",
            ))
        }
    }
}

/// Reads a Variable Byte Integer from the front of `bytes` without consuming it.
/// `Ok(None)`: `bytes` ends inside the integer. `Ok(Some((value, encoded_len)))` otherwise.
/// A fifth byte (continuation bit on the fourth) and non-minimal encodings are malformed
/// (MQTT-1.5.5-1; 3.1.1 2.2.3 only produces the minimal form).
pub(crate) fn peek_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not in its shortest form",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes",
        ))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn varint_table() {
        let ok: &[(&[u8], usize, usize)] = &[
            (&[0x00], 0, 1),
            (&[0x7F], 127, 1),
            (&[0x80, 0x01], 128, 2),
            (&[0xFF, 0x7F], 16_383, 2),
            (&[0x80, 0x80, 0x01], 16_384, 3),
            (&[0xFF, 0xFF, 0x7F], 2_097_151, 3),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152, 4),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455, 4),
            (&[0x05, 0xFF], 5, 1),
        ];
        for (bytes, value, len) in ok {
            assert_eq!(peek_varint(bytes), Ok(Some((*value, *len))), "{bytes:02x?}");
        }
        for incomplete in [&[][..], &[0x80], &[0xFF, 0xFF], &[0x80, 0x80, 0x80]] {
            assert_eq!(peek_varint(incomplete), Ok(None));
        }
        for bad in [
            &[0xFF, 0xFF, 0xFF, 0xFF][..],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            &[0x80, 0x00],
            &[0x81, 0x80, 0x00],
        ] {
            assert!(
                matches!(peek_varint(bad), Err(DecodeError::Malformed(_))),
                "{bad:02x?}"
            );
        }
    }

    #[test]
    fn short_reads_are_errors_not_panics() {
        let mut r = Reader::new(Bytes::from_static(&[0x00]));
        assert_eq!(r.u16(), Err(TRUNCATED));
        assert_eq!(r.u32(), Err(TRUNCATED));
        assert_eq!(r.u8(), Ok(0));
        assert_eq!(r.u8(), Err(TRUNCATED));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(r.binary(), Err(TRUNCATED));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a']));
        assert_eq!(r.string(), Err(TRUNCATED));
        let mut r = Reader::new(Bytes::from_static(&[0x80]));
        assert_eq!(r.varint(), Err(TRUNCATED));
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert!(r.sub(2).is_err());
    }

    #[test]
    fn strings_are_checked() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert_eq!(
            r.string(),
            Err(DecodeError::Malformed("string contains U+0000"))
        );
        // An encoded surrogate (U+D800) is not well-formed UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, b'a', b'/', b'b', 0x01]));
        assert_eq!(r.string().unwrap(), "a/b");
        assert!(r.finish().is_err());
    }
}
