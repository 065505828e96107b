//! Errors of the storage layer. Bytes read back from RocksDB that do not
//! parse are `Corrupt*`, with the key that held them; a caller's mistake
//! (wrong value type, unknown tag) has its own variant; RocksDB's own
//! failures are `Db`.

use thiserror::Error;

use crate::encoding::{DecodeError, EncodeError, ValueType};
use crate::query::RollupError;
use crate::storage::TagId;

/// Why a storage call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// RocksDB reported an error.
    #[error("database: {0}")]
    Db(String),
    /// The database was opened without one of `column_families()`.
    #[error("missing column family {0}")]
    MissingColumnFamily(&'static str),
    /// An earlier write failed (or its outcome is unknown), so in-memory
    /// state may not match the disk; writes are refused until reopen.
    #[error("historian storage is poisoned by an earlier failed write; reopen it")]
    Poisoned,
    /// No tag has this name, and the write did not allow creating it.
    #[error("unknown tag {0:?}")]
    UnknownTagName(String),
    /// No tag has this id.
    #[error("unknown tag id {0}")]
    UnknownTagId(TagId),
    /// A point's value type is not the tag's.
    #[error("tag {tag} holds {expected:?} values, the point is {found:?}")]
    TypeMismatch {
        /// The tag.
        tag: TagId,
        /// The tag's value type.
        expected: ValueType,
        /// The point's value type.
        found: ValueType,
    },
    /// `ensure_tag` was called for an existing tag with another value type.
    #[error("tag {name:?} exists with value type {existing:?}, not {requested:?}")]
    TagTypeConflict {
        /// Tag name.
        name: String,
        /// Its stored value type.
        existing: ValueType,
        /// The type asked for.
        requested: ValueType,
    },
    /// A tag name, unit or description over its limit, or an empty name.
    #[error("invalid tag metadata: {0}")]
    InvalidTagMeta(&'static str),
    /// Points or tags were added to a `WriteSet` after its operations were built.
    #[error("write set already built; start a new one")]
    AlreadyBuilt,
    /// Every tag id is in use.
    #[error("no tag ids left")]
    TagIdsExhausted,
    /// A sealed block failed to decode.
    #[error("corrupt block of tag {tag} at key {key:02x?}: {source}")]
    CorruptBlock {
        /// Its tag.
        tag: TagId,
        /// Its key in `hist_blocks`.
        key: Vec<u8>,
        /// What the decoder found.
        source: DecodeError,
    },
    /// A recent record failed to decode.
    #[error("corrupt recent record at key {key:02x?}: {source}")]
    CorruptRecent {
        /// Its key in `hist_recent`.
        key: Vec<u8>,
        /// What the decoder found.
        source: DecodeError,
    },
    /// A key or a metadata/state record in a historian column family is malformed.
    #[error("corrupt {what} at key {key:02x?}")]
    CorruptRecord {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
    },
    /// A stored rollup failed to decode, or a rollup could not be computed
    /// or encoded (a bug here: storage rolls up numeric tags only).
    #[error("rollup of tag {tag} at key {key:02x?}: {source}")]
    Rollup {
        /// Its tag.
        tag: TagId,
        /// Its key in `hist_rollup_1m` or `hist_rollup_1h` (empty if not stored yet).
        key: Vec<u8>,
        /// What went wrong.
        source: RollupError,
    },
    /// The block encoder refused points (a bug here, or a string value too large).
    #[error("cannot encode block: {0}")]
    Encode(#[from] EncodeError),
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Db(e.to_string())
    }
}
