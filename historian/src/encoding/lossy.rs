//! Optional, per-tag lossy filters with the conventions of PI historians:
//! exception deviation (`ExcDev`/`ExcMax`, applied where data arrives) and
//! swinging-door compression (`CompDev`/`CompMax`, applied before archiving).
//! Both are off by default (`LossyConfig::default()` keeps every point) and
//! are pure filters over a time-ordered point stream; they never touch bytes.
//!
//! Guarantees, tested below:
//! * exception: every dropped point has the same type and quality as the
//!   last stored point before it, lies within `deviation` of its value, and
//!   is less than `max_interval` after it;
//! * swinging door: every dropped numeric point lies within `deviation` of
//!   the straight line between the stored points on either side of it.
//!
//! Non-numeric values (bool, string), non-finite floats and quality changes
//! are never approximated: such points are kept whenever the value or quality
//! changes, as PI does for digital tags.

use std::time::Duration;

use crate::encoding::{Point, Value};

/// PI's default `ExcMax`: a value is reported at least every 10 minutes.
pub const DEFAULT_EXC_MAX: Duration = Duration::from_secs(600);
/// PI's default `CompMax`: a value is archived at least every 8 hours.
pub const DEFAULT_COMP_MAX: Duration = Duration::from_secs(8 * 3600);

/// Per-tag lossy settings. The default is lossless: both filters off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossyConfig {
    /// Exception reporting (PI `ExcDev`, `ExcMax`); `None` keeps every point.
    pub exception: Option<ExceptionConfig>,
    /// Swinging-door compression (PI `CompDev`, `CompMax`); `None` keeps every point.
    pub compression: Option<CompressionConfig>,
}

/// Exception deviation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExceptionConfig {
    /// `ExcDev`: a value further than this (engineering units) from the last
    /// reported value is reported.
    pub deviation: f64,
    /// `ExcMax`: a value this long after the last reported one is reported anyway.
    pub max_interval: Duration,
}

/// Swinging-door compression settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompressionConfig {
    /// `CompDev`: the largest distance (engineering units) between a dropped
    /// value and the line through the archived values around it.
    pub deviation: f64,
    /// `CompMax`: the held value is archived once this long has passed since
    /// the last archived value.
    pub max_interval: Duration,
}

/// Runs both configured filters in PI order (exception, then compression).
#[derive(Clone, Debug)]
pub struct LossyFilter {
    exception: Option<ExceptionFilter>,
    compression: Option<SwingingDoor>,
    scratch: Vec<Point>,
}

impl LossyFilter {
    /// A filter for one tag.
    pub fn new(config: &LossyConfig) -> Self {
        LossyFilter {
            exception: config.exception.map(ExceptionFilter::new),
            compression: config.compression.map(SwingingDoor::new),
            scratch: Vec::new(),
        }
    }

    /// Feeds one point; points to store are appended to `out`.
    pub fn push(&mut self, point: Point, out: &mut Vec<Point>) {
        self.scratch.clear();
        match &mut self.exception {
            Some(f) => f.push(point, &mut self.scratch),
            None => self.scratch.push(point),
        }
        self.forward(out);
    }

    /// Ends the stream: flushes held points to `out`.
    pub fn finish(&mut self, out: &mut Vec<Point>) {
        self.scratch.clear();
        if let Some(f) = &mut self.exception {
            f.finish(&mut self.scratch);
        }
        self.forward(out);
        if let Some(c) = &mut self.compression {
            c.finish(out);
        }
    }

    fn forward(&mut self, out: &mut Vec<Point>) {
        for p in self.scratch.drain(..) {
            match &mut self.compression {
                Some(c) => c.push(p, out),
                None => out.push(p),
            }
        }
    }
}

/// Filters a whole stream at once (including the final flush).
pub fn apply_lossy(points: impl IntoIterator<Item = Point>, config: &LossyConfig) -> Vec<Point> {
    let mut f = LossyFilter::new(config);
    let mut out = Vec::new();
    for p in points {
        f.push(p, &mut out);
    }
    f.finish(&mut out);
    out
}

/// PI exception reporting. When a value passes after others were held
/// back, the last held-back value is reported first (as PI interfaces do),
/// so the compression stage sees where the signal left its band.
#[derive(Clone, Debug)]
pub struct ExceptionFilter {
    config: ExceptionConfig,
    last_sent: Option<Point>,
    held: Option<Point>,
}

impl ExceptionFilter {
    /// A filter for one tag.
    pub fn new(config: ExceptionConfig) -> Self {
        ExceptionFilter {
            config,
            last_sent: None,
            held: None,
        }
    }

    /// Feeds one point; reported points are appended to `out`.
    pub fn push(&mut self, point: Point, out: &mut Vec<Point>) {
        let pass = self
            .last_sent
            .as_ref()
            .is_none_or(|s| exception_passes(s, &point, &self.config));
        if pass {
            out.extend(self.held.take());
            self.last_sent = Some(point.clone());
            out.push(point);
        } else {
            self.held = Some(point);
        }
    }

    /// Reports the last held-back value, if any (the current snapshot).
    pub fn finish(&mut self, out: &mut Vec<Point>) {
        if let Some(p) = self.held.take() {
            self.last_sent = Some(p.clone());
            out.push(p);
        }
    }
}

/// Swinging-door compression (Bristol's algorithm as used by PI).
///
/// From the last archived point `A`, each later point `P` defines the slopes
/// to `P ± deviation`; the door is the intersection of those slope ranges.
/// A new point whose own slope from `A` falls outside the door closes it: the
/// point before it (the held snapshot) is archived and becomes `A`. Because
/// every held point was inside the door of all points before it, the line
/// from `A` to the archived point passes within `deviation` of each.
#[derive(Clone, Debug)]
pub struct SwingingDoor {
    config: CompressionConfig,
    archived: Option<Point>,
    held: Option<Point>,
    /// Slope range (value units per µs) still open, valid while `held` is numeric.
    low: f64,
    high: f64,
}

impl SwingingDoor {
    /// A compressor for one tag.
    pub fn new(config: CompressionConfig) -> Self {
        SwingingDoor {
            config,
            archived: None,
            held: None,
            low: f64::NEG_INFINITY,
            high: f64::INFINITY,
        }
    }

    /// Feeds one point; archived points are appended to `out`.
    pub fn push(&mut self, point: Point, out: &mut Vec<Point>) {
        let Some(a) = &self.archived else {
            self.archive(point, out);
            return;
        };
        if micros_between(a, &point) > duration_micros(self.config.max_interval) {
            // CompMax: archive the snapshot, then judge the new point from it.
            self.flush_held(out);
        }
        self.judge(point, out);
    }

    /// Archives the held snapshot, if any.
    pub fn finish(&mut self, out: &mut Vec<Point>) {
        self.flush_held(out);
    }

    fn judge(&mut self, point: Point, out: &mut Vec<Point>) {
        let Some(a) = &self.archived else {
            self.archive(point, out);
            return;
        };
        let dt = micros_between(a, &point);
        if dt <= 0 {
            // Same instant as the archived point: no slope exists, keep it.
            self.flush_held(out);
            self.archive(point, out);
            return;
        }
        let Some((va, vp)) = numeric_pair(a, &point) else {
            // Not approximable (digital, text, non-finite, quality change):
            // drop only exact repeats of the archived state.
            if same_state(a, &point) {
                self.held = Some(point);
            } else {
                self.flush_held(out);
                self.archive(point, out);
            }
            return;
        };
        // i64 -> f64 can round for |x| > 2^53; the door then errs on the side of keeping points.
        let dt = dt as f64;
        let slope = (vp - va) / dt;
        let band = self.config.deviation / dt;
        if self.held.is_none() {
            (self.low, self.high) = (slope - band, slope + band);
            self.held = Some(point);
        } else if self.low <= slope && slope <= self.high {
            self.low = self.low.max(slope - band);
            self.high = self.high.min(slope + band);
            self.held = Some(point);
        } else {
            self.flush_held(out);
            self.judge(point, out);
        }
    }

    fn flush_held(&mut self, out: &mut Vec<Point>) {
        if let Some(h) = self.held.take() {
            self.archive(h, out);
        }
    }

    fn archive(&mut self, point: Point, out: &mut Vec<Point>) {
        self.archived = Some(point.clone());
        self.held = None;
        out.push(point);
    }
}

/// PI's exception test: whether `point` must be reported after `last_sent`,
/// the last reported value. It passes when it is `ExcMax` or more after it,
/// or differs by more than `ExcDev` from it; any change of type, quality or
/// of a non-numeric value (bool, text, NaN, infinity) passes too.
pub fn exception_passes(last_sent: &Point, point: &Point, config: &ExceptionConfig) -> bool {
    micros_between(last_sent, point) >= duration_micros(config.max_interval)
        || !within(last_sent, point, config.deviation)
}

/// Swinging-door compression of one run of points in time order: the first
/// and the last point are always kept, and every dropped point lies within
/// `config.deviation` of the line between the kept points on either side.
pub fn compress(points: impl IntoIterator<Item = Point>, config: &CompressionConfig) -> Vec<Point> {
    let mut door = SwingingDoor::new(*config);
    let mut out = Vec::new();
    for p in points {
        door.push(p, &mut out);
    }
    door.finish(&mut out);
    out
}

/// Microseconds from `a` to `b` (saturating).
fn micros_between(a: &Point, b: &Point) -> i64 {
    b.ts.micros().saturating_sub(a.ts.micros())
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Both finite numbers of the same type with the same quality.
fn numeric_pair(a: &Point, b: &Point) -> Option<(f64, f64)> {
    if a.quality != b.quality {
        return None;
    }
    let (x, y) = match (&a.value, &b.value) {
        (Value::F64(x), Value::F64(y)) => (*x, *y),
        (Value::I64(x), Value::I64(y)) => (*x as f64, *y as f64),
        _ => return None,
    };
    (x.is_finite() && y.is_finite()).then_some((x, y))
}

/// Same type, value (bit-exact) and quality.
fn same_state(a: &Point, b: &Point) -> bool {
    a.quality == b.quality && a.value == b.value
}

/// May `b` be dropped as a repeat of `a` under exception deviation `dev`?
fn within(a: &Point, b: &Point, dev: f64) -> bool {
    match numeric_pair(a, b) {
        Some((x, y)) => (y - x).abs() <= dev,
        None => same_state(a, b),
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::{Quality, Severity, Timestamp};
    use proptest::prelude::*;

    fn pt(t: i64, v: f64) -> Point {
        Point::good(Timestamp::from_micros(t), Value::F64(v))
    }

    fn val(p: &Point) -> f64 {
        match p.value {
            Value::F64(v) => v,
            _ => f64::NAN,
        }
    }

    /// A random walk with steps, plateaus and occasional bad quality.
    fn stream() -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec((1i64..5_000_000, -10.0f64..10.0, 0u8..20), 1..400).prop_map(
            |steps| {
                let (mut t, mut v) = (1_700_000_000_000_000i64, 0.0f64);
                steps
                    .into_iter()
                    .map(|(dt, dv, kind)| {
                        t += dt;
                        v = match kind {
                            0 => v + dv * 20.0,
                            1..=5 => v,
                            _ => v + dv,
                        };
                        let quality = if kind == 19 {
                            Quality::new(Severity::Bad, 1)
                        } else {
                            Quality::GOOD
                        };
                        Point {
                            ts: Timestamp::from_micros(t),
                            value: Value::F64(v),
                            quality,
                        }
                    })
                    .collect()
            },
        )
    }

    /// Indices of `kept` within `all` (timestamps are unique in these tests).
    fn kept_indices(all: &[Point], kept: &[Point]) -> Vec<usize> {
        kept.iter()
            .map(|k| all.iter().position(|p| p == k).unwrap())
            .collect()
    }

    #[test]
    fn default_config_is_lossless() {
        let pts: Vec<Point> = (0..100).map(|i| pt(i, (i % 7) as f64)).collect();
        assert_eq!(apply_lossy(pts.clone(), &LossyConfig::default()), pts);
    }

    #[test]
    fn straight_line_compresses_to_its_ends() {
        let pts: Vec<Point> = (0..1000)
            .map(|i| pt(i * 1000, 3.0 + i as f64 * 0.5))
            .collect();
        let cfg = LossyConfig {
            compression: Some(CompressionConfig {
                deviation: 0.01,
                max_interval: Duration::from_secs(3600),
            }),
            ..Default::default()
        };
        let kept = apply_lossy(pts.clone(), &cfg);
        assert_eq!(kept, vec![pts[0].clone(), pts[999].clone()]);
    }

    #[test]
    fn comp_max_forces_archiving() {
        let pts: Vec<Point> = (0..100).map(|i| pt(i * 1_000_000, 1.0)).collect();
        let cfg = LossyConfig {
            compression: Some(CompressionConfig {
                deviation: 1.0,
                max_interval: Duration::from_secs(10),
            }),
            ..Default::default()
        };
        let kept = apply_lossy(pts, &cfg);
        for w in kept.windows(2) {
            assert!(w[1].ts.micros() - w[0].ts.micros() <= 11_000_000);
        }
        assert!(kept.len() >= 9 && kept.len() <= 12, "{}", kept.len());
    }

    proptest! {
        #[test]
        fn exception_drops_only_within_deviation(pts in stream(), dev in 0.0f64..5.0, max_s in 1u64..30) {
            let cfg = ExceptionConfig { deviation: dev, max_interval: Duration::from_secs(max_s) };
            let kept = apply_lossy(pts.clone(), &LossyConfig { exception: Some(cfg), ..Default::default() });
            let idx = kept_indices(&pts, &kept);
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(idx[0], 0);
            let mut last = 0;
            for (i, p) in pts.iter().enumerate() {
                if idx.contains(&i) { last = i; continue; }
                let s = &pts[last];
                prop_assert_eq!(s.quality, p.quality);
                prop_assert!((val(p) - val(s)).abs() <= dev, "dropped {} vs stored {}", val(p), val(s));
                prop_assert!(p.ts.micros() - s.ts.micros() < (max_s as i64) * 1_000_000);
            }
        }

        #[test]
        fn swinging_door_drops_only_near_the_line(pts in stream(), dev in 0.0f64..5.0, max_s in 1u64..60) {
            let cfg = CompressionConfig { deviation: dev, max_interval: Duration::from_secs(max_s) };
            let kept = apply_lossy(pts.clone(), &LossyConfig { compression: Some(cfg), ..Default::default() });
            let idx = kept_indices(&pts, &kept);
            prop_assert_eq!(idx[0], 0);
            prop_assert_eq!(*idx.last().unwrap(), pts.len() - 1);
            for w in idx.windows(2) {
                let (a, b) = (&pts[w[0]], &pts[w[1]]);
                for p in &pts[w[0] + 1..w[1]] {
                    prop_assert_eq!(p.quality, a.quality);
                    let f = (p.ts.micros() - a.ts.micros()) as f64 / (b.ts.micros() - a.ts.micros()) as f64;
                    let line = val(a) + (val(b) - val(a)) * f;
                    let tol = 1e-9 * (1.0 + val(a).abs().max(val(b).abs()));
                    prop_assert!((val(p) - line).abs() <= dev + tol, "dropped {} vs line {} (dev {})", val(p), line, dev);
                }
            }
        }

        #[test]
        fn digital_values_keep_every_change(states in prop::collection::vec(0u8..3, 1..200)) {
            let pts: Vec<Point> = states.iter().enumerate().map(|(i, &s)| Point::good(Timestamp::from_micros(i as i64), Value::Str(format!("S{s}")))).collect();
            let cfg = LossyConfig {
                exception: Some(ExceptionConfig { deviation: 1.0, max_interval: Duration::from_secs(3600) }),
                compression: Some(CompressionConfig { deviation: 1.0, max_interval: Duration::from_secs(3600) }),
            };
            let kept = apply_lossy(pts.clone(), &cfg);
            // Every change of state is kept, with its first timestamp.
            for (i, w) in pts.windows(2).enumerate() {
                if w[0].value != w[1].value {
                    prop_assert!(kept.contains(&pts[i + 1]));
                }
            }
        }
    }
}
