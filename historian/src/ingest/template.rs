//! Tag name templates: text with `{...}` placeholders, compiled once per rule
//! and rendered per point. `{{` and `}}` stand for literal braces.

use crate::ingest::error::{IngestError, RuleErrorKind};
use crate::ingest::rules::Decoder;

/// Longest tag name a template may produce. Tag names come partly from
/// peers (topic levels, JSON names, Sparkplug metric names); storage keys
/// and query URLs carry them, so they stay short.
pub const MAX_TAG_NAME_LEN: usize = 1_024;

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Placeholder),
}

/// The placeholders; which ones a decoder offers is checked at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    /// `{topic}`: the whole topic (json, plain).
    Topic,
    /// `{1}`, `{2}`, …: one topic level, 1-based (json, plain).
    Level(usize),
    /// `{name}`: the string at the rule's name pointer (json).
    Name,
    /// `{tag}`: `group/edge_node[/device]/metric` (sparkplug).
    Tag,
    /// `{group}`, `{node}`, `{device}`, `{metric}` (sparkplug; `{device}` is
    /// empty for node-level metrics).
    Group,
    Node,
    Device,
    Metric,
}

/// What a template is rendered from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Vars<'a> {
    pub topic: &'a str,
    pub name: Option<&'a str>,
    pub sparkplug: Option<SparkplugVars<'a>>,
}

/// The parts of a Sparkplug tag name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SparkplugVars<'a> {
    pub tag: &'a str,
    pub group: &'a str,
    pub node: &'a str,
    pub device: Option<&'a str>,
    pub metric: &'a str,
}

impl Template {
    /// Compiles `text` for `decoder`. `fixed_levels` is the number of levels
    /// the rule's filter matches, `None` if it ends in `#` (then `{n}` is
    /// checked per topic instead).
    pub(crate) fn compile(
        text: &str,
        decoder: Decoder,
        fixed_levels: Option<usize>,
        has_name_pointer: bool,
    ) -> Result<Self, RuleErrorKind> {
        let invalid = |reason| RuleErrorKind::InvalidTemplate {
            template: text.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(invalid("unmatched }")),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(invalid("unclosed {")),
                            Some('}') => break,
                            Some('{') => return Err(invalid("nested {")),
                            Some(c) => inner.push(c),
                        }
                    }
                    if inner.is_empty() {
                        return Err(invalid("empty {}"));
                    }
                    let slot = placeholder(&inner, decoder, fixed_levels, has_name_pointer)?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Slot(slot));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(Template { parts })
    }

    /// Renders the tag name.
    pub(crate) fn render(&self, vars: &Vars<'_>) -> Result<String, IngestError> {
        let mut out = String::new();
        for part in &self.parts {
            let piece: &str = match part {
                Part::Text(t) => t,
                Part::Slot(p) => slot_value(*p, vars)?,
            };
            out.push_str(piece);
            if out.len() > MAX_TAG_NAME_LEN {
                break;
            }
        }
        if out.is_empty() || out.len() > MAX_TAG_NAME_LEN {
            return Err(IngestError::InvalidTagName {
                len: out.len(),
                max: MAX_TAG_NAME_LEN,
            });
        }
        Ok(out)
    }
}

fn placeholder(
    inner: &str,
    decoder: Decoder,
    fixed_levels: Option<usize>,
    has_name_pointer: bool,
) -> Result<Placeholder, RuleErrorKind> {
    let unknown = || RuleErrorKind::UnknownPlaceholder {
        placeholder: inner.to_owned(),
        decoder: decoder.as_str(),
    };
    let sparkplug = decoder == Decoder::Sparkplug;
    let p = match inner {
        "topic" if !sparkplug => Placeholder::Topic,
        "name" if decoder == Decoder::Json => {
            if !has_name_pointer {
                return Err(RuleErrorKind::NameWithoutPointer);
            }
            Placeholder::Name
        }
        "tag" if sparkplug => Placeholder::Tag,
        "group" if sparkplug => Placeholder::Group,
        "node" if sparkplug => Placeholder::Node,
        "device" if sparkplug => Placeholder::Device,
        "metric" if sparkplug => Placeholder::Metric,
        digits
            if !sparkplug && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let level: usize = digits.parse().map_err(|_| unknown())?;
            if level == 0 {
                return Err(unknown());
            }
            if let Some(levels) = fixed_levels {
                if level > levels {
                    return Err(RuleErrorKind::LevelBeyondFilter { level, levels });
                }
            }
            Placeholder::Level(level)
        }
        _ => return Err(unknown()),
    };
    Ok(p)
}

fn slot_value<'a>(p: Placeholder, vars: &Vars<'a>) -> Result<&'a str, IngestError> {
    // Compile-time checks guarantee the decoder provides what the template
    // uses; a gap here is a bug, reported as a missing level rather than a panic.
    let sp = vars.sparkplug;
    let v = match p {
        Placeholder::Topic => Some(vars.topic),
        Placeholder::Level(n) => {
            return vars
                .topic
                .split('/')
                .nth(n.saturating_sub(1))
                .ok_or(IngestError::MissingTopicLevel(n))
        }
        Placeholder::Name => vars.name,
        Placeholder::Tag => sp.map(|s| s.tag),
        Placeholder::Group => sp.map(|s| s.group),
        Placeholder::Node => sp.map(|s| s.node),
        Placeholder::Device => sp.map(|s| s.device.unwrap_or("")),
        Placeholder::Metric => sp.map(|s| s.metric),
    };
    v.ok_or(IngestError::MissingTopicLevel(0))
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn render(t: &str, topic: &str) -> String {
        Template::compile(t, Decoder::Plain, None, false)
            .unwrap()
            .render(&Vars {
                topic,
                ..Vars::default()
            })
            .unwrap()
    }

    #[test]
    fn renders_levels_topic_and_braces() {
        assert_eq!(render("{2}/{1}", "a/b"), "b/a");
        assert_eq!(render("x.{topic}", "a/b"), "x.a/b");
        assert_eq!(render("{{lit}}{1}", "a/b"), "{lit}a");
        assert_eq!(render("{2}x", "a//c"), "x");
    }

    #[test]
    fn missing_level_and_empty_name_are_errors() {
        let t = Template::compile("{3}", Decoder::Plain, None, false).unwrap();
        let vars = |topic| Vars {
            topic,
            ..Vars::default()
        };
        assert!(matches!(
            t.render(&vars("a/b")),
            Err(IngestError::MissingTopicLevel(3))
        ));
        assert!(matches!(
            t.render(&vars("a/b/")),
            Err(IngestError::InvalidTagName { len: 0, .. })
        ));
        let long = format!("a/b/{}", "x".repeat(MAX_TAG_NAME_LEN + 1));
        assert!(matches!(
            t.render(&vars(&long)),
            Err(IngestError::InvalidTagName { .. })
        ));
    }

    #[test]
    fn compile_errors() {
        let err = |t: &str, d| Template::compile(t, d, Some(2), false).unwrap_err();
        assert!(matches!(
            err("{x}", Decoder::Plain),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));
        assert!(matches!(
            err("{0}", Decoder::Plain),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));
        assert!(matches!(
            err("{tag}", Decoder::Json),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));
        assert!(matches!(
            err("{1}", Decoder::Sparkplug),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));
        assert!(matches!(
            err("{3}", Decoder::Plain),
            RuleErrorKind::LevelBeyondFilter {
                level: 3,
                levels: 2
            }
        ));
        assert_eq!(
            err("{name}", Decoder::Json),
            RuleErrorKind::NameWithoutPointer
        );
        assert!(matches!(
            err("{name}", Decoder::Plain),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));
        for bad in ["", "{1", "a}", "{}"] {
            assert!(
                matches!(
                    err(bad, Decoder::Plain),
                    RuleErrorKind::InvalidTemplate { .. }
                ),
                "{bad:?}"
            );
        }
    }
}
