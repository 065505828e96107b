//! The numeric column codec shared by floats, integers, timestamps and
//! string indices: one section holding `n` numbers as
//!
//! * `0` Constant: one value, fixed width, little-endian bits;
//! * `1` RunLength: run count varint, then per run the value's bits and the
//!   run length varint (for step-like signals: setpoints, states, counters
//!   that rarely move);
//! * `2` Pco: a pco "wrapped" stream (2-byte pco header, chunk metadata, one
//!   page of `n` numbers).
//!
//! The encoder computes the run-length size exactly (cheap) and runs pco
//! unless runs are already near-free; the smaller wins. Equality is on bits,
//! so NaN payloads and signed zeros survive every path.

use pco::data_types::Number;
use pco::wrapped::{FileCompressor, FileDecompressor};
use pco::{ChunkConfig, PagingSpec};

use crate::encoding::reader::{put_section, put_usize, varint_len, Reader};
use crate::encoding::{DecodeError, EncodeError};

/// Section encoding tags.
pub(crate) const ENC_CONSTANT: u8 = 0;
pub(crate) const ENC_RUN_LENGTH: u8 = 1;
pub(crate) const ENC_PCO: u8 = 2;

/// Below this many bytes a run-length encoding is taken without trying pco:
/// pco's own metadata is about this large, so it cannot win by much.
const RLE_GOOD_ENOUGH_BYTES: usize = 24;

/// A number the column codec can store: pco-compressible with fixed-width bits.
pub(crate) trait Numeric: Number {
    const WIDTH: usize;
    fn bits(self) -> u64;
    fn put_le(self, out: &mut Vec<u8>);
    fn read_le(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

impl Numeric for f64 {
    const WIDTH: usize = 8;
    fn bits(self) -> u64 {
        self.to_bits()
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
    fn read_le(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(f64::from_bits(r.u64_le()?))
    }
}

impl Numeric for i64 {
    const WIDTH: usize = 8;
    fn bits(self) -> u64 {
        u64::from_le_bytes(self.to_le_bytes())
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.i64_le()
    }
}

impl Numeric for u64 {
    const WIDTH: usize = 8;
    fn bits(self) -> u64 {
        self
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u64_le()
    }
}

impl Numeric for u32 {
    const WIDTH: usize = 4;
    fn bits(self) -> u64 {
        u64::from(self)
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u32_le()
    }
}

/// Appends one framed section holding `values`; returns the tag chosen.
pub(crate) fn encode<T: Numeric>(values: &[T], out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    let Some((&first, _)) = values.split_first() else {
        put_section(out, ENC_RUN_LENGTH, &[0]);
        return Ok(ENC_RUN_LENGTH);
    };
    let runs = count_runs(values);
    if runs == 1 {
        let mut payload = Vec::with_capacity(T::WIDTH);
        first.put_le(&mut payload);
        put_section(out, ENC_CONSTANT, &payload);
        return Ok(ENC_CONSTANT);
    }
    let rle_size = run_length_size(values, runs);
    if rle_size <= RLE_GOOD_ENOUGH_BYTES || rle_size.saturating_mul(16) <= values.len() {
        put_section(out, ENC_RUN_LENGTH, &run_length(values, runs, rle_size));
        return Ok(ENC_RUN_LENGTH);
    }
    let pco = pco_compress(values)?;
    if rle_size < pco.len() {
        put_section(out, ENC_RUN_LENGTH, &run_length(values, runs, rle_size));
        Ok(ENC_RUN_LENGTH)
    } else {
        put_section(out, ENC_PCO, &pco);
        Ok(ENC_PCO)
    }
}

/// Decodes one section of exactly `n` numbers (`n <= MAX_POINTS_PER_BLOCK`,
/// checked by the caller, bounds every allocation here).
pub(crate) fn decode<T: Numeric>(
    r: &mut Reader<'_>,
    n: usize,
    section: &'static str,
) -> Result<Vec<T>, DecodeError> {
    let (tag, mut payload) = r.section()?;
    let values = match tag {
        ENC_CONSTANT => {
            let v = T::read_le(&mut payload)?;
            vec![v; n]
        }
        ENC_RUN_LENGTH => decode_run_length(&mut payload, n)?,
        ENC_PCO => {
            let v = pco_decompress(payload.rest(), n)?;
            payload = Reader::new(&[]);
            v
        }
        tag => return Err(DecodeError::UnknownEncoding { section, tag }),
    };
    payload.finish("trailing bytes in numeric section")?;
    Ok(values)
}

/// Like `decode`, but only the first `keep` numbers are needed: a pco
/// page is decoded in 256-number batches up to the one holding number
/// `keep - 1`, and the rest of the section is skipped (the block's body
/// checksum still covers it). Returns at least `keep` numbers, at most `n`.
/// Constant and RunLength sections, cheap to read whole, are read whole.
pub(crate) fn decode_prefix<T: Numeric>(
    r: &mut Reader<'_>,
    n: usize,
    keep: usize,
    section: &'static str,
) -> Result<Vec<T>, DecodeError> {
    /// pco's batch: a partial read must ask for a multiple of it.
    const PCO_BATCH: usize = 256;
    let want = keep.div_ceil(PCO_BATCH).saturating_mul(PCO_BATCH);
    if want >= n {
        return decode(r, n, section);
    }
    let (tag, mut payload) = r.section()?;
    match tag {
        ENC_PCO => {
            let src = payload.rest();
            let (fd, rest) = FileDecompressor::new(src).map_err(pco_error)?;
            let (mut cd, rest) = fd.chunk_decompressor::<T, _>(rest).map_err(pco_error)?;
            let mut values = vec![T::default(); want];
            let mut pd = cd.page_decompressor(rest, n).map_err(pco_error)?;
            let progress = pd.read(&mut values).map_err(pco_error)?;
            if progress.n_processed != want {
                return Err(DecodeError::Corrupt("pco page holds the wrong count"));
            }
            Ok(values)
        }
        ENC_CONSTANT => {
            let v = T::read_le(&mut payload)?;
            payload.finish("trailing bytes in numeric section")?;
            Ok(vec![v; n])
        }
        ENC_RUN_LENGTH => {
            let v = decode_run_length(&mut payload, n)?;
            payload.finish("trailing bytes in numeric section")?;
            Ok(v)
        }
        tag => Err(DecodeError::UnknownEncoding { section, tag }),
    }
}

/// Pco-compresses `values` as a wrapped stream with one chunk of one page.
pub(crate) fn pco_compress<T: Numeric>(values: &[T]) -> Result<Vec<u8>, EncodeError> {
    let config = ChunkConfig::default().with_paging_spec(PagingSpec::Exact(vec![values.len()]));
    let fc = FileCompressor::default();
    let mut out = Vec::new();
    let pco_err = |e: pco::errors::PcoError| EncodeError::Compressor(e.to_string());
    fc.write_header(&mut out).map_err(pco_err)?;
    let mut cc = fc.chunk_compressor(values, &config).map_err(pco_err)?;
    cc.write_meta(&mut out).map_err(pco_err)?;
    cc.write_page(0, &mut out).map_err(pco_err)?;
    Ok(out)
}

/// Inverse of `pco_compress`; the whole of `src` must be consumed.
pub(crate) fn pco_decompress<T: Numeric>(src: &[u8], n: usize) -> Result<Vec<T>, DecodeError> {
    let (fd, rest) = FileDecompressor::new(src).map_err(pco_error)?;
    let (mut cd, rest) = fd.chunk_decompressor::<T, _>(rest).map_err(pco_error)?;
    let mut values = vec![T::default(); n];
    let mut pd = cd.page_decompressor(rest, n).map_err(pco_error)?;
    let progress = pd.read(&mut values).map_err(pco_error)?;
    if progress.n_processed != n || !progress.finished {
        return Err(DecodeError::Corrupt("pco page holds the wrong count"));
    }
    if !pd.into_src().is_empty() {
        return Err(DecodeError::Corrupt("trailing bytes after pco page"));
    }
    Ok(values)
}

fn pco_error(e: pco::errors::PcoError) -> DecodeError {
    match e.kind {
        pco::errors::ErrorKind::InsufficientData => DecodeError::Truncated,
        _ => DecodeError::Corrupt("pco stream rejected"),
    }
}

fn count_runs<T: Numeric>(values: &[T]) -> usize {
    let mut runs = 0;
    let mut prev: Option<u64> = None;
    for v in values {
        let b = v.bits();
        if prev != Some(b) {
            runs += 1;
            prev = Some(b);
        }
    }
    runs
}

/// Exact payload size of the run-length encoding.
fn run_length_size<T: Numeric>(values: &[T], runs: usize) -> usize {
    let mut size = varint_len(runs as u64) + runs * T::WIDTH;
    for_each_run(values, |_, len| size += varint_len(len as u64));
    size
}

fn run_length<T: Numeric>(values: &[T], runs: usize, size: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(size);
    put_usize(&mut payload, runs);
    for_each_run(values, |v, len| {
        v.put_le(&mut payload);
        put_usize(&mut payload, len);
    });
    payload
}

fn for_each_run<T: Numeric>(values: &[T], mut f: impl FnMut(T, usize)) {
    let mut iter = values.iter();
    let Some(&first) = iter.next() else { return };
    let (mut cur, mut len) = (first, 1usize);
    for &v in iter {
        if v.bits() == cur.bits() {
            len += 1;
        } else {
            f(cur, len);
            (cur, len) = (v, 1);
        }
    }
    f(cur, len);
}

fn decode_run_length<T: Numeric>(r: &mut Reader<'_>, n: usize) -> Result<Vec<T>, DecodeError> {
    // Each run takes at least WIDTH + 1 bytes, so the run count is bounded by the input.
    let runs = r.varint_at_most(r.remaining() / (T::WIDTH + 1), "run count exceeds section")?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..runs {
        let v = T::read_le(r)?;
        let len = r.varint_at_most(n - values.len(), "runs exceed point count")?;
        if len == 0 {
            return Err(DecodeError::Corrupt("empty run"));
        }
        values.resize(values.len() + len, v);
    }
    if values.len() != n {
        return Err(DecodeError::Corrupt("runs short of point count"));
    }
    Ok(values)
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: Numeric>(values: &[T]) -> (u8, Vec<T>) {
        let mut out = Vec::new();
        let tag = encode(values, &mut out).unwrap();
        let mut r = Reader::new(&out);
        let back = decode::<T>(&mut r, values.len(), "values").unwrap();
        assert_eq!(r.remaining(), 0);
        (tag, back)
    }

    fn bits<T: Numeric>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.bits()).collect()
    }

    #[test]
    fn picks_constant_runs_and_pco() {
        let (tag, _) = round_trip(&[1.5f64; 100]);
        assert_eq!(tag, ENC_CONSTANT);
        let steps: Vec<f64> = (0..1000).map(|i| f64::from(i / 250)).collect();
        let (tag, back) = round_trip(&steps);
        assert_eq!(tag, ENC_RUN_LENGTH);
        assert_eq!(bits(&back), bits(&steps));
        let noisy: Vec<f64> = (0..1000).map(|i| (f64::from(i) * 0.37).sin()).collect();
        let (tag, back) = round_trip(&noisy);
        assert_eq!(tag, ENC_PCO);
        assert_eq!(bits(&back), bits(&noisy));
    }

    #[test]
    fn run_count_is_bounded_by_input() {
        // Claims 2^40 runs in a 6-byte payload: rejected before any allocation.
        let mut sec = Vec::new();
        let mut payload = Vec::new();
        crate::encoding::reader::put_varint(&mut payload, 1 << 40);
        put_section(&mut sec, ENC_RUN_LENGTH, &payload);
        assert!(decode::<f64>(&mut Reader::new(&sec), 10, "values").is_err());
    }

    proptest! {
        #[test]
        fn f64_bits_round_trip(raw in prop::collection::vec(any::<u64>(), 1..300), runs in any::<bool>()) {
            let mut v: Vec<f64> = raw.iter().map(|&b| f64::from_bits(b)).collect();
            if runs { v = v.iter().flat_map(|&x| [x; 7]).collect(); }
            let (_, back) = round_trip(&v);
            prop_assert_eq!(bits(&back), bits(&v));
        }

        #[test]
        fn i64_round_trip(v in prop::collection::vec(prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -3i64..3], 1..300)) {
            let (_, back) = round_trip(&v);
            prop_assert_eq!(back, v);
        }
    }
}
