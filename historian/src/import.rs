//! Bulk import of CSV exports (data loggers, other historians): one time column, every other
//! numeric column a tag. This module only turns rows into `TagPoint`s, in batches; the caller
//! writes them through the same path as live ingest (the server's group commit).
//!
//! A column is a tag when its first non-empty cell is a number; other columns are skipped and
//! reported. After that, a cell that is not a number is an error naming its line and column,
//! so a bad export is never half-understood. Empty cells are gaps, not points.

use std::io::Read;
use std::sync::Arc;

use thiserror::Error;
use time::format_description::{self, OwnedFormatItem};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::encoding::{Point, Timestamp, Value, ValueType};
use crate::ingest::{TagMeta, TagPoint, MAX_TAG_NAME_LEN};

/// Rows read between two batches handed to the caller.
pub const ROWS_PER_BATCH: usize = 4_096;

/// How the time column is written.
#[derive(Clone, Debug)]
pub enum TimeFormat {
    /// RFC 3339 (`2022-03-20T11:00:00+01:00`), the default.
    Rfc3339,
    /// Integer or decimal Unix seconds.
    EpochSeconds,
    /// Integer Unix milliseconds.
    EpochMillis,
    /// A `time` crate format description such as
    /// `[year]-[month]-[day] [hour]:[minute]:[second]`; without an offset it is UTC.
    Custom(OwnedFormatItem),
}

impl TimeFormat {
    /// `rfc3339`, `epoch_s`, `epoch_ms`, or a format description.
    pub fn parse(text: &str) -> Result<TimeFormat, ImportError> {
        Ok(match text {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_s" | "epoch" => TimeFormat::EpochSeconds,
            "epoch_ms" => TimeFormat::EpochMillis,
            custom => {
                TimeFormat::Custom(format_description::parse_owned::<2>(custom).map_err(|e| {
                    ImportError::TimeFormat {
                        format: custom.to_owned(),
                        message: e.to_string(),
                    }
                })?)
            }
        })
    }

    fn read(&self, cell: &str) -> Option<Timestamp> {
        let micros = match self {
            TimeFormat::Rfc3339 => {
                let t = OffsetDateTime::parse(cell, &time::format_description::well_known::Rfc3339)
                    .ok()?;
                i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()?
            }
            TimeFormat::EpochSeconds => {
                let s: f64 = cell.parse().ok()?;
                let us = (s * 1e6).round();
                // Beyond ±2^62 µs (146,000 years) is not a plant's data.
                if !us.is_finite() || us.abs() > 4.6e18 {
                    return None;
                }
                us as i64
            }
            TimeFormat::EpochMillis => cell.parse::<i64>().ok()?.checked_mul(1_000)?,
            TimeFormat::Custom(items) => {
                let t = OffsetDateTime::parse(cell, items).ok().or_else(|| {
                    PrimitiveDateTime::parse(cell, items)
                        .ok()
                        .map(PrimitiveDateTime::assume_utc)
                })?;
                i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()?
            }
        };
        Some(Timestamp::from_micros(micros))
    }
}

/// Options of one import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Header of the time column.
    pub time_column: String,
    /// How it is written.
    pub time_format: TimeFormat,
    /// Prepended to every column header to make the tag name (e.g. `plant1/`).
    pub tag_prefix: String,
    /// Field delimiter.
    pub delimiter: u8,
}

/// Why an import stopped. Lines are 1-based and count the header; columns are 1-based.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file could not be read or is not CSV.
    #[error("line {line}: {message}")]
    Csv {
        /// Line of the problem.
        line: u64,
        /// What the CSV reader said.
        message: String,
    },
    /// No header line.
    #[error("the file is empty: a header line naming the columns is required")]
    Empty,
    /// The time column is not in the header.
    #[error("no column {0:?} in the header (use --time-column)")]
    NoTimeColumn(String),
    /// A header is not usable as a tag name.
    #[error("column {column} ({header:?}): {message}")]
    BadHeader {
        /// Column number.
        column: usize,
        /// The header text.
        header: String,
        /// Why.
        message: &'static str,
    },
    /// The time format description is invalid.
    #[error("time format {format:?}: {message}")]
    TimeFormat {
        /// The format given.
        format: String,
        /// Why it is invalid.
        message: String,
    },
    /// A time cell that does not parse.
    #[error(
        "line {line}, column {column} ({header:?}): {cell:?} is not a time in the given format"
    )]
    BadTime {
        /// Line.
        line: u64,
        /// Column.
        column: usize,
        /// Header of the column.
        header: String,
        /// The cell.
        cell: String,
    },
    /// A value cell that does not parse.
    #[error("line {line}, column {column} ({header:?}): {cell:?} is not a number")]
    BadValue {
        /// Line.
        line: u64,
        /// Column.
        column: usize,
        /// Header of the column.
        header: String,
        /// The cell.
        cell: String,
    },
}

/// What an import found, for the summary at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportSummary {
    /// Data rows read.
    pub rows: u64,
    /// Points produced.
    pub points: u64,
    /// Tag names, in column order.
    pub tags: Vec<String>,
    /// Headers of columns that are not numeric, skipped.
    pub skipped_columns: Vec<String>,
    /// First and last time seen.
    pub time_range: Option<(Timestamp, Timestamp)>,
}

/// Reads a CSV and hands `TagPoint`s to `sink` in batches of about `ROWS_PER_BATCH` rows.
/// `sink` returning an error stops the import with it. `progress` is called after each batch
/// with the bytes consumed so far.
pub fn import<R, E>(
    input: R,
    options: &ImportOptions,
    mut sink: impl FnMut(Vec<TagPoint>) -> Result<(), E>,
    mut progress: impl FnMut(u64),
) -> Result<Result<ImportSummary, ImportError>, E>
where
    R: Read,
{
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .flexible(false)
        .from_reader(input);
    let headers = match reader.headers() {
        Ok(h) if !h.is_empty() => h.clone(),
        Ok(_) => return Ok(Err(ImportError::Empty)),
        Err(e) => return Ok(Err(csv_error(&e, 1))),
    };
    let Some(time_idx) = headers.iter().position(|h| h == options.time_column) else {
        return Ok(Err(ImportError::NoTimeColumn(options.time_column.clone())));
    };
    let mut columns: Vec<Column> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        if i == time_idx {
            continue;
        }
        let name = format!("{}{}", options.tag_prefix, h.trim());
        if let Err(message) = check_tag_name(&name) {
            return Ok(Err(ImportError::BadHeader {
                column: i + 1,
                header: h.to_owned(),
                message,
            }));
        }
        columns.push(Column {
            index: i,
            header: h.to_owned(),
            tag: name,
            numeric: None,
        });
    }
    let meta = TagMeta {
        value_type: ValueType::F64,
        unit: None,
        description: Some(Arc::from("imported from CSV")),
        retention: None,
        // An import keeps the compression settings of tags that exist.
        lossy: None,
    };
    let mut summary = ImportSummary::default();
    let mut batch = Vec::new();
    let mut rows_in_batch = 0usize;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Ok(Err(csv_error(&e, summary.rows + 2))),
        }
        let line = record.position().map_or(summary.rows + 2, |p| p.line());
        let time_cell = record.get(time_idx).unwrap_or_default().trim();
        let Some(ts) = options.time_format.read(time_cell) else {
            return Ok(Err(ImportError::BadTime {
                line,
                column: time_idx + 1,
                header: options.time_column.clone(),
                cell: time_cell.to_owned(),
            }));
        };
        summary.time_range = Some(match summary.time_range {
            None => (ts, ts),
            Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
        });
        for c in &mut columns {
            let cell = record.get(c.index).unwrap_or_default().trim();
            if cell.is_empty() || c.numeric == Some(false) {
                continue;
            }
            match (cell.parse::<f64>(), c.numeric) {
                (Ok(v), _) => {
                    c.numeric = Some(true);
                    batch.push(TagPoint {
                        tag: c.tag.clone(),
                        point: Point::good(ts, Value::F64(v)),
                        meta: meta.clone(),
                    });
                }
                (Err(_), None) => c.numeric = Some(false),
                (Err(_), Some(_)) => {
                    return Ok(Err(ImportError::BadValue {
                        line,
                        column: c.index + 1,
                        header: c.header.clone(),
                        cell: cell.to_owned(),
                    }))
                }
            }
        }
        summary.rows += 1;
        rows_in_batch += 1;
        if rows_in_batch >= ROWS_PER_BATCH {
            summary.points += batch.len() as u64;
            sink(std::mem::take(&mut batch))?;
            rows_in_batch = 0;
            progress(reader.position().byte());
        }
    }
    if !batch.is_empty() {
        summary.points += batch.len() as u64;
        sink(batch)?;
    }
    progress(reader.position().byte());
    for c in columns {
        match c.numeric {
            Some(true) => summary.tags.push(c.tag),
            _ => summary.skipped_columns.push(c.header),
        }
    }
    Ok(Ok(summary))
}

struct Column {
    index: usize,
    header: String,
    tag: String,
    /// Decided by the first non-empty cell.
    numeric: Option<bool>,
}

fn check_tag_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("an empty header cannot name a tag");
    }
    if name.len() > MAX_TAG_NAME_LEN {
        return Err("too long for a tag name");
    }
    if name.chars().any(char::is_control) {
        return Err("control characters in a tag name");
    }
    Ok(())
}

fn csv_error(e: &csv::Error, fallback_line: u64) -> ImportError {
    let line = e.position().map_or(fallback_line, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => e.to_string(),
    };
    ImportError::Csv { line, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        csv: &str,
        options: &ImportOptions,
    ) -> (Result<ImportSummary, ImportError>, Vec<TagPoint>) {
        let mut points = Vec::new();
        let r: Result<_, ()> = import(
            csv.as_bytes(),
            options,
            |b| {
                points.extend(b);
                Ok(())
            },
            |_| {},
        );
        (r.unwrap(), points)
    }

    fn options(time_format: &str) -> ImportOptions {
        ImportOptions {
            time_column: "Time".into(),
            time_format: TimeFormat::parse(time_format).unwrap(),
            tag_prefix: "river/".into(),
            delimiter: b',',
        }
    }

    #[test]
    fn numeric_columns_become_tags_and_text_columns_are_skipped() {
        let csv = "Time,Flow [l/s],Status,Level\n\
                   2022-03-20T11:00:00+01:00,100.5,ok,\n\
                   2022-03-20T12:00:00+01:00,101,ok,3.5\n";
        let (summary, points) = run(csv, &options("rfc3339"));
        let summary = summary.unwrap();
        assert_eq!(summary.rows, 2);
        assert_eq!(summary.tags, vec!["river/Flow [l/s]", "river/Level"]);
        assert_eq!(summary.skipped_columns, vec!["Status"]);
        assert_eq!(points.len(), 3);
        assert_eq!(
            points[0].point.ts,
            Timestamp::from_micros(1_647_770_400_000_000)
        );
        assert_eq!(points[2].tag, "river/Level");
        assert_eq!(points[2].point.value, Value::F64(3.5));
    }

    #[test]
    fn time_formats() {
        for (format, cell, micros) in [
            ("epoch_ms", "1700000000123", 1_700_000_000_123_000),
            ("epoch_s", "1700000000.5", 1_700_000_000_500_000),
            (
                "[year]-[month]-[day] [hour]:[minute]:[second]",
                "2023-11-14 22:13:20",
                1_700_000_000_000_000,
            ),
        ] {
            let (summary, points) = run(&format!("Time,x\n{cell},1\n"), &options(format));
            summary.unwrap();
            assert_eq!(
                points[0].point.ts,
                Timestamp::from_micros(micros),
                "{format}"
            );
        }
    }

    #[test]
    fn errors_name_line_and_column() {
        let (r, _) = run(
            "Time,x\n2022-03-20T11:00:00Z,1\n2022-03-20T12:00:00Z,abc\n",
            &options("rfc3339"),
        );
        let e = r.unwrap_err().to_string();
        assert_eq!(e, "line 3, column 2 (\"x\"): \"abc\" is not a number");
        let (r, _) = run("Time,x\nyesterday,1\n", &options("rfc3339"));
        assert!(r
            .unwrap_err()
            .to_string()
            .starts_with("line 2, column 1 (\"Time\")"));
        let (r, _) = run("Time,x\n2022-03-20T11:00:00Z,1,2\n", &options("rfc3339"));
        assert_eq!(
            r.unwrap_err().to_string(),
            "line 2: 3 fields where the header has 2"
        );
        let (r, _) = run("When,x\n1,2\n", &options("rfc3339"));
        assert!(matches!(r, Err(ImportError::NoTimeColumn(_))));
        let (r, _) = run("", &options("rfc3339"));
        assert!(matches!(r, Err(ImportError::Empty)));
        assert!(TimeFormat::parse("[year").is_err());
    }

    #[test]
    fn batches_are_bounded_and_sink_errors_stop_the_import() {
        let mut csv = String::from("Time,x\n");
        for i in 0..(ROWS_PER_BATCH * 2 + 10) {
            csv.push_str(&format!("{},{i}\n", 1_700_000_000_000u64 + i as u64));
        }
        let mut sizes = Vec::new();
        let r: Result<_, ()> = import(
            csv.as_bytes(),
            &options("epoch_ms"),
            |b| {
                sizes.push(b.len());
                Ok(())
            },
            |_| {},
        );
        assert_eq!(r.unwrap().unwrap().points, (ROWS_PER_BATCH * 2 + 10) as u64);
        assert_eq!(sizes, vec![ROWS_PER_BATCH, ROWS_PER_BATCH, 10]);
        let r = import(
            csv.as_bytes(),
            &options("epoch_ms"),
            |_| Err("disk full"),
            |_| {},
        );
        assert_eq!(r.unwrap_err(), "disk full");
    }
}
