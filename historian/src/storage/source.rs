//! Storage as the query engine's `Source` and the API's `Catalog`: names
//! are resolved to ids from memory, then each call is one storage read.
//! Minute and hour rollups are served for numeric tags, so long summaries
//! through the API read rollups instead of points.

use crate::api::{Catalog, CatalogError, TagInfo, TagQuery};
use crate::encoding::{Point, Timestamp, ValueType};
use crate::query::{Rollup, RollupResolution, Source, SourceError};
use crate::storage::{Storage, StorageError, Tag, TagId};

impl Storage {
    /// Id and value type of the tag `name`, without copying its metadata
    /// (a summary makes thousands of these calls).
    fn lookup(&self, name: &str) -> Result<(TagId, ValueType), SourceError> {
        let table = self.table();
        table
            .by_name
            .get(name)
            .and_then(|id| table.by_id.get(id).map(|e| (*id, e.meta.value_type)))
            .ok_or_else(|| SourceError::UnknownTag(name.to_owned()))
    }

    fn id_of(&self, name: &str) -> Result<TagId, SourceError> {
        self.lookup(name).map(|(id, _)| id)
    }
}

fn source_error(name: &str, e: StorageError) -> SourceError {
    match e {
        StorageError::UnknownTagId(_) | StorageError::UnknownTagName(_) => {
            SourceError::UnknownTag(name.to_owned())
        }
        other => SourceError::Storage(other.to_string()),
    }
}

impl Source for Storage {
    fn range(
        &self,
        tag: &str,
        start: Timestamp,
        end: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, SourceError> {
        let id = self.id_of(tag)?;
        Storage::range(self, id, start, end, limit).map_err(|e| source_error(tag, e))
    }

    fn before(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        let id = self.id_of(tag)?;
        Storage::before(self, id, t, inclusive).map_err(|e| source_error(tag, e))
    }

    fn after(
        &self,
        tag: &str,
        t: Timestamp,
        inclusive: bool,
    ) -> Result<Option<Point>, SourceError> {
        let id = self.id_of(tag)?;
        Storage::after(self, id, t, inclusive).map_err(|e| source_error(tag, e))
    }

    fn latest(&self, tag: &str) -> Result<Option<Point>, SourceError> {
        let id = self.id_of(tag)?;
        Storage::latest(self, id).map_err(|e| source_error(tag, e))
    }

    fn rollup_resolutions(&self) -> &[RollupResolution] {
        &RollupResolution::ALL
    }

    fn rollups(
        &self,
        tag: &str,
        resolution: RollupResolution,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Option<Vec<Rollup>>, SourceError> {
        let (id, value_type) = self.lookup(tag)?;
        if value_type == ValueType::Str {
            return Ok(None);
        }
        Storage::rollups(self, id, resolution, start, end)
            .map(Some)
            .map_err(|e| source_error(tag, e))
    }
}

/// What the API shows of a stored tag. Digital and text tags hold their
/// value until the next point (PI's `Step`); numbers interpolate linearly.
fn tag_info(tag: &Tag) -> TagInfo {
    let meta = &tag.meta;
    let mut info = TagInfo::new(&meta.name, meta.value_type);
    info.unit = (!meta.unit.is_empty()).then(|| meta.unit.clone());
    info.description = (!meta.description.is_empty()).then(|| meta.description.clone());
    info.retention = meta.retention;
    info.step = matches!(meta.value_type, ValueType::Bool | ValueType::Str);
    info.exception = meta.lossy.exception;
    info.compression = meta.lossy.compression;
    info
}

impl Catalog for Storage {
    fn search(
        &self,
        query: &TagQuery,
        limit: usize,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<TagInfo>, CatalogError> {
        let mut tags = self.search_by(|m| {
            query.matches(&m.name, m.value_type, &m.unit, &m.description) && visible(&m.name)
        });
        tags.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        tags.truncate(limit);
        Ok(tags.iter().map(tag_info).collect())
    }

    fn tag(&self, name: &str) -> Result<Option<TagInfo>, CatalogError> {
        Ok(self.tag_by_name(name).as_ref().map(tag_info))
    }
}
