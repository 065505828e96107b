//! Rendering answers as JSON (default) or CSV. Every time goes out both
//! as RFC 3339 (`time`, µs precision) and as epoch milliseconds
//! (`time_ms`) in JSON; CSV carries one of them, chosen by `time_format`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::catalog::TagInfo;
use crate::api::error::RequestError;
use crate::api::params::{summary_name, Params};
use crate::api::points_json;
use crate::encoding::{Point, Severity, Timestamp, Value, ValueType};
use crate::query::SummaryRow;

/// Response header carrying each continuation token of a CSV `recorded` answer.
pub const CONTINUATION_HEADER: &str = "converge-continuation";

/// Output encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `text/csv`, one header line.
    Csv,
}

/// How CSV prints times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2026-01-02T03:04:05.123456Z`.
    Rfc3339,
    /// Integer milliseconds since the epoch.
    EpochMs,
}

/// Format and time format from `format`, `time_format` and `Accept`.
pub fn negotiate(
    params: &Params,
    headers: &HeaderMap,
) -> Result<(Format, TimeFormat), RequestError> {
    let format = match params.one("format")? {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(RequestError::bad(
                "bad_parameter",
                "format",
                format!("format {other:?} is not one of json, csv"),
            ))
        }
        None => {
            let wants_csv = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/csv"));
            if wants_csv {
                Format::Csv
            } else {
                Format::Json
            }
        }
    };
    let time_format = match params.one("time_format")? {
        None | Some("rfc3339") => TimeFormat::Rfc3339,
        Some("epoch_ms") => TimeFormat::EpochMs,
        Some(other) => {
            return Err(RequestError::bad(
                "bad_parameter",
                "time_format",
                format!("time_format {other:?} is not one of rfc3339, epoch_ms"),
            ))
        }
    };
    Ok((format, time_format))
}

/// Header of the tags' CSV.
const TAG_CSV_HEADER: &str = "name,value_type,unit,description,retention_seconds,step,\
     exc_dev,exc_max_seconds,comp_dev,comp_max_seconds\r\n";

/// One tag's points with its continuation token (recorded only).
#[derive(Clone, Debug)]
pub struct TagPoints {
    /// The tag.
    pub tag: String,
    /// Its points, in time order.
    pub points: Vec<Point>,
    /// Token for the next page, if any.
    pub next: Option<String>,
}

/// An answer before encoding.
#[derive(Clone, Debug)]
pub enum Output {
    /// recorded, interpolated, plot.
    Points(Vec<TagPoints>),
    /// latest, value: at most one point per tag.
    Values(Vec<(String, Option<Point>)>),
    /// summary rows per tag.
    Summary(Vec<(String, Vec<SummaryRow>)>),
    /// tag search.
    Tags(Vec<TagInfo>),
    /// one tag's metadata.
    Tag(TagInfo),
}

impl Output {
    /// The HTTP response.
    pub fn render(self, format: Format, tf: TimeFormat) -> Response {
        match format {
            Format::Json => json_response(self.json_bytes()),
            Format::Csv => {
                let tokens: Vec<String> = match &self {
                    Output::Points(items) => items.iter().filter_map(|i| i.next.clone()).collect(),
                    _ => Vec::new(),
                };
                let mut response = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                    self.csv(tf),
                )
                    .into_response();
                for t in tokens {
                    // Tokens are base64url, always a valid header value.
                    if let Ok(v) = HeaderValue::from_str(&t) {
                        response.headers_mut().append(CONTINUATION_HEADER, v);
                    }
                }
                response
            }
        }
    }

    /// The JSON body; the point answers through `points_json`.
    fn json_bytes(self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Output::Points(items) => points_json::points(&items),
            Output::Values(items) => points_json::values(&items),
            Output::Summary(items) => {
                let items: Vec<Json> = items
                    .iter()
                    .map(|(tag, rows)| json!({ "tag": tag, "rows": rows.iter().map(row_json).collect::<Vec<_>>() }))
                    .collect();
                serde_json::to_vec(&json!({ "items": items }))
            }
            Output::Tags(items) => {
                let items: Vec<Json> = items.iter().map(tag_json).collect();
                serde_json::to_vec(&json!({ "items": items }))
            }
            Output::Tag(info) => serde_json::to_vec(&tag_json(&info)),
        }
    }

    fn csv(self, tf: TimeFormat) -> String {
        let mut out = String::new();
        let t = |ts: Timestamp| match tf {
            TimeFormat::Rfc3339 => rfc3339(ts).unwrap_or_default(),
            TimeFormat::EpochMs => epoch_ms(ts).to_string(),
        };
        match self {
            Output::Points(items) => {
                out.push_str("tag,time,value,quality,substatus\r\n");
                for i in items {
                    for p in &i.points {
                        line(
                            &mut out,
                            &[
                                &i.tag,
                                &t(p.ts),
                                &csv_value(&p.value),
                                severity(p),
                                &p.quality.substatus().to_string(),
                            ],
                        );
                    }
                }
            }
            Output::Values(items) => {
                out.push_str("tag,time,value,quality,substatus\r\n");
                for (tag, p) in items {
                    match p {
                        Some(p) => line(
                            &mut out,
                            &[
                                &tag,
                                &t(p.ts),
                                &csv_value(&p.value),
                                severity(&p),
                                &p.quality.substatus().to_string(),
                            ],
                        ),
                        None => line(&mut out, &[&tag, "", "", "", ""]),
                    }
                }
            }
            Output::Summary(items) => {
                out.push_str("tag,start,end,percent_good,type,value,time\r\n");
                for (tag, rows) in items {
                    for r in rows {
                        for v in &r.values {
                            let value = v.value.map(|x| x.to_string()).unwrap_or_default();
                            let time = v.ts.map(t).unwrap_or_default();
                            line(
                                &mut out,
                                &[
                                    &tag,
                                    &t(r.start),
                                    &t(r.end),
                                    &r.percent_good.to_string(),
                                    summary_name(v.kind),
                                    &value,
                                    &time,
                                ],
                            );
                        }
                    }
                }
            }
            Output::Tags(items) => {
                out.push_str(TAG_CSV_HEADER);
                for i in &items {
                    tag_line(&mut out, i);
                }
            }
            Output::Tag(info) => {
                out.push_str(TAG_CSV_HEADER);
                tag_line(&mut out, &info);
            }
        }
        out
    }
}

/// RFC 3339 in UTC with microseconds; `None` beyond year 9999.
pub fn rfc3339(ts: Timestamp) -> Option<String> {
    rfc3339_into(ts, &mut [0; RFC3339_BUF]).map(str::to_owned)
}

/// Room for any time `rfc3339_into` writes ("9999-12-31T23:59:59.999999Z" is 27 bytes).
pub(crate) const RFC3339_BUF: usize = 40;

/// [`rfc3339`] formatted into `buf`, without allocating.
pub(crate) fn rfc3339_into(ts: Timestamp, buf: &mut [u8; RFC3339_BUF]) -> Option<&str> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.micros()) * 1_000).ok()?;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    t.format_into(&mut cursor, &Rfc3339).ok()?;
    // The length is the cursor's position: `format_into`'s count leaves out the fraction.
    let n = usize::try_from(cursor.position()).ok()?;
    std::str::from_utf8(buf.get(..n)?).ok()
}

/// Milliseconds since the epoch, rounded down.
pub fn epoch_ms(ts: Timestamp) -> i64 {
    ts.micros().div_euclid(1_000)
}

/// A JSON response from serialized bytes; a serialization failure (not
/// expected: every value is a plain string or number) is a 500.
fn json_response(body: Result<Vec<u8>, serde_json::Error>) -> Response {
    match body {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => RequestError::internal(&e).into_response(),
    }
}

fn row_json(r: &SummaryRow) -> Json {
    json!({
        "start": rfc3339(r.start),
        "start_ms": epoch_ms(r.start),
        "end": rfc3339(r.end),
        "end_ms": epoch_ms(r.end),
        "percent_good": finite(r.percent_good),
        "values": r.values.iter().map(|v| json!({
            "type": summary_name(v.kind),
            "value": v.value.and_then(finite),
            "time": v.ts.and_then(rfc3339),
            "time_ms": v.ts.map(epoch_ms),
        })).collect::<Vec<_>>(),
    })
}

fn tag_json(i: &TagInfo) -> Json {
    json!({
        "name": i.name,
        "value_type": value_type_name(i.value_type),
        "unit": i.unit,
        "description": i.description,
        "retention_seconds": i.retention.map(|d| d.as_secs()),
        "step": i.step,
        "exception": i.exception.map(|e| json!({
            "deviation": finite(e.deviation),
            "max_seconds": e.max_interval.as_secs(),
        })),
        "compression": i.compression.map(|c| json!({
            "deviation": finite(c.deviation),
            "max_seconds": c.max_interval.as_secs(),
        })),
    })
}

fn tag_line(out: &mut String, i: &TagInfo) {
    let retention = i
        .retention
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default();
    let (exc_dev, exc_max) = i
        .exception
        .map(|e| {
            (
                e.deviation.to_string(),
                e.max_interval.as_secs().to_string(),
            )
        })
        .unwrap_or_default();
    let (comp_dev, comp_max) = i
        .compression
        .map(|c| {
            (
                c.deviation.to_string(),
                c.max_interval.as_secs().to_string(),
            )
        })
        .unwrap_or_default();
    line(
        out,
        &[
            &i.name,
            value_type_name(i.value_type),
            i.unit.as_deref().unwrap_or(""),
            i.description.as_deref().unwrap_or(""),
            &retention,
            if i.step { "true" } else { "false" },
            &exc_dev,
            &exc_max,
            &comp_dev,
            &comp_max,
        ],
    );
}

/// JSON has no NaN or infinity: they become `null`.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `good`, `uncertain` or `bad`.
pub fn severity(p: &Point) -> &'static str {
    match p.quality.severity() {
        Severity::Good => "good",
        Severity::Uncertain => "uncertain",
        Severity::Bad => "bad",
    }
}

/// `f64`, `i64`, `bool` or `str`.
pub fn value_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::F64 => "f64",
        ValueType::I64 => "i64",
        ValueType::Bool => "bool",
        ValueType::Str => "str",
    }
}

/// One CSV record (RFC 4180: quote fields holding `,`, `"`, CR or LF).
fn line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_times() {
        let mut s = String::new();
        line(&mut s, &["a", "b,c", "d\"e", ""]);
        assert_eq!(s, "a,\"b,c\",\"d\"\"e\",\r\n");
        let ts = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(ts).as_deref(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(epoch_ms(ts), 1_700_000_000_123);
        assert_eq!(epoch_ms(Timestamp::from_micros(-1)), -1);
        assert_eq!(rfc3339(Timestamp::from_micros(i64::MAX)), None);
    }
}
