//! MQTT topic names and topic filters: validation, matching, and the two set
//! relations the policy compiler and evaluator need (`covers`, `intersects`).
//!
//! Everything works level by level on `&str` with `split('/')`, so matching
//! never allocates. Shared-subscription prefixes (`$share/{group}/…`) are
//! removed with [`strip_shared`] before a filter is checked. The broker's
//! topic trie (routing) is a separate structure; this module only answers
//! "does this filter allow that topic".

/// MQTT-1.5.4: strings carry a two-byte length prefix.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or filter is not well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// MQTT-4.7.3-1: names and filters are at least one character long.
    #[error("topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// MQTT-4.7.3-2: U+0000 is not allowed.
    #[error("topic contains the NUL character")]
    Nul,
    /// MQTT-3.3.2-2: a topic name (as opposed to a filter) has no wildcards.
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    /// MQTT-4.7.1-1: `#` is the last level.
    #[error("'#' must be the last level of a filter")]
    MultiLevelNotLast,
    /// MQTT-4.7.1-1/2: a wildcard occupies a whole level.
    #[error("a wildcard ('+' or '#') must occupy a whole level")]
    WildcardInLevel,
    /// MQTT-4.8.2-1/2: `$share/{ShareName}/{filter}`, ShareName non-empty, no `/+#`.
    #[error("malformed shared subscription: expected $share/{{name}}/{{filter}}")]
    BadShare,
}

/// A validated topic filter (may contain `+` and `#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(Box<str>);

impl TopicFilter {
    /// Validates `filter` and keeps a copy.
    pub fn new(filter: &str) -> Result<Self, TopicError> {
        validate_filter(filter)?;
        Ok(Self(filter.into()))
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` (a valid topic name) matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        matches(&self.0, topic)
    }

    /// Whether every topic matched by `filter` (a valid filter) is matched by this one.
    pub fn covers(&self, filter: &str) -> bool {
        covers(&self.0, filter)
    }

    /// Whether some topic is matched by both this filter and `filter`.
    pub fn intersects(&self, filter: &str) -> bool {
        intersects(&self.0, filter)
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a topic name as used in PUBLISH.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter as used in SUBSCRIBE (without a `$share/` prefix).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::MultiLevelNotLast),
            "#" | "+" => {}
            _ if level.contains(['+', '#']) => return Err(TopicError::WildcardInLevel),
            _ => {}
        }
    }
    Ok(())
}

/// Removes a `$share/{name}/` prefix (MQTT 5 shared subscription) and returns
/// the filter proper; other filters are returned unchanged.
pub fn strip_shared(filter: &str) -> Result<&str, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(filter);
    };
    let Some((name, inner)) = rest.split_once('/') else {
        return Err(TopicError::BadShare);
    };
    if name.is_empty() || name.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::BadShare);
    }
    Ok(inner)
}

/// Whether `topic` (a valid name) matches `filter` (a valid filter).
///
/// MQTT-4.7.2-1: a filter starting with a wildcard does not match a topic
/// starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `a/#` also matches the parent `a` (MQTT 4.7.1.2).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic matched by `inner` is also matched by `outer` (both valid
/// filters). Sound: `true` is only returned when the inclusion holds.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    let mut first = true;
    loop {
        match (o.next(), i.next()) {
            (Some("#"), Some(il)) => return !(first && il.starts_with('$')),
            (Some("#"), None) => return true,
            // `+/#` covers `#` at the first level only: deeper, `#` also
            // matches the parent, which `+` does not.
            (Some("+"), Some("#")) => return first && o.next() == Some("#") && o.next().is_none(),
            (Some("+"), Some(il)) if !(first && il.starts_with('$')) => {}
            (Some(ol), Some(il)) if ol != "+" && ol == il => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether at least one topic name is matched by both filters. Complete: `false`
/// is only returned when no such topic exists, so "never matches" errors built
/// on it are never wrong.
pub fn intersects(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    let mut first = true;
    loop {
        match (x.next(), y.next()) {
            (Some("#"), Some(l)) | (Some(l), Some("#")) => return !(first && l.starts_with('$')),
            (Some("#"), None) | (None, Some("#")) => return true,
            (Some("+"), Some(l)) | (Some(l), Some("+")) => {
                if first && l.starts_with('$') {
                    return false;
                }
            }
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

fn validate_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn match_table() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/broker", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn validation() {
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_filter("a/#/b"), Err(TopicError::MultiLevelNotLast));
        assert_eq!(validate_filter("a/b#"), Err(TopicError::WildcardInLevel));
        assert_eq!(validate_filter("a+/b"), Err(TopicError::WildcardInLevel));
        assert_eq!(validate_filter("a\0"), Err(TopicError::Nul));
        assert_eq!(
            validate_filter(&"a".repeat(65_536)),
            Err(TopicError::TooLong)
        );
        assert!(validate_filter("+/+/#").is_ok());
        assert!(validate_filter("#").is_ok());
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert!(validate_topic_name("a//b/").is_ok());
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(strip_shared("$share/g/a/+"), Ok("a/+"));
        assert_eq!(strip_shared("a/b"), Ok("a/b"));
        assert_eq!(strip_shared("$share/g"), Err(TopicError::BadShare));
        assert_eq!(strip_shared("$share//a"), Err(TopicError::BadShare));
        assert_eq!(strip_shared("$share/+/a"), Err(TopicError::BadShare));
        assert_eq!(strip_shared("$share/g/"), Err(TopicError::BadShare));
    }

    #[test]
    fn covers_table() {
        let cases = [
            ("a/#", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "a/+", true),
            ("a/#", "a/#", true),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a", false),
            ("a/b", "a/+", false),
            ("a", "a/#", false),
            ("#", "$SYS/x", false),
            ("#", "+/x", true),
            ("+/#", "#", true),
            ("a/+/#", "a/#", false),
            ("$SYS/#", "$SYS/+", true),
        ];
        for (outer, inner, want) in cases {
            assert_eq!(covers(outer, inner), want, "{outer} covers {inner}");
        }
    }

    #[test]
    fn intersects_table() {
        let cases = [
            ("plant1/cell-a/#", "plant1/cell-b/#", false),
            ("plant1/#", "plant1/cell-b/#", true),
            ("plant1/+/x", "plant1/cell-a/#", true),
            ("a/#", "a", true),
            ("a/+", "a", false),
            ("#", "$SYS/#", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/x", "$SYS/+", true),
            ("a/b/c", "a/b", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(intersects(a, b), want, "{a} ∩ {b}");
            assert_eq!(intersects(b, a), want, "{b} ∩ {a}");
        }
    }

    /// Reference matcher written independently: recursion over level slices.
    fn naive_matches(filter: &str, topic: &str) -> bool {
        fn go(f: &[&str], t: &[&str], first: bool) -> bool {
            match (f.split_first(), t.split_first()) {
                (None, None) => true,
                (Some((&"#", _)), None) => !first,
                (Some((&"#", _)), Some((tl, _))) => !(first && tl.starts_with('$')),
                (Some((&"+", fr)), Some((tl, tr))) => {
                    !(first && tl.starts_with('$')) && go(fr, tr, false)
                }
                (Some((fl, fr)), Some((tl, tr))) => fl == tl && go(fr, tr, false),
                _ => false,
            }
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        go(&f, &t, true)
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$SYS".to_owned()),
            Just("$x".to_owned()),
            "[a-c]{1,2}",
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("topics are non-empty", |t| !t.is_empty())
    }

    fn filter() -> impl Strategy<Value = String> {
        let flevel = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
        (prop::collection::vec(flevel, 1..5), any::<bool>())
            .prop_map(|(mut l, hash)| {
                if hash {
                    l.push("#".to_owned());
                }
                l.join("/")
            })
            .prop_filter("filters are non-empty", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn matches_agrees_with_reference(f in filter(), t in topic()) {
            prop_assert!(validate_filter(&f).is_ok());
            prop_assert!(validate_topic_name(&t).is_ok());
            prop_assert_eq!(matches(&f, &t), naive_matches(&f, &t));
        }

        /// Filters made from a topic by wildcarding some levels and maybe
        /// cutting it with `#`: hits are likely, unlike with independent inputs.
        #[test]
        fn derived_filters_agree_with_reference(
            t in topic(),
            plus in prop::collection::vec(any::<bool>(), 5),
            cut in 0usize..6,
        ) {
            let mut levels: Vec<&str> = t
                .split('/')
                .zip(plus.iter().chain(std::iter::repeat(&false)))
                .map(|(l, p)| if *p { "+" } else { l })
                .collect();
            if cut < levels.len() {
                levels.truncate(cut);
                levels.push("#");
            }
            let f = levels.join("/");
            prop_assert!(validate_filter(&f).is_ok(), "{}", f);
            let want = naive_matches(&f, &t);
            prop_assert_eq!(matches(&f, &t), want);
            if !t.starts_with('$') {
                prop_assert!(want, "{} should match {}", f, t);
            }
        }

        #[test]
        fn bare_hash_agrees_with_reference(t in topic()) {
            prop_assert_eq!(matches("#", &t), naive_matches("#", &t));
        }

        #[test]
        fn covers_is_sound(a in filter(), b in filter(), t in topic()) {
            if covers(&a, &b) && matches(&b, &t) {
                prop_assert!(matches(&a, &t), "{} covers {} but not {}", a, b, t);
            }
        }

        #[test]
        fn covers_is_reflexive(a in filter()) {
            prop_assert!(covers(&a, &a));
        }

        #[test]
        fn intersects_is_complete(a in filter(), b in filter(), t in topic()) {
            if matches(&a, &t) && matches(&b, &t) {
                prop_assert!(intersects(&a, &b), "{} and {} both match {}", a, b, t);
            }
            prop_assert_eq!(intersects(&a, &b), intersects(&b, &a));
        }
    }
}
