//! MQTT topic filters (`+`, `#`) for routing PUBLISHes to rules. A copy of
//! the broker's rules, kept here so the historian does not depend on the
//! broker crate; the historian only matches, it never subscribes.

/// Longest filter accepted, as for any MQTT UTF-8 string (MQTT-1.5.4).
pub const MAX_FILTER_LEN: usize = 65_535;

/// A validated topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: exactly one level.
    Single,
    /// `#`: this level and all below it, including none (MQTT-4.7.1-2).
    Multi,
}

impl TopicFilter {
    /// Parses a filter; the error says which MQTT rule it breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("empty"); // MQTT-4.7.3-1
        }
        if text.len() > MAX_FILTER_LEN {
            return Err("longer than 65,535 bytes");
        }
        if text.contains('\0') {
            return Err("contains NUL"); // MQTT-4.7.3-2
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len().saturating_sub(1);
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let level = match part {
                "#" if i == last => Level::Multi,
                "#" => return Err("'#' must be the last level"), // MQTT-4.7.1-2
                "+" => Level::Single,
                p if p.contains(['#', '+']) => {
                    return Err("'+' and '#' must fill a whole level"); // MQTT-4.7.1-3
                }
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: text.to_owned(),
            levels,
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Levels a matching topic has exactly, or `None` when it ends in `#`.
    pub fn fixed_levels(&self) -> Option<usize> {
        match self.levels.last() {
            Some(Level::Multi) => None,
            _ => Some(self.levels.len()),
        }
    }

    /// Whether `topic` (a topic name, no wildcards) matches.
    pub fn matches(&self, topic: &str) -> bool {
        // MQTT-4.7.2-1: wildcards at the first level do not match `$` topics.
        if topic.starts_with('$')
            && matches!(self.levels.first(), Some(Level::Single | Level::Multi))
        {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Multi => return true,
                Level::Single => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => {
                    if topic_levels.next() != Some(want.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_filters() {
        for bad in ["", "a/#/b", "a#", "a/b+", "+a", "a\0b"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matches_like_mqtt() {
        let table = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "x/y", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("+/+", "/x", true),
            ("a/b", "a/b/c", false),
        ];
        for (filter, topic, want) in table {
            let f = TopicFilter::parse(filter).unwrap();
            assert_eq!(f.matches(topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn fixed_levels() {
        assert_eq!(TopicFilter::parse("a/+/c").unwrap().fixed_levels(), Some(3));
        assert_eq!(TopicFilter::parse("a/#").unwrap().fixed_levels(), None);
    }
}
