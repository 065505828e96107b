//! `recorded`: a tag's stored points in a range, with PI's boundary types
//! and paging by continuation.

use crate::encoding::{Point, Timestamp};
use crate::query::numeric::check_range;
use crate::query::value_at::{interpolate_between, neighbours};
use crate::query::{Interpolation, QueryError, QueryLimits, Source};

/// What `recorded` adds at the edges of `[start, end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Boundary {
    /// Only the points inside `[start, end]` (PI's default).
    Inside,
    /// Also the last point before `start` and the first after `end`, so a
    /// trend line reaches both edges.
    Outside,
    /// Also the values interpolated at `start` and `end`, unless a point
    /// sits exactly there; omitted where there is no data to interpolate.
    Interpolated(Interpolation),
}

/// One page of `recorded`.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// At most `max_count` points, in time order.
    pub points: Vec<Point>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Continuation>,
}

/// Where a `recorded` read resumes. The handlers send `to_bytes` to the
/// client as an opaque token and decode it with `from_bytes`; a token is
/// checked against the range of the request it comes back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Continuation {
    /// First timestamp still to return; `None` when only the end boundary is left.
    from: Option<Timestamp>,
    /// Points at `from` already returned (a timestamp may hold several).
    skip: u64,
}

/// Encoded size of a continuation: kind byte, timestamp, skip count.
pub const CONTINUATION_LEN: usize = 17;

const KIND_RAW: u8 = 1;
const KIND_END_BOUNDARY: u8 = 2;

impl Continuation {
    /// The token bytes: kind (1 raw points left, 2 only the end boundary),
    /// then `from` as i64 and `skip` as u64, little-endian.
    pub fn to_bytes(&self) -> [u8; CONTINUATION_LEN] {
        let mut out = [0u8; CONTINUATION_LEN];
        let (kind, from) = match self.from {
            Some(t) => (KIND_RAW, t.micros()),
            None => (KIND_END_BOUNDARY, 0),
        };
        let mut fields = Vec::with_capacity(CONTINUATION_LEN);
        fields.push(kind);
        fields.extend_from_slice(&from.to_le_bytes());
        fields.extend_from_slice(&self.skip.to_le_bytes());
        out.copy_from_slice(&fields);
        out
    }

    /// Decodes a token; anything malformed is `BadContinuation`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Continuation, QueryError> {
        let bytes: &[u8; CONTINUATION_LEN] =
            bytes.try_into().map_err(|_| QueryError::BadContinuation)?;
        let [kind, rest @ ..] = bytes;
        let (from, skip) = rest.split_at(8);
        let from = i64::from_le_bytes(from.try_into().map_err(|_| QueryError::BadContinuation)?);
        let skip = u64::from_le_bytes(skip.try_into().map_err(|_| QueryError::BadContinuation)?);
        match *kind {
            KIND_RAW => Ok(Continuation {
                from: Some(Timestamp::from_micros(from)),
                skip,
            }),
            KIND_END_BOUNDARY if from == 0 && skip == 0 => Ok(Continuation { from: None, skip }),
            _ => Err(QueryError::BadContinuation),
        }
    }
}

/// The points of `tag` in `[start, end]` (both inclusive) with `boundary`
/// points added, at most `max_count` per page, boundary points included.
///
/// Pass `resume: None` for the first page, then each page's `next` with the
/// same `tag`, `start`, `end` and `boundary`; the pages concatenated are the
/// unpaged answer (if nothing is written in between).
// The arguments mirror the PI Web API call one to one.
#[allow(clippy::too_many_arguments)]
pub fn recorded<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    boundary: Boundary,
    max_count: usize,
    resume: Option<&Continuation>,
    limits: &QueryLimits,
) -> Result<Page, QueryError> {
    check_range(start, end)?;
    if max_count == 0 {
        return Err(QueryError::ZeroCount);
    }
    if max_count > limits.max_page_points {
        return Err(QueryError::TooManyPoints {
            requested: max_count,
            limit: limits.max_page_points,
        });
    }
    let mut out = Vec::new();
    let (from, skip) = match resume {
        None => {
            out.extend(leading(src, tag, start, boundary)?);
            (Some(start), 0)
        }
        Some(c) => {
            // A forged token must not point outside the range or make us
            // skip (and so read) more than a page. A legitimate skip counts
            // points sharing one timestamp, which never come near a page.
            let outside = c.from.is_some_and(|f| f < start || f > end);
            let max_skip = u64::try_from(limits.max_page_points).unwrap_or(u64::MAX);
            if outside || c.skip > max_skip {
                return Err(QueryError::BadContinuation);
            }
            (c.from, c.skip)
        }
    };
    if let Some(from) = from {
        let room = max_count.saturating_sub(out.len());
        // One extra point tells whether another page follows.
        let skip_len = usize::try_from(skip).map_err(|_| QueryError::BadContinuation)?;
        let want = skip_len.saturating_add(room).saturating_add(1);
        let mut raw = src.range(tag, from, end, want)?.into_iter().peekable();
        let mut skipped = 0;
        while skipped < skip_len && raw.next_if(|p| p.ts == from).is_some() {
            skipped += 1;
        }
        let mut page: Vec<Point> = raw.collect();
        if page.len() > room {
            let rest = page.split_off(room);
            if let Some(next) = rest.first() {
                let same = page.iter().rev().take_while(|p| p.ts == next.ts).count();
                let mut skip_next = u64::try_from(same).unwrap_or(u64::MAX);
                if next.ts == from && same == page.len() {
                    skip_next = skip_next.saturating_add(skip);
                }
                out.extend(page);
                return Ok(Page {
                    points: out,
                    next: Some(Continuation {
                        from: Some(next.ts),
                        skip: skip_next,
                    }),
                });
            }
        }
        out.extend(page);
    }
    // Raw points are exhausted; the end boundary is last.
    if let Some(p) = trailing(src, tag, start, end, boundary)? {
        if out.len() >= max_count {
            return Ok(Page {
                points: out,
                next: Some(Continuation {
                    from: None,
                    skip: 0,
                }),
            });
        }
        out.push(p);
    }
    Ok(Page {
        points: out,
        next: None,
    })
}

/// The boundary point before the first raw point, if any.
fn leading<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    boundary: Boundary,
) -> Result<Option<Point>, QueryError> {
    Ok(match boundary {
        Boundary::Inside => None,
        Boundary::Outside => src.before(tag, start, false)?,
        Boundary::Interpolated(interp) => {
            let (prev, next) = neighbours(src, tag, start)?;
            // A point at `start` is a raw point already.
            match prev {
                Some(p) if p.ts == start => None,
                prev => interpolate_between(prev.as_ref(), next.as_ref(), start, interp),
            }
        }
    })
}

/// The boundary point after the last raw point, if any.
fn trailing<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    boundary: Boundary,
) -> Result<Option<Point>, QueryError> {
    Ok(match boundary {
        Boundary::Inside => None,
        Boundary::Outside => src.after(tag, end, false)?,
        // One instant: the start boundary (or the point there) stands for the end too.
        Boundary::Interpolated(_) if start == end => None,
        Boundary::Interpolated(interp) => {
            let (prev, next) = neighbours(src, tag, end)?;
            match prev {
                Some(p) if p.ts == end => None,
                prev => interpolate_between(prev.as_ref(), next.as_ref(), end, interp),
            }
        }
    })
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn continuation_bytes_round_trip() {
        for c in [
            Continuation {
                from: Some(Timestamp::from_micros(i64::MIN)),
                skip: u64::MAX,
            },
            Continuation {
                from: Some(Timestamp::from_micros(-5)),
                skip: 0,
            },
            Continuation {
                from: None,
                skip: 0,
            },
        ] {
            assert_eq!(Continuation::from_bytes(&c.to_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn malformed_continuations_are_refused() {
        let good = Continuation {
            from: Some(Timestamp::from_micros(7)),
            skip: 1,
        }
        .to_bytes();
        assert!(Continuation::from_bytes(&good[..16]).is_err());
        assert!(Continuation::from_bytes(&[good.as_slice(), &[0]].concat()).is_err());
        let mut end_with_time = good;
        end_with_time[0] = KIND_END_BOUNDARY;
        assert!(Continuation::from_bytes(&end_with_time).is_err());
        for kind in [0, 3, 255] {
            let mut b = good;
            b[0] = kind;
            assert!(Continuation::from_bytes(&b).is_err());
        }
    }
}
