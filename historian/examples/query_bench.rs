//! Query latency over real storage, through the query engine and through
//! the HTTP API, for the historian issue's three cases:
//! (a) latest value of 10,000 tags, (b) one day of 1 s data raw (86,400
//! points), (c) one year of 1 s data as 1,000 time-weighted-average buckets.
//!
//! `cargo run --release -p converge-historian --example query_bench [DAYS] [TAGS]`
//!
//! Writes DAYS (default 365) of 1 s data into one tag, a day per write
//! (fsync off: the storage layer's speed, not the disk's), and TAGS
//! (default 10,000) tags with one point each; prints the write rate, the
//! bytes of blocks and rollups, then the median and best of repeated
//! queries. For (c) it also times the raw path (rollups hidden) once.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_historian::api::{serve_on, ApiConfig, ApiState};
use converge_historian::encoding::{Point, Timestamp, Value};
use converge_historian::query::{
    recorded, summary, Boundary, Interpolation, QueryLimits, Source, SourceError, SummaryKind,
};
use converge_historian::storage::{
    Storage, StorageConfig, TagId, TagRef, CF_BLOCKS, CF_ROLLUP_1H, CF_ROLLUP_1M,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 2025-01-01T00:00:00Z in µs.
const START: i64 = 1_735_689_600_000_000;
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;
const YEAR_TAG: &str = "plant/unit1/flow";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().map_or(Ok(365), |a| a.parse())?;
    let tags: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(Storage::open_standalone(
        dir.path(),
        StorageConfig {
            sync: false,
            ..StorageConfig::default()
        },
    )?);

    write_year(&storage, days)?;
    sizes(&storage, days)?;
    let names = write_tags(&storage, tags)?;
    let end = START + days * DAY;

    let limits = QueryLimits::default();
    let ids: Vec<TagId> = names
        .iter()
        .filter_map(|n| storage.tag_by_name(n).map(|t| t.id))
        .collect();
    println!("\n(a) latest value of {} tags", ids.len());
    measure("storage latest_many (ids)", 50, || {
        let n = storage.latest_many(&ids).iter().flatten().count();
        check(n == ids.len(), "latest_many")
    })?;
    measure("engine: Source::latest per tag name", 50, || {
        let mut n = 0;
        for name in &names {
            n += usize::from(Source::latest(storage.as_ref(), name)?.is_some());
        }
        check(n == names.len(), "latest")
    })?;

    let day = START + (days / 2) * DAY;
    println!(
        "\n(b) one day of 1 s data, raw (recorded, {} points)",
        86_400
    );
    let page_limits = QueryLimits {
        max_page_points: 86_400,
        ..limits
    };
    measure("engine: recorded", 20, || {
        let page = recorded(
            storage.as_ref(),
            YEAR_TAG,
            ts(day),
            ts(day + DAY - SEC),
            Boundary::Inside,
            86_400,
            None,
            &page_limits,
        )?;
        check(page.points.len() == 86_400, "recorded count")
    })?;

    println!("\n(c) {days} days of 1 s data as 1,000 time-weighted-average buckets");
    let interval = Duration::from_micros(((end - START) / 1_000) as u64);
    for w in [Interpolation::Linear, Interpolation::Step] {
        measure(&format!("engine: summary TWA, {w:?}"), 20, || {
            let rows = summary(
                storage.as_ref(),
                YEAR_TAG,
                ts(START),
                ts(end),
                Some(interval),
                &[SummaryKind::TimeWeightedAverage],
                w,
                &limits,
            )?;
            check(rows.len() == 1_000, "summary rows")
        })?;
    }
    let raw_limits = QueryLimits {
        max_points_scanned: u64::MAX,
        ..limits
    };
    measure(
        "engine: same, raw points (rollups hidden), linear",
        1,
        || {
            let rows = summary(
                &NoRollups(storage.as_ref()),
                YEAR_TAG,
                ts(START),
                ts(end),
                Some(interval),
                &[SummaryKind::TimeWeightedAverage],
                Interpolation::Linear,
                &raw_limits,
            )?;
            check(rows.len() == 1_000, "summary rows")
        },
    )?;

    http(&storage, &names, day, end, interval)?;
    Ok(())
}

/// One year (or DAYS) of 1 s data into `YEAR_TAG`, one day per write.
fn write_year(storage: &Storage, days: i64) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut plan_secs = 0.0;
    let mut written = 0u64;
    let mut blocks = 0u64;
    let mut batch = Vec::with_capacity(86_400);
    for d in 0..days {
        batch.clear();
        for i in 0..86_400 {
            let k = d * 86_400 + i;
            batch.push((TagRef::Name(YEAR_TAG), point(k)));
        }
        let p = Instant::now();
        let mut ws = storage.plan(&batch)?;
        let mut wb = rocksdb::WriteBatch::default();
        ws.append_to(&mut wb)?;
        plan_secs += p.elapsed().as_secs_f64();
        storage.db().write(wb)?;
        let s = ws.committed();
        written += s.points;
        blocks += s.blocks_written;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "write: {written} points of 1 s data, a day per write: {secs:.1} s = {:.0} points/s \
         ({blocks} blocks; planning incl. rollups {plan_secs:.1} s)",
        written as f64 / secs
    );
    Ok(())
}

/// Bytes of blocks and rollups of the year tag (keys and values).
fn sizes(storage: &Storage, days: i64) -> Result<(), Box<dyn Error>> {
    let points = (days * 86_400) as f64;
    for cf in [CF_BLOCKS, CF_ROLLUP_1M, CF_ROLLUP_1H] {
        let handle = storage.db().cf_handle(cf).ok_or("column family")?;
        let (mut n, mut bytes) = (0u64, 0u64);
        for item in storage
            .db()
            .iterator_cf(handle, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        println!(
            "{cf}: {n} records, {bytes} bytes = {:.3} bytes per point",
            bytes as f64 / points
        );
    }
    Ok(())
}

/// `tags` tags with one point each, for the latest-value case.
fn write_tags(storage: &Storage, tags: usize) -> Result<Vec<String>, Box<dyn Error>> {
    let names: Vec<String> = (0..tags)
        .map(|i| format!("plant/area{}/pv{i}", i % 50))
        .collect();
    let batch: Vec<(TagRef<'_>, Point)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (TagRef::Name(n), point(i as i64)))
        .collect();
    storage.write(&batch)?;
    Ok(names)
}

/// The same cases through the HTTP API on 127.0.0.1, JSON output.
fn http(
    storage: &Arc<Storage>,
    names: &[String],
    day: i64,
    end: i64,
    interval: Duration,
) -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = ApiConfig::default();
        // The default is 1,000 tags per request; case (a) asks for 10,000.
        config.max_tags_per_request = names.len().max(1);
        let state = ApiState::new(storage.clone(), storage.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, config, state, async move {
            let _ = stopped.await;
        }));

        println!("\nthrough the HTTP API (127.0.0.1, JSON, a new connection per request)");
        let body = serde_json::json!({ "tags": names }).to_string();
        time_async(
            &format!("(a) POST latest, {} tags", names.len()),
            20,
            || request(addr, "POST", "/api/v1/streams/latest", body.clone()),
        )
        .await?;
        let q = |pairs: &[(&str, String)]| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                s.append_pair(k, v);
            }
            s.finish()
        };
        let recorded = format!(
            "/api/v1/streams/recorded?{}",
            q(&[
                ("tag", YEAR_TAG.to_owned()),
                ("start", rfc(day)),
                ("end", rfc(day + DAY - SEC)),
                ("max_count", "86400".to_owned()),
            ])
        );
        time_async("(b) GET recorded, one day (86,400 points)", 10, || {
            request(addr, "GET", &recorded, String::new())
        })
        .await?;
        for w in ["linear", "step"] {
            let path = format!(
                "/api/v1/streams/summary?{}",
                q(&[
                    ("tag", YEAR_TAG.to_owned()),
                    ("start", rfc(START)),
                    ("end", rfc(end)),
                    ("interval", format!("{}s", interval.as_secs())),
                    ("types", "time_weighted_average".to_owned()),
                    ("weighting", w.to_owned()),
                ])
            );
            time_async(
                &format!("(c) GET summary, 1,000 TWA buckets, {w}"),
                20,
                || request(addr, "GET", &path, String::new()),
            )
            .await?;
        }
        let _ = stop.send(());
        server.await??;
        Ok::<(), Box<dyn Error>>(())
    })
}

/// One HTTP/1.1 request; fails unless the answer is 200.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: String,
) -> Result<(), Box<dyn Error>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        let text = String::from_utf8_lossy(&answer);
        return Err(format!("{path}: {}", text.chars().take(300).collect::<String>()).into());
    }
    Ok(())
}

/// Runs `f` once to warm up, then `runs` times; prints median and best.
fn measure(
    what: &str,
    runs: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<(), Box<dyn Error>> {
    f()?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(what, ms);
    Ok(())
}

async fn time_async<F, Fut>(what: &str, runs: usize, mut f: F) -> Result<(), Box<dyn Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn Error>>>,
{
    f().await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(what, ms);
    Ok(())
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN);
    let best = ms.first().copied().unwrap_or(f64::NAN);
    println!(
        "  {what}: median {median:.3} ms, best {best:.3} ms ({} runs)",
        ms.len()
    );
}

fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected result: {what}").into())
    }
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

fn rfc(us: i64) -> String {
    let t = ::time::OffsetDateTime::from_unix_timestamp(us / SEC)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    t.format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A process value sampled every second: a slow sine with small noise, two
/// decimals (like most plant signals).
fn point(k: i64) -> Point {
    let x = k as f64 / 600.0;
    let v = (50.0 + 10.0 * x.sin() + ((k * 7919) % 13) as f64 * 0.01) * 100.0;
    Point::good(ts(START + k * SEC), Value::F64(v.round() / 100.0))
}

/// Storage with its rollups hidden: the raw path on the same data.
struct NoRollups<'a>(&'a Storage);

impl Source for NoRollups<'_> {
    fn range(
        &self,
        tag: &str,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, SourceError> {
        Source::range(self.0, tag, start, end, limit)
    }

    fn before(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        Source::before(self.0, tag, t, inclusive)
    }

    fn after(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        Source::after(self.0, tag, t, inclusive)
    }

    fn latest(&self, tag: &str) -> Result<Option<Point>, SourceError> {
        Source::latest(self.0, tag)
    }
}
