//! f64 values: the numeric column codec (constant, run-length or pco) plus
//! the min/max kept in the block header.
//!
//! Pco's `Auto` mode already tries its lossless float modes: `FloatMult`
//! (values that are integer multiples of a base such as 0.1, i.e. decimals
//! read from an instrument with fixed resolution; the ULP adjustment keeps it
//! exact) and `FloatQuant` (values sharing their low mantissa bits). Every
//! path is bit-exact: NaN payloads, -0.0, infinities and subnormals survive.

use crate::encoding::column;
use crate::encoding::reader::Reader;
use crate::encoding::{DecodeError, EncodeError};

/// Appends the values section; returns the encoding tag chosen.
pub(crate) fn encode(values: &[f64], out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    column::encode(values, out)
}

/// Decodes a values section of `n` floats.
pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, DecodeError> {
    column::decode(r, n, "values")
}

/// The first `keep` (or a few more) of a values section of `n` floats.
pub(crate) fn decode_prefix(
    r: &mut Reader<'_>,
    n: usize,
    keep: usize,
) -> Result<Vec<f64>, DecodeError> {
    column::decode_prefix(r, n, keep, "values")
}

/// Smallest and largest non-NaN value (ordered as numbers, -0.0 before 0.0),
/// or `None` when every value is NaN.
pub(crate) fn range(values: &[f64]) -> Option<(f64, f64)> {
    let mut iter = values.iter().copied().filter(|v| !v.is_nan());
    let first = iter.next()?;
    Some(iter.fold((first, first), |(lo, hi), v| {
        (
            if v.total_cmp(&lo).is_lt() { v } else { lo },
            if v.total_cmp(&hi).is_gt() { v } else { hi },
        )
    }))
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn range_skips_nan() {
        assert_eq!(range(&[f64::NAN, 2.0, -1.0, f64::NAN]), Some((-1.0, 2.0)));
        assert_eq!(range(&[f64::NAN]), None);
        assert_eq!(
            range(&[f64::INFINITY, f64::NEG_INFINITY]),
            Some((f64::NEG_INFINITY, f64::INFINITY))
        );
    }
}
