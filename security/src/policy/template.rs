//! Topic filter templates with placeholders (`${device}`, `${zone}`, `${cn}`,
//! `${client_id}`), parsed once at compile time and expanded once per
//! session at CONNECT, so the per-message check never sees a placeholder.
//!
//! Values substituted here must already have passed `safe_value` (no `/`,
//! `+`, `#`, NUL, no leading `$`): that is what stops a device named `#`
//! from widening its own rights.

/// A placeholder variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Device,
    Zone,
    Cn,
    ClientId,
}

impl Var {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "device" => Some(Self::Device),
            "zone" => Some(Self::Zone),
            "cn" => Some(Self::Cn),
            "client_id" => Some(Self::ClientId),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    text: Box<str>,
    parts: Box<[Part]>,
}

/// Why a template does not parse. `offset` is the byte offset in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    Unterminated { offset: usize },
    Unknown { name: String, offset: usize },
}

/// Values for expansion; `None` where the session has no such value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub device: &'a str,
    pub zone: &'a str,
    pub cn: Option<&'a str>,
    pub client_id: &'a str,
}

impl Template {
    /// Parses `text`. `$` not followed by `{` is literal (`$SYS/…`).
    pub(crate) fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            let (before, after) = rest.split_at(i);
            lit.push_str(before);
            let offset = text.len() - rest.len() + i;
            let inner = after.get(2..).unwrap_or("");
            let Some(close) = inner.find('}') else {
                return Err(TemplateError::Unterminated { offset });
            };
            let name = inner.get(..close).unwrap_or("");
            let Some(var) = Var::from_name(name) else {
                return Err(TemplateError::Unknown {
                    name: name.to_owned(),
                    offset,
                });
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(var));
            rest = inner.get(close + 1..).unwrap_or("");
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Self {
            text: text.into(),
            parts: parts.into(),
        })
    }

    /// `${device}`, the default identity.
    pub(crate) fn device_only() -> Self {
        Self {
            text: "${device}".into(),
            parts: Box::new([Part::Var(Var::Device)]),
        }
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template uses `var`.
    pub(crate) fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// The text with every placeholder replaced by `x`: checks that the
    /// template is a well-formed filter whatever safe values are substituted.
    pub(crate) fn probe(&self) -> String {
        self.render(|_| Some("x")).unwrap_or_default()
    }

    /// The text with every level that holds a placeholder replaced by `+`:
    /// a filter that matches at least everything any expansion matches.
    pub(crate) fn shape(&self) -> String {
        let probe = self.render(|_| Some("\u{1}")).unwrap_or_default();
        probe
            .split('/')
            .map(|level| if level.contains('\u{1}') { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Substitutes `values`; `None` if a needed value is missing (no CN).
    pub(crate) fn expand(&self, values: &Values<'_>) -> Option<String> {
        self.render(|var| match var {
            Var::Device => Some(values.device),
            Var::Zone => Some(values.zone),
            Var::Cn => values.cn,
            Var::ClientId => Some(values.client_id),
        })
    }

    fn render<'v>(&self, value: impl Fn(Var) -> Option<&'v str>) -> Option<String> {
        let mut out = String::with_capacity(self.text.len());
        for part in self.parts.iter() {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => out.push_str(value(*v)?),
            }
        }
        Some(out)
    }
}

/// The longest value substituted into a topic filter. Bounds the size of
/// the expanded rights set a certificate can make the broker build.
pub(crate) const MAX_VALUE_LEN: usize = 256;

/// Whether `value` may be substituted into a topic filter without changing
/// its structure: non-empty, short, no level separator, no wildcard, no NUL,
/// no leading `$` (which would hide it from `+`/`#` matches).
pub(crate) fn safe_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && !value.starts_with('$')
        && !value.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            device: "press-01",
            zone: "cell-a",
            cn: Some("press-01.cell-a"),
            client_id: "c1",
        }
    }

    #[test]
    fn expands_every_placeholder() {
        let t = Template::parse("p/${zone}/${device}/x-${client_id}/${cn}/#").unwrap();
        assert_eq!(
            t.expand(&values()).unwrap(),
            "p/cell-a/press-01/x-c1/press-01.cell-a/#"
        );
        assert!(t.uses(Var::Cn));
        assert_eq!(t.shape(), "p/+/+/+/+/#");
        assert_eq!(t.probe(), "p/x/x/x-x/x/#");
    }

    #[test]
    fn dollar_without_brace_is_literal() {
        let t = Template::parse("$SYS/broker/$x").unwrap();
        assert_eq!(t.expand(&values()).unwrap(), "$SYS/broker/$x");
        assert!(!t.uses(Var::Device));
    }

    #[test]
    fn missing_cn_fails_expansion() {
        let t = Template::parse("a/${cn}").unwrap();
        let v = Values {
            cn: None,
            ..values()
        };
        assert_eq!(t.expand(&v), None);
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(
            Template::parse("a/${devise}/b"),
            Err(TemplateError::Unknown {
                name: "devise".into(),
                offset: 2
            })
        );
        assert_eq!(
            Template::parse("a/b/${device"),
            Err(TemplateError::Unterminated { offset: 4 })
        );
    }

    #[test]
    fn safe_values() {
        assert!(safe_value("press-01"));
        for bad in ["", "#", "+", "a/b", "$SYS", "a\0", &"x".repeat(257)] {
            assert!(!safe_value(bad), "{bad:?}");
        }
    }
}
