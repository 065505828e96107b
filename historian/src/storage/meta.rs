//! Tags: the `TagId` newtype, `TagMeta`, and the two records kept per tag in
//! `hist_tags` (metadata, and the state needed to rebuild memory on open).
//!
//! ```text
//! metadata v1: version u8 = 1 | id u32 LE | value type u8
//!              | retention flag u8 (0 none, 1 some) | retention µs u64 LE (only if 1)
//!              | name len u16 LE | name | unit len u16 LE | unit | description len u16 LE | description
//! metadata v2: v1 with version u8 = 2, then
//!              | lossy flags u8 (bit 0 exception, bit 1 compression)
//!              | [ExcDev f64 LE | ExcMax µs u64 LE] (bit 0) | [CompDev f64 LE | CompMax µs u64 LE] (bit 1)
//! state v1:    version u8 = 1 | recent point count u64 LE
//! ```
//!
//! A lossless tag is written as v1, so databases without lossy tags stay
//! readable by builds that predate v2.

use std::fmt;
use std::time::Duration;

use crate::encoding::lossy::{CompressionConfig, ExceptionConfig, LossyConfig};
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

const META_V1: u8 = 1;
const META_V2: u8 = 2;
const LOSSY_EXCEPTION: u8 = 1;
const LOSSY_COMPRESSION: u8 = 2;
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
#[derive(Clone, Debug, PartialEq)]
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
    /// PI-style exception and compression settings; lossless by default.
    /// Storage applies `compression` when it seals blocks; `exception` is
    /// applied by ingest and kept here so that readers can see it.
    pub lossy: LossyConfig,
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
            lossy: LossyConfig::default(),
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
        let deviations = [
            self.lossy.exception.map(|e| e.deviation),
            self.lossy.compression.map(|c| c.deviation),
        ];
        if deviations
            .iter()
            .flatten()
            .any(|d| !d.is_finite() || *d < 0.0)
        {
            return Err(StorageError::InvalidTagMeta(
                "deviation not finite or negative",
            ));
        }
        Ok(())
    }
}

/// A tag with its id.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    /// Its id.
    pub id: TagId,
    /// Its metadata.
    pub meta: TagMeta,
}

/// Encodes a metadata record; the lengths were checked by `validate`.
pub(crate) fn encode_meta(id: TagId, meta: &TagMeta) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(64 + meta.name.len() + meta.description.len());
    let lossless = meta.lossy == LossyConfig::default();
    out.push(if lossless { META_V1 } else { META_V2 });
    out.extend_from_slice(&id.0.to_le_bytes());
    out.push(meta.value_type.tag());
    match meta.retention {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&micros(d).to_le_bytes());
        }
    }
    for s in [&meta.name, &meta.unit, &meta.description] {
        let len = u16::try_from(s.len()).map_err(|_| StorageError::InvalidTagMeta("too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    if !lossless {
        let e = meta.lossy.exception;
        let c = meta.lossy.compression;
        let flags = if e.is_some() { LOSSY_EXCEPTION } else { 0 }
            | if c.is_some() { LOSSY_COMPRESSION } else { 0 };
        out.push(flags);
        let settings = [
            e.map(|e| (e.deviation, e.max_interval)),
            c.map(|c| (c.deviation, c.max_interval)),
        ];
        for (deviation, max) in settings.into_iter().flatten() {
            out.extend_from_slice(&deviation.to_le_bytes());
            out.extend_from_slice(&micros(max).to_le_bytes());
        }
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
    let version = r.u8().ok_or_else(bad)?;
    if version != META_V1 && version != META_V2 {
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
    let mut lossy = LossyConfig::default();
    if version == META_V2 {
        let flags = r.u8().ok_or_else(bad)?;
        if flags & !(LOSSY_EXCEPTION | LOSSY_COMPRESSION) != 0 || flags == 0 {
            return Err(bad());
        }
        let mut setting = |bit: u8| -> Result<Option<(f64, Duration)>, StorageError> {
            if flags & bit == 0 {
                return Ok(None);
            }
            let deviation = f64::from_le_bytes(r.array().ok_or_else(bad)?);
            let max = Duration::from_micros(u64::from_le_bytes(r.array().ok_or_else(bad)?));
            if !deviation.is_finite() || deviation < 0.0 {
                return Err(bad());
            }
            Ok(Some((deviation, max)))
        };
        lossy.exception =
            setting(LOSSY_EXCEPTION)?.map(|(deviation, max_interval)| ExceptionConfig {
                deviation,
                max_interval,
            });
        lossy.compression =
            setting(LOSSY_COMPRESSION)?.map(|(deviation, max_interval)| CompressionConfig {
                deviation,
                max_interval,
            });
    }
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
            lossy,
        },
    ))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
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
            lossy: LossyConfig::default(),
        };
        let bytes = encode_meta(TagId(7), &meta).unwrap();
        assert_eq!(bytes[0], 1, "a lossless tag is written as v1");
        assert_eq!(decode_meta(b"k", &bytes).unwrap(), (TagId(7), meta.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_meta(b"k", &bytes[..cut]).is_err());
        }
        let exception = Some(ExceptionConfig {
            deviation: 0.25,
            max_interval: Duration::from_secs(600),
        });
        let compression = Some(CompressionConfig {
            deviation: 0.5,
            max_interval: Duration::from_secs(28_800),
        });
        for lossy in [
            LossyConfig {
                exception,
                compression,
            },
            LossyConfig {
                exception,
                compression: None,
            },
            LossyConfig {
                exception: None,
                compression,
            },
        ] {
            let meta = TagMeta {
                lossy,
                ..meta.clone()
            };
            let bytes = encode_meta(TagId(7), &meta).unwrap();
            assert_eq!(bytes[0], 2);
            assert_eq!(decode_meta(b"k", &bytes).unwrap(), (TagId(7), meta));
            for cut in 0..bytes.len() {
                assert!(decode_meta(b"k", &bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_meta(b"k", &longer).is_err());
        }
        assert_eq!(decode_state(b"k", &encode_state(42)).unwrap(), 42);
        assert!(decode_state(b"k", &[1, 2]).is_err());
    }
}
