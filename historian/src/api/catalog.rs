//! The `Catalog` trait: tag search and metadata, which storage implements
//! next to `Source`. `TagQuery` is what a search asks for (name pattern,
//! unit, description, value types) and decides, in one place, whether a tag
//! matches. `MemCatalog` implements the trait in memory for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::encoding::lossy::{CompressionConfig, ExceptionConfig};
use crate::encoding::ValueType;
use crate::pattern;

/// What the API knows of one tag.
#[derive(Clone, Debug, PartialEq)]
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
    /// Exception settings of the rule that feeds the tag (PI `ExcDev`,
    /// `ExcMax`), if any.
    pub exception: Option<ExceptionConfig>,
    /// Swinging-door compression settings (PI `CompDev`, `CompMax`), if any.
    pub compression: Option<CompressionConfig>,
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
            exception: None,
            compression: None,
        }
    }
}

/// What a tag search asks for; every part given must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagQuery {
    pattern: String,
    unit: Option<String>,
    description: Option<String>,
    value_types: Vec<ValueType>,
}

impl TagQuery {
    /// Tags whose name matches `pattern` (`*` any run, `?` one character).
    pub fn new(pattern: &str) -> Self {
        TagQuery {
            pattern: pattern.to_owned(),
            unit: None,
            description: None,
            value_types: Vec::new(),
        }
    }

    /// ... whose unit equals `unit`, ignoring case; `""` asks for tags
    /// without a unit.
    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = Some(unit.to_lowercase());
        self
    }

    /// ... whose description contains `text`, ignoring case.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_lowercase());
        self
    }

    /// ... whose value type is one of `types` (all types when empty).
    pub fn value_types(mut self, types: &[ValueType]) -> Self {
        self.value_types = types.to_vec();
        self
    }

    /// Whether a tag with these fields matches (`""` is no unit or
    /// description). The cheap tests run first: a search over many tags
    /// mostly rejects.
    pub fn matches(
        &self,
        name: &str,
        value_type: ValueType,
        unit: &str,
        description: &str,
    ) -> bool {
        (self.value_types.is_empty() || self.value_types.contains(&value_type))
            && self
                .unit
                .as_deref()
                .is_none_or(|u| eq_ignoring_case(unit, u))
            && pattern::matches(&self.pattern, name)
            && self
                .description
                .as_deref()
                .is_none_or(|d| description.to_lowercase().contains(d))
    }
}

/// `a == b` ignoring case, `b` already lower case.
fn eq_ignoring_case(a: &str, lower: &str) -> bool {
    if a.is_ascii() {
        a.eq_ignore_ascii_case(lower)
    } else {
        a.to_lowercase() == lower
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
    /// Tags that match `query` (`TagQuery::matches`) and for which
    /// `visible` is true, in name order, at most `limit`. `visible` is
    /// applied while scanning so that tags the caller may not read neither
    /// appear nor use up the limit.
    fn search(
        &self,
        query: &TagQuery,
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
        query: &TagQuery,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<TagInfo>, CatalogError> {
        Ok(self
            .tags
            .values()
            .filter(|t| {
                query.matches(
                    &t.name,
                    t.value_type,
                    t.unit.as_deref().unwrap_or(""),
                    t.description.as_deref().unwrap_or(""),
                ) && visible(&t.name)
            })
            .take(limit)
            .cloned()
            .collect())
    }

    fn tag(&self, name: &str) -> Result<Option<TagInfo>, CatalogError> {
        Ok(self.tags.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parts_all_have_to_match() {
        let m = |q: &TagQuery, name, vt, unit, desc| q.matches(name, vt, unit, desc);
        let any = TagQuery::new("*");
        assert!(m(&any, "a/b", ValueType::Str, "", ""));
        let q = TagQuery::new("plant1/*")
            .unit("°C")
            .description("REACTOR")
            .value_types(&[ValueType::F64, ValueType::I64]);
        assert!(m(
            &q,
            "plant1/t",
            ValueType::F64,
            "°c",
            "Reactor temperature"
        ));
        assert!(m(&q, "plant1/t", ValueType::I64, "°C", "the reactor"));
        assert!(!m(&q, "plant2/t", ValueType::F64, "°C", "reactor"));
        assert!(!m(&q, "plant1/t", ValueType::Bool, "°C", "reactor"));
        assert!(!m(&q, "plant1/t", ValueType::F64, "K", "reactor"));
        assert!(!m(&q, "plant1/t", ValueType::F64, "°C", "boiler"));
        // Unit is whole, not a substring; "" is "no unit".
        assert!(!m(
            &TagQuery::new("*").unit("C"),
            "x",
            ValueType::F64,
            "°C",
            ""
        ));
        assert!(m(&TagQuery::new("*").unit(""), "x", ValueType::F64, "", ""));
        assert!(!m(
            &TagQuery::new("*").unit(""),
            "x",
            ValueType::F64,
            "bar",
            ""
        ));
        // Non-ASCII case folding.
        assert!(m(
            &TagQuery::new("*").unit("ÅM"),
            "x",
            ValueType::F64,
            "åm",
            ""
        ));
        assert!(m(
            &TagQuery::new("*").description("ÄRGER"),
            "x",
            ValueType::F64,
            "",
            "kein ärger"
        ));
    }
}
