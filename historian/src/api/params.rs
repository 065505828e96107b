//! Request parameters: the query string and an optional JSON body folded
//! into one list of name/value pairs, then parsed into typed values. Every
//! parse error names its parameter. Times are RFC 3339, epoch milliseconds
//! or PI-style relative times (`*`, `*-1d`, `t+8h`, `y`).

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::error::RequestError;
use crate::encoding::{Timestamp, ValueType};
use crate::query::{Boundary, Interpolation, RetrievalMode, SummaryKind};

/// Longest parameter value accepted (tag names, patterns, tokens, times).
pub const MAX_PARAM_LEN: usize = 1_024;

/// Microseconds per day, for `t` and `y`.
const DAY_US: i64 = 86_400_000_000;

/// Microseconds per unit of the duration grammar.
const UNITS: [(&str, i64); 7] = [
    ("us", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", DAY_US),
    ("w", 604_800_000_000),
];

/// A request's parameters, in order, names as given.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The parameters of a query string (`None`: no query string).
    pub fn from_query(query: Option<&str>) -> Self {
        let pairs = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Params { pairs }
    }

    /// Adds the members of a JSON object body: strings, numbers and bools
    /// as values, arrays of them as repeated values. `tags` is `tag`.
    pub fn add_json(&mut self, body: &[u8]) -> Result<(), RequestError> {
        let bad = |m: String| RequestError::bad("bad_body", "body", m);
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        let serde_json::Value::Object(members) = value else {
            return Err(bad("the body must be a JSON object".to_owned()));
        };
        for (name, value) in members {
            let name = if name == "tags" {
                "tag".to_owned()
            } else {
                name
            };
            let items = match value {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let text = match item {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(RequestError::bad(
                            "bad_parameter",
                            &name,
                            format!(
                                "{name} must be a string, number or boolean (or a list of them)"
                            ),
                        ))
                    }
                };
                self.pairs.push((name.clone(), text));
            }
        }
        Ok(())
    }

    /// Refuses names outside `allowed` and overlong values.
    pub fn check(&self, allowed: &[&str]) -> Result<(), RequestError> {
        for (name, value) in &self.pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(RequestError::bad(
                    "unknown_parameter",
                    name,
                    format!(
                        "unknown parameter {name:?}; this endpoint takes {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if value.len() > MAX_PARAM_LEN {
                return Err(RequestError::bad(
                    "bad_parameter",
                    name,
                    format!("{name} is longer than {MAX_PARAM_LEN} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// The single value of `name`; giving it twice is an error.
    pub fn one<'a>(&'a self, name: &str) -> Result<Option<&'a str>, RequestError> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(RequestError::bad(
                "bad_parameter",
                name,
                format!("{name} may be given once"),
            ));
        }
        Ok(first)
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` parsed as a time, or `default` (a time expression) if absent.
    pub fn time(
        &self,
        name: &str,
        default: &str,
        now: Timestamp,
    ) -> Result<Timestamp, RequestError> {
        parse_time(self.one(name)?.unwrap_or(default), now)
            .map_err(|m| RequestError::bad("bad_time", name, format!("{name}: {m}")))
    }

    /// `name` parsed by `parse`, or `None` if absent.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, RequestError> {
        self.one(name)?
            .map(|v| {
                parse(v)
                    .map_err(|m| RequestError::bad("bad_parameter", name, format!("{name}: {m}")))
            })
            .transpose()
    }
}

/// A time: `*` (now), `t` (today 00:00 UTC), `y` (yesterday), each
/// optionally followed by `+` or `-` and a duration; RFC 3339; or an
/// integer of epoch milliseconds.
pub fn parse_time(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    let today = |days_back: i64| {
        now.micros()
            .div_euclid(DAY_US)
            .checked_sub(days_back)
            .and_then(|d| d.checked_mul(DAY_US))
            .ok_or_else(|| format!("{s:?} is out of range"))
    };
    let base = match s.chars().next() {
        Some('*') => Some(now.micros()),
        Some('t') => Some(today(0)?),
        Some('y') => Some(today(1)?),
        _ => None,
    };
    if let Some(base) = base {
        // The base is one ASCII character.
        let rest = s.get(1..).unwrap_or("");
        let offset = match rest.chars().next() {
            None => 0,
            Some('+') => parse_micros(rest.get(1..).unwrap_or(""))?,
            Some('-') => -parse_micros(rest.get(1..).unwrap_or(""))?,
            Some(_) => return Err(format!("{s:?} is not a time ({})", TIME_FORMS)),
        };
        return base
            .checked_add(offset)
            .map(Timestamp::from_micros)
            .ok_or_else(|| format!("{s:?} is out of range"));
    }
    if !s.is_empty()
        && s.strip_prefix('-')
            .unwrap_or(s)
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        let ms: i64 = s.parse().map_err(|_| format!("{s:?} is out of range"))?;
        return ms
            .checked_mul(1_000)
            .map(Timestamp::from_micros)
            .ok_or_else(|| format!("{s:?} is out of range"));
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| format!("{s:?} is not a time ({})", TIME_FORMS))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000)
        .map(Timestamp::from_micros)
        .map_err(|_| format!("{s:?} is out of range"))
}

const TIME_FORMS: &str =
    "use RFC 3339, epoch milliseconds, or *, t, y with an optional +/- duration such as *-1d";

/// A duration: a non-negative integer and a unit (`us`, `ms`, `s`, `m`,
/// `h`, `d`, `w`), e.g. `10s`, `1m`, `1h`.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let us = parse_micros(s)?;
    Ok(Duration::from_micros(u64::try_from(us).unwrap_or(0)))
}

/// `parse_interval` in microseconds.
fn parse_micros(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let per = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, per)| *per)
        .ok_or_else(|| {
            format!("{s:?} is not a duration (a number and one of us, ms, s, m, h, d, w, e.g. 10s)")
        })?;
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| format!("{s:?} is not a duration or is out of range"))
}

/// Lower case without `_` and `-`, so `AtOrBefore`, `at_or_before` and
/// `at-or-before` are one name (PI spells them in Pascal case).
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `linear` or `step`.
pub fn parse_weighting(s: &str) -> Result<Interpolation, String> {
    match norm(s).as_str() {
        "linear" => Ok(Interpolation::Linear),
        "step" => Ok(Interpolation::Step),
        _ => Err(format!("{s:?} is not one of linear, step")),
    }
}

/// `f64`, `i64`, `bool` or `str` (`string` too, as in the rules).
pub fn parse_value_type(s: &str) -> Result<ValueType, String> {
    match norm(s).as_str() {
        "f64" => Ok(ValueType::F64),
        "i64" => Ok(ValueType::I64),
        "bool" => Ok(ValueType::Bool),
        "str" | "string" => Ok(ValueType::Str),
        _ => Err(format!("{s:?} is not one of f64, i64, bool, str")),
    }
}

/// `inside`, `outside` or `interpolated` (which uses `weighting`).
pub fn parse_boundary(s: &str, weighting: Interpolation) -> Result<Boundary, String> {
    match norm(s).as_str() {
        "inside" => Ok(Boundary::Inside),
        "outside" => Ok(Boundary::Outside),
        "interpolated" => Ok(Boundary::Interpolated(weighting)),
        _ => Err(format!("{s:?} is not one of inside, outside, interpolated")),
    }
}

/// PI's retrieval modes; `interpolated` uses `weighting`.
pub fn parse_mode(s: &str, weighting: Interpolation) -> Result<RetrievalMode, String> {
    match norm(s).as_str() {
        "atorbefore" => Ok(RetrievalMode::AtOrBefore),
        "before" => Ok(RetrievalMode::Before),
        "atorafter" => Ok(RetrievalMode::AtOrAfter),
        "after" => Ok(RetrievalMode::After),
        "exact" => Ok(RetrievalMode::Exact),
        "interpolated" => Ok(RetrievalMode::Interpolated(weighting)),
        _ => Err(format!(
            "{s:?} is not one of at_or_before, before, at_or_after, after, exact, interpolated"
        )),
    }
}

/// Every summary kind with its API name, in the order `all` expands to.
pub const SUMMARY_KINDS: [(&str, SummaryKind); 11] = [
    ("count", SummaryKind::Count),
    ("min", SummaryKind::Min),
    ("max", SummaryKind::Max),
    ("first", SummaryKind::First),
    ("last", SummaryKind::Last),
    ("average", SummaryKind::Average),
    ("std_dev", SummaryKind::StdDev),
    ("range", SummaryKind::Range),
    ("time_weighted_average", SummaryKind::TimeWeightedAverage),
    ("total", SummaryKind::Total),
    ("percent_good", SummaryKind::PercentGood),
];

/// The API name of a summary kind.
pub fn summary_name(kind: SummaryKind) -> &'static str {
    SUMMARY_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Summary kinds from comma-separated lists (`all` for every kind;
/// `minimum`/`maximum` are PI's spellings of `min`/`max`).
pub fn parse_summary_types<'a>(
    lists: impl Iterator<Item = &'a str>,
) -> Result<Vec<SummaryKind>, String> {
    let mut out: Vec<SummaryKind> = Vec::new();
    for name in lists
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let n = match norm(name).as_str() {
            "minimum" => "min".to_owned(),
            "maximum" => "max".to_owned(),
            other => other.to_owned(),
        };
        if n == "all" {
            out.extend(SUMMARY_KINDS.iter().map(|(_, k)| *k));
            continue;
        }
        let kind = SUMMARY_KINDS
            .iter()
            .find(|(api, _)| norm(api) == n)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                format!(
                    "{name:?} is not a summary type (all, {})",
                    SUMMARY_KINDS.map(|(n, _)| n).join(", ")
                )
            })?;
        out.push(kind);
    }
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|k| {
        let new = !seen.contains(k);
        seen.push(*k);
        new
    });
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = Timestamp::from_micros(1_700_000_000_123_456);
        let t = |s| parse_time(s, now).map(Timestamp::micros);
        assert_eq!(t("*"), Ok(now.micros()));
        assert_eq!(t("*-1d"), Ok(now.micros() - 86_400_000_000));
        assert_eq!(t("*+10s"), Ok(now.micros() + 10_000_000));
        assert_eq!(t("t"), Ok(1_699_920_000_000_000));
        assert_eq!(
            t("y+1h"),
            Ok(1_699_920_000_000_000 - 86_400_000_000 + 3_600_000_000)
        );
        assert_eq!(t("1700000000000"), Ok(1_700_000_000_000_000));
        assert_eq!(t("-5"), Ok(-5_000));
        assert_eq!(t("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500_000));
        assert_eq!(t("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000_000_000));
        for bad in [
            "",
            "now",
            "*-1",
            "*-1x",
            "*x",
            "2023-13-01T00:00:00Z",
            "99999999999999999999",
            "*-99999999999w",
        ] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn intervals_and_names() {
        assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("0h"), Ok(Duration::ZERO));
        assert!(parse_interval("-1s").is_err());
        assert!(parse_interval("1.5s").is_err());
        assert_eq!(
            parse_mode("AtOrBefore", Interpolation::Linear),
            Ok(RetrievalMode::AtOrBefore)
        );
        assert!(parse_boundary("sideways", Interpolation::Linear).is_err());
        assert_eq!(
            parse_summary_types(["min,Maximum", "average,min"].into_iter()),
            Ok(vec![
                SummaryKind::Min,
                SummaryKind::Max,
                SummaryKind::Average
            ])
        );
        assert_eq!(parse_summary_types(["all"].into_iter()).unwrap().len(), 11);
        assert!(parse_summary_types(["median"].into_iter()).is_err());
    }

    proptest::proptest! {
        /// Query strings are the client's: parsing must never panic.
        #[test]
        fn parsers_never_panic(s in ".{0,40}", now in proptest::num::i64::ANY) {
            let _ = parse_time(&s, Timestamp::from_micros(now));
            let _ = parse_interval(&s);
            let _ = parse_summary_types([s.as_str()].into_iter());
            let _ = crate::api::token::decode(&s);
            let _ = crate::pattern::matches(&s, &s);
        }

        #[test]
        fn relative_times_never_panic(base in "[*ty]", sign in "[+-]", n in proptest::num::u64::ANY, unit in "(us|ms|s|m|h|d|w)") {
            let _ = parse_time(&format!("{base}{sign}{n}{unit}"), Timestamp::from_micros(i64::MAX));
            let _ = parse_time(&format!("{base}{sign}{n}{unit}"), Timestamp::from_micros(i64::MIN));
        }
    }
}
