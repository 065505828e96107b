//! Ingest rules: the `[[historian.rules]]` tables of the server's TOML
//! (`RuleConfig`, serde) compiled into `Rules`, which routes a topic to the
//! first rule whose filter matches. Everything a rule can get wrong is found
//! here, once, so decoding never meets a bad pointer or template.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::encoding::lossy::{
    CompressionConfig, ExceptionConfig, LossyConfig, DEFAULT_COMP_MAX, DEFAULT_EXC_MAX,
};
use crate::encoding::ValueType;
use crate::ingest::error::{RuleError, RuleErrorKind};
use crate::ingest::filter::TopicFilter;
use crate::ingest::template::Template;

/// Default JSON pointer to the value.
pub const DEFAULT_VALUE_POINTER: &str = "/value";
/// Default JSON pointer to the timestamp.
pub const DEFAULT_TIMESTAMP_POINTER: &str = "/ts";
/// Default JSON pointer to the quality.
pub const DEFAULT_QUALITY_POINTER: &str = "/quality";

/// One `[[historian.rules]]` table as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// MQTT topic filter (`+`, `#`) selecting the PUBLISHes of this rule.
    pub filter: String,
    /// How payloads are decoded.
    pub decoder: Decoder,
    /// Tag name template. Default: `{tag}` (sparkplug), `{topic}` (plain,
    /// json), `{topic}/{name}` (json with `name_pointer`).
    pub tag: Option<String>,
    /// Engineering unit given to tags created by this rule.
    pub unit: Option<String>,
    /// Description given to tags created by this rule.
    pub description: Option<String>,
    /// How long points are kept, e.g. "365d", "12h"; absent = forever.
    pub retention: Option<String>,
    /// Absolute deadband in engineering units; absent = keep every point.
    /// Exception deviation without PI's hold-back and without a time limit;
    /// not together with `exc_dev`.
    pub deadband: Option<f64>,
    /// PI `ExcDev`: exception deviation in engineering units, applied as
    /// points arrive; absent = every point is reported.
    pub exc_dev: Option<f64>,
    /// PI `ExcMax`: a point this long after the last reported one is
    /// reported whatever its value, e.g. "10m" (default 600 s; needs `exc_dev`).
    pub exc_max: Option<String>,
    /// PI `CompDev`: swinging-door compression deviation in engineering
    /// units, applied when the tag's recent points are sealed into a block;
    /// absent = lossless.
    pub comp_dev: Option<f64>,
    /// PI `CompMax`: at least one point is archived per this time, e.g. "8h"
    /// (default 8 h; needs `comp_dev`).
    pub comp_max: Option<String>,
    /// Value type for plain and json (default: from the payload).
    pub value_type: Option<ValueTypeName>,
    /// JSON pointer to the value (json; default `/value`).
    pub value_pointer: Option<String>,
    /// JSON pointer to the timestamp (json; default `/ts`).
    pub timestamp_pointer: Option<String>,
    /// JSON pointer to the quality (json; default `/quality`).
    pub quality_pointer: Option<String>,
    /// JSON pointer to a per-point name for `{name}` (json; default none).
    pub name_pointer: Option<String>,
}

impl RuleConfig {
    /// A rule with this filter and decoder and every other key left out.
    pub fn new(filter: impl Into<String>, decoder: Decoder) -> Self {
        RuleConfig {
            filter: filter.into(),
            decoder,
            tag: None,
            unit: None,
            description: None,
            retention: None,
            deadband: None,
            exc_dev: None,
            exc_max: None,
            comp_dev: None,
            comp_max: None,
            value_type: None,
            value_pointer: None,
            timestamp_pointer: None,
            quality_pointer: None,
            name_pointer: None,
        }
    }
}

/// The payload decoders.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Decoder {
    /// Eclipse Sparkplug B 3.0 protobuf.
    Sparkplug,
    /// JSON object, or an array of them, read through JSON pointers.
    Json,
    /// A bare number, `true`/`false` or text.
    Plain,
}

impl Decoder {
    /// The name used in the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decoder::Sparkplug => "sparkplug",
            Decoder::Json => "json",
            Decoder::Plain => "plain",
        }
    }
}

/// `value_type` as written in the configuration.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueTypeName {
    /// 64-bit float.
    F64,
    /// 64-bit signed integer.
    I64,
    /// Boolean.
    Bool,
    /// UTF-8 text.
    String,
}

impl From<ValueTypeName> for ValueType {
    fn from(v: ValueTypeName) -> Self {
        match v {
            ValueTypeName::F64 => ValueType::F64,
            ValueTypeName::I64 => ValueType::I64,
            ValueTypeName::Bool => ValueType::Bool,
            ValueTypeName::String => ValueType::Str,
        }
    }
}

/// Position of a rule in `Rules`, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// All compiled rules, in configuration order.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) filter: TopicFilter,
    pub(crate) decoder: Decoder,
    pub(crate) template: Template,
    pub(crate) unit: Option<Arc<str>>,
    pub(crate) description: Option<Arc<str>>,
    pub(crate) retention: Option<Duration>,
    pub(crate) deadband: Option<f64>,
    pub(crate) lossy: LossyConfig,
    pub(crate) value_type: Option<ValueType>,
    pub(crate) pointers: JsonPointers,
}

/// The JSON decoder's pointers, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonPointers {
    pub value: String,
    pub timestamp: String,
    pub quality: String,
    pub name: Option<String>,
}

impl Rules {
    /// Compiles every rule; the first bad one is reported.
    pub fn compile(configs: Vec<RuleConfig>) -> Result<Rules, RuleError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, config) in configs.into_iter().enumerate() {
            let filter = config.filter.clone();
            let rule = Rule::compile(config).map_err(|kind| RuleError {
                rule: i.saturating_add(1),
                filter,
                kind,
            })?;
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    /// The first rule whose filter matches `topic`.
    pub fn route(&self, topic: &str) -> Option<&Rule> {
        self.route_id(topic).and_then(|id| self.get(id))
    }

    /// Like `route`, but returns the rule's position.
    pub fn route_id(&self, topic: &str) -> Option<RuleId> {
        self.rules
            .iter()
            .position(|r| r.filter.matches(topic))
            .map(RuleId)
    }

    /// The rule at `id`.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(id.0)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (nothing is historised).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    fn compile(c: RuleConfig) -> Result<Rule, RuleErrorKind> {
        let filter = TopicFilter::parse(&c.filter).map_err(RuleErrorKind::InvalidFilter)?;
        let decoder = c.decoder;
        let not_for = |key| RuleErrorKind::KeyNotForDecoder {
            key,
            decoder: decoder.as_str(),
        };
        if decoder != Decoder::Json {
            let json_keys = [
                ("value_pointer", c.value_pointer.is_some()),
                ("timestamp_pointer", c.timestamp_pointer.is_some()),
                ("quality_pointer", c.quality_pointer.is_some()),
                ("name_pointer", c.name_pointer.is_some()),
            ];
            if let Some((key, _)) = json_keys.iter().find(|(_, set)| *set) {
                return Err(not_for(key));
            }
        }
        if decoder == Decoder::Sparkplug && c.value_type.is_some() {
            // Sparkplug metrics carry their own datatype.
            return Err(not_for("value_type"));
        }
        let pointer = |key, value: Option<String>, default: &str| {
            let p = value.unwrap_or_else(|| default.to_owned());
            check_pointer(&p).map_err(|reason| RuleErrorKind::InvalidPointer {
                key,
                pointer: p.clone(),
                reason,
            })?;
            Ok::<_, RuleErrorKind>(p)
        };
        let name = match c.name_pointer {
            Some(p) => Some(pointer("name_pointer", Some(p), "")?),
            None => None,
        };
        let pointers = JsonPointers {
            value: pointer("value_pointer", c.value_pointer, DEFAULT_VALUE_POINTER)?,
            timestamp: pointer(
                "timestamp_pointer",
                c.timestamp_pointer,
                DEFAULT_TIMESTAMP_POINTER,
            )?,
            quality: pointer(
                "quality_pointer",
                c.quality_pointer,
                DEFAULT_QUALITY_POINTER,
            )?,
            name,
        };
        let default_template = match decoder {
            Decoder::Sparkplug => "{tag}",
            Decoder::Json if pointers.name.is_some() => "{topic}/{name}",
            Decoder::Json | Decoder::Plain => "{topic}",
        };
        let template = Template::compile(
            c.tag.as_deref().unwrap_or(default_template),
            decoder,
            filter.fixed_levels(),
            pointers.name.is_some(),
        )?;
        let retention = c
            .retention
            .as_deref()
            .map(|r| {
                parse_duration(r).map_err(|reason| RuleErrorKind::InvalidDuration {
                    value: r.to_owned(),
                    reason,
                })
            })
            .transpose()?;
        if let Some(d) = c.deadband {
            if !d.is_finite() || d < 0.0 {
                return Err(RuleErrorKind::InvalidDeadband(d));
            }
        }
        if c.deadband.is_some() && c.exc_dev.is_some() {
            // Two exception tests on one tag: say which one applies.
            return Err(RuleErrorKind::KeyConflict {
                key: "deadband",
                other: "exc_dev",
            });
        }
        let lossy = LossyConfig {
            exception: lossy_setting("exc_dev", c.exc_dev, "exc_max", c.exc_max.as_deref())?.map(
                |(deviation, max)| ExceptionConfig {
                    deviation,
                    max_interval: max.unwrap_or(DEFAULT_EXC_MAX),
                },
            ),
            compression: lossy_setting("comp_dev", c.comp_dev, "comp_max", c.comp_max.as_deref())?
                .map(|(deviation, max)| CompressionConfig {
                    deviation,
                    max_interval: max.unwrap_or(DEFAULT_COMP_MAX),
                }),
        };
        Ok(Rule {
            filter,
            decoder,
            template,
            unit: c.unit.map(Arc::from),
            description: c.description.map(Arc::from),
            retention,
            deadband: c.deadband,
            lossy,
            value_type: c.value_type.map(ValueType::from),
            pointers,
        })
    }

    /// The topic filter as written.
    pub fn filter(&self) -> &str {
        self.filter.as_str()
    }

    /// The decoder.
    pub fn decoder(&self) -> Decoder {
        self.decoder
    }

    /// How long points are kept; `None` = forever.
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The absolute deadband, if any.
    pub fn deadband(&self) -> Option<f64> {
        self.deadband
    }

    /// Exception and compression settings (PI `ExcDev`/`ExcMax`,
    /// `CompDev`/`CompMax`); both off unless configured.
    pub fn lossy(&self) -> &LossyConfig {
        &self.lossy
    }

    /// The unit given to its tags.
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }

    /// The description given to its tags.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The configured value type (plain, json); `None` = from the payload.
    pub fn value_type(&self) -> Option<ValueType> {
        self.value_type
    }
}

/// Parses a retention such as "365d": a positive whole number followed by
/// one unit, `s`, `m`, `h`, `d` (24 h) or `w` (7 d).
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("missing unit (s, m, h, d or w)")?;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() {
        return Err("must start with a number");
    }
    let n: u64 = digits.parse().map_err(|_| "number too large")?;
    let secs_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err("unit must be one of s, m, h, d, w"),
    };
    if n == 0 {
        // Zero would delete every point as soon as it is written.
        return Err("must be more than zero; leave it out to keep points forever");
    }
    let secs = n.checked_mul(secs_per_unit).ok_or("too large")?;
    Ok(Duration::from_secs(secs))
}

/// A deviation key (`exc_dev`, `comp_dev`) and its time limit: the
/// deviation must be finite and not negative, and the limit needs it.
fn lossy_setting(
    dev_key: &'static str,
    dev: Option<f64>,
    max_key: &'static str,
    max: Option<&str>,
) -> Result<Option<(f64, Option<Duration>)>, RuleErrorKind> {
    let max = max
        .map(|m| {
            parse_duration(m).map_err(|reason| RuleErrorKind::InvalidTimeLimit {
                key: max_key,
                value: m.to_owned(),
                reason,
            })
        })
        .transpose()?;
    match dev {
        None if max.is_some() => Err(RuleErrorKind::KeyNeeds {
            key: max_key,
            needs: dev_key,
        }),
        None => Ok(None),
        Some(d) if !d.is_finite() || d < 0.0 => Err(RuleErrorKind::InvalidDeviation {
            key: dev_key,
            value: d,
        }),
        Some(d) => Ok(Some((d, max))),
    }
}

/// RFC 6901 syntax: empty (the whole document) or `/`-separated tokens in
/// which `~` only starts `~0` or `~1`.
fn check_pointer(p: &str) -> Result<(), &'static str> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err("must be empty or start with '/'");
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("'~' must be followed by 0 or 1");
        }
    }
    Ok(())
}

#[cfg(test)]
// Tests may panic: that is how they fail.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rule(filter: &str, decoder: Decoder) -> RuleConfig {
        RuleConfig::new(filter, decoder)
    }

    fn kind(configs: Vec<RuleConfig>) -> RuleErrorKind {
        Rules::compile(configs).unwrap_err().kind
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "d",
            "12",
            "0d",
            "1y",
            "-1d",
            "1.5h",
            "99999999999999999999d",
            "18446744073709551615w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compile_errors_are_specific() {
        assert!(matches!(
            kind(vec![rule("a/#/b", Decoder::Plain)]),
            RuleErrorKind::InvalidFilter(_)
        ));

        let mut r = rule("a/+", Decoder::Plain);
        r.tag = Some("{bogus}".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::UnknownPlaceholder { .. }
        ));

        let mut r = rule("a/+", Decoder::Plain);
        r.retention = Some("10 years".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::InvalidDuration { .. }
        ));

        let mut r = rule("a/+", Decoder::Json);
        r.value_pointer = Some("value".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::InvalidPointer {
                key: "value_pointer",
                ..
            }
        ));

        let mut r = rule("a/+", Decoder::Json);
        r.timestamp_pointer = Some("/a~2".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::InvalidPointer {
                key: "timestamp_pointer",
                ..
            }
        ));

        let mut r = rule("a/+", Decoder::Plain);
        r.name_pointer = Some("/n".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::KeyNotForDecoder {
                key: "name_pointer",
                ..
            }
        ));

        let mut r = rule("spBv1.0/#", Decoder::Sparkplug);
        r.value_type = Some(ValueTypeName::I64);
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::KeyNotForDecoder {
                key: "value_type",
                ..
            }
        ));

        let mut r = rule("a", Decoder::Plain);
        r.deadband = Some(-1.0);
        assert!(matches!(kind(vec![r]), RuleErrorKind::InvalidDeadband(_)));
    }

    #[test]
    fn lossy_keys_compile_with_pi_defaults_and_errors() {
        let mut r = rule("a", Decoder::Plain);
        r.exc_dev = Some(0.5);
        r.comp_dev = Some(1.0);
        r.comp_max = Some("1h".into());
        let rules = Rules::compile(vec![r]).unwrap();
        let lossy = *rules.route("a").unwrap().lossy();
        assert_eq!(
            lossy,
            LossyConfig {
                exception: Some(ExceptionConfig {
                    deviation: 0.5,
                    max_interval: Duration::from_secs(600),
                }),
                compression: Some(CompressionConfig {
                    deviation: 1.0,
                    max_interval: Duration::from_secs(3600),
                }),
            }
        );
        let rules = Rules::compile(vec![rule("b", Decoder::Plain)]).unwrap();
        assert_eq!(*rules.route("b").unwrap().lossy(), LossyConfig::default());

        let mut r = rule("a", Decoder::Plain);
        r.exc_max = Some("10m".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::KeyNeeds {
                key: "exc_max",
                needs: "exc_dev"
            }
        ));
        let mut r = rule("a", Decoder::Plain);
        r.comp_dev = Some(1.0);
        r.comp_max = Some("8 hours".into());
        assert!(matches!(
            kind(vec![r]),
            RuleErrorKind::InvalidTimeLimit {
                key: "comp_max",
                ..
            }
        ));
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            let mut r = rule("a", Decoder::Plain);
            r.comp_dev = Some(bad);
            assert!(matches!(
                kind(vec![r]),
                RuleErrorKind::InvalidDeviation {
                    key: "comp_dev",
                    ..
                }
            ));
        }
        let mut r = rule("a", Decoder::Plain);
        r.deadband = Some(0.5);
        r.exc_dev = Some(0.5);
        assert!(matches!(kind(vec![r]), RuleErrorKind::KeyConflict { .. }));
    }

    #[test]
    fn error_names_the_rule() {
        let err =
            Rules::compile(vec![rule("ok", Decoder::Plain), rule("", Decoder::Plain)]).unwrap_err();
        assert_eq!(err.rule, 2);
        assert!(err.to_string().starts_with("historian rule 2"), "{err}");
    }

    #[test]
    fn first_match_wins() {
        let rules = Rules::compile(vec![
            rule("plant/+/temp", Decoder::Plain),
            rule("plant/#", Decoder::Json),
            rule("spBv1.0/#", Decoder::Sparkplug),
        ])
        .unwrap();
        assert_eq!(
            rules.route("plant/a/temp").unwrap().decoder(),
            Decoder::Plain
        );
        assert_eq!(
            rules.route("plant/a/pressure").unwrap().decoder(),
            Decoder::Json
        );
        assert_eq!(rules.route_id("spBv1.0/g/NDATA/n"), Some(RuleId(2)));
        assert!(rules.route("other").is_none());
    }

    #[test]
    fn parses_from_toml() {
        #[derive(Deserialize)]
        struct File {
            historian: Historian,
        }
        #[derive(Deserialize)]
        struct Historian {
            rules: Vec<RuleConfig>,
        }
        let text = r#"
            [[historian.rules]]
            filter = "spBv1.0/#"
            decoder = "sparkplug"

            [[historian.rules]]
            filter = "plant/+/+"
            decoder = "json"
            tag = "{2}.{3}.{name}"
            name_pointer = "/name"
            unit = "degC"
            retention = "90d"
            deadband = 0.5
            value_type = "i64"

            [[historian.rules]]
            filter = "plant/#"
            decoder = "plain"
            exc_dev = 0.1
            exc_max = "5m"
            comp_dev = 0.2
            comp_max = "8h"
        "#;
        let file: File = toml::from_str(text).unwrap();
        let rules = Rules::compile(file.historian.rules).unwrap();
        assert_eq!(rules.len(), 3);
        let lossy = rules.get(RuleId(2)).unwrap().lossy();
        assert_eq!(
            lossy.exception.map(|e| (e.deviation, e.max_interval)),
            Some((0.1, Duration::from_secs(300)))
        );
        assert_eq!(
            lossy.compression.map(|c| (c.deviation, c.max_interval)),
            Some((0.2, Duration::from_secs(8 * 3600)))
        );
        let r = rules.route("plant/a/b").unwrap();
        assert_eq!(r.retention(), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(r.deadband(), Some(0.5));

        let typo = "[[historian.rules]]\nfilter = \"a\"\ndecoder = \"plain\"\nunits = \"x\"\n";
        let err = toml::from_str::<File>(typo).err().unwrap().to_string();
        assert!(err.contains("unknown field `units`"), "{err}");
        let bad = "[[historian.rules]]\nfilter = \"a\"\ndecoder = \"xml\"\n";
        assert!(toml::from_str::<File>(bad).is_err());
    }
}
