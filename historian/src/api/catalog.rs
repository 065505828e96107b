//! The `Catalog` trait: tag search and metadata, which storage implements
//! next to `Source`. `MemCatalog` implements it in memory for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::encoding::ValueType;
use crate::pattern;

/// What the API knows of one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TagInfo {
    /// The tag name.
    pub name: String,
    /// The kind of its values.
    pub value_type: ValueType,
    /// Engineering unit, if configured.
    pub unit: Option<String>,
    /// Free text, if configured.
    pub description: Option<String>,
    /// How long points are kept; `None` for ever.
    pub retention: Option<Duration>,
    /// PI's `Step` attribute: values hold until the next point instead of
    /// changing linearly (the default weighting of interpolation and summaries).
    pub step: bool,
}

impl TagInfo {
    /// A linear tag without unit, description or retention.
    pub fn new(name: &str, value_type: ValueType) -> Self {
        TagInfo {
            name: name.to_owned(),
            value_type,
            unit: None,
            description: None,
            retention: None,
            step: false,
        }
    }
}

/// Why the catalog could not answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The store failed; the text is for the log.
    #[error("catalog failed: {0}")]
    Storage(String),
}

/// Tag names and metadata.
pub trait Catalog {
    /// Tags whose names match `pattern` (see `crate::pattern`: `*` and `?`)
    /// and for which `visible` is true, in name order, at most `limit`.
    /// `visible` is applied while scanning so that tags the caller may not
    /// read neither appear nor use up the limit.
    fn search(
        &self,
        pattern: &str,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<TagInfo>, CatalogError>;

    /// One tag's metadata; `None` when there is no such tag.
    fn tag(&self, name: &str) -> Result<Option<TagInfo>, CatalogError>;
}

/// An in-memory catalog.
#[derive(Clone, Debug, Default)]
pub struct MemCatalog {
    tags: BTreeMap<String, TagInfo>,
}

impl MemCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        MemCatalog::default()
    }

    /// Adds (or replaces) a tag.
    pub fn insert(&mut self, info: TagInfo) {
        self.tags.insert(info.name.clone(), info);
    }
}

impl Catalog for MemCatalog {
    fn search(
        &self,
        pattern: &str,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<TagInfo>, CatalogError> {
        Ok(self
            .tags
            .values()
            .filter(|t| pattern::matches(pattern, &t.name) && visible(&t.name))
            .take(limit)
            .cloned()
            .collect())
    }

    fn tag(&self, name: &str) -> Result<Option<TagInfo>, CatalogError> {
        Ok(self.tags.get(name).cloned())
    }
}
