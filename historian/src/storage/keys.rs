//! Column family names and key layout. Everything here is pure bytes; the
//! reasons for the layout are in docs/FORMAT.md §8.
//!
//! Series keys (blocks, recent, rollups) are `tag id u32 BE | time u64 BE`
//! where time is the i64 with its sign bit flipped, so the byte order of keys
//! is (tag, time) order, negative times included.

use crate::encoding::Timestamp;
use crate::storage::TagId;

/// Tag metadata and per-tag state (see the `TAGS_*` prefixes).
pub const CF_TAGS: &str = "hist_tags";
/// Sealed blocks, keyed (tag, first timestamp of the block).
pub const CF_BLOCKS: &str = "hist_blocks";
/// Points not sealed yet, in chunks of recent records keyed (tag, first
/// timestamp of the chunk); a chunk may hold one point (see `chunk`).
pub const CF_RECENT: &str = "hist_recent";
/// Reserved: one-minute rollups keyed (tag, bucket start).
pub const CF_ROLLUP_1M: &str = "hist_rollup_1m";
/// Reserved: one-hour rollups keyed (tag, bucket start).
pub const CF_ROLLUP_1H: &str = "hist_rollup_1h";

/// Every historian column family, in a fixed order.
pub const ALL_CFS: [&str; 5] = [CF_TAGS, CF_BLOCKS, CF_RECENT, CF_ROLLUP_1M, CF_ROLLUP_1H];

/// `hist_tags` key prefix: `'n' | name bytes` → tag id u32 BE.
pub const TAGS_NAME: u8 = b'n';
/// `hist_tags` key prefix: `'i' | tag id BE` → metadata record.
pub const TAGS_META: u8 = b'i';
/// `hist_tags` key prefix: `'s' | tag id BE` → state record (recent count).
pub const TAGS_STATE: u8 = b's';

/// Length of a series key.
pub const SERIES_KEY_LEN: usize = 12;

/// `tag BE | flipped time BE`.
pub fn series_key(tag: TagId, ts: Timestamp) -> [u8; SERIES_KEY_LEN] {
    let mut k = [0u8; SERIES_KEY_LEN];
    let (t, rest) = k.split_at_mut(4);
    t.copy_from_slice(&tag.0.to_be_bytes());
    rest.copy_from_slice(&flip(ts.micros()).to_be_bytes());
    k
}

/// First key of a tag's series (time = i64::MIN).
pub fn series_start(tag: TagId) -> [u8; SERIES_KEY_LEN] {
    series_key(tag, Timestamp::from_micros(i64::MIN))
}

/// The 4-byte prefix that every series key of `tag` starts with; the next
/// tag's prefix is the exclusive upper bound of this tag's keys.
pub fn tag_prefix(tag: TagId) -> [u8; 4] {
    tag.0.to_be_bytes()
}

/// Exclusive upper bound of every series key of `tag`: the next tag's
/// prefix, or 13 bytes of `FF` (past every 12-byte key) after the last tag.
pub fn series_end(tag: TagId) -> Vec<u8> {
    match tag.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xFF; SERIES_KEY_LEN + 1],
    }
}

/// Splits a series key into (tag, time); `None` if it is not 12 bytes.
pub fn parse_series_key(key: &[u8]) -> Option<(TagId, Timestamp)> {
    let (tag, ts) = key.split_first_chunk::<4>()?;
    let ts: [u8; 8] = ts.try_into().ok()?;
    Some((
        TagId(u32::from_be_bytes(*tag)),
        Timestamp::from_micros(unflip(u64::from_be_bytes(ts))),
    ))
}

/// `'n' | name`.
pub fn name_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(TAGS_NAME);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `prefix | tag id BE`.
pub fn id_key(prefix: u8, tag: TagId) -> [u8; 5] {
    let mut k = [prefix, 0, 0, 0, 0];
    if let Some(rest) = k.get_mut(1..) {
        rest.copy_from_slice(&tag.0.to_be_bytes());
    }
    k
}

/// Tag id of an `id_key`.
pub fn parse_id_key(key: &[u8]) -> Option<TagId> {
    let (_, id) = key.split_first()?;
    let id: [u8; 4] = id.try_into().ok()?;
    Some(TagId(u32::from_be_bytes(id)))
}

/// Sign bit flipped: i64::MIN → 0, 0 → 2^63, so unsigned order is signed order.
fn flip(micros: i64) -> u64 {
    (micros as u64) ^ (1 << 63)
}

fn unflip(bits: u64) -> i64 {
    (bits ^ (1 << 63)) as i64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_tag_then_time_order() {
        let times = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let mut keys = Vec::new();
        for tag in [0, 1, 0x0100, u32::MAX] {
            for &t in &times {
                keys.push(series_key(TagId(tag), Timestamp::from_micros(t)));
            }
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for k in &keys {
            let (tag, ts) = parse_series_key(k).unwrap();
            assert_eq!(series_key(tag, ts), *k);
            assert!(k[..] < series_end(tag)[..]);
            assert!(k[..] >= series_start(tag)[..]);
        }
    }
}
