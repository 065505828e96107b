//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), hand-rolled so the
//! crate needs no extra dependency; slice-by-8 tables are built at compile
//! time. Same function as iSCSI, ext4 and RocksDB use, so tools can check
//! blocks: `crc32c(b"123456789") == 0xE3069283`.

/// CRC-32C of `data` (initial value and final XOR 0xFFFFFFFF).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let lo = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ crc;
        let hi = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
        crc = t(7, lo)
            ^ t(6, lo >> 8)
            ^ t(5, lo >> 16)
            ^ t(4, lo >> 24)
            ^ t(3, hi)
            ^ t(2, hi >> 8)
            ^ t(1, hi >> 16)
            ^ t(0, hi >> 24);
    }
    for &b in chunks.remainder() {
        crc = t(0, crc ^ u32::from(b)) ^ (crc >> 8);
    }
    !crc
}

const POLY: u32 = 0x82F6_3B78;

static TABLES: [[u32; 256]; 8] = build_tables();

/// Table lookup on the low byte of `x`.
#[inline(always)]
// The index is `x & 0xFF` into a 256-entry table and `k` is a literal below 8.
#[allow(clippy::indexing_slicing)]
fn t(k: usize, x: u32) -> u32 {
    TABLES[k][(x & 0xFF) as usize]
}

#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build, not a run.
const fn build_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn slice_by_8_matches_bytewise() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..len] {
                crc = t(0, crc ^ u32::from(b)) ^ (crc >> 8);
            }
            assert_eq!(crc32c(&data[..len]), !crc);
        }
    }
}
