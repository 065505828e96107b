//! SHA-256 values and their lowercase-hex text form, as stored in the audit
//! files. Decoding is strict (lowercase only, exact length) so that a file
//! has one spelling per value and any edit of a hash is a different text.

use std::fmt;
use std::str::FromStr;

use ring::digest::{Context, SHA256};

/// A SHA-256 value: a record's chained hash, a Merkle node or root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The chain's starting point: the `prev` of record 1.
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 over the concatenation of `parts`.
    pub fn of(parts: &[&[u8]]) -> Digest {
        let mut ctx = Context::new(&SHA256);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Digest(out)
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Text that is not 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 value in lowercase hex")]
pub struct BadHex;

impl FromStr for Digest {
    type Err = BadHex;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        unhex_into(s, &mut out)?;
        Ok(Digest(out))
    }
}

/// Lowercase hex of any bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits.
pub(crate) fn unhex_into(s: &str, out: &mut [u8]) -> Result<(), BadHex> {
    let digits = s.as_bytes();
    if digits.len() != out.len() * 2 {
        return Err(BadHex);
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else {
            return Err(BadHex);
        };
        *o = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Ok(())
}

fn nibble(c: u8) -> Result<u8, BadHex> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(BadHex),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let d = Digest::of(&[b"abc"]);
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Digest>(), Ok(d));
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>(), Err(BadHex));
        assert_eq!("ab".parse::<Digest>(), Err(BadHex));
    }
}
