//! The block: a self-contained, checksummed run of one tag's points, the
//! unit the storage layer writes under a (series, first timestamp) key.
//!
//! Layout (version 1, integers little-endian, varints LEB128; docs/FORMAT.md
//! is the normative description):
//!
//! ```text
//! header  "CVB" | version u8 = 1 | value type u8 | flags u8
//!         | count varint | first_ts i64 | span varint (last_ts - first_ts)
//!         | range (F64: min f64, max f64; I64: min i64, max i64; Bool: min u8, max u8)
//!         | header CRC-32C u32 (of every header byte before it)
//! body    timestamp section | values section | quality section
//! trailer body CRC-32C u32 (of the body)
//! ```
//!
//! The header has its own checksum so `block_header` can plan a query from
//! the first few dozen bytes without reading or trusting the body.

use crate::encoding::checksum::crc32c;
use crate::encoding::reader::{put_usize, put_varint, Reader};
use crate::encoding::{
    boolean, float, int, quality, strings, timestamps, DecodeError, EncodeError, Point, Quality,
    Timestamp, Value, ValueType, FORMAT_VERSION, MAX_BLOCK_STRING_BYTES, MAX_POINTS_PER_BLOCK,
};

/// First bytes of every block.
pub const BLOCK_MAGIC: [u8; 3] = *b"CVB";

/// Flag: the header carries the value range.
const FLAG_RANGE: u8 = 1;
/// Flag: at least one point's quality is not Good.
const FLAG_NON_GOOD: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_RANGE | FLAG_NON_GOOD;

/// What `block_header` reads without touching the body.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BlockHeader {
    /// Format version the block was written with.
    pub version: u8,
    /// The single value type of the block.
    pub value_type: ValueType,
    /// Number of points (1..=MAX_POINTS_PER_BLOCK).
    pub count: u32,
    /// Timestamp of the first point.
    pub first_ts: Timestamp,
    /// Timestamp of the last point.
    pub last_ts: Timestamp,
    /// Smallest and largest value, for numeric and boolean blocks
    /// (floats: NaN ignored; `None` when every value is NaN).
    pub range: Option<ValueRange>,
    /// True when some point's quality is not Good.
    pub has_non_good_quality: bool,
    /// Bytes before the body.
    pub header_len: usize,
}

/// Value range stored in a block header.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ValueRange {
    /// Float block: min and max by numeric order, NaN excluded.
    F64 {
        /// Smallest.
        min: f64,
        /// Largest.
        max: f64,
    },
    /// Integer block.
    I64 {
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
    },
    /// Boolean block: `min` is false if any value is false, `max` true if any is true.
    Bool {
        /// Smallest.
        min: bool,
        /// Largest.
        max: bool,
    },
}

/// A whole column of values, as decoded without building `Point`s.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Values {
    /// Floats.
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
}

/// A decoded block as three parallel columns.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BlockColumns {
    /// Timestamps, sorted.
    pub timestamps: Vec<Timestamp>,
    /// Values.
    pub values: Values,
    /// Qualities.
    pub qualities: Vec<Quality>,
}

/// Sizes and encodings of a block's parts, for tools and measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockLayout {
    /// Header bytes including its checksum.
    pub header_bytes: usize,
    /// Timestamp section.
    pub timestamps: SectionLayout,
    /// Values section.
    pub values: SectionLayout,
    /// Quality section.
    pub quality: SectionLayout,
    /// Trailer (body checksum) bytes.
    pub trailer_bytes: usize,
}

/// One section of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SectionLayout {
    /// Encoding name, e.g. "regular", "pco", "run-length".
    pub encoding: &'static str,
    /// Bytes including the tag and length frame.
    pub bytes: usize,
}

/// Encodes one tag's points, sorted by time (equal timestamps allowed), all
/// of one value type, into a self-contained block.
pub fn encode_block(points: &[Point]) -> Result<Vec<u8>, EncodeError> {
    let first = points.first().ok_or(EncodeError::EmptyBlock)?;
    if points.len() > MAX_POINTS_PER_BLOCK {
        return Err(EncodeError::TooManyPoints {
            count: points.len(),
            limit: MAX_POINTS_PER_BLOCK,
        });
    }
    let value_type = first.value.value_type();
    let mut ts = Vec::with_capacity(points.len());
    let mut prev = first.ts;
    for (index, p) in points.iter().enumerate() {
        if p.ts < prev {
            return Err(EncodeError::Unsorted { index });
        }
        prev = p.ts;
        ts.push(p.ts.micros());
    }
    let values = collect_values(points, value_type)?;
    let non_good = points.iter().any(|p| !p.quality.is_good());

    let mut out = Vec::with_capacity(64 + points.len());
    out.extend_from_slice(&BLOCK_MAGIC);
    out.push(FORMAT_VERSION);
    out.push(value_type.tag());
    let range = match &values {
        InputValues::F64(v) => float::range(v).map(|(min, max)| ValueRange::F64 { min, max }),
        InputValues::I64(v) => int::range(v).map(|(min, max)| ValueRange::I64 { min, max }),
        InputValues::Bool(v) => boolean::range(v).map(|(min, max)| ValueRange::Bool { min, max }),
        InputValues::Str(_) => None,
    };
    out.push(
        if range.is_some() { FLAG_RANGE } else { 0 } | if non_good { FLAG_NON_GOOD } else { 0 },
    );
    put_usize(&mut out, points.len());
    let first_ts = first.ts.micros();
    let last_ts = prev.micros();
    out.extend_from_slice(&first_ts.to_le_bytes());
    // Sorted, so the span fits in u64 even across the whole i64 range.
    put_varint(&mut out, last_ts.wrapping_sub(first_ts) as u64);
    match range {
        Some(ValueRange::F64 { min, max }) => {
            out.extend_from_slice(&min.to_bits().to_le_bytes());
            out.extend_from_slice(&max.to_bits().to_le_bytes());
        }
        Some(ValueRange::I64 { min, max }) => {
            out.extend_from_slice(&min.to_le_bytes());
            out.extend_from_slice(&max.to_le_bytes());
        }
        Some(ValueRange::Bool { min, max }) => {
            out.push(u8::from(min));
            out.push(u8::from(max));
        }
        None => {}
    }
    out.extend_from_slice(&crc32c(&out).to_le_bytes());

    let body_start = out.len();
    timestamps::encode(&ts, &mut out)?;
    match &values {
        InputValues::F64(v) => {
            float::encode(v, &mut out)?;
        }
        InputValues::I64(v) => {
            int::encode(v, &mut out)?;
        }
        InputValues::Bool(v) => {
            boolean::encode(v, &mut out);
        }
        InputValues::Str(v) => {
            strings::encode(v, &mut out)?;
        }
    }
    quality::encode(points.iter().map(|p| p.quality), &mut out);
    let body_crc = crc32c(out.get(body_start..).unwrap_or_default());
    out.extend_from_slice(&body_crc.to_le_bytes());
    Ok(out)
}

/// Decodes a block into points.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<Point>, DecodeError> {
    let cols = decode_block_columns(bytes)?;
    let BlockColumns {
        timestamps,
        values,
        qualities,
    } = cols;
    let points = match values {
        Values::F64(v) => zip_points(timestamps, v.into_iter().map(Value::F64), qualities),
        Values::I64(v) => zip_points(timestamps, v.into_iter().map(Value::I64), qualities),
        Values::Bool(v) => zip_points(timestamps, v.into_iter().map(Value::Bool), qualities),
        Values::Str(v) => zip_points(timestamps, v.into_iter().map(Value::Str), qualities),
    };
    Ok(points)
}

/// Decodes a block into columns, without building `Point`s (cheaper for queries).
pub fn decode_block_columns(bytes: &[u8]) -> Result<BlockColumns, DecodeError> {
    let header = block_header(bytes)?;
    let mut body = body(bytes, &header)?;
    // count <= MAX_POINTS_PER_BLOCK (checked by block_header) bounds every allocation below.
    let n = header.count as usize;
    let ts = timestamps::decode(
        &mut body,
        n,
        header.first_ts.micros(),
        header.last_ts.micros(),
    )?;
    let values = match header.value_type {
        ValueType::F64 => Values::F64(float::decode(&mut body, n)?),
        ValueType::I64 => Values::I64(int::decode(&mut body, n)?),
        ValueType::Bool => Values::Bool(boolean::decode(&mut body, n)?),
        ValueType::Str => Values::Str(strings::decode(&mut body, n)?),
    };
    let qualities = quality::decode(&mut body, n)?;
    body.finish("trailing bytes in block body")?;
    if header.has_non_good_quality != qualities.iter().any(|q| !q.is_good()) {
        return Err(DecodeError::Corrupt(
            "quality flag disagrees with qualities",
        ));
    }
    Ok(BlockColumns {
        timestamps: ts.into_iter().map(Timestamp::from_micros).collect(),
        values,
        qualities,
    })
}

/// The points of a block with `from <= ts <= to`, decoding values only as
/// far as the last of them (a pco values section stops at the 256-number
/// batch that holds it). Every checksum is verified and the timestamps and
/// qualities are decoded whole, so corruption is found as by `decode_block`
/// except inside the skipped tail of a pco values stream, which the body
/// checksum covers. For reads of a small window of a large block: the
/// edges of a summary interval, a value before a time.
pub fn decode_block_window(
    bytes: &[u8],
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Point>, DecodeError> {
    let header = block_header(bytes)?;
    let mut body = body(bytes, &header)?;
    // count <= MAX_POINTS_PER_BLOCK (checked by block_header) bounds every allocation below.
    let n = header.count as usize;
    let ts = timestamps::decode(
        &mut body,
        n,
        header.first_ts.micros(),
        header.last_ts.micros(),
    )?;
    let lo = ts.partition_point(|&t| t < from.micros());
    let hi = ts.partition_point(|&t| t <= to.micros()).max(lo);
    let values = match header.value_type {
        ValueType::F64 => Values::F64(float::decode_prefix(&mut body, n, hi)?),
        ValueType::I64 => Values::I64(int::decode_prefix(&mut body, n, hi)?),
        ValueType::Bool => Values::Bool(boolean::decode(&mut body, n)?),
        ValueType::Str => Values::Str(strings::decode(&mut body, n)?),
    };
    let qualities = quality::decode(&mut body, n)?;
    body.finish("trailing bytes in block body")?;
    if header.has_non_good_quality != qualities.iter().any(|q| !q.is_good()) {
        return Err(DecodeError::Corrupt(
            "quality flag disagrees with qualities",
        ));
    }
    let want = hi - lo;
    let vals: Vec<Value> = match values {
        Values::F64(v) => window(&v, lo, hi).map(|&x| Value::F64(x)).collect(),
        Values::I64(v) => window(&v, lo, hi).map(|&x| Value::I64(x)).collect(),
        Values::Bool(v) => window(&v, lo, hi).map(|&x| Value::Bool(x)).collect(),
        Values::Str(v) => v.into_iter().skip(lo).take(want).map(Value::Str).collect(),
    };
    let ts = ts.get(lo..hi).unwrap_or_default();
    let qualities = qualities.get(lo..hi).unwrap_or_default();
    if vals.len() != want || ts.len() != want || qualities.len() != want {
        // Every section holds n entries (checked above): cannot happen.
        return Err(DecodeError::Corrupt("section shorter than the point count"));
    }
    Ok(ts
        .iter()
        .zip(vals)
        .zip(qualities)
        .map(|((&t, value), &quality)| Point {
            ts: Timestamp::from_micros(t),
            value,
            quality,
        })
        .collect())
}

/// `v[lo..hi]`, empty if out of bounds.
fn window<T>(v: &[T], lo: usize, hi: usize) -> std::slice::Iter<'_, T> {
    v.get(lo..hi).unwrap_or_default().iter()
}

/// Reads and checks the header only: cheap, for query planning.
pub fn block_header(bytes: &[u8]) -> Result<BlockHeader, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.array::<3>()? != BLOCK_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let type_tag = r.u8()?;
    let value_type =
        ValueType::from_tag(type_tag).ok_or(DecodeError::UnknownValueType(type_tag))?;
    let flags = r.u8()?;
    let count = r.varint()?;
    let first_ts = r.i64_le()?;
    let span = r.varint()?;
    let range = if flags & FLAG_RANGE != 0 {
        Some(match value_type {
            ValueType::F64 => ValueRange::F64 {
                min: f64::from_bits(r.u64_le()?),
                max: f64::from_bits(r.u64_le()?),
            },
            ValueType::I64 => ValueRange::I64 {
                min: r.i64_le()?,
                max: r.i64_le()?,
            },
            ValueType::Bool => ValueRange::Bool {
                min: r.u8()? != 0,
                max: r.u8()? != 0,
            },
            ValueType::Str => return Err(DecodeError::Corrupt("string block with a range")),
        })
    } else {
        None
    };
    let header_len = bytes.len() - r.remaining();
    let covered = bytes.get(..header_len).ok_or(DecodeError::Truncated)?;
    if r.u32_le()? != crc32c(covered) {
        return Err(DecodeError::ChecksumMismatch("header"));
    }
    // Checked after the checksum so a flipped bit reads as corruption, not as a limit.
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::Corrupt("unknown header flags"));
    }
    let count = match u32::try_from(count) {
        Ok(c) if c >= 1 && c as usize <= MAX_POINTS_PER_BLOCK => c,
        _ => return Err(DecodeError::BadPointCount(count)),
    };
    Ok(BlockHeader {
        version,
        value_type,
        count,
        first_ts: Timestamp::from_micros(first_ts),
        last_ts: Timestamp::from_micros(first_ts.wrapping_add(span as i64)),
        range,
        has_non_good_quality: flags & FLAG_NON_GOOD != 0,
        header_len: header_len + 4,
    })
}

/// Describes a valid block's sections (checks both checksums, decodes nothing).
pub fn describe_block(bytes: &[u8]) -> Result<BlockLayout, DecodeError> {
    let header = block_header(bytes)?;
    let mut body = body(bytes, &header)?;
    let mut section = |names: &[&'static str]| -> Result<SectionLayout, DecodeError> {
        let before = body.remaining();
        let (tag, mut payload) = body.section()?;
        let mut name = names.get(usize::from(tag)).copied().unwrap_or("unknown");
        if name == "dictionary" {
            // The interesting choice is the nested index column's.
            let entries = payload.varint()?;
            for _ in 0..entries {
                let len =
                    payload.varint_at_most(payload.remaining(), "string longer than section")?;
                payload.bytes(len)?;
            }
            name = match payload.u8()? {
                0 => "dictionary+constant",
                1 => "dictionary+run-length",
                2 => "dictionary+pco",
                _ => "dictionary+unknown",
            };
        }
        Ok(SectionLayout {
            encoding: name,
            bytes: before - body.remaining(),
        })
    };
    let timestamps = section(&["regular", "pco-deltas"])?;
    let values = match header.value_type {
        ValueType::Bool => section(&["constant", "run-length", "bitmap"])?,
        ValueType::Str => section(&["dictionary"])?,
        _ => section(&["constant", "run-length", "pco"])?,
    };
    let quality = section(&["all-good", "run-length"])?;
    Ok(BlockLayout {
        header_bytes: header.header_len,
        timestamps,
        values,
        quality,
        trailer_bytes: 4,
    })
}

/// The checked body of a block whose header is already parsed.
fn body<'a>(bytes: &'a [u8], header: &BlockHeader) -> Result<Reader<'a>, DecodeError> {
    let rest = bytes
        .get(header.header_len..)
        .ok_or(DecodeError::Truncated)?;
    let (body, crc) = rest.split_last_chunk::<4>().ok_or(DecodeError::Truncated)?;
    if u32::from_le_bytes(*crc) != crc32c(body) {
        return Err(DecodeError::ChecksumMismatch("body"));
    }
    Ok(Reader::new(body))
}

/// The values of an input block, borrowed where they are strings.
enum InputValues<'a> {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<&'a str>),
}

fn collect_values(points: &[Point], value_type: ValueType) -> Result<InputValues<'_>, EncodeError> {
    fn column<'a, T>(
        points: &'a [Point],
        value_type: ValueType,
        pick: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Vec<T>, EncodeError> {
        points
            .iter()
            .enumerate()
            .map(|(index, p)| {
                pick(&p.value).ok_or(EncodeError::MixedValueTypes {
                    index,
                    expected: value_type,
                    found: p.value.value_type(),
                })
            })
            .collect()
    }
    Ok(match value_type {
        ValueType::F64 => InputValues::F64(column(points, value_type, |v| match v {
            Value::F64(x) => Some(*x),
            _ => None,
        })?),
        ValueType::I64 => InputValues::I64(column(points, value_type, |v| match v {
            Value::I64(x) => Some(*x),
            _ => None,
        })?),
        ValueType::Bool => InputValues::Bool(column(points, value_type, |v| match v {
            Value::Bool(x) => Some(*x),
            _ => None,
        })?),
        ValueType::Str => {
            let v = column(points, value_type, |v| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })?;
            let total = v.iter().map(|s| s.len() as u64).sum::<u64>();
            if total > MAX_BLOCK_STRING_BYTES {
                return Err(EncodeError::StringsTooLarge {
                    bytes: total,
                    limit: MAX_BLOCK_STRING_BYTES,
                });
            }
            InputValues::Str(v)
        }
    })
}

fn zip_points(
    ts: Vec<Timestamp>,
    values: impl Iterator<Item = Value>,
    qualities: Vec<Quality>,
) -> Vec<Point> {
    ts.into_iter()
        .zip(values)
        .zip(qualities)
        .map(|((ts, value), quality)| Point { ts, value, quality })
        .collect()
}
