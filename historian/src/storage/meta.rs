//! Tags: the `TagId` newtype, `TagMeta`, and the two records kept per tag in
//! `hist_tags` (metadata, and the state needed to rebuild memory on open).
//!
//! ```text
//! metadata v1: version u8 = 1 | id u32 LE | value type u8
//!              | retention flag u8 (0 none, 1 some) | retention µs u64 LE (only if 1)
//!              | name len u16 LE | name | unit len u16 LE | unit | description len u16 LE | description
//! state v1:    version u8 = 1 | recent record count u64 LE
//! ```

use std::fmt;
use std::time::Duration;

use crate::encoding::ValueType;
use crate::storage::StorageError;

/// Longest tag name in bytes. Names come from MQTT topics (at most 65,535
/// bytes on the wire); the bound keeps one peer from bloating `hist_tags`
/// and the in-memory name index.
pub const MAX_TAG_NAME_BYTES: usize = 1024;
/// Longest engineering unit in bytes.
pub const MAX_UNIT_BYTES: usize = 64;
/// Longest description in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

const META_VERSION: u8 = 1;
const STATE_VERSION: u8 = 1;

/// A tag's number: assigned once, never reused, the first 4 bytes of every
/// series key of the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagId(pub u32);

impl fmt::Display for TagId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a tag is. The value type is fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagMeta {
    /// Unique name (e.g. the MQTT topic it came from).
    pub name: String,
    /// The one value type its points have.
    pub value_type: ValueType,
    /// Engineering unit, free text (may be empty).
    pub unit: String,
    /// Free text (may be empty).
    pub description: String,
    /// Data older than this (relative to the `now` given to
    /// `enforce_retention`) is deleted; `None` keeps everything.
    pub retention: Option<Duration>,
}

impl TagMeta {
    /// A tag with no unit, description or retention.
    pub fn new(name: impl Into<String>, value_type: ValueType) -> Self {
        TagMeta {
            name: name.into(),
            value_type,
            unit: String::new(),
            description: String::new(),
            retention: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StorageError> {
        if self.name.is_empty() {
            return Err(StorageError::InvalidTagMeta("empty tag name"));
        }
        if self.name.len() > MAX_TAG_NAME_BYTES {
            return Err(StorageError::InvalidTagMeta("tag name too long"));
        }
        if self.unit.len() > MAX_UNIT_BYTES {
            return Err(StorageError::InvalidTagMeta("unit too long"));
        }
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(StorageError::InvalidTagMeta("description too long"));
        }
        Ok(())
    }
}

/// A tag with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Its id.
    pub id: TagId,
    /// Its metadata.
    pub meta: TagMeta,
}

/// Encodes a metadata record; the lengths were checked by `validate`.
pub(crate) fn encode_meta(id: TagId, meta: &TagMeta) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(32 + meta.name.len() + meta.description.len());
    out.push(META_VERSION);
    out.extend_from_slice(&id.0.to_le_bytes());
    out.push(meta.value_type.tag());
    match meta.retention {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            out.extend_from_slice(
                &u64::try_from(d.as_micros())
                    .unwrap_or(u64::MAX)
                    .to_le_bytes(),
            );
        }
    }
    for s in [&meta.name, &meta.unit, &meta.description] {
        let len = u16::try_from(s.len()).map_err(|_| StorageError::InvalidTagMeta("too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    Ok(out)
}

/// Decodes a metadata record stored under `key`.
pub(crate) fn decode_meta(key: &[u8], bytes: &[u8]) -> Result<(TagId, TagMeta), StorageError> {
    let bad = || StorageError::CorruptRecord {
        what: "tag metadata",
        key: key.to_vec(),
    };
    let mut r = Cursor(bytes);
    if r.u8().ok_or_else(bad)? != META_VERSION {
        return Err(bad());
    }
    let id = TagId(u32::from_le_bytes(r.array().ok_or_else(bad)?));
    let value_type = ValueType::from_tag(r.u8().ok_or_else(bad)?).ok_or_else(bad)?;
    let retention = match r.u8().ok_or_else(bad)? {
        0 => None,
        1 => Some(Duration::from_micros(u64::from_le_bytes(
            r.array().ok_or_else(bad)?,
        ))),
        _ => return Err(bad()),
    };
    let mut text = || -> Option<String> {
        let len = usize::from(u16::from_le_bytes(r.array()?));
        String::from_utf8(r.bytes(len)?.to_vec()).ok()
    };
    let name = text().ok_or_else(bad)?;
    let unit = text().ok_or_else(bad)?;
    let description = text().ok_or_else(bad)?;
    if !r.0.is_empty() {
        return Err(bad());
    }
    Ok((
        id,
        TagMeta {
            name,
            value_type,
            unit,
            description,
            retention,
        },
    ))
}

pub(crate) fn encode_state(recent_count: u64) -> [u8; 9] {
    let mut out = [STATE_VERSION, 0, 0, 0, 0, 0, 0, 0, 0];
    if let Some(rest) = out.get_mut(1..) {
        rest.copy_from_slice(&recent_count.to_le_bytes());
    }
    out
}

pub(crate) fn decode_state(key: &[u8], bytes: &[u8]) -> Result<u64, StorageError> {
    match bytes.split_first() {
        Some((&STATE_VERSION, count)) => {
            Ok(u64::from_le_bytes(count.try_into().map_err(|_| {
                StorageError::CorruptRecord {
                    what: "tag state",
                    key: key.to_vec(),
                }
            })?))
        }
        _ => Err(StorageError::CorruptRecord {
            what: "tag state",
            key: key.to_vec(),
        }),
    }
}

/// Minimal checked reader for the records above.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_truncation_is_an_error() {
        let meta = TagMeta {
            name: "plant/line1/temp".into(),
            value_type: ValueType::F64,
            unit: "°C".into(),
            description: "inlet".into(),
            retention: Some(Duration::from_secs(86_400)),
        };
        let bytes = encode_meta(TagId(7), &meta).unwrap();
        assert_eq!(decode_meta(b"k", &bytes).unwrap(), (TagId(7), meta));
        for cut in 0..bytes.len() {
            assert!(decode_meta(b"k", &bytes[..cut]).is_err());
        }
        assert_eq!(decode_state(b"k", &encode_state(42)).unwrap(), 42);
        assert!(decode_state(b"k", &[1, 2]).is_err());
    }
}
