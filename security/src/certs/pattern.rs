//! Name patterns that pull the device and zone out of a SAN URI or SAN DNS
//! name, e.g. `urn:dev:plant1:{zone}:{device}` or `{device}.{zone}.plant1.example`.
//!
//! Matching is deterministic and linear, with no backtracking: a capture
//! takes the shortest non-empty run of characters up to the first occurrence
//! of the character that follows it in the pattern (or to the end for a final
//! capture). So `{device}.{zone}` cannot split `a.b.c` two ways; it does not
//! match. Captures other than `device` and `zone` (e.g. `{plant}`) match any
//! such run and are otherwise ignored.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamePattern {
    text: Box<str>,
    parts: Box<[Part]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Capture(Box<str>),
}

/// What a successful match captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Captures<'a> {
    pub device: Option<&'a str>,
    pub zone: Option<&'a str>,
}

impl NamePattern {
    /// Parses a pattern; the error says why in a few words.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(close) = after.find('}') else {
                    return Err("'{' without a closing '}'");
                };
                let name = after.get(..close).unwrap_or("");
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err("capture names use A-Z a-z 0-9 _ -");
                }
                if matches!(parts.last(), Some(Part::Capture(_))) {
                    return Err("two captures must be separated by literal text");
                }
                if parts
                    .iter()
                    .any(|p| matches!(p, Part::Capture(n) if &**n == name))
                {
                    return Err("a capture name appears twice");
                }
                parts.push(Part::Capture(name.into()));
                rest = after.get(close + 1..).unwrap_or("");
            } else {
                let end = rest.find(['{', '}']).unwrap_or(rest.len());
                if end == 0 {
                    return Err("'}' without an opening '{'");
                }
                let (lit, tail) = rest.split_at(end);
                parts.push(Part::Lit(lit.into()));
                rest = tail;
            }
        }
        if parts.is_empty() {
            return Err("the pattern is empty");
        }
        Ok(Self {
            text: text.into(),
            parts: parts.into(),
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has a capture called `name`.
    pub(crate) fn has_capture(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Capture(n) if &**n == name))
    }

    /// The name this pattern gives `device` in `zone`: the inverse of
    /// [`captures`](Self::captures), used by the CA to encode a device the
    /// way a profile reads it. `Err` names a capture other than `device` and
    /// `zone`, which has no value to fill in.
    pub(crate) fn render(&self, device: &str, zone: &str) -> Result<String, String> {
        let mut out = String::new();
        for part in self.parts.iter() {
            match part {
                Part::Lit(lit) => out.push_str(lit),
                Part::Capture(name) => match &**name {
                    "device" => out.push_str(device),
                    "zone" => out.push_str(zone),
                    other => return Err(other.to_owned()),
                },
            }
        }
        Ok(out)
    }

    /// Matches the whole of `input`.
    pub(crate) fn captures<'a>(&self, input: &'a str) -> Option<Captures<'a>> {
        let mut caps = Captures::default();
        let mut rest = input;
        let mut parts = self.parts.iter().peekable();
        while let Some(part) = parts.next() {
            match part {
                Part::Lit(lit) => rest = rest.strip_prefix(&**lit)?,
                Part::Capture(name) => {
                    let end = match parts.peek() {
                        Some(Part::Lit(next)) => {
                            let stop = next.chars().next()?;
                            rest.find(stop)?
                        }
                        _ => rest.len(),
                    };
                    if end == 0 {
                        return None;
                    }
                    let (value, tail) = rest.split_at(end);
                    match &**name {
                        "device" => caps.device = Some(value),
                        "zone" => caps.zone = Some(value),
                        _ => {}
                    }
                    rest = tail;
                }
            }
        }
        rest.is_empty().then_some(caps)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn urn_pattern() {
        let p = NamePattern::parse("urn:dev:{plant}:{zone}:{device}").unwrap();
        let c = p.captures("urn:dev:plant1:cell-a:press-01").unwrap();
        assert_eq!(c.zone, Some("cell-a"));
        assert_eq!(c.device, Some("press-01"));
        assert!(p.has_capture("plant"));
        assert_eq!(p.captures("urn:dev:plant1:cell-a:"), None);
        assert_eq!(p.captures("urn:dev:plant1::press-01"), None);
        assert_eq!(p.captures("urn:device:plant1:cell-a:press-01"), None);
        // The final capture runs to the end, colons included.
        let c = p.captures("urn:dev:plant1:cell-a:press:01").unwrap();
        assert_eq!(c.device, Some("press:01"));
    }

    #[test]
    fn dns_pattern_does_not_backtrack() {
        let p = NamePattern::parse("{device}.{zone}.plant1.example").unwrap();
        let c = p.captures("press-01.cell-a.plant1.example").unwrap();
        assert_eq!((c.device, c.zone), (Some("press-01"), Some("cell-a")));
        assert_eq!(p.captures("press.01.cell-a.plant1.example"), None);
        assert_eq!(p.captures("press-01.cell-a.plant2.example"), None);
        assert_eq!(p.captures("press-01.cell-a.plant1.example.evil"), None);
    }

    #[test]
    fn render_inverts_captures() {
        let p = NamePattern::parse("urn:dev:plant1:{zone}:{device}").unwrap();
        let uri = p.render("press-01", "cell-a").unwrap();
        assert_eq!(uri, "urn:dev:plant1:cell-a:press-01");
        let c = p.captures(&uri).unwrap();
        assert_eq!((c.device, c.zone), (Some("press-01"), Some("cell-a")));
        let p = NamePattern::parse("urn:dev:{plant}:{zone}:{device}").unwrap();
        assert_eq!(p.render("d", "z"), Err("plant".to_owned()));
    }

    #[test]
    fn bad_patterns() {
        for (p, why) in [
            ("", "the pattern is empty"),
            ("urn:{device", "'{' without a closing '}'"),
            ("urn:}", "'}' without an opening '{'"),
            (
                "{zone}{device}",
                "two captures must be separated by literal text",
            ),
            ("{a}:{a}", "a capture name appears twice"),
            ("urn:{}", "capture names use A-Z a-z 0-9 _ -"),
        ] {
            assert_eq!(NamePattern::parse(p), Err(why), "{p}");
        }
    }
}
