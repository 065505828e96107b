//! The last stored point of each tag, and the deadband test against it.
//!
//! A deadband here only drops: a point within the band of the last stored
//! point (same quality) is dropped, any other point is stored at once. That
//! is PI's exception test without its hold-back, so nothing waits for a
//! later point and a crash loses nothing that was accepted.

use std::collections::HashMap;

use crate::encoding::{Point, Value};
use crate::ingest::TagPoint;

/// Last stored point per tag, for at most `cap` tags. Past the cap new tags
/// are not remembered: their points always pass the deadband, and a null
/// value for them is written as zero. Stale entries are never evicted, so the
/// cap only bites when a peer invents tag names without end.
#[derive(Debug)]
pub(crate) struct LastValues {
    points: HashMap<String, Point>,
    cap: usize,
}

impl LastValues {
    pub(crate) fn new(cap: usize) -> Self {
        LastValues {
            points: HashMap::new(),
            cap,
        }
    }

    /// The last stored point of `tag`.
    pub(crate) fn get(&self, tag: &str) -> Option<&Point> {
        self.points.get(tag)
    }

    /// Whether `p` may be dropped: same quality as the last stored point,
    /// not older than it, and a value within `band` of it (numbers) or equal
    /// to it (booleans, strings, non-finite floats, mixed types).
    pub(crate) fn within_deadband(&self, p: &TagPoint, band: f64) -> bool {
        let Some(last) = self.points.get(&p.tag) else {
            return false;
        };
        if last.quality != p.point.quality || p.point.ts < last.ts {
            // Out-of-order points are stored: dropping them would need the
            // neighbours on both sides.
            return false;
        }
        match (&last.value, &p.point.value) {
            (Value::F64(a), Value::F64(b)) if a.is_finite() && b.is_finite() => {
                (a - b).abs() <= band
            }
            (Value::I64(a), Value::I64(b)) => {
                // i128 so that the difference cannot overflow; rounding to
                // f64 only matters beyond 2^53, far outside any deadband.
                let diff = (i128::from(*a) - i128::from(*b)).unsigned_abs();
                (diff as f64) <= band
            }
            (a, b) => a == b,
        }
    }

    /// Records `p` as stored unless an earlier-stamped point would replace a later one.
    pub(crate) fn update(&mut self, p: &TagPoint) {
        if let Some(last) = self.points.get_mut(&p.tag) {
            if p.point.ts >= last.ts {
                *last = p.point.clone();
            }
        } else if self.points.len() < self.cap {
            self.points.insert(p.tag.clone(), p.point.clone());
        }
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::{Quality, Timestamp, ValueType};
    use crate::ingest::TagMeta;

    fn tp(ts: i64, value: Value, quality: Quality) -> TagPoint {
        TagPoint {
            tag: "t".into(),
            meta: TagMeta {
                value_type: value.value_type(),
                unit: None,
                description: None,
                retention: None,
            },
            point: Point {
                ts: Timestamp::from_micros(ts),
                value,
                quality,
            },
        }
    }

    #[test]
    fn band_rules() {
        let mut lv = LastValues::new(10);
        lv.update(&tp(10, Value::F64(1.0), Quality::GOOD));
        assert!(lv.within_deadband(&tp(11, Value::F64(1.5), Quality::GOOD), 0.5));
        assert!(!lv.within_deadband(&tp(11, Value::F64(1.6), Quality::GOOD), 0.5));
        assert!(!lv.within_deadband(&tp(11, Value::F64(1.0), Quality::BAD), 0.5));
        assert!(!lv.within_deadband(&tp(9, Value::F64(1.0), Quality::GOOD), 0.5));
        assert!(!lv.within_deadband(&tp(11, Value::F64(f64::NAN), Quality::GOOD), 0.5));
        assert!(!lv.within_deadband(&tp(11, Value::I64(1), Quality::GOOD), 0.5));

        lv.update(&tp(12, Value::I64(i64::MIN), Quality::GOOD));
        assert!(lv.within_deadband(&tp(13, Value::I64(i64::MIN + 2), Quality::GOOD), 2.0));
        assert!(!lv.within_deadband(&tp(13, Value::I64(i64::MAX), Quality::GOOD), 1e18));

        lv.update(&tp(14, Value::Bool(true), Quality::GOOD));
        assert!(lv.within_deadband(&tp(15, Value::Bool(true), Quality::GOOD), 0.0));
        assert!(!lv.within_deadband(&tp(15, Value::Bool(false), Quality::GOOD), 100.0));
        assert_eq!(lv.get("t").unwrap().value.value_type(), ValueType::Bool);
    }

    #[test]
    fn cap_stops_remembering_new_tags() {
        let mut lv = LastValues::new(0);
        lv.update(&tp(1, Value::F64(1.0), Quality::GOOD));
        assert!(lv.get("t").is_none());
    }
}
