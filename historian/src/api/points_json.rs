//! JSON of the point answers (`recorded`, `interpolated`, `plot`, `latest`, `value`) written
//! straight into one buffer. They are the large answers (10,000 tags, a day of points); a
//! `serde_json::Value` tree per point, or serde's escaping of every constant key, cost most of
//! a 10,000-tag `latest`. Only tag names and string values are escaped (by serde_json); numbers
//! are formatted by serde_json too, so the output is what `json!` produced, key order aside.

use crate::api::output::{epoch_ms, rfc3339_into, severity, TagPoints, RFC3339_BUF};
use crate::encoding::{Point, Timestamp, Value};

/// `{"items":[{"tag":…,"points":[…],"next":…},…]}`.
pub fn points(items: &[TagPoints]) -> Result<Vec<u8>, serde_json::Error> {
    let n: usize = items.iter().map(|i| i.points.len()).sum();
    let mut out = Vec::with_capacity(64 + n.saturating_mul(POINT_BYTES));
    out.extend_from_slice(b"{\"items\":[");
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"tag\":");
        serde_json::to_writer(&mut out, &item.tag)?;
        out.extend_from_slice(b",\"points\":[");
        for (j, p) in item.points.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            point(&mut out, p)?;
        }
        out.extend_from_slice(b"],\"next\":");
        serde_json::to_writer(&mut out, &item.next)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// `{"items":[{"tag":…,"point":{…} or null},…]}`.
pub fn values(items: &[(String, Option<Point>)]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64 + items.len().saturating_mul(POINT_BYTES + 32));
    out.extend_from_slice(b"{\"items\":[");
    for (k, (tag, p)) in items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"tag\":");
        serde_json::to_writer(&mut out, tag)?;
        out.extend_from_slice(b",\"point\":");
        match p {
            Some(p) => point(&mut out, p)?,
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Typical size of one point's JSON, to size the buffer once.
const POINT_BYTES: usize = 110;

/// `{"time":…,"time_ms":…,"value":…,"quality":…,"substatus":…}`.
fn point(out: &mut Vec<u8>, p: &Point) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"time\":");
    time(out, p.ts);
    out.extend_from_slice(b",\"time_ms\":");
    serde_json::to_writer(&mut *out, &epoch_ms(p.ts))?;
    out.extend_from_slice(b",\"value\":");
    match &p.value {
        // JSON has no NaN or infinity.
        Value::F64(x) if x.is_finite() => serde_json::to_writer(&mut *out, x)?,
        Value::F64(_) => out.extend_from_slice(b"null"),
        Value::I64(x) => serde_json::to_writer(&mut *out, x)?,
        Value::Bool(x) => out.extend_from_slice(if *x { b"true" } else { b"false" }),
        Value::Str(x) => serde_json::to_writer(&mut *out, x)?,
    }
    out.extend_from_slice(b",\"quality\":\"");
    out.extend_from_slice(severity(p).as_bytes());
    out.extend_from_slice(b"\",\"substatus\":");
    serde_json::to_writer(&mut *out, &p.quality.substatus())?;
    out.push(b'}');
    Ok(())
}

/// RFC 3339 in a JSON string (as `output::rfc3339`), or `null` beyond year 9999. RFC 3339
/// output holds nothing JSON must escape.
fn time(out: &mut Vec<u8>, ts: Timestamp) {
    match rfc3339_into(ts, &mut [0; RFC3339_BUF]) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::Quality;
    use serde_json::json;

    #[test]
    fn same_json_as_a_value_tree() {
        let pts = vec![
            Point::good(
                Timestamp::from_micros(1_700_000_000_123_456),
                Value::F64(1.5),
            ),
            Point::good(Timestamp::from_micros(-1), Value::F64(f64::NAN)),
            Point {
                ts: Timestamp::from_micros(0),
                value: Value::Str("a \"q\"\n\u{1}".into()),
                quality: Quality::BAD,
            },
            Point::good(Timestamp::from_micros(i64::MAX), Value::I64(i64::MIN)),
            Point::good(Timestamp::from_micros(1_000), Value::F64(-0.0)),
            Point::good(Timestamp::from_micros(5), Value::Bool(true)),
        ];
        let items = vec![TagPoints {
            tag: "plant/\"x\"\\y".into(),
            points: pts.clone(),
            next: Some("tok".into()),
        }];
        let got: serde_json::Value = serde_json::from_slice(&points(&items).unwrap()).unwrap();
        let want_point = |p: &Point| {
            json!({
                "time": crate::api::output::rfc3339(p.ts),
                "time_ms": epoch_ms(p.ts),
                "value": match &p.value {
                    Value::F64(x) => json!(x.is_finite().then_some(*x)),
                    Value::I64(x) => json!(x),
                    Value::Bool(x) => json!(x),
                    Value::Str(x) => json!(x),
                },
                "quality": severity(p),
                "substatus": p.quality.substatus(),
            })
        };
        let want = json!({"items": [{
            "tag": "plant/\"x\"\\y",
            "points": pts.iter().map(want_point).collect::<Vec<_>>(),
            "next": "tok",
        }]});
        assert_eq!(got, want);

        let vals = vec![
            ("a".to_owned(), Some(pts[0].clone())),
            ("b".to_owned(), None),
        ];
        let got: serde_json::Value = serde_json::from_slice(&values(&vals).unwrap()).unwrap();
        assert_eq!(
            got,
            json!({"items": [{"tag": "a", "point": want_point(&pts[0])}, {"tag": "b", "point": null}]})
        );
        let empty: serde_json::Value = serde_json::from_slice(&points(&[]).unwrap()).unwrap();
        assert_eq!(empty, json!({"items": []}));
    }
}
