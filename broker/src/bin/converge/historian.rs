//! `converge historian import` and `converge historian stats`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Subcommand;
use converge_broker::config::Config;
use converge_broker::metrics::Metrics;
use converge_broker::persist::store::open_historian_read_only;
use converge_broker::persist::{Commit, Op, Store};
use converge_historian::encoding::Timestamp;
use converge_historian::import::{import, ImportOptions, TimeFormat};
use converge_historian::storage::StorageConfig;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::ServerArgs;

/// Group commits in flight during an import: enough to keep the writer busy while the next
/// batch is parsed, few enough to bound memory.
const IMPORT_COMMITS_IN_FLIGHT: usize = 4;

/// Files smaller than this import without a progress bar.
const PROGRESS_BAR_ABOVE_BYTES: u64 = 4 << 20;

#[derive(Subcommand)]
pub enum HistorianCommand {
    /// Import a CSV export: one time column, every other numeric column a tag. Writes through
    /// the server's own write path (group commit, configured sync); stop the server first.
    Import {
        file: PathBuf,
        /// Header of the time column.
        #[arg(long)]
        time_column: String,
        /// rfc3339, epoch_s, epoch_ms, or a format such as
        /// "[year]-[month]-[day] [hour]:[minute]:[second]" (UTC unless it has an offset).
        #[arg(long, default_value = "rfc3339")]
        time_format: String,
        /// Prepended to each column header to form the tag name, e.g. "plant1/".
        #[arg(long, default_value = "")]
        tag_prefix: String,
        /// Field delimiter.
        #[arg(long, default_value = ",")]
        delimiter: char,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Per tag: points, stored bytes, bytes per point and time range, then totals. Reads the
    /// database read-only, so it works while the server runs.
    Stats {
        /// Tag name pattern (`*` any run, `?` one character).
        #[arg(long, default_value = "*")]
        tag: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: HistorianCommand) -> anyhow::Result<()> {
    match command {
        HistorianCommand::Import {
            file,
            time_column,
            time_format,
            tag_prefix,
            delimiter,
            server,
        } => {
            let delimiter = u8::try_from(delimiter)
                .ok()
                .filter(u8::is_ascii)
                .context("--delimiter must be one ASCII character")?;
            let options = ImportOptions {
                time_column,
                time_format: TimeFormat::parse(&time_format)?,
                tag_prefix,
                delimiter,
            };
            run_import(&file, &options, &server.load()?)
        }
        HistorianCommand::Stats { tag, server } => run_stats(&tag, &server.load()?),
    }
}

fn run_import(file: &PathBuf, options: &ImportOptions, config: &Config) -> anyhow::Result<()> {
    if !config.historian.enabled {
        bail!("[historian] enabled = false in this configuration: nothing to import into");
    }
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let metrics = Metrics::new();
    let store = Store::open(
        &config.db_dir(),
        config.persistence.sync,
        config.persistence.max_batch,
        metrics.clone(),
        Some(StorageConfig {
            seal_threshold: config.historian.seal_threshold,
            ..StorageConfig::default()
        }),
    )
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") {
            anyhow::anyhow!(
                "{}: the database is in use; stop the server before importing ({text})",
                config.db_dir().display()
            )
        } else {
            anyhow::anyhow!("cannot open {}: {text}", config.db_dir().display())
        }
    })?;
    let bar = (size > PROGRESS_BAR_ABOVE_BYTES && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start a runtime")?;
    let started = Instant::now();
    let mut in_flight: VecDeque<Commit> = VecDeque::new();
    let outcome = import(
        BufReader::new(input),
        options,
        |points| {
            in_flight.push_back(store.submit(vec![Op::Historize(points)]));
            if in_flight.len() > IMPORT_COMMITS_IN_FLIGHT {
                if let Some(c) = in_flight.pop_front() {
                    runtime.block_on(c.wait())?;
                }
            }
            Ok::<(), converge_broker::persist::StoreError>(())
        },
        |bytes| {
            if let Some(bar) = &bar {
                bar.set_position(bytes);
            }
        },
    );
    for c in in_flight {
        runtime.block_on(c.wait())?;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let written = metrics.historian_points_written.get();
    let refused: u64 = ["type_mismatch", "invalid_tag", "storage"]
        .iter()
        .map(|r| {
            metrics
                .historian_points_rejected
                .with_label_values(&[r])
                .get()
        })
        .sum();
    store.close()?;
    let summary = match outcome? {
        Ok(summary) => summary,
        Err(e) => bail!(
            "{}: {e}\n{written} points before it were written; fix the file and run the import again (points at the same tag and time are replaced, not duplicated)",
            file.display()
        ),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} rows, {} points written to {} tags in {:.1} s ({:.0} points/s)",
        file.display(),
        summary.rows,
        written,
        summary.tags.len(),
        secs,
        written as f64 / secs.max(1e-9)
    );
    if let Some((first, last)) = summary.time_range {
        println!("time range: {} .. {}", rfc3339(first), rfc3339(last));
    }
    for tag in &summary.tags {
        println!("  tag {tag}");
    }
    if !summary.skipped_columns.is_empty() {
        println!(
            "skipped (not numeric): {}",
            summary.skipped_columns.join(", ")
        );
    }
    if refused > 0 {
        bail!("{refused} points were refused (a tag exists with another value type, or an invalid tag name)");
    }
    Ok(())
}

fn run_stats(pattern: &str, config: &Config) -> anyhow::Result<()> {
    let storage = open_historian_read_only(&config.db_dir())
        .with_context(|| format!("cannot read {}", config.db_dir().display()))?;
    let stats = storage.stats(pattern)?;
    println!(
        "{:<40} {:>12} {:>12} {:>9}  {:<24} {:<24}",
        "TAG", "POINTS", "BYTES", "BYTES/PT", "FIRST", "LAST"
    );
    let (mut points, mut bytes) = (0u64, 0u64);
    for s in &stats {
        let b = s.block_bytes + s.recent_bytes;
        points += s.points;
        bytes += b;
        let (first, last) = s
            .time_range
            .map_or((String::from("-"), String::from("-")), |(a, z)| {
                (rfc3339(a), rfc3339(z))
            });
        println!(
            "{:<40} {:>12} {:>12} {:>9.2}  {:<24} {:<24}",
            s.name,
            s.points,
            b,
            per_point(b, s.points),
            first,
            last
        );
    }
    println!(
        "{:<40} {:>12} {:>12} {:>9.2}",
        format!("TOTAL ({} tags)", stats.len()),
        points,
        bytes,
        per_point(bytes, points)
    );
    Ok(())
}

fn per_point(bytes: u64, points: u64) -> f64 {
    if points == 0 {
        0.0
    } else {
        bytes as f64 / points as f64
    }
}

fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.micros()) * 1_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} µs", t.micros()))
}
