//! Measures the block format on the shared datasets and prints Markdown.
//!
//! `cargo run --release -p converge-historian --example measure [DATASETS_DIR]`
//!
//! Every numeric column of every file is one tag (columns that only build the
//! timestamp are not). For each dataset it compares, in one run, bytes per
//! point of: plain Gorilla (XOR values; delta-of-delta timestamps), pco on
//! the whole column (`pco::standalone::simple_compress`, default config) and
//! our blocks of several sizes; then encode/decode speed on one thread.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use converge_historian::encoding::{
    decode_block, decode_block_columns, describe_block, encode_block, gorilla, Point, Quality,
    Severity, Timestamp, Value, TARGET_POINTS_PER_BLOCK,
};

/// One tag: a name and its points, sorted by time.
struct Tag {
    name: String,
    ts: Vec<i64>,
    values: Vec<f64>,
    quality: Vec<Quality>,
}

impl Tag {
    fn points(&self) -> Vec<Point> {
        self.ts
            .iter()
            .zip(&self.values)
            .zip(&self.quality)
            .map(|((&t, &v), &q)| Point {
                ts: Timestamp::from_micros(t),
                value: Value::F64(v),
                quality: q,
            })
            .collect()
    }
}

struct Dataset {
    name: String,
    tags: Vec<Tag>,
}

const BLOCK_SIZES: [usize; 3] = [TARGET_POINTS_PER_BLOCK, 1024, 256];

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    let datasets = vec![
        surfrad(&dir.join("pvlib-solar-1min/surfrad-slv16001.dat"), false)?,
        surfrad(&dir.join("pvlib-solar-1min/surfrad-slv16001.dat"), true)?,
        midc(&dir.join("pvlib-solar-1min/midc_raw_20181018.txt"))?,
        occupancy(&dir.join("river-occupancy/occupancy.csv"))?,
        waterflow(&dir.join("river-waterflow/water-flow.csv"))?,
    ];

    println!("### Bytes per point (lower is better; raw = 16: i64 timestamp + f64 value)\n");
    println!("Values only: the value column alone. Block: everything stored (header, checksums, timestamps, values, quality).\n");
    print!("| dataset | tags | points | Gorilla values | Gorilla values+ts | pco whole column (values) |");
    for b in BLOCK_SIZES {
        print!(" ours {b}: values | ours {b}: block − ts | ours {b}: block |");
    }
    println!(" ours {TARGET_POINTS_PER_BLOCK} block−ts ÷ pco |");
    print!("|---|---:|---:|---:|---:|---:|");
    for _ in BLOCK_SIZES {
        print!("---:|---:|---:|");
    }
    println!("---:|");
    let mut totals = Totals::default();
    for ds in &datasets {
        let row = measure_sizes(ds)?;
        totals.add(&row);
        print_row(&ds.name, &row);
    }
    print_row("**all**", &totals.0);

    println!("\n### Encodings chosen ({TARGET_POINTS_PER_BLOCK}-point blocks)\n");
    for ds in &datasets {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for tag in &ds.tags {
            for chunk in tag.points().chunks(TARGET_POINTS_PER_BLOCK) {
                let l = describe_block(&encode_block(chunk)?)?;
                let key = format!(
                    "ts {}, values {}, quality {}",
                    l.timestamps.encoding, l.values.encoding, l.quality.encoding
                );
                match counts.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((key, 1)),
                }
            }
        }
        let list: Vec<String> = counts.iter().map(|(k, c)| format!("{c}× {k}")).collect();
        println!("- {}: {}", ds.name, list.join("; "));
    }

    println!("\n### Per tag ({TARGET_POINTS_PER_BLOCK}-point blocks, bytes/point)\n");
    println!("| dataset | tag | points | Gorilla | pco whole column | ours values | ours block |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for ds in &datasets {
        for tag in &ds.tags {
            let n = tag.values.len() as f64;
            let (vals, _, block) = our_sizes(tag, TARGET_POINTS_PER_BLOCK)?;
            println!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                ds.name,
                tag.name,
                tag.values.len(),
                gorilla::encode_values(&tag.values).len() as f64 / n,
                pco_whole(&tag.values)?.len() as f64 / n,
                vals as f64 / n,
                block as f64 / n
            );
        }
    }

    speed(&datasets)?;
    Ok(())
}

#[derive(Default, Clone)]
struct Row {
    tags: usize,
    points: usize,
    gorilla_values: usize,
    gorilla_ts: usize,
    pco: usize,
    /// Per block size: (values section, block minus timestamp section, block).
    ours: [(usize, usize, usize); 3],
}

#[derive(Default)]
struct Totals(Row);

impl Totals {
    fn add(&mut self, r: &Row) {
        let t = &mut self.0;
        t.tags += r.tags;
        t.points += r.points;
        t.gorilla_values += r.gorilla_values;
        t.gorilla_ts += r.gorilla_ts;
        t.pco += r.pco;
        for (a, b) in t.ours.iter_mut().zip(r.ours) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
        }
    }
}

fn print_row(name: &str, r: &Row) {
    let n = r.points as f64;
    let per = |b: usize| b as f64 / n;
    print!(
        "| {name} | {} | {} | {:.3} | {:.3} | {:.3} |",
        r.tags,
        r.points,
        per(r.gorilla_values),
        per(r.gorilla_values + r.gorilla_ts),
        per(r.pco)
    );
    for (v, nts, b) in r.ours {
        print!(" {:.3} | {:.3} | {:.3} |", per(v), per(nts), per(b));
    }
    println!(" {:.3} |", r.ours[0].1 as f64 / r.pco as f64);
}

fn measure_sizes(ds: &Dataset) -> Result<Row, Box<dyn Error>> {
    let mut row = Row {
        tags: ds.tags.len(),
        ..Row::default()
    };
    for tag in &ds.tags {
        row.points += tag.values.len();
        row.gorilla_values += gorilla::encode_values(&tag.values).len();
        row.gorilla_ts += gorilla::encode_timestamps(&tag.ts).len();
        row.pco += pco_whole(&tag.values)?.len();
        for (slot, &b) in row.ours.iter_mut().zip(BLOCK_SIZES.iter()) {
            let (v, nts, blk) = our_sizes(tag, b)?;
            slot.0 += v;
            slot.1 += nts;
            slot.2 += blk;
        }
    }
    Ok(row)
}

/// (values section, block minus timestamp section, whole block) bytes.
fn our_sizes(tag: &Tag, block: usize) -> Result<(usize, usize, usize), Box<dyn Error>> {
    let (mut v, mut nts, mut total) = (0, 0, 0);
    for chunk in tag.points().chunks(block) {
        let bytes = encode_block(chunk)?;
        let layout = describe_block(&bytes)?;
        v += layout.values.bytes;
        nts += bytes.len() - layout.timestamps.bytes;
        total += bytes.len();
    }
    Ok((v, nts, total))
}

fn pco_whole(values: &[f64]) -> Result<Vec<u8>, Box<dyn Error>> {
    Ok(pco::standalone::simple_compress(
        values,
        &pco::ChunkConfig::default(),
    )?)
}

/// Runs `f` until at least `min` has passed; returns calls per second.
fn rate(
    min: Duration,
    mut f: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    f()?; // warm-up
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < min {
        f()?;
        calls += 1;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

fn speed(datasets: &[Dataset]) -> Result<(), Box<dyn Error>> {
    let min = Duration::from_secs(2);
    let mut blocks_in: Vec<Vec<Point>> = Vec::new();
    let mut columns: Vec<&[f64]> = Vec::new();
    let mut ts_columns: Vec<&[i64]> = Vec::new();
    // The quality-flag variant repeats the surfrad values; time each column once.
    for ds in datasets.iter().filter(|d| !d.name.contains("QC")) {
        for tag in &ds.tags {
            blocks_in.extend(
                tag.points()
                    .chunks(TARGET_POINTS_PER_BLOCK)
                    .map(<[Point]>::to_vec),
            );
            columns.push(&tag.values);
            ts_columns.push(&tag.ts);
        }
    }
    let points: usize = blocks_in.iter().map(Vec::len).sum();
    let encoded: Vec<Vec<u8>> = blocks_in
        .iter()
        .map(|b| encode_block(b))
        .collect::<Result<_, _>>()?;
    let pco_cols: Vec<Vec<u8>> = columns
        .iter()
        .map(|c| pco_whole(c))
        .collect::<Result<_, _>>()?;
    let gor_cols: Vec<Vec<u8>> = columns.iter().map(|c| gorilla::encode_values(c)).collect();

    let mpts = |calls: f64| calls * points as f64 / 1e6;
    let enc = rate(min, || {
        for b in &blocks_in {
            std::hint::black_box(encode_block(b)?);
        }
        Ok(())
    })?;
    let dec = rate(min, || {
        for b in &encoded {
            std::hint::black_box(decode_block(b)?);
        }
        Ok(())
    })?;
    let dec_cols = rate(min, || {
        for b in &encoded {
            std::hint::black_box(decode_block_columns(b)?);
        }
        Ok(())
    })?;
    let pco_enc = rate(min, || {
        for c in &columns {
            std::hint::black_box(pco_whole(c)?);
        }
        Ok(())
    })?;
    let pco_dec = rate(min, || {
        for c in &pco_cols {
            std::hint::black_box(pco::standalone::simple_decompress::<f64>(c)?);
        }
        Ok(())
    })?;
    let gor_enc = rate(min, || {
        for (c, t) in columns.iter().zip(&ts_columns) {
            std::hint::black_box(gorilla::encode_values(c));
            std::hint::black_box(gorilla::encode_timestamps(t));
        }
        Ok(())
    })?;
    let gor_dec = rate(min, || {
        for (c, col) in gor_cols.iter().zip(&columns) {
            std::hint::black_box(gorilla::decode_values(c, col.len())?);
        }
        Ok(())
    })?;

    println!("\n### Speed, one thread ({points} points per pass, {TARGET_POINTS_PER_BLOCK}-point blocks)\n");
    println!("| what | million points/s |");
    println!("|---|---:|");
    println!(
        "| ours: encode_block (timestamps + values + quality) | {:.2} |",
        mpts(enc)
    );
    println!("| ours: decode_block to `Vec<Point>` | {:.2} |", mpts(dec));
    println!("| ours: decode_block_columns | {:.2} |", mpts(dec_cols));
    println!(
        "| pco whole column: compress values | {:.2} |",
        mpts(pco_enc)
    );
    println!(
        "| pco whole column: decompress values | {:.2} |",
        mpts(pco_dec)
    );
    println!(
        "| Gorilla: encode values + timestamps | {:.2} |",
        mpts(gor_enc)
    );
    println!("| Gorilla: decode values | {:.2} |", mpts(gor_dec));
    Ok(())
}

// ---- dataset parsing ----

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn micros(days: i64, secs_of_day: i64) -> i64 {
    (days * 86_400 + secs_of_day) * 1_000_000
}

fn read(path: &Path) -> Result<String, Box<dyn Error>> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn num(s: &str) -> Result<f64, Box<dyn Error>> {
    s.trim()
        .parse::<f64>()
        .map_err(|e| format!("{s:?}: {e}").into())
}

/// NOAA SURFRAD: 2 header lines, whitespace-separated; year jday month day
/// hour minute build the timestamp (UTC); dt, zen and 20 value/flag pairs are
/// tags. With `flags_as_quality`, each flag becomes its value's quality
/// (1 = Bad) instead of a tag of its own.
fn surfrad(path: &Path, flags_as_quality: bool) -> Result<Dataset, Box<dyn Error>> {
    const NAMES: [&str; 20] = [
        "dw_solar",
        "uw_solar",
        "direct_n",
        "diffuse",
        "dw_ir",
        "dw_casetemp",
        "dw_dometemp",
        "uw_ir",
        "uw_casetemp",
        "uw_dometemp",
        "uvb",
        "par",
        "netsolar",
        "netir",
        "totalnet",
        "temp",
        "rh",
        "windspd",
        "winddir",
        "pressure",
    ];
    let text = read(path)?;
    let mut names: Vec<String> = vec!["dt".into(), "zen".into()];
    for n in NAMES {
        names.push(n.into());
        if !flags_as_quality {
            names.push(format!("{n}_flag"));
        }
    }
    let mut tags: Vec<Tag> = names
        .into_iter()
        .map(|name| Tag {
            name,
            ts: vec![],
            values: vec![],
            quality: vec![],
        })
        .collect();
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 48 {
            return Err(format!("surfrad row with {} fields", f.len()).into());
        }
        let i = |k: usize| -> Result<i64, Box<dyn Error>> { Ok(f[k].parse::<i64>()?) };
        let t = micros(
            days_from_civil(i(0)?, i(2)?, i(3)?),
            i(4)? * 3600 + i(5)? * 60,
        );
        let mut col = 0;
        let mut push = |v: f64, q: Quality| {
            let tag = &mut tags[col];
            tag.ts.push(t);
            tag.values.push(v);
            tag.quality.push(q);
            col += 1;
        };
        push(num(f[6])?, Quality::GOOD);
        push(num(f[7])?, Quality::GOOD);
        for k in 0..20 {
            let v = num(f[8 + 2 * k])?;
            let flag = num(f[9 + 2 * k])?;
            if flags_as_quality {
                let q = if flag == 0.0 {
                    Quality::GOOD
                } else {
                    Quality::new(Severity::Bad, 1)
                };
                push(v, q);
            } else {
                push(v, Quality::GOOD);
                push(flag, Quality::GOOD);
            }
        }
    }
    let name = if flags_as_quality {
        "surfrad (QC flags as quality)"
    } else {
        "surfrad"
    };
    Ok(Dataset {
        name: name.into(),
        tags,
    })
}

/// NREL MIDC: CSV; Year, DOY and MST (HHMM, UTC−7) build the timestamp; the
/// pandas index column is dropped; 15 measurement columns are tags.
fn midc(path: &Path) -> Result<Dataset, Box<dyn Error>> {
    let text = read(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty midc")?.split(',').collect();
    let mut tags: Vec<Tag> = header[4..]
        .iter()
        .map(|n| Tag {
            name: (*n).to_string(),
            ts: vec![],
            values: vec![],
            quality: vec![],
        })
        .collect();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (year, doy, hhmm) = (
            f[1].parse::<i64>()?,
            f[2].parse::<i64>()?,
            f[3].parse::<i64>()?,
        );
        let t = micros(
            days_from_civil(year, 1, 1) + doy - 1,
            (hhmm / 100) * 3600 + (hhmm % 100) * 60 + 7 * 3600,
        );
        for (tag, v) in tags.iter_mut().zip(&f[4..]) {
            tag.ts.push(t);
            tag.values.push(num(v)?);
            tag.quality.push(Quality::GOOD);
        }
    }
    Ok(Dataset {
        name: "midc".into(),
        tags,
    })
}

/// "YYYY-MM-DD?HH:MM:SS" with an optional "+HH:MM" offset, to UTC µs.
fn iso(s: &str) -> Result<i64, Box<dyn Error>> {
    let p = |a: usize, b: usize| -> Result<i64, Box<dyn Error>> {
        Ok(s.get(a..b).ok_or("short date")?.parse()?)
    };
    let mut t = micros(
        days_from_civil(p(0, 4)?, p(5, 7)?, p(8, 10)?),
        p(11, 13)? * 3600 + p(14, 16)? * 60 + p(17, 19)?,
    );
    if s.len() >= 25 {
        let sign = if s.get(19..20) == Some("-") { -1 } else { 1 };
        t -= sign * (p(20, 22)? * 3600 + p(23, 25)? * 60) * 1_000_000;
    }
    Ok(t)
}

fn simple_csv(path: &Path, name: &str) -> Result<Dataset, Box<dyn Error>> {
    let text = read(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
    let mut tags: Vec<Tag> = header[1..]
        .iter()
        .map(|n| Tag {
            name: (*n).to_string(),
            ts: vec![],
            values: vec![],
            quality: vec![],
        })
        .collect();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let t = iso(f[0])?;
        for (tag, v) in tags.iter_mut().zip(&f[1..]) {
            tag.ts.push(t);
            tag.values.push(num(v)?);
            tag.quality.push(Quality::GOOD);
        }
    }
    Ok(Dataset {
        name: name.into(),
        tags,
    })
}

/// river occupancy: `time` (local, no zone; read as UTC) and V1..V4.
fn occupancy(path: &Path) -> Result<Dataset, Box<dyn Error>> {
    simple_csv(path, "occupancy")
}

/// river water flow: ISO timestamps with offsets, one flow column.
fn waterflow(path: &Path) -> Result<Dataset, Box<dyn Error>> {
    simple_csv(path, "waterflow")
}
