//! i64 values: the numeric column codec (constant, run-length or pco) plus
//! the min/max kept in the block header. Pco's `Auto` mode finds `IntMult`
//! (all values multiples of a base) and delta orders by itself.

use crate::encoding::column;
use crate::encoding::reader::Reader;
use crate::encoding::{DecodeError, EncodeError};

/// Appends the values section; returns the encoding tag chosen.
pub(crate) fn encode(values: &[i64], out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    column::encode(values, out)
}

/// Decodes a values section of `n` integers.
pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>, DecodeError> {
    column::decode(r, n, "values")
}

/// The first `keep` (or a few more) of a values section of `n` integers.
pub(crate) fn decode_prefix(
    r: &mut Reader<'_>,
    n: usize,
    keep: usize,
) -> Result<Vec<i64>, DecodeError> {
    column::decode_prefix(r, n, keep, "values")
}

/// Smallest and largest value, `None` when empty.
pub(crate) fn range(values: &[i64]) -> Option<(i64, i64)> {
    let lo = values.iter().min()?;
    let hi = values.iter().max()?;
    Some((*lo, *hi))
}
