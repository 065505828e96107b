//! The last stored point of each tag, and the two tests against it:
//!
//! * the **deadband** only drops: a point within the band of the last stored
//!   point (same quality) is dropped, any other point is stored at once;
//! * PI's **exception** test (`ExcDev`, `ExcMax`) with its hold-back: a point
//!   that does not pass is held instead of stored; when a later point
//!   passes, the held one (the last value before the signal left its band)
//!   is stored with it, so a trend bends where the signal did. A held point
//!   that another held point replaces is dropped for good.
//!
//! Either way each point is stored or not when its message is decoded, and
//! an acknowledged point that was stored is durable. A held point is one the
//! policy drops unless a later point passes; a crash before that simply
//! drops it, within the same bound (`ExcDev` of the last stored point).

use std::collections::HashMap;

use crate::encoding::lossy::{exception_passes, ExceptionConfig};
use crate::encoding::{Point, Value};
use crate::ingest::TagPoint;

/// Last stored point per tag, for at most `cap` tags. Past the cap new tags
/// are not remembered: their points always pass the deadband and the
/// exception test, and a null value for them is written as zero. Stale
/// entries are never evicted, so the cap only bites when a peer invents tag
/// names without end.
#[derive(Debug)]
pub(crate) struct LastValues {
    points: HashMap<String, Last>,
    cap: usize,
}

/// One tag's last stored point and the point the exception test holds back.
#[derive(Debug)]
struct Last {
    stored: Point,
    held: Option<Point>,
}

/// What the exception test decided for one point.
#[derive(Debug, PartialEq)]
pub(crate) enum Exception {
    /// Store the point; store `held` (the point held back before it) first.
    Report {
        /// The held-back point to store before this one.
        held: Option<Point>,
    },
    /// Hold the point back; `dropped_held` if it replaced a held point.
    Hold {
        /// Whether an earlier held point is now dropped for good.
        dropped_held: bool,
    },
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
        self.points.get(tag).map(|l| &l.stored)
    }

    /// PI's exception test for `p` (see the module docs), updating the
    /// tag's state. Points older than the newest one seen (late, replaced,
    /// out of order) are always reported and change nothing: dropping them
    /// would need the neighbours on both sides.
    pub(crate) fn exception(&mut self, p: &TagPoint, config: &ExceptionConfig) -> Exception {
        let Some(last) = self.points.get_mut(&p.tag) else {
            self.update(p);
            return Exception::Report { held: None };
        };
        let newest = last.held.as_ref().map_or(last.stored.ts, |h| h.ts);
        if p.point.ts <= newest {
            if p.point.ts >= last.stored.ts {
                last.stored = p.point.clone();
            }
            return Exception::Report { held: None };
        }
        if exception_passes(&last.stored, &p.point, config) {
            let held = last.held.take();
            last.stored = p.point.clone();
            Exception::Report { held }
        } else {
            let dropped_held = last.held.replace(p.point.clone()).is_some();
            Exception::Hold { dropped_held }
        }
    }

    /// Whether `p` may be dropped: same quality as the last stored point,
    /// not older than it, and a value within `band` of it (numbers) or equal
    /// to it (booleans, strings, non-finite floats, mixed types).
    pub(crate) fn within_deadband(&self, p: &TagPoint, band: f64) -> bool {
        let Some(last) = self.get(&p.tag) else {
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
            if p.point.ts >= last.stored.ts {
                last.stored = p.point.clone();
            }
        } else if self.points.len() < self.cap {
            self.points.insert(
                p.tag.clone(),
                Last {
                    stored: p.point.clone(),
                    held: None,
                },
            );
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
                lossy: None,
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
    fn exception_holds_back_and_reports_the_held_point() {
        use std::time::Duration;
        let cfg = ExceptionConfig {
            deviation: 0.5,
            max_interval: Duration::from_micros(100),
        };
        let mut lv = LastValues::new(10);
        let g = |ts, v| tp(ts, Value::F64(v), Quality::GOOD);
        let report = |held: Option<TagPoint>| Exception::Report {
            held: held.map(|h| h.point),
        };
        assert_eq!(lv.exception(&g(10, 1.0), &cfg), report(None));
        assert_eq!(
            lv.exception(&g(11, 1.2), &cfg),
            Exception::Hold {
                dropped_held: false
            }
        );
        assert_eq!(
            lv.exception(&g(12, 1.4), &cfg),
            Exception::Hold { dropped_held: true }
        );
        // Late: reported, state unchanged.
        assert_eq!(lv.exception(&g(12, 9.0), &cfg), report(None));
        // Leaves the band: the held 1.4 is reported before it.
        assert_eq!(lv.exception(&g(13, 2.0), &cfg), report(Some(g(12, 1.4))));
        assert_eq!(lv.get("t").unwrap().ts.micros(), 13);
        // A quality change passes.
        assert_eq!(
            lv.exception(&tp(14, Value::F64(2.0), Quality::BAD), &cfg),
            report(None)
        );
        // ExcMax: 100 µs after the last report, whatever the value.
        assert_eq!(
            lv.exception(&tp(113, Value::F64(2.0), Quality::BAD), &cfg),
            Exception::Hold {
                dropped_held: false
            }
        );
        assert_eq!(
            lv.exception(&tp(114, Value::F64(2.0), Quality::BAD), &cfg),
            report(Some(tp(113, Value::F64(2.0), Quality::BAD)))
        );
    }

    #[test]
    fn cap_stops_remembering_new_tags() {
        let mut lv = LastValues::new(0);
        lv.update(&tp(1, Value::F64(1.0), Quality::GOOD));
        assert!(lv.get("t").is_none());
    }
}
