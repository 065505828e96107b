//! Quality section. Almost every point is `Good(0)`, so that case costs the
//! two-byte frame and nothing else:
//!
//! * `0` AllGood: empty payload;
//! * `1` RunLength: run count varint, then per run the packed quality code
//!   (`severity << 16 | substatus`) varint and the run length varint.
//!
//! A constant non-good quality is simply one run.

use crate::encoding::reader::{put_section, put_usize, put_varint, Reader};
use crate::encoding::{DecodeError, Quality};

const ENC_ALL_GOOD: u8 = 0;
const ENC_RUN_LENGTH: u8 = 1;

/// Appends the quality section; returns the encoding tag chosen.
pub(crate) fn encode(qualities: impl Iterator<Item = Quality>, out: &mut Vec<u8>) -> u8 {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for q in qualities {
        let code = q.code();
        match runs.last_mut() {
            Some((c, len)) if *c == code => *len += 1,
            _ => runs.push((code, 1)),
        }
    }
    if runs.iter().all(|&(c, _)| c == Quality::GOOD.code()) {
        put_section(out, ENC_ALL_GOOD, &[]);
        return ENC_ALL_GOOD;
    }
    let mut payload = Vec::new();
    put_usize(&mut payload, runs.len());
    for (code, len) in runs {
        put_varint(&mut payload, u64::from(code));
        put_usize(&mut payload, len);
    }
    put_section(out, ENC_RUN_LENGTH, &payload);
    ENC_RUN_LENGTH
}

/// Decodes a quality section of `n` points.
pub(crate) fn decode(r: &mut Reader<'_>, n: usize) -> Result<Vec<Quality>, DecodeError> {
    let (tag, mut p) = r.section()?;
    let out = match tag {
        ENC_ALL_GOOD => vec![Quality::GOOD; n],
        ENC_RUN_LENGTH => {
            // A run takes at least two bytes.
            let runs = p.varint_at_most(p.remaining() / 2, "run count exceeds section")?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..runs {
                let code = u32::try_from(p.varint()?)
                    .map_err(|_| DecodeError::Corrupt("quality code over 32 bits"))?;
                let q = Quality::from_code(code)
                    .ok_or(DecodeError::Corrupt("unknown quality severity"))?;
                let len = p.varint_at_most(n - out.len(), "runs exceed point count")?;
                if len == 0 {
                    return Err(DecodeError::Corrupt("empty run"));
                }
                out.resize(out.len() + len, q);
            }
            if out.len() != n {
                return Err(DecodeError::Corrupt("runs short of point count"));
            }
            out
        }
        tag => {
            return Err(DecodeError::UnknownEncoding {
                section: "quality",
                tag,
            })
        }
    };
    p.finish("trailing bytes in quality section")?;
    Ok(out)
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::encoding::Severity;

    #[test]
    fn all_good_is_two_bytes() {
        let mut out = Vec::new();
        assert_eq!(
            encode(std::iter::repeat_n(Quality::GOOD, 4096), &mut out),
            ENC_ALL_GOOD
        );
        assert_eq!(out, [ENC_ALL_GOOD, 0]);
        assert_eq!(
            decode(&mut Reader::new(&out), 4096).unwrap(),
            vec![Quality::GOOD; 4096]
        );
    }

    #[test]
    fn mixed_runs_round_trip() {
        let q: Vec<Quality> = (0..1000)
            .map(|i| match i / 100 % 3 {
                0 => Quality::GOOD,
                1 => Quality::new(Severity::Bad, 7),
                _ => Quality::new(Severity::Uncertain, u16::MAX),
            })
            .collect();
        let mut out = Vec::new();
        encode(q.iter().copied(), &mut out);
        assert_eq!(decode(&mut Reader::new(&out), q.len()).unwrap(), q);
    }
}
