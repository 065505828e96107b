//! Query: the pure engine behind the historian's read API. Its semantics
//! follow the PI Web API streams (recorded, value at a time, interpolated,
//! summary, plot), which plant IT people already know; docs/API.md (Part II)
//! states them call by call.
//!
//! * `source` — the `Source` trait storage implements, plus `MemSource` for tests.
//! * `recorded`, `value_at`, `interpolated`, `summary`, `plot` — one file per call.
//! * `rollup` — the mergeable per-bucket aggregate storage keeps per minute
//!   and per hour, so long summaries read rollups instead of raw points.
//! * `aggregate` — the arithmetic summaries and rollups share (events,
//!   segments, the per-interval accumulator).
//!
//! No IO happens here: every call takes a `Source` and returns values or a
//! `QueryError`. HTTP parsing, tokens and deadlines belong to the handlers.
//! Each call reads one tag; the handlers loop for many.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod aggregate;
mod error;
mod interpolated;
mod numeric;
mod plot;
mod recorded;
mod rollup;
mod source;
mod summary;
mod value_at;

pub use aggregate::Sample;
pub use error::{QueryError, RollupError, SourceError};
pub use interpolated::interpolated;
pub use plot::plot;
pub use recorded::{recorded, Boundary, Continuation, Page, CONTINUATION_LEN};
pub use rollup::{bucket_end, bucket_start, Rollup, RollupStream, ROLLUP_LEN, ROLLUP_VERSION};
pub use source::{MemSource, RollupResolution, Source};
pub use summary::{summary, SummaryKind, SummaryRow, SummaryValue};
pub use value_at::{value_at, RetrievalMode, NO_DATA};

/// How a value is known between two recorded points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interpolation {
    /// Numbers change linearly from one point to the next (PI's default for
    /// analog tags). Bool and string values are always step.
    Linear,
    /// Each value holds until the next point (PI's `Step` attribute).
    Step,
}

/// Caps on the work one call may do. The handlers build these from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Most points one `recorded` page may return. Default 150,000, PI Web
    /// API's `MaxReturnedItemsPerCall`: a page must fit in one HTTP response.
    pub max_page_points: usize,
    /// Most intervals (rows, timestamps, plot buckets) one call may produce.
    /// Default 100,000: more is no longer a summary, and the output is
    /// allocated up front.
    pub max_intervals: u64,
    /// Most raw points (or rollups) one `summary` or `plot` may read. Default
    /// 10,000,000: bounds one call's work. A year of 1 s data is 31.5 M
    /// points, which must come from rollups instead.
    pub max_points_scanned: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_page_points: 150_000,
            max_intervals: 100_000,
            max_points_scanned: 10_000_000,
        }
    }
}
