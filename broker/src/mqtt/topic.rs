//! Topic names and topic filters (MQTT 4.7): syntax checks, shared subscriptions, matching.
//!
//! Pure functions over `&str`; `matches` does not allocate. This module does not decide what a
//! client may publish or subscribe to (that is policy) nor store subscriptions (that is the
//! router). Lengths are in bytes, as on the wire.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

/// A topic name or filter is a UTF-8 string on the wire, so at most 65,535 bytes (4.7.3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix of a shared subscription filter (5.0 4.8.2; accepted under 3.1.1 as well).
const SHARED_PREFIX: &str = "$share/";

/// `$share/...` that does not have the form `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid shared subscription filter")]
pub struct InvalidShared;

/// A name a PUBLISH may carry: non-empty, no wildcards, no U+0000, at most `MAX_TOPIC_LEN`
/// bytes (MQTT-4.7.3-1, MQTT-4.7.3-2, MQTT-3.3.2-2).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// A filter a SUBSCRIBE may carry: non-empty, no U+0000, '#' only as the whole last level,
/// '+' only as a whole level (MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.7.3-1).
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && !(level == "#" && is_last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`.
///
/// `Ok(None)`: not a shared subscription. `Err(InvalidShared)`: it starts with `$share/` but the
/// group is empty or holds '+', '#' (MQTT-4.8.2-2), or the filter is missing or invalid
/// (MQTT-4.8.2-1).
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, InvalidShared> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    // The group ends at the first '/', so it cannot contain one.
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(InvalidShared);
    };
    if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(inner) {
        return Err(InvalidShared);
    }
    Ok(Some((group, inner)))
}

/// Whether topic name `topic` matches topic filter `filter` (4.7).
///
/// `filter` is assumed valid (`valid_topic_filter`) and not a `$share/` filter (strip it with
/// `parse_shared` first). '#' also matches the parent level ("sport/#" matches "sport").
/// Empty levels are levels ("a//b" has three). A topic whose first level starts with '$' is
/// not matched by a filter starting with a wildcard (MQTT-4.7.2-1).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The number of levels in a topic name or filter: one more than the number of '/'.
pub fn level_count(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn match_table() {
        let cases: &[(&str, &str, bool)] = &[
            // Exact.
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a", false),
            ("a", "a/b", false),
            ("A", "a", false),
            // Multi-level wildcard (4.7.1.2).
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("sport/#", "sport", true),
            ("sport/#", "sport/", true),
            ("sport/#", "sport/tennis/player1", true),
            ("sport/#", "sports", false),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            ("sport/tennis/#", "sport/tennis", true),
            // Single-level wildcard (4.7.1.3).
            ("+", "a", true),
            ("+", "a/b", false),
            ("+", "/finance", false),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+/+", "a/b", true),
            ("+/+", "a", false),
            ("+/+", "a/b/c", false),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a//c", true),
            ("a/+/c", "a/b/d", false),
            ("a/+/c", "a/b/c/d", false),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/tennis/#", "sport/tennis/player1", true),
            ("+/#", "a", true),
            // Empty levels are real.
            ("a//b", "a//b", true),
            ("a/b", "a//b", false),
            ("a/+/b", "a//b", true),
            ("/", "/", true),
            ("+", "", true),
            // The $ rule (MQTT-4.7.2-1).
            ("#", "$SYS/broker/load", false),
            ("+/broker/load", "$SYS/broker/load", false),
            ("+", "$SYS", false),
            ("$SYS/#", "$SYS/broker/load", true),
            ("$SYS/+/load", "$SYS/broker/load", true),
            ("$SYS/#", "$SYS", true),
            ("a/$x", "a/$x", true),
            ("a/+", "a/$x", true),
            ("a/#", "a/$x", true),
        ];
        for &(filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter:?} vs {topic:?}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "a/b", "/", "a//b", "$SYS/x", " ", "ü/€"] {
            assert!(valid_topic_name(ok), "{ok:?}");
        }
        for bad in ["", "a/+", "#", "a/#", "a+b", "a\0b"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
        assert!(valid_topic_name(&"a".repeat(MAX_TOPIC_LEN)));
        assert!(!valid_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn filters() {
        for ok in [
            "a",
            "#",
            "+",
            "a/#",
            "+/+",
            "a/+/c",
            "/",
            "/+",
            "+/",
            "a//b",
            "$SYS/#",
            "+/#",
            "sport/tennis/player1/#",
            "$share/g/a",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?}");
        }
        for bad in [
            "", "a/#/b", "a+", "#a", "a#", "a/b#", "+a/b", "a/+b", "##", "#/", "a\0", "a/++",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
        }
        assert!(!valid_topic_filter(&"a".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$SYS/#"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(parse_shared("$sharex/g/a"), Ok(None));
        assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse_shared("$share/group/#"), Ok(Some(("group", "#"))));
        assert_eq!(parse_shared("$share/g//"), Ok(Some(("g", "/"))));
        assert_eq!(parse_shared("$share/g/+/x"), Ok(Some(("g", "+/x"))));
        for bad in [
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/+/a",
            "$share/#/a",
            "$share/g+/a",
            "$share/g/a/#/b",
        ] {
            assert_eq!(parse_shared(bad), Err(InvalidShared), "{bad:?}");
        }
    }

    #[test]
    fn levels() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count(""), 1);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a//b"), 3);
        assert_eq!(level_count("a/b/c/#"), 4);
    }
}
