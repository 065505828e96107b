//! The query engine against straightforward reference computations written
//! here: every call over random point sets (gaps, duplicate timestamps, bad
//! and uncertain runs, ranges inside, around and outside the data), paging,
//! the rollup path against the raw path, and the limits.

use std::time::Duration;

use converge_historian::encoding::{Point, Quality, Severity, Timestamp, Value, ValueType};
use converge_historian::query::{
    interpolated, plot, recorded, summary, value_at, Boundary, Continuation, Interpolation,
    MemSource, QueryError, QueryLimits, RetrievalMode, Rollup, RollupResolution, Source,
    SummaryKind, NO_DATA,
};
use proptest::prelude::*;

mod summary_ref;
use summary_ref::*;

const TAG: &str = "plant/unit1/temp";

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![
        15 => Just(Quality::GOOD),
        3 => Just(Quality::BAD),
        2 => Just(Quality::new(Severity::Uncertain, 3)),
    ]
}

/// Sorted points: small gaps, some big ones, some duplicates; runs of the
/// same quality so bad periods span several points. `unit` scales time.
fn series(max_len: usize, unit: i64) -> impl Strategy<Value = Vec<Point>> {
    let gap = prop_oneof![
        1 => Just(0i64),
        12 => 1i64..1_000,
        2 => 5_000i64..50_000,
    ];
    prop::collection::vec((gap, -1000i32..1000, quality(), 1usize..4), 0..max_len).prop_map(
        move |items| {
            let mut t = 0i64;
            let mut out = Vec::new();
            for (gap, v, q, run) in items {
                for i in 0..run {
                    t += if i == 0 { gap } else { 37 } * unit;
                    let value = Value::F64(f64::from(v) / 8.0 + i as f64);
                    out.push(Point {
                        ts: ts(t),
                        value,
                        quality: q,
                    });
                }
            }
            out
        },
    )
}

fn source(points: &[Point]) -> MemSource {
    let mut src = MemSource::new();
    src.add_tag(TAG);
    for p in points {
        src.insert(TAG, p.clone());
    }
    src
}

/// A range around the data: may start before it, end after it, or miss it.
fn range() -> impl Strategy<Value = (i64, i64)> {
    (-20_000i64..200_000, 0i64..150_000).prop_map(|(s, len)| (s, s + len))
}

/// Points and a range whose ends often sit exactly on a point, where the
/// boundary rules have their corner cases.
fn series_and_range(max_len: usize) -> impl Strategy<Value = (Vec<Point>, (i64, i64))> {
    series(max_len, 1).prop_flat_map(|pts| {
        let times: Vec<i64> = pts.iter().map(|p| p.ts.micros()).collect();
        let end_point = |times: Vec<i64>| {
            let any = (-20_000i64..200_000).boxed();
            if times.is_empty() {
                any
            } else {
                prop_oneof![any, prop::sample::select(times)].boxed()
            }
        };
        let ends =
            (end_point(times.clone()), end_point(times)).prop_map(|(a, b)| (a.min(b), a.max(b)));
        (Just(pts), ends)
    })
}

// ---- reference computations -------------------------------------------------

fn ref_before(pts: &[Point], t: i64, inclusive: bool) -> Option<Point> {
    pts.iter()
        .rev()
        .find(|p| p.ts.micros() < t || (inclusive && p.ts.micros() == t))
        .cloned()
}

fn ref_after(pts: &[Point], t: i64, inclusive: bool) -> Option<Point> {
    pts.iter()
        .find(|p| p.ts.micros() > t || (inclusive && p.ts.micros() == t))
        .cloned()
}

fn rank(q: Quality) -> u8 {
    match q.severity() {
        Severity::Good => 0,
        Severity::Uncertain => 1,
        _ => 2,
    }
}

/// The value at `t`, or `None` before the first point / after the last.
fn ref_interp(pts: &[Point], t: i64, interp: Interpolation) -> Option<Point> {
    let prev = ref_before(pts, t, true)?;
    if prev.ts.micros() == t {
        return Some(prev);
    }
    let next = ref_after(pts, t, false)?;
    let q = if rank(next.quality) > rank(prev.quality) {
        next.quality
    } else {
        prev.quality
    };
    if interp == Interpolation::Step {
        return Some(Point { ts: ts(t), ..prev });
    }
    if q.severity() == Severity::Bad {
        return Some(Point {
            ts: ts(t),
            value: prev.value,
            quality: q,
        });
    }
    let (t0, t1) = (prev.ts.micros() as f64, next.ts.micros() as f64);
    let (v0, v1) = (num(&prev.value), num(&next.value));
    let v = v0 + (v1 - v0) * (t as f64 - t0) / (t1 - t0);
    Some(Point {
        ts: ts(t),
        value: Value::F64(v),
        quality: q,
    })
}

fn same_point(a: &Point, b: &Point) -> bool {
    a.ts == b.ts
        && a.quality == b.quality
        && match (&a.value, &b.value) {
            (Value::F64(x), Value::F64(y)) => close(*x, *y),
            (x, y) => x == y,
        }
}

fn assert_points(got: &[Point], want: &[Point]) {
    assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(same_point(g, w), "got {g:?}, want {w:?}");
    }
}

fn ref_recorded(pts: &[Point], s: i64, e: i64, boundary: Boundary) -> Vec<Point> {
    let inside = pts
        .iter()
        .filter(|p| (s..=e).contains(&p.ts.micros()))
        .cloned();
    let mut out = Vec::new();
    match boundary {
        Boundary::Inside => out.extend(inside),
        Boundary::Outside => {
            out.extend(ref_before(pts, s, false));
            out.extend(inside);
            out.extend(ref_after(pts, e, false));
        }
        Boundary::Interpolated(i) => {
            let at = |t: i64| pts.iter().any(|p| p.ts.micros() == t);
            if !at(s) {
                out.extend(ref_interp(pts, s, i));
            }
            out.extend(inside);
            if !at(e) && s != e {
                out.extend(ref_interp(pts, e, i));
            }
        }
        _ => unreachable!(),
    }
    out
}

fn limits() -> QueryLimits {
    QueryLimits::default()
}

fn boundary() -> impl Strategy<Value = Boundary> {
    prop_oneof![
        Just(Boundary::Inside),
        Just(Boundary::Outside),
        Just(Boundary::Interpolated(Interpolation::Linear)),
        Just(Boundary::Interpolated(Interpolation::Step)),
    ]
}

fn interpolation() -> impl Strategy<Value = Interpolation> {
    prop_oneof![Just(Interpolation::Linear), Just(Interpolation::Step)]
}

/// Reads every page of a recorded query.
fn all_pages(src: &MemSource, s: i64, e: i64, boundary: Boundary, max_count: usize) -> Vec<Point> {
    let mut out = Vec::new();
    let mut resume: Option<Continuation> = None;
    for _ in 0..10_000 {
        let page = recorded(
            src,
            TAG,
            ts(s),
            ts(e),
            boundary,
            max_count,
            resume.as_ref(),
            &limits(),
        )
        .unwrap();
        assert!(page.points.len() <= max_count);
        out.extend(page.points);
        // The token survives the trip through bytes.
        resume = page
            .next
            .map(|c| Continuation::from_bytes(&c.to_bytes()).unwrap());
        if resume.is_none() {
            return out;
        }
    }
    panic!("paging does not end");
}

// ---- properties ---------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn recorded_matches_reference((pts, (s, e)) in series_and_range(60), b in boundary()) {
        let src = source(&pts);
        let page = recorded(&src, TAG, ts(s), ts(e), b, 150_000, None, &limits()).unwrap();
        prop_assert!(page.next.is_none());
        assert_points(&page.points, &ref_recorded(&pts, s, e, b));
    }

    #[test]
    fn pages_concatenate_to_one_read(
        (pts, (s, e)) in series_and_range(60), b in boundary(), max_count in 1usize..6,
    ) {
        let src = source(&pts);
        let whole = recorded(&src, TAG, ts(s), ts(e), b, 150_000, None, &limits()).unwrap();
        assert_points(&all_pages(&src, s, e, b, max_count), &whole.points);
    }

    #[test]
    fn value_at_matches_reference(pts in series(40, 1), t in -1_000i64..100_000, i in interpolation()) {
        let src = source(&pts);
        let cases = [
            (RetrievalMode::AtOrBefore, ref_before(&pts, t, true)),
            (RetrievalMode::Before, ref_before(&pts, t, false)),
            (RetrievalMode::AtOrAfter, ref_after(&pts, t, true)),
            (RetrievalMode::After, ref_after(&pts, t, false)),
            (RetrievalMode::Exact, ref_before(&pts, t, true).filter(|p| p.ts.micros() == t)),
            (RetrievalMode::Interpolated(i), ref_interp(&pts, t, i)),
        ];
        for (mode, want) in cases {
            let got = value_at(&src, TAG, ts(t), mode).unwrap();
            match (&got, &want) {
                (Some(g), Some(w)) => prop_assert!(same_point(g, w), "{mode:?}: {g:?} vs {w:?}"),
                (None, None) => {}
                _ => prop_assert!(false, "{mode:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn interpolated_matches_reference(
        pts in series(40, 1), (s, e) in range(), step in 2u64..20_000, i in interpolation(),
    ) {
        let src = source(&pts);
        let got = interpolated(&src, TAG, ts(s), ts(e), Duration::from_micros(step), i, &limits())
            .unwrap();
        let grid: Vec<i64> = (s..=e).step_by(step as usize).collect();
        prop_assert_eq!(got.len(), grid.len());
        for (g, t) in got.iter().zip(grid) {
            match ref_interp(&pts, t, i) {
                Some(w) => prop_assert!(same_point(g, &w), "at {t}: {g:?} vs {w:?}"),
                None => prop_assert!(g.ts == ts(t) && g.quality == NO_DATA, "at {t}: {g:?}"),
            }
        }
    }

    #[test]
    fn summary_matches_reference(
        (pts, (s, e)) in series_and_range(60),
        step in prop::option::of(1u64..60_000),
        w in interpolation(),
    ) {
        let src = source(&pts);
        let rows = summary(
            &src, TAG, ts(s), ts(e), step.map(Duration::from_micros), &ALL_KINDS, w, &limits(),
        )
        .unwrap();
        let step = step.map_or(e - s, |x| x as i64);
        let bounds: Vec<(i64, i64)> = if s == e {
            Vec::new()
        } else {
            (s..e).step_by(step as usize).map(|a| (a, (a + step).min(e))).collect()
        };
        prop_assert_eq!(rows.len(), bounds.len());
        for (row, (a, b)) in rows.iter().zip(bounds) {
            prop_assert_eq!((row.start, row.end), (ts(a), ts(b)));
            check_row(row, &ref_summary_row(&pts, a, b, w));
        }
    }

    #[test]
    fn plot_matches_reference((pts, (s, e)) in series_and_range(80), n in 1u32..40) {
        let src = source(&pts);
        let got = plot(&src, TAG, ts(s), ts(e), n, &limits()).unwrap();
        let width = ((e - s + 1) as u64).div_ceil(u64::from(n)) as i64;
        let inside: Vec<&Point> = pts.iter().filter(|p| (s..=e).contains(&p.ts.micros())).collect();
        let mut want: Vec<Point> = ref_before(&pts, s, false).into_iter().collect();
        let mut i = 0;
        while i < inside.len() {
            let bucket = (inside[i].ts.micros() - s) / width;
            let mut j = i;
            while j < inside.len() && (inside[j].ts.micros() - s) / width == bucket {
                j += 1;
            }
            let members = i..j;
            let good: Vec<usize> = members.clone().filter(|&k| inside[k].quality.is_good()).collect();
            let v = |k: usize| num(&inside[k].value);
            let mut picks = vec![i, j - 1];
            picks.extend(members.clone().find(|&k| !inside[k].quality.is_good()));
            if let Some(&g0) = good.first() {
                let min = good.iter().copied().fold(g0, |m, k| if v(k) < v(m) { k } else { m });
                let max = good.iter().copied().fold(g0, |m, k| if v(k) > v(m) { k } else { m });
                picks.extend([min, max]);
            }
            picks.sort_unstable();
            picks.dedup();
            prop_assert!(picks.len() <= 5);
            want.extend(picks.into_iter().map(|k| inside[k].clone()));
            i = j;
        }
        want.extend(ref_after(&pts, e, false));
        assert_points(&got, &want);
    }

    /// Data spaced in milliseconds to minutes over about an hour: the same
    /// summary from minute and hour rollups (plus raw edges and the buckets
    /// a sparse source leaves out) as from raw points, for aligned and
    /// unaligned ranges and intervals, in both weightings.
    #[test]
    fn rollup_summary_equals_raw_summary(
        pts in series(150, 10_000),
        aligned in any::<bool>(),
        start_s in -200i64..3_000,
        len_s in 1i64..9_000,
        step_s in prop::option::of(60i64..4_000),
        linear in any::<bool>(),
        min_points in prop_oneof![3 => Just(1u64), 1 => 2u64..6],
    ) {
        const SEC: i64 = 1_000_000;
        let raw = source(&pts);
        let mut rolled = MemSource::new()
            .with_rollups(&[RollupResolution::Hour, RollupResolution::Minute])
            .with_rollup_min_points(min_points);
        rolled.add_tag(TAG);
        for p in &pts {
            rolled.insert(TAG, p.clone());
        }
        // Aligned cases snap everything to whole minutes.
        let snap = |x: i64| if aligned { x - x.rem_euclid(60) } else { x };
        let (s, e) = (snap(start_s) * SEC, (snap(start_s) + snap(len_s).max(60)) * SEC);
        let step = step_s.map(|x| Duration::from_secs(snap(x) as u64));
        let kinds = ALL_KINDS;
        let w = if linear { Interpolation::Linear } else { Interpolation::Step };
        let want = summary(&raw, TAG, ts(s), ts(e), step, &kinds, w, &limits()).unwrap();
        let got = summary(&rolled, TAG, ts(s), ts(e), step, &kinds, w, &limits()).unwrap();
        if aligned && min_points == 1 {
            prop_assert_eq!(rolled.points_read(), 0, "aligned intervals read raw points");
        }
        prop_assert!(rolled.points_read() <= raw.points_read());
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!((g.start, g.end), (w.start, w.end));
            prop_assert!(close(g.percent_good, w.percent_good));
            for (gv, wv) in g.values.iter().zip(&w.values) {
                prop_assert!(opt_close(gv.value, wv.value) && gv.ts == wv.ts, "{gv:?} vs {wv:?}");
            }
        }
    }

    /// Rollups of three stretches merged either way equal the rollup of
    /// the whole, whatever empty time lies between the points.
    #[test]
    fn rollup_merge_is_associative_and_equals_whole(pts in series(80, 1), cuts in (1i64..40_000, 1i64..40_000, 1i64..40_000)) {
        let (t0, t1, t2, t3) = (0, cuts.0, cuts.0 + cuts.1, cuts.0 + cuts.1 + cuts.2);
        let bucket = |a: i64, b: i64| Rollup::compute(&pts, ts(a), ts(b)).unwrap();
        let join = |a: Option<Rollup>, b: Option<Rollup>| match (a, b) {
            (Some(a), Some(b)) => Some(a.merge(&b).unwrap()),
            (a, b) => a.or(b),
        };
        let (x, y, z) = (bucket(t0, t1), bucket(t1, t2), bucket(t2, t3));
        let left = join(join(x.clone(), y.clone()), z.clone());
        let right = join(x.clone(), join(y, z.clone()));
        let whole = bucket(t0, t3);
        prop_assert_eq!(left.is_some(), whole.is_some());
        let (Some(left), Some(right), Some(whole)) = (left, right, whole) else {
            return Ok(());
        };
        // Bucket ends differ when the last stretch is empty; the rest may not.
        prop_assert_eq!((left.start(), left.end()), (right.start(), right.end()));
        for r in [&right, &whole] {
            prop_assert_eq!(left.points(), r.points());
            prop_assert_eq!(left.count(), r.count());
            prop_assert_eq!((left.min(), left.max()), (r.min(), r.max()));
            prop_assert_eq!((left.first(), left.last()), (r.first(), r.last()));
            prop_assert_eq!((left.first_point(), left.last_point()), (r.first_point(), r.last_point()));
            prop_assert_eq!(left.good_micros(), r.good_micros());
            prop_assert!(close(left.sum(), r.sum()));
            for w in [Interpolation::Step, Interpolation::Linear] {
                prop_assert!(close(left.integral(w), r.integral(w)));
            }
            prop_assert!(opt_close(left.std_dev(), r.std_dev()));
        }
        if let (Some(x), Some(z)) = (x, z) {
            prop_assert_eq!(z.merge(&x), Err(converge_historian::query::RollupError::Overlap));
        }
    }

    #[test]
    fn rollup_bytes_round_trip(pts in series(40, 1), a in -1_000i64..1_000, len in 1i64..100_000) {
        if let Some(r) = Rollup::compute(&pts, ts(a), ts(a + len)).unwrap() {
            let bytes = r.to_bytes().unwrap();
            prop_assert_eq!(Rollup::from_bytes(&bytes, ts(a), ts(a + len)), Ok(r));
        }
    }

    #[test]
    fn random_rollup_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), start in any::<i64>(), width in any::<u64>()) {
        let end = ts(start.saturating_add_unsigned(width));
        let _ = Rollup::from_bytes(&bytes, ts(start), end);
        let _ = Continuation::from_bytes(&bytes);
    }
}

// ---- examples and edges ---------------------------------------------------------

fn good(t: i64, v: f64) -> Point {
    Point::good(ts(t), Value::F64(v))
}

fn bad(t: i64) -> Point {
    Point {
        ts: ts(t),
        value: Value::F64(-1.0),
        quality: Quality::BAD,
    }
}

#[test]
fn interpolation_at_a_point_returns_the_point() {
    let pts = [good(0, 1.0), bad(10), good(20, 3.0)];
    let src = source(&pts);
    for i in [Interpolation::Linear, Interpolation::Step] {
        let got = interpolated(
            &src,
            TAG,
            ts(0),
            ts(20),
            Duration::from_micros(10),
            i,
            &limits(),
        )
        .unwrap();
        assert_eq!(got, pts);
    }
    // Between a good and a bad point the value is Bad, carrying the good value.
    let mid = value_at(
        &src,
        TAG,
        ts(5),
        RetrievalMode::Interpolated(Interpolation::Linear),
    )
    .unwrap()
    .unwrap();
    assert_eq!(mid.quality, Quality::BAD);
    assert_eq!(mid.value, Value::F64(1.0));
}

#[test]
fn outside_the_data_is_no_data() {
    let src = source(&[good(100, 1.0), good(200, 2.0)]);
    let got = interpolated(
        &src,
        TAG,
        ts(0),
        ts(300),
        Duration::from_micros(100),
        Interpolation::Linear,
        &limits(),
    )
    .unwrap();
    let q: Vec<Quality> = got.iter().map(|p| p.quality).collect();
    assert_eq!(q, [NO_DATA, Quality::GOOD, Quality::GOOD, NO_DATA]);
    assert!(matches!(got[0].value, Value::F64(x) if x.is_nan()));
    let mode = RetrievalMode::Interpolated(Interpolation::Step);
    assert_eq!(value_at(&src, TAG, ts(250), mode).unwrap(), None);
}

#[test]
fn step_tags_hold_the_previous_value() {
    let mut src = MemSource::new();
    src.insert(TAG, Point::good(ts(0), Value::Str("open".into())));
    src.insert(TAG, Point::good(ts(10), Value::Str("closed".into())));
    src.insert("valve", Point::good(ts(0), Value::Bool(true)));
    src.insert("valve", Point::good(ts(10), Value::Bool(false)));
    let mode = RetrievalMode::Interpolated(Interpolation::Linear);
    let p = value_at(&src, TAG, ts(9), mode).unwrap().unwrap();
    assert_eq!(p.value, Value::Str("open".into()));
    let p = value_at(&src, "valve", ts(9), mode).unwrap().unwrap();
    assert_eq!(p.value, Value::Bool(true));
}

#[test]
fn summary_of_a_known_signal() {
    // 10 for 10 s, bad for 10 s, 20 for 20 s: TWA over good time is 50/3.
    let s = 1_000_000;
    let src = source(&[
        good(0, 10.0),
        bad(10 * s),
        good(20 * s, 20.0),
        good(40 * s, 0.0),
    ]);
    let kinds = [
        SummaryKind::TimeWeightedAverage,
        SummaryKind::Total,
        SummaryKind::Average,
        SummaryKind::Count,
        SummaryKind::PercentGood,
    ];
    let rows = summary(
        &src,
        TAG,
        ts(0),
        ts(40 * s),
        None,
        &kinds,
        Interpolation::Step,
        &limits(),
    )
    .unwrap();
    let v: Vec<Option<f64>> = rows[0].values.iter().map(|v| v.value).collect();
    assert!(close(v[0].unwrap(), 500.0 / 30.0));
    assert!(close(v[1].unwrap(), 500.0), "Total is value·seconds");
    assert_eq!(v[2], Some(15.0));
    assert_eq!(v[3], Some(2.0));
    assert!(close(v[4].unwrap(), 75.0));
    // Linear: 10 held up to the bad point, then the trapezoid 20 → 0 over 20 s.
    let rows = summary(
        &src,
        TAG,
        ts(0),
        ts(40 * s),
        None,
        &kinds,
        Interpolation::Linear,
        &limits(),
    )
    .unwrap();
    assert!(close(rows[0].values[1].value.unwrap(), 100.0 + 200.0));
}

#[test]
fn summary_of_a_string_tag_is_a_type_error() {
    let mut src = MemSource::new();
    src.insert(TAG, Point::good(ts(5), Value::Str("x".into())));
    let err = summary(
        &src,
        TAG,
        ts(0),
        ts(10),
        None,
        &[SummaryKind::Count],
        Interpolation::Step,
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        QueryError::WrongValueType {
            found: ValueType::Str
        }
    ));
}

#[test]
fn bool_and_integer_tags_summarise_as_numbers() {
    let mut src = MemSource::new();
    for (t, b) in [(0, true), (10, false), (20, true)] {
        src.insert(TAG, Point::good(ts(t), Value::Bool(b)));
        src.insert("count", Point::good(ts(t), Value::I64(t)));
    }
    let kinds = [SummaryKind::Average, SummaryKind::Max];
    for (tag, want) in [(TAG, [2.0 / 3.0, 1.0]), ("count", [10.0, 20.0])] {
        let rows = summary(
            &src,
            tag,
            ts(0),
            ts(30),
            None,
            &kinds,
            Interpolation::Step,
            &limits(),
        )
        .unwrap();
        assert!(close(rows[0].values[0].value.unwrap(), want[0]));
        assert_eq!(rows[0].values[1].value, Some(want[1]));
    }
}

#[test]
fn duplicate_timestamps_page_without_loss() {
    let mut src = MemSource::new();
    for i in 0..7 {
        src.insert(TAG, good(5, f64::from(i)));
    }
    src.insert(TAG, good(6, 99.0));
    for max_count in 1..10 {
        let pages = all_pages(&src, 0, 10, Boundary::Inside, max_count);
        assert_eq!(pages.len(), 8, "max_count {max_count}");
        assert_eq!(pages[6].value, Value::F64(6.0));
    }
}

#[test]
fn limits_are_typed_errors() {
    let src = source(&[good(0, 1.0)]);
    let l = limits();
    let err = |r: Result<Vec<Point>, QueryError>| r.unwrap_err();
    assert!(matches!(
        err(interpolated(
            &src,
            TAG,
            ts(5),
            ts(4),
            Duration::from_micros(1),
            Interpolation::Linear,
            &l
        )),
        QueryError::EndBeforeStart { .. }
    ));
    assert!(matches!(
        err(interpolated(
            &src,
            TAG,
            ts(0),
            ts(4),
            Duration::from_nanos(999),
            Interpolation::Linear,
            &l
        )),
        QueryError::ZeroInterval
    ));
    assert!(matches!(
        err(interpolated(
            &src,
            TAG,
            ts(0),
            ts(1_000_000),
            Duration::from_micros(1),
            Interpolation::Linear,
            &l
        )),
        QueryError::TooManyIntervals { .. }
    ));
    assert!(matches!(
        err(plot(&src, TAG, ts(0), ts(9), 0, &l)),
        QueryError::ZeroInterval
    ));
    assert!(matches!(
        err(plot(&src, TAG, ts(0), ts(9), 100_001, &l)),
        QueryError::TooManyIntervals { .. }
    ));
    let rec = |n: usize, c: Option<&Continuation>| {
        recorded(&src, TAG, ts(0), ts(9), Boundary::Inside, n, c, &l).unwrap_err()
    };
    assert!(matches!(rec(0, None), QueryError::ZeroCount));
    assert!(matches!(
        rec(150_001, None),
        QueryError::TooManyPoints { .. }
    ));
    let mut far = [0u8; 17];
    far[0] = 1;
    far[1..9].copy_from_slice(&100i64.to_le_bytes());
    let far = Continuation::from_bytes(&far).unwrap();
    assert!(matches!(rec(10, Some(&far)), QueryError::BadContinuation));
    assert!(Continuation::from_bytes(&[9; 17]).is_err());
    assert!(matches!(
        value_at(&src, "nope", ts(0), RetrievalMode::AtOrBefore).unwrap_err(),
        QueryError::UnknownTag(t) if t == "nope"
    ));
    let s = summary(
        &src,
        TAG,
        ts(0),
        ts(1),
        Some(Duration::from_micros(1)),
        &[SummaryKind::Count],
        Interpolation::Step,
        &l,
    )
    .unwrap();
    assert_eq!(s.len(), 1);
}

#[test]
fn scan_limit_stops_long_raw_reads() {
    let pts: Vec<Point> = (0..5_000).map(|i| good(i, 1.0)).collect();
    let src = source(&pts);
    let l = QueryLimits {
        max_points_scanned: 4_999,
        ..limits()
    };
    let r = summary(
        &src,
        TAG,
        ts(0),
        ts(5_000),
        None,
        &[SummaryKind::Count],
        Interpolation::Step,
        &l,
    );
    assert!(matches!(
        r,
        Err(QueryError::TooManyPointsScanned { limit: 4_999 })
    ));
    assert!(matches!(
        plot(&src, TAG, ts(0), ts(5_000), 10, &l),
        Err(QueryError::TooManyPointsScanned { .. })
    ));
}

/// Two days of 1 s data (172,800 points): per hour, 48 hourly rollups are
/// read and no raw point; in 7 unaligned intervals, hourly rollups inside,
/// minute rollups and raw points at the edges (403 points and 454 rollups
/// when written). Either way, in both weightings, a scan limit far below
/// the point count is no obstacle, and the answers equal the raw ones.
#[test]
fn long_summaries_read_rollups() {
    const S: i64 = 1_000_000;
    let day0 = 1_700_006_400 * S; // a midnight, so hours align
    let levels = [RollupResolution::Minute, RollupResolution::Hour];
    let mut raw = MemSource::new();
    for i in 0..2 * 86_400 {
        raw.insert(TAG, good(day0 + i * S, (i % 3_600) as f64));
    }
    let l = QueryLimits {
        max_points_scanned: 3_000,
        ..limits()
    };
    let kinds = [
        SummaryKind::TimeWeightedAverage,
        SummaryKind::Max,
        SummaryKind::Count,
    ];
    let end = ts(day0 + 2 * 86_400 * S);
    let cases = [
        (ts(day0), Duration::from_secs(3_600), 48),
        (ts(day0 + 17 * S), Duration::from_secs(86_400 * 2 / 7), 7),
    ];
    for weighting in [Interpolation::Step, Interpolation::Linear] {
        for (start, step, rows_want) in cases {
            let mut src = MemSource::new().with_rollups(&levels);
            for i in 0..2 * 86_400 {
                src.insert(TAG, good(day0 + i * S, (i % 3_600) as f64));
            }
            let rows = summary(&src, TAG, start, end, Some(step), &kinds, weighting, &l).unwrap();
            assert_eq!(rows.len(), rows_want);
            assert!(
                src.points_read() < 3_000,
                "{} points read",
                src.points_read()
            );
            assert!(
                src.rollups_read() < 1_000,
                "{} rollups read",
                src.rollups_read()
            );
            let want = summary(
                &raw,
                TAG,
                start,
                end,
                Some(step),
                &kinds,
                weighting,
                &limits(),
            )
            .unwrap();
            for (g, w) in rows.iter().zip(&want) {
                assert!(close(
                    g.values[0].value.unwrap(),
                    w.values[0].value.unwrap()
                ));
                assert_eq!(g.values[1..], w.values[1..]);
            }
            if rows_want == 48 {
                assert_eq!(src.points_read(), 0);
                assert_eq!(src.rollups_read(), 48);
                // A saw tooth 0..3599 per hour averages 1799.5 in both
                // weightings: linear trades the half-steps up for the ramp
                // down from 3599 to 0 across each hour's end.
                assert!(close(rows[0].values[0].value.unwrap(), 1799.5));
            }
        }
    }
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let (min, max) = (ts(i64::MIN), ts(i64::MAX));
    let src = source(&[
        good(i64::MIN, 1.0),
        good(i64::MIN + 1, 2.0),
        good(0, 3.0),
        good(i64::MAX - 1, 4.0),
        good(i64::MAX, 5.0),
    ]);
    let l = limits();
    let huge = Duration::from_secs(u64::MAX);
    for b in [
        Boundary::Inside,
        Boundary::Outside,
        Boundary::Interpolated(Interpolation::Linear),
    ] {
        assert_eq!(all_pages(&src, i64::MIN, i64::MAX, b, 2).len(), 5);
        assert_eq!(
            all_pages(&src, i64::MAX, i64::MAX, b, 1).len(),
            if b == Boundary::Outside { 2 } else { 1 }
        );
    }
    let got = interpolated(&src, TAG, min, max, huge, Interpolation::Linear, &l).unwrap();
    assert_eq!(got, [good(i64::MIN, 1.0), good(i64::MAX, 5.0)]);
    let got = interpolated(
        &src,
        TAG,
        min,
        max,
        Duration::from_micros(u64::MAX / 2),
        Interpolation::Linear,
        &l,
    )
    .unwrap();
    assert_eq!(got.len(), 3);
    let rows = summary(
        &src,
        TAG,
        min,
        max,
        None,
        &ALL_KINDS,
        Interpolation::Linear,
        &l,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values[4].value, Some(4.0));
    let rows = summary(
        &src,
        TAG,
        min,
        max,
        Some(huge),
        &ALL_KINDS,
        Interpolation::Step,
        &l,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    let rows = summary(
        &src,
        TAG,
        min,
        max,
        Some(Duration::from_micros(u64::MAX / 3)),
        &ALL_KINDS,
        Interpolation::Step,
        &l,
    )
    .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.last().unwrap().end, max);
    let got = plot(&src, TAG, min, max, 3, &l).unwrap();
    assert_eq!(got.len(), 5);
    let got = plot(&src, TAG, max, max, 100_000, &l).unwrap();
    assert_eq!(got, [good(i64::MAX - 1, 4.0), good(i64::MAX, 5.0)]);
    for mode in [
        RetrievalMode::After,
        RetrievalMode::Interpolated(Interpolation::Linear),
    ] {
        assert!(value_at(&src, TAG, max, mode).is_ok());
    }
    assert_eq!(src.latest(TAG).unwrap(), Some(good(i64::MAX, 5.0)));
}

#[test]
fn corrupted_rollup_bytes_are_errors() {
    use converge_historian::query::RollupError;
    let pts = [good(10, 1.0), bad(20), good(30, 2.0)];
    let (a, b) = (ts(0), ts(100));
    let r = Rollup::compute(&pts, a, b).unwrap().unwrap();
    let bytes = r.to_bytes().unwrap();
    assert_eq!(bytes.len(), converge_historian::query::ROLLUP_LEN);
    for cut in 0..bytes.len() {
        assert!(matches!(
            Rollup::from_bytes(&bytes[..cut], a, b),
            Err(RollupError::Truncated { .. })
        ));
    }
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(
        Rollup::from_bytes(&long, a, b),
        Err(RollupError::TrailingBytes { extra: 1 })
    );
    for version in [1, 3] {
        let mut other = bytes;
        other[0] = version;
        assert_eq!(
            Rollup::from_bytes(&other, a, b),
            Err(RollupError::UnsupportedVersion(version))
        );
    }
    // A bucket too short for the times inside is an error, not a wrong rollup.
    assert!(Rollup::from_bytes(&bytes, a, ts(30)).is_err());
    // Every single bit flip decodes to an error or to some rollup, never a panic;
    // the flips that break an invariant (flags, counts, times) are errors.
    let mut errors = 0;
    for bit in 0..bytes.len() * 8 {
        let mut b2 = bytes;
        b2[bit / 8] ^= 1 << (bit % 8);
        if Rollup::from_bytes(&b2, a, b).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 150, "only {errors} flips detected");
    // A string tag has no rollup; an empty bucket is refused; no point, no rollup.
    let s = [Point::good(ts(1), Value::Str("a".into()))];
    assert_eq!(
        Rollup::compute(&s, ts(0), ts(10)),
        Err(RollupError::NotNumeric(ValueType::Str))
    );
    assert_eq!(
        Rollup::compute(&[], ts(10), ts(10)),
        Err(RollupError::EmptyBucket)
    );
    assert_eq!(Rollup::compute(&pts, ts(40), ts(50)), Ok(None));
    // Buckets longer than the u32 offsets allow are refused both ways.
    let huge = Rollup::compute(&pts, ts(0), ts(1 << 33)).unwrap().unwrap();
    assert_eq!(huge.to_bytes(), Err(RollupError::BucketTooLong));
    assert_eq!(
        Rollup::from_bytes(&bytes, ts(0), ts(1 << 33)),
        Err(RollupError::BucketTooLong)
    );
}

/// More points at one timestamp than one scan chunk (4,096) holds.
#[test]
fn scans_survive_long_runs_of_one_timestamp() {
    let mut src = MemSource::new();
    for i in 0..5_000 {
        src.insert(TAG, good(5, f64::from(i)));
    }
    for i in 0..3_000 {
        src.insert(TAG, good(6 + i, 1.0));
    }
    let rows = summary(
        &src,
        TAG,
        ts(0),
        ts(10_000),
        None,
        &[SummaryKind::Count, SummaryKind::Max, SummaryKind::Last],
        Interpolation::Step,
        &limits(),
    )
    .unwrap();
    let v: Vec<Option<f64>> = rows[0].values.iter().map(|v| v.value).collect();
    assert_eq!(v, [Some(8_000.0), Some(4_999.0), Some(1.0)]);
    let got = plot(&src, TAG, ts(0), ts(10_000), 1, &limits()).unwrap();
    let want = [good(5, 0.0), good(5, 4_999.0), good(3_005, 1.0)];
    assert_eq!(got, want);
}

#[test]
fn forged_continuations_cannot_force_big_reads() {
    let src = source(&[good(0, 1.0), good(5, 2.0)]);
    let l = QueryLimits {
        max_page_points: 10,
        ..limits()
    };
    let token = |skip: u64| {
        let mut b = [0u8; 17];
        b[0] = 1;
        b[9..].copy_from_slice(&skip.to_le_bytes());
        Continuation::from_bytes(&b).unwrap()
    };
    let read =
        |c: &Continuation| recorded(&src, TAG, ts(0), ts(9), Boundary::Inside, 10, Some(c), &l);
    assert!(read(&token(10)).is_ok());
    assert!(matches!(read(&token(11)), Err(QueryError::BadContinuation)));
    assert!(matches!(
        read(&token(u64::MAX)),
        Err(QueryError::BadContinuation)
    ));
}
