//! Errors of the encoding layer: `EncodeError` for input the encoder refuses,
//! `DecodeError` for bytes that are not a valid block or record.
//!
//! A decoder never panics; every malformed input maps to one of these.

use thiserror::Error;

/// Why a block or record could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A block needs at least one point (its header names the first and last timestamp).
    #[error("a block needs at least one point")]
    EmptyBlock,
    /// More points than `MAX_POINTS_PER_BLOCK`.
    #[error("{count} points exceed the block limit of {limit}")]
    TooManyPoints {
        /// Points offered.
        count: usize,
        /// The limit, `MAX_POINTS_PER_BLOCK`.
        limit: usize,
    },
    /// A block holds one value type; the point at `index` has another.
    #[error("point {index} has value type {found:?}, the block has {expected:?}")]
    MixedValueTypes {
        /// Position of the first offending point.
        index: usize,
        /// Type of the block's first point.
        expected: crate::encoding::ValueType,
        /// Type of the offending point.
        found: crate::encoding::ValueType,
    },
    /// Points must be sorted by timestamp (equal timestamps are allowed).
    #[error("point {index} is earlier than the point before it")]
    Unsorted {
        /// Position of the first point that goes back in time.
        index: usize,
    },
    /// The string values would expand to more than `MAX_BLOCK_STRING_BYTES` when decoded.
    #[error("string values total {bytes} bytes, over the block limit of {limit}")]
    StringsTooLarge {
        /// Total bytes of all string values in the block.
        bytes: u64,
        /// The limit, `MAX_BLOCK_STRING_BYTES`.
        limit: u64,
    },
    /// One string value is longer than a record can describe.
    #[error("a string value of {bytes} bytes is too long")]
    StringTooLong {
        /// Its length.
        bytes: usize,
    },
    /// The pco compressor refused its input (a bug here, not bad input).
    #[error("pco compressor failed: {0}")]
    Compressor(String),
}

/// Why bytes could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure did.
    #[error("input truncated")]
    Truncated,
    /// The first bytes are not a Converge block.
    #[error("bad magic bytes")]
    BadMagic,
    /// Written by a format version this reader does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A CRC-32C did not match: the bytes changed after they were written.
    #[error("checksum mismatch in block {0}")]
    ChecksumMismatch(&'static str),
    /// Unknown value-type tag.
    #[error("unknown value type {0}")]
    UnknownValueType(u8),
    /// Unknown encoding tag in a section.
    #[error("unknown encoding {tag} in {section} section")]
    UnknownEncoding {
        /// Which section: "timestamps", "values", "quality", "indices".
        section: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// The point count is zero or over `MAX_POINTS_PER_BLOCK`.
    #[error("point count {0} out of range")]
    BadPointCount(u64),
    /// Decoded strings would exceed `MAX_BLOCK_STRING_BYTES`.
    #[error("decoded strings would take {0} bytes, over the limit")]
    StringsTooLarge(u64),
    /// Well-framed bytes whose content is inconsistent.
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
}
