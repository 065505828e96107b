//! Errors of the query layer. `SourceError` is what storage reports;
//! `QueryError` is what a call reports, each variant mapping to one HTTP
//! status in the handlers; `RollupError` is for rollup bytes and merges.

use thiserror::Error;

use crate::encoding::{DecodeError, Timestamp, ValueType};

/// Why a `Source` could not answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// No tag of that name (HTTP 404).
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// Stored bytes did not decode.
    #[error("stored data is corrupt: {0}")]
    Decode(#[from] DecodeError),
    /// The store failed (IO, poisoned writer, ...); the text is for the log.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Why a query was refused or failed. Every variant but `Source` and
/// `InconsistentRollups` is the client's doing (HTTP 4xx).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The range ends before it starts.
    #[error("end {end:?} is before start {start:?}")]
    EndBeforeStart {
        /// Requested start.
        start: Timestamp,
        /// Requested end.
        end: Timestamp,
    },
    /// An interval of zero (or under one microsecond), or zero plot intervals.
    #[error("the interval is zero")]
    ZeroInterval,
    /// More intervals than `QueryLimits::max_intervals`.
    #[error("{requested} intervals requested, at most {limit} allowed")]
    TooManyIntervals {
        /// Intervals the request implies.
        requested: u128,
        /// `QueryLimits::max_intervals`.
        limit: u64,
    },
    /// A page size of zero.
    #[error("the maximum count is zero")]
    ZeroCount,
    /// A page size over `QueryLimits::max_page_points`.
    #[error("{requested} points requested in one page, at most {limit} allowed")]
    TooManyPoints {
        /// Requested page size.
        requested: usize,
        /// `QueryLimits::max_page_points`.
        limit: usize,
    },
    /// The call would read more than `QueryLimits::max_points_scanned` raw
    /// points; a shorter range or a rollup-aligned interval will do.
    #[error("the query would read more than {limit} points")]
    TooManyPointsScanned {
        /// `QueryLimits::max_points_scanned`.
        limit: u64,
    },
    /// An aggregate over a tag whose values are not numbers.
    #[error("aggregates need a numeric tag, this one holds {found:?}")]
    WrongValueType {
        /// The tag's value type.
        found: ValueType,
    },
    /// A continuation that cannot belong to this query (outside its range,
    /// or undecodable bytes).
    #[error("invalid continuation")]
    BadContinuation,
    /// No tag of that name.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// Storage returned rollups that do not tile the range (a storage bug).
    #[error("inconsistent rollups from storage: {0}")]
    InconsistentRollups(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Source(SourceError),
}

impl From<SourceError> for QueryError {
    fn from(e: SourceError) -> Self {
        match e {
            // Lifted so the handlers map one variant to 404.
            SourceError::UnknownTag(tag) => QueryError::UnknownTag(tag),
            e => QueryError::Source(e),
        }
    }
}

/// Why rollup bytes could not be decoded, or two rollups not merged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RollupError {
    /// Fewer bytes than a rollup takes.
    #[error("rollup truncated: {len} bytes")]
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// More bytes than a rollup takes.
    #[error("{extra} bytes after the rollup")]
    TrailingBytes {
        /// Bytes beyond `ROLLUP_LEN`.
        extra: usize,
    },
    /// A version byte this code does not read.
    #[error("unsupported rollup version {0}")]
    UnsupportedVersion(u8),
    /// Well-framed bytes whose fields contradict each other.
    #[error("corrupt rollup: {0}")]
    Corrupt(&'static str),
    /// `merge` needs the later rollup to start at or after the earlier
    /// one's end; `combine` needs its parts inside the bucket.
    #[error("rollups overlap or are out of order")]
    Overlap,
    /// A bucket must have `start < end`.
    #[error("empty bucket")]
    EmptyBucket,
    /// A bucket longer than 2^32 µs: its times do not fit the record.
    #[error("rollup bucket too long to store")]
    BucketTooLong,
    /// More than `u32::MAX` points in one bucket.
    #[error("too many points in one rollup to store")]
    TooManyPoints,
    /// A rollup of a non-numeric tag.
    #[error("rollups need a numeric tag, this one holds {0:?}")]
    NotNumeric(ValueType),
}

impl From<RollupError> for QueryError {
    fn from(e: RollupError) -> Self {
        match e {
            RollupError::NotNumeric(found) => QueryError::WrongValueType { found },
            RollupError::Overlap => QueryError::InconsistentRollups("rollups overlap"),
            RollupError::EmptyBucket => QueryError::InconsistentRollups("empty rollup bucket"),
            _ => QueryError::InconsistentRollups("undecodable rollup"),
        }
    }
}
