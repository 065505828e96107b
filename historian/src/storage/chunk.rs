//! Chunks: the values of `hist_recent`. A chunk is one or more recent
//! records (FORMAT.md §4) concatenated, in strictly increasing time, keyed
//! by (tag, time of its first point). A record written by a version that
//! stored one point per key is simply a chunk of one point, so old
//! databases read as they are.
//!
//! Invariants, kept by the write path and checked here on every decode:
//! a tag's chunks never overlap in time, each holds strictly increasing
//! timestamps starting at its key's time, and each spans less than
//! `MAX_CHUNK_SPAN_MICROS` (last − first). The span bound is what lets a
//! reader find the chunk that may hold a time `t` with a *bounded* backward
//! seek: it starts at or after `t − MAX_CHUNK_SPAN_MICROS + 1`. Without it a
//! seek for the chunk before `t` would step over the tombstones of every
//! chunk sealed since the last compaction.

use crate::encoding::{decode_recent_point, encode_recent_point, Point, Timestamp};
use crate::storage::keys;
use crate::storage::StorageError;

/// A chunk's last point is less than this many µs after its first (one
/// hour): a write splits a run of in-order points that spans more.
pub(crate) const MAX_CHUNK_SPAN_MICROS: i64 = 3_600_000_000;

/// Earliest key time of a chunk that can hold a point at `t`.
pub(crate) fn earliest_start(t: Timestamp) -> Timestamp {
    Timestamp::from_micros(t.micros().saturating_sub(MAX_CHUNK_SPAN_MICROS - 1))
}

/// Whether a chunk starting at `first` may hold a point at `t >= first`.
pub(crate) fn within_span(first: Timestamp, t: Timestamp) -> bool {
    i128::from(t.micros()) - i128::from(first.micros()) < i128::from(MAX_CHUNK_SPAN_MICROS)
}

/// The points of the chunk stored under `key`, checked against the
/// invariants above (`CorruptRecent` / `CorruptRecord` otherwise).
pub(crate) fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<Point>, StorageError> {
    let corrupt = |what| StorageError::CorruptRecord {
        what,
        key: key.to_vec(),
    };
    let (_, first) = keys::parse_series_key(key).ok_or_else(|| corrupt("recent key"))?;
    let mut out: Vec<Point> = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (p, used) =
            decode_recent_point(rest).map_err(|source| StorageError::CorruptRecent {
                key: key.to_vec(),
                source,
            })?;
        rest = rest.get(used..).unwrap_or_default();
        let ok = match out.last() {
            None => p.ts == first,
            Some(prev) => prev.ts < p.ts && within_span(first, p.ts),
        };
        if !ok {
            return Err(corrupt(
                "recent chunk (key, order or span does not match its points)",
            ));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(corrupt("recent chunk (empty)"));
    }
    Ok(out)
}

/// Encodes points (strictly increasing, within one span) as one chunk.
pub(crate) fn encode_chunk<'a>(
    points: impl IntoIterator<Item = &'a Point>,
) -> Result<Vec<u8>, StorageError> {
    let mut value = Vec::new();
    for p in points {
        encode_recent_point(p, &mut value)?;
    }
    Ok(value)
}

/// Encodes time-ordered points as chunks, starting a new one whenever the
/// next point would not fit the current one's span; `emit` gets each
/// chunk's first time (its key) and bytes. `expected` (how many points
/// there are, about) sizes the buffers.
pub(crate) fn encode_runs<'a>(
    points: impl IntoIterator<Item = &'a Point>,
    expected: usize,
    mut emit: impl FnMut(Timestamp, Vec<u8>),
) -> Result<(), StorageError> {
    // 22 bytes per numeric record; strings grow the buffer as they need.
    let capacity = expected.clamp(1, 4096) * 22;
    let mut current: Option<(Timestamp, Vec<u8>)> = None;
    for p in points {
        match &mut current {
            Some((first, value)) if within_span(*first, p.ts) => {
                encode_recent_point(p, value)?;
            }
            _ => {
                if let Some((first, value)) = current.take() {
                    emit(first, value);
                }
                let mut value = Vec::with_capacity(capacity);
                encode_recent_point(p, &mut value)?;
                current = Some((p.ts, value));
            }
        }
    }
    if let Some((first, value)) = current {
        emit(first, value);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::Value;
    use crate::storage::TagId;

    fn p(t: i64) -> Point {
        Point::good(Timestamp::from_micros(t), Value::I64(t))
    }

    fn runs(points: &[Point]) -> Vec<(Timestamp, Vec<u8>)> {
        let mut out = Vec::new();
        encode_runs(points, points.len(), |first, value| {
            out.push((first, value))
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_round_trip_and_split_by_span() {
        let span = MAX_CHUNK_SPAN_MICROS;
        let pts: Vec<Point> = [0, 5, span - 1, span, 2 * span + 3]
            .into_iter()
            .map(p)
            .collect();
        let got = runs(&pts);
        assert_eq!(got.len(), 3);
        let mut decoded = Vec::new();
        for (first, value) in &got {
            let key = keys::series_key(TagId(7), *first);
            decoded.extend(decode_chunk(&key, value).unwrap());
        }
        assert_eq!(decoded, pts);
        assert_eq!(
            decode_chunk(&keys::series_key(TagId(7), got[0].0), &got[0].1)
                .unwrap()
                .len(),
            3
        );
        assert!(runs(&[]).is_empty());
        assert_eq!(runs(&[p(i64::MIN), p(i64::MAX)]).len(), 2);
        assert_eq!(
            earliest_start(Timestamp::from_micros(i64::MIN)).micros(),
            i64::MIN
        );
        assert!(within_span(
            earliest_start(Timestamp::from_micros(99)),
            Timestamp::from_micros(99)
        ));
    }

    #[test]
    fn bad_chunks_are_errors() {
        let key = keys::series_key(TagId(1), Timestamp::from_micros(10));
        let ok = encode_chunk(&[p(10), p(11)]).unwrap();
        assert!(decode_chunk(&key, &ok).is_ok());
        // Empty, wrong first time, out of order, too long a span, truncated.
        assert!(decode_chunk(&key, &[]).is_err());
        assert!(decode_chunk(&key, &encode_chunk(&[p(11)]).unwrap()).is_err());
        assert!(decode_chunk(&key, &encode_chunk(&[p(10), p(10)]).unwrap()).is_err());
        assert!(decode_chunk(&key, &encode_chunk(&[p(10), p(9)]).unwrap()).is_err());
        let far = encode_chunk(&[p(10), p(10 + MAX_CHUNK_SPAN_MICROS)]).unwrap();
        assert!(decode_chunk(&key, &far).is_err());
        for cut in 0..ok.len() {
            let _ = decode_chunk(&key, &ok[..cut]);
        }
        assert!(decode_chunk(&key, &ok[..ok.len() - 1]).is_err());
        assert!(decode_chunk(&key[..11], &ok).is_err());
    }
}
