//! Converge historian: compressed storage of tag time series.
//!
//! `encoding` turns a tag's points into self-contained blocks and back, plus
//! the recent-data record and the optional lossy filters. It knows nothing of
//! RocksDB; key layout, column families and batching belong to `storage`, and
//! query planning to `query`. `ingest` turns MQTT PUBLISHes (Sparkplug B,
//! JSON, plain values) into tag points according to the configured rules.

pub mod api;
pub mod encoding;
pub mod import;
pub mod ingest;
pub mod pattern;
pub mod query;
pub mod storage;
