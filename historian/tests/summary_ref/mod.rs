//! The summary reference shared by `query.rs` (against `MemSource`) and
//! `storage_rollups.rs` (against real storage): every aggregate computed
//! the obvious way, point by point, from the points alone.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use converge_historian::encoding::{Point, Timestamp, Value};
use converge_historian::query::{Interpolation, SummaryKind, SummaryRow};

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

pub fn num(v: &Value) -> f64 {
    match v {
        Value::F64(x) => *x,
        Value::I64(x) => *x as f64,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => panic!("not numeric"),
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
}

/// Aggregates of [a, b) computed the obvious way.
#[derive(Debug)]
pub struct RefRow {
    pub count: usize,
    pub min: Option<(i64, f64)>,
    pub max: Option<(i64, f64)>,
    pub first: Option<(i64, f64)>,
    pub last: Option<(i64, f64)>,
    pub mean: Option<f64>,
    pub std_dev: Option<f64>,
    pub good_us: i64,
    pub integral: f64,
}

pub fn ref_summary_row(pts: &[Point], a: i64, b: i64, weighting: Interpolation) -> RefRow {
    let events: Vec<(i64, f64)> = pts
        .iter()
        .filter(|p| p.quality.is_good() && (a..b).contains(&p.ts.micros()))
        .map(|p| (p.ts.micros(), num(&p.value)))
        .collect();
    let n = events.len();
    let mean = (n > 0).then(|| events.iter().map(|e| e.1).sum::<f64>() / n as f64);
    let std_dev = (n > 1).then(|| {
        let m = mean.unwrap();
        (events.iter().map(|e| (e.1 - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    });
    let mut min: Option<(i64, f64)> = None;
    let mut max: Option<(i64, f64)> = None;
    for &e in &events {
        if min.is_none_or(|m| e.1 < m.1) {
            min = Some(e);
        }
        if max.is_none_or(|m| e.1 > m.1) {
            max = Some(e);
        }
    }
    // Each point's value holds from its time to the next point's (forever
    // for the last); only good points make good time.
    let mut good_us = 0i64;
    let mut integral = 0.0;
    for (i, p) in pts.iter().enumerate() {
        let next = pts.get(i + 1);
        let seg_end = next.map_or(i64::MAX, |n| n.ts.micros());
        let (x, y) = (p.ts.micros().max(a), seg_end.min(b));
        if x >= y || !p.quality.is_good() {
            continue;
        }
        good_us += y - x;
        let v = num(&p.value);
        let area = match next {
            Some(n) if weighting == Interpolation::Linear && n.quality.is_good() => {
                let (t0, t1, v1) = (p.ts.micros() as f64, n.ts.micros() as f64, num(&n.value));
                let at = |t: i64| v + (v1 - v) * (t as f64 - t0) / (t1 - t0);
                (at(x) + at(y)) / 2.0 * (y - x) as f64
            }
            _ => v * (y - x) as f64,
        };
        integral += area / 1e6;
    }
    RefRow {
        count: n,
        min,
        max,
        first: events.first().copied(),
        last: events.last().copied(),
        mean,
        std_dev,
        good_us,
        integral,
    }
}

pub const ALL_KINDS: [SummaryKind; 11] = [
    SummaryKind::Min,
    SummaryKind::Max,
    SummaryKind::Average,
    SummaryKind::TimeWeightedAverage,
    SummaryKind::Count,
    SummaryKind::First,
    SummaryKind::Last,
    SummaryKind::Total,
    SummaryKind::Range,
    SummaryKind::StdDev,
    SummaryKind::PercentGood,
];

pub fn opt_close(got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (Some(g), Some(w)) => close(g, w),
        (None, None) => true,
        _ => false,
    }
}

pub fn check_row(row: &SummaryRow, want: &RefRow) {
    let a = row.start.micros();
    let b = row.end.micros();
    let pct = want.good_us as f64 / (b - a) as f64 * 100.0;
    assert!(close(row.percent_good, pct), "{row:?} {want:?}");
    let event = |e: Option<(i64, f64)>| (e.map(|x| x.1), e.map(|x| ts(x.0)));
    for v in &row.values {
        let (value, at) = match v.kind {
            SummaryKind::Min => event(want.min),
            SummaryKind::Max => event(want.max),
            SummaryKind::First => event(want.first),
            SummaryKind::Last => event(want.last),
            SummaryKind::Average => (want.mean, None),
            SummaryKind::TimeWeightedAverage => (
                (want.good_us > 0).then(|| want.integral / (want.good_us as f64 / 1e6)),
                None,
            ),
            SummaryKind::Count => (Some(want.count as f64), None),
            SummaryKind::Total => ((want.good_us > 0).then_some(want.integral), None),
            SummaryKind::Range => (want.max.zip(want.min).map(|(x, n)| x.1 - n.1), None),
            SummaryKind::StdDev => (want.std_dev, None),
            SummaryKind::PercentGood => (Some(pct), None),
            _ => unreachable!(),
        };
        assert!(
            opt_close(v.value, value) && v.ts == at,
            "{:?}: got {:?} at {:?}, want {value:?} at {at:?}\nrow {row:?}\nref {want:?}",
            v.kind,
            v.value,
            v.ts
        );
    }
}
