//! Encoding: points to bytes and back, with no knowledge of RocksDB.
//!
//! * `block` — the sealed, self-contained, checksummed block of one tag's
//!   points (format in docs/FORMAT.md), built from one codec per column:
//!   `timestamps` (regular grid plus exceptions, or pco), `float` and `int`
//!   (constant, run-length or pco through `column`), `boolean` (constant,
//!   run-length or bitmap), `strings` (dictionary plus index column) and
//!   `quality` (all-good or run-length).
//! * `recent` — the uncompressed one-point record for data not yet sealed.
//! * `lossy` — optional PI-style exception and swinging-door filters, off by default.
//! * `gorilla` — the plain Gorilla baseline for benchmarks; never on disk.
//!
//! Decoders never panic and never allocate more than their limits allow,
//! whatever the input: that is enforced by the lints below and by the
//! corruption tests.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod block;
mod boolean;
mod checksum;
mod column;
mod error;
mod float;
pub mod gorilla;
mod int;
pub mod lossy;
mod point;
mod quality;
mod reader;
mod recent;
mod strings;
mod timestamps;

pub use block::{
    block_header, decode_block, decode_block_columns, decode_block_window, describe_block,
    encode_block, BlockColumns, BlockHeader, BlockLayout, SectionLayout, ValueRange, Values,
    BLOCK_MAGIC,
};
pub use checksum::crc32c;
pub use error::{DecodeError, EncodeError};
pub use point::{Point, Quality, Severity, Timestamp, Value, ValueType};
pub use recent::{decode_recent_point, encode_recent_point, RECENT_VERSION};

/// Block format version written by this code, and the only one it reads so
/// far. Every later version must still read version 1 (tests/format_fixtures.rs).
pub const FORMAT_VERSION: u8 = 1;

/// Most points one block may hold. Pco needs a few thousand numbers to
/// amortise its metadata, while a bigger block makes a one-point read decode
/// more; the limit also caps a decoder's allocation at 65,536 points
/// whatever count a corrupt header claims.
pub const MAX_POINTS_PER_BLOCK: usize = 65_536;

/// Block size the storage layer should aim for. On our datasets, blocks of
/// this size store values in fewer bytes than whole-column pco, and whole
/// blocks (timestamps aside) within 8% of it; at 1,024 points the excess is
/// 16%, at 256 points 57% (docs/FORMAT.md has the table).
pub const TARGET_POINTS_PER_BLOCK: usize = 4_096;

/// Most bytes the string values of one block may expand to when decoded.
/// Stops a block with one long dictionary entry and 65,536 references to it
/// from expanding to gigabytes.
pub const MAX_BLOCK_STRING_BYTES: u64 = 64 << 20;
