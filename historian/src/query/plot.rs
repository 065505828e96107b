//! `plot`: the few points per pixel column that draw the same trend as all
//! of them, PI's "plot values".

use crate::encoding::{Point, Timestamp};
use crate::query::numeric::{as_f64, check_intervals, check_range, span};
use crate::query::source::{scan, Budget};
use crate::query::{QueryError, QueryLimits, Source};

/// Points of `tag` for a trend `intervals` pixels wide over `[start, end]`.
///
/// The range is cut into `intervals` equal buckets; each bucket gives its
/// first and last points, the good points with the smallest and largest
/// value (numbers and bools; none for strings) and its first point that is
/// not Good, so quality drops stay visible: at most five points per bucket,
/// each once, in time order. The last point before `start` and the first
/// after `end` are added, as with `Boundary::Outside`, so the line reaches
/// both edges.
pub fn plot<S: Source + ?Sized>(
    src: &S,
    tag: &str,
    start: Timestamp,
    end: Timestamp,
    intervals: u32,
    limits: &QueryLimits,
) -> Result<Vec<Point>, QueryError> {
    check_range(start, end)?;
    if intervals == 0 {
        return Err(QueryError::ZeroInterval);
    }
    check_intervals(u128::from(intervals), limits.max_intervals)?;
    // [start, end] holds span + 1 microseconds; u128 because that can be 2^64.
    let width = (u128::from(span(start, end)) + 1).div_ceil(u128::from(intervals));
    let width = u64::try_from(width).unwrap_or(u64::MAX).max(1);
    let mut out: Vec<Point> = src.before(tag, start, false)?.into_iter().collect();
    let mut bucket: Option<(u64, Bucket)> = None;
    let mut seq = 0u64;
    let mut budget = Budget::new(limits.max_points_scanned);
    scan(src, tag, start, end, &mut budget, |p| {
        let index = span(start, p.ts) / width;
        match &mut bucket {
            Some((i, b)) if *i == index => b.add(seq, p),
            _ => {
                if let Some((_, b)) = bucket.take() {
                    b.drain_into(&mut out);
                }
                let mut b = Bucket::default();
                b.add(seq, p);
                bucket = Some((index, b));
            }
        }
        seq += 1;
        Ok(())
    })?;
    if let Some((_, b)) = bucket {
        b.drain_into(&mut out);
    }
    out.extend(src.after(tag, end, false)?);
    Ok(out)
}

/// The candidate points of one bucket, each with its scan position so that
/// one point chosen for two roles is emitted once.
#[derive(Default)]
struct Bucket {
    first: Option<(u64, Point)>,
    last: Option<(u64, Point)>,
    min: Option<(u64, f64, Point)>,
    max: Option<(u64, f64, Point)>,
    not_good: Option<(u64, Point)>,
}

impl Bucket {
    fn add(&mut self, seq: u64, p: &Point) {
        if self.first.is_none() {
            self.first = Some((seq, p.clone()));
        }
        self.last = Some((seq, p.clone()));
        if !p.quality.is_good() {
            if self.not_good.is_none() {
                self.not_good = Some((seq, p.clone()));
            }
            return;
        }
        // NaN neither sets nor beats an extreme: it would hide the real ones.
        let Some(v) = as_f64(&p.value).ok().filter(|v| !v.is_nan()) else {
            return;
        };
        if self.min.as_ref().is_none_or(|(_, m, _)| v < *m) {
            self.min = Some((seq, v, p.clone()));
        }
        if self.max.as_ref().is_none_or(|(_, m, _)| v > *m) {
            self.max = Some((seq, v, p.clone()));
        }
    }

    fn drain_into(self, out: &mut Vec<Point>) {
        let mut chosen: Vec<(u64, Point)> = [self.first, self.last, self.not_good]
            .into_iter()
            .flatten()
            .chain(
                [self.min, self.max]
                    .into_iter()
                    .flatten()
                    .map(|(s, _, p)| (s, p)),
            )
            .collect();
        chosen.sort_by_key(|(s, _)| *s);
        chosen.dedup_by_key(|(s, _)| *s);
        out.extend(chosen.into_iter().map(|(_, p)| p));
    }
}
