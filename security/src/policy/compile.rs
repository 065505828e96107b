//! Compiles a policy file into an immutable [`CompiledPolicy`].
//!
//! Owns every semantic check of the file (unknown zones and CAs, overlapping
//! zone namespaces, filters that can never match, placeholders, ranges) and
//! the defaults. Reads no file itself except in [`check_file`]; evaluation
//! lives in `eval.rs`. A `CompiledPolicy` is meant to sit behind an `Arc` and
//! be replaced whole on reload: it has no interior mutability.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use toml::Spanned;

use super::diagnostic::{locate, Diagnostic, PolicyError};
use super::eval::TransportSet;
use super::model::{self, DeviceSource, PolicyFile, ZoneSource};
use super::template::{Template, TemplateError, Var};
use crate::certs::identity::{parse_dn, Dn};
use crate::certs::pattern::NamePattern;
use crate::topic::{self, TopicFilter};

/// A plant policy is a few KiB, one profile per device for 10,000 devices about 3 MiB; the cap
/// bounds parse time on mistakes and fuzz input.
pub const MAX_POLICY_BYTES: usize = 16 << 20;
/// CAs, zones and conduits, each: ids are `u16`, and some compile checks are quadratic in the
/// number of zones.
pub const MAX_ITEMS: usize = 1024;
/// Device profiles: one per device is how some plants pin certificates, so room for a large
/// plant; CONNECT tries them in order (linear), the per-message check does not see them.
pub const MAX_PROFILES: usize = 16_384;
/// Namespace and conduit filters together: bounds the quadratic overlap and reach checks.
pub const MAX_FILTERS_TOTAL: usize = 4096;
/// Profile rights together: each is checked against the zones and conduits once (linear).
pub const MAX_PROFILE_FILTERS_TOTAL: usize = 65_536;
/// Filters in one list (a namespace, a conduit's topics, a profile's rights):
/// the per-message check walks these lists linearly.
pub const MAX_FILTERS_PER_LIST: usize = 256;

/// QoS 2 costs four packets per message; profiles and conduits opt in.
pub const DEFAULT_MAX_QOS: u8 = 1;
/// Sensor and control messages are small; bigger payloads are opted in.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// MQTT's largest remaining length (MQTT 5 §1.5.5).
pub const MAX_PAYLOAD_LIMIT: usize = 268_435_455;
/// Enough for a device's command and configuration topics; bounds router state.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 32;
/// A field device rarely sends more than tens of messages a second.
pub const DEFAULT_MESSAGES_PER_SECOND: u64 = 100;
/// 1 MiB/s per device keeps one chatty device from starving a cell.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 1 << 20;
/// Upper bound for any configured rate or burst; keeps token arithmetic far from overflow.
pub const MAX_RATE: i64 = 1 << 40;

/// Every compiled policy gets a new generation, so a `Subject` resolved under
/// one policy is refused by another (fail closed on reload).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Index of a zone in one [`CompiledPolicy`]; meaningless in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZoneId(pub(crate) u16);
/// Index of a conduit in one [`CompiledPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConduitId(pub(crate) u16);
/// Index of a device profile in one [`CompiledPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileId(pub(crate) u16);
/// Index of a CA in one [`CompiledPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CaId(pub(crate) u16);

macro_rules! index_newtype {
    ($($t:ident),*) => {$(
        impl $t {
            /// The position in the policy's list, in file order.
            pub fn index(self) -> u16 {
                self.0
            }
            pub(crate) fn at(self) -> usize {
                usize::from(self.0)
            }
        }
    )*};
}
index_newtype!(ZoneId, ConduitId, ProfileId);

impl CaId {
    pub(crate) fn at(self) -> usize {
        usize::from(self.0)
    }
}

/// A token-bucket rate: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u64,
    burst: u64,
}

impl Rate {
    /// Tokens added per second.
    pub fn per_second(self) -> u64 {
        self.per_second
    }
    /// Bucket capacity.
    pub fn burst(self) -> u64 {
        self.burst
    }
}

/// Per-device limits of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub(crate) max_qos: u8,
    pub(crate) retain: bool,
    pub(crate) max_payload: usize,
    pub(crate) max_subscriptions: u32,
    pub(crate) messages: Rate,
    pub(crate) bytes: Rate,
}

impl Limits {
    /// Highest QoS for PUBLISH and SUBSCRIBE (CONNACK Maximum QoS).
    pub fn max_qos(&self) -> u8 {
        self.max_qos
    }
    /// Whether retained messages may be published (CONNACK Retain Available).
    pub fn retain(&self) -> bool {
        self.retain
    }
    /// Largest PUBLISH payload in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
    /// Most subscriptions a session may hold.
    pub fn max_subscriptions(&self) -> u32 {
        self.max_subscriptions
    }
    /// PUBLISH packets per second.
    pub fn messages(&self) -> Rate {
        self.messages
    }
    /// Payload bytes per second.
    pub fn bytes(&self) -> Rate {
        self.bytes
    }
}

/// The compiled, immutable policy.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) generation: u64,
    pub(crate) cas: Box<[Ca]>,
    pub(crate) zones: Box<[Zone]>,
    pub(crate) zone_index: HashMap<Box<str>, ZoneId>,
    pub(crate) conduits: Box<[Conduit]>,
    /// Conduit ids by their `from` zone.
    pub(crate) routes: Box<[Box<[ConduitId]>]>,
    pub(crate) profiles: Box<[Profile]>,
}

/// A trusted issuing CA.
#[derive(Debug)]
pub(crate) struct Ca {
    pub(crate) id: Box<str>,
    pub(crate) subject: Option<Dn>,
    pub(crate) key_id: Option<Box<[u8]>>,
}

/// A zone.
#[derive(Debug)]
pub struct Zone {
    pub(crate) id: Box<str>,
    pub(crate) description: Option<Box<str>>,
    pub(crate) security_level: u8,
    pub(crate) trusted_cas: Box<[CaId]>,
    pub(crate) namespace: Box<[TopicFilter]>,
}

impl Zone {
    /// The zone id from the file.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The free-text description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// IEC 62443 target security level, 1 to 4.
    pub fn security_level(&self) -> u8 {
        self.security_level
    }
    /// The topic filters the zone owns.
    pub fn namespace(&self) -> &[TopicFilter] {
        &self.namespace
    }
}

/// A conduit between two zones.
#[derive(Debug)]
pub struct Conduit {
    pub(crate) id: Box<str>,
    pub(crate) description: Option<Box<str>>,
    pub(crate) from: ZoneId,
    pub(crate) to: ZoneId,
    pub(crate) topics: Box<[TopicFilter]>,
    pub(crate) max_qos: u8,
    pub(crate) max_payload: usize,
    pub(crate) message_rate: Option<Rate>,
    pub(crate) byte_rate: Option<Rate>,
}

impl Conduit {
    /// The conduit id from the file.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The free-text description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The zone data leaves.
    pub fn from(&self) -> ZoneId {
        self.from
    }
    /// The zone data enters.
    pub fn to(&self) -> ZoneId {
        self.to
    }
    /// The topic filters it carries.
    pub fn topics(&self) -> &[TopicFilter] {
        &self.topics
    }
    /// Highest QoS carried.
    pub fn max_qos(&self) -> u8 {
        self.max_qos
    }
    /// Largest payload carried.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
    /// Message rate limit, if any.
    pub fn message_rate(&self) -> Option<Rate> {
        self.message_rate
    }
    /// Byte rate limit, if any.
    pub fn byte_rate(&self) -> Option<Rate> {
        self.byte_rate
    }
}

/// A device profile.
#[derive(Debug)]
pub struct Profile {
    pub(crate) id: Box<str>,
    pub(crate) description: Option<Box<str>>,
    pub(crate) issuers: Box<[CaId]>,
    pub(crate) policy_oid: Option<Box<str>>,
    pub(crate) fingerprints: Box<[[u8; 32]]>,
    pub(crate) device: DeviceSource,
    pub(crate) zone: ZoneRule,
    pub(crate) san_uri: Option<NamePattern>,
    pub(crate) san_dns: Option<NamePattern>,
    pub(crate) zones: Option<Box<[ZoneId]>>,
    pub(crate) identity: Template,
    pub(crate) any_client_id: bool,
    pub(crate) publish: Box<[Template]>,
    pub(crate) subscribe: Box<[Template]>,
    pub(crate) limits: Limits,
    pub(crate) listeners: Option<Box<[Box<str>]>>,
    pub(crate) transports: TransportSet,
}

impl Profile {
    /// The profile id from the file.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The free-text description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The per-device limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// How a profile finds the zone.
#[derive(Debug)]
pub(crate) enum ZoneRule {
    Cn,
    Ou,
    O,
    SanUri,
    SanDns,
    Fixed(ZoneId),
    PolicyOid(Box<[(Box<str>, ZoneId)]>),
}

impl CompiledPolicy {
    /// Distinguishes this compilation from every other one in the process.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Zones in file order; a [`ZoneId`] indexes this slice.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
    /// Conduits in file order; a [`ConduitId`] indexes this slice.
    pub fn conduits(&self) -> &[Conduit] {
        &self.conduits
    }
    /// Profiles in file order; a [`ProfileId`] indexes this slice.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }
    /// CA ids in file order.
    pub fn ca_ids(&self) -> impl Iterator<Item = &str> {
        self.cas.iter().map(|c| &*c.id)
    }
    /// The zone called `id`.
    pub fn zone(&self, id: &str) -> Option<ZoneId> {
        self.zone_index.get(id).copied()
    }
    /// The zone whose namespace contains `topic` (namespaces never overlap).
    pub fn owner_zone(&self, topic: &str) -> Option<ZoneId> {
        self.zones
            .iter()
            .position(|z| z.namespace.iter().any(|f| f.matches(topic)))
            .and_then(|i| u16::try_from(i).ok())
            .map(ZoneId)
    }
    /// `owner_zone`, trying `likely` first: a device mostly publishes in its own zone, and
    /// since namespaces never overlap a match there is the answer (the full scan is linear in
    /// the zones).
    pub(crate) fn owner_zone_near(&self, topic: &str, likely: ZoneId) -> Option<ZoneId> {
        let own = self
            .zones
            .get(likely.at())
            .is_some_and(|z| z.namespace.iter().any(|f| f.matches(topic)));
        if own {
            return Some(likely);
        }
        self.owner_zone(topic)
    }
    /// Conduits from `from` to `to`.
    pub(crate) fn routes(
        &self,
        from: ZoneId,
        to: ZoneId,
    ) -> impl Iterator<Item = (ConduitId, &Conduit)> + '_ {
        self.routes
            .get(from.at())
            .map_or(&[][..], |r| &r[..])
            .iter()
            .filter_map(|&id| self.conduits.get(id.at()).map(|c| (id, c)))
            .filter(move |(_, c)| c.to == to)
    }
}

/// Reads and compiles a policy file: the only IO in this crate.
pub fn check_file(path: &Path) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let whole = |error| Diagnostic {
        file: file.clone(),
        line: 0,
        column: 0,
        error,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| vec![whole(PolicyError::Io(e.to_string()))])?
        .len();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_POLICY_BYTES {
        return Err(vec![whole(PolicyError::TooLarge {
            len,
            max: MAX_POLICY_BYTES,
        })]);
    }
    let src =
        std::fs::read_to_string(path).map_err(|e| vec![whole(PolicyError::Io(e.to_string()))])?;
    compile(&src, &file)
}

/// Compiles policy text. `file` is only used in diagnostics.
pub fn compile(src: &str, file: &str) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let mut cx = Cx {
        file,
        src,
        diags: Vec::new(),
    };
    if src.len() > MAX_POLICY_BYTES {
        cx.err(
            0..0,
            PolicyError::TooLarge {
                len: src.len(),
                max: MAX_POLICY_BYTES,
            },
        );
        return Err(cx.diags);
    }
    let model: PolicyFile = match toml::from_str(src) {
        Ok(m) => m,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, PolicyError::Syntax(e.message().trim().to_owned()));
            return Err(cx.diags);
        }
    };
    if *model.version.get_ref() != 1 {
        cx.err(
            model.version.span(),
            PolicyError::UnsupportedVersion(*model.version.get_ref()),
        );
    }
    for (kind, n, span) in [
        (
            "ca",
            model.cas.len(),
            model.cas.first().map(|c| c.id.span()),
        ),
        (
            "zone",
            model.zones.len(),
            model.zones.first().map(|z| z.id.span()),
        ),
        (
            "conduit",
            model.conduits.len(),
            model.conduits.first().map(|c| c.id.span()),
        ),
        (
            "profile",
            model.profiles.len(),
            model.profiles.first().map(|p| p.id.span()),
        ),
    ] {
        let max = if kind == "profile" {
            MAX_PROFILES
        } else {
            MAX_ITEMS
        };
        if n > max {
            cx.err(span.unwrap_or(0..0), PolicyError::TooMany { kind, max });
            return Err(cx.diags);
        }
    }

    let filters = model
        .zones
        .iter()
        .map(|z| z.namespace.get_ref().len())
        .sum::<usize>()
        + model
            .conduits
            .iter()
            .map(|c| c.topics.get_ref().len())
            .sum::<usize>();
    let rights = model
        .profiles
        .iter()
        .map(|p| p.publish.len() + p.subscribe.len())
        .sum::<usize>();
    for (n, kind, max) in [
        (filters, "namespace and conduit filter", MAX_FILTERS_TOTAL),
        (rights, "profile right", MAX_PROFILE_FILTERS_TOTAL),
    ] {
        if n > max {
            cx.err(0..0, PolicyError::TooMany { kind, max });
            return Err(cx.diags);
        }
    }

    let (cas, ca_index) = compile_cas(&mut cx, &model.cas);
    let (zones, zone_index) = compile_zones(&mut cx, &model.zones, &ca_index);
    if cx.diags.is_empty() {
        check_overlaps(&mut cx, &model.zones);
    }
    let conduits = compile_conduits(&mut cx, &model.conduits, &zone_index);
    let mut routes = vec![Vec::new(); zones.len()];
    for (i, c) in conduits.iter().enumerate() {
        if let (Some(slot), Ok(i)) = (routes.get_mut(c.from.at()), u16::try_from(i)) {
            slot.push(ConduitId(i));
        }
    }
    let graph = Graph {
        zones: &zones,
        conduits: &conduits,
        routes: &routes,
    };
    // Reachability checks only make sense on a sound zone/conduit structure;
    // otherwise they would pile knock-on errors on the real one.
    let structure_ok = cx.diags.is_empty();
    if structure_ok {
        check_conduit_reach(&mut cx, &model.conduits, &graph);
    }
    let profiles = compile_profiles(
        &mut cx,
        &model.profiles,
        &ca_index,
        &zone_index,
        structure_ok.then_some(&graph),
    );

    if !cx.diags.is_empty() {
        return Err(cx.diags);
    }
    Ok(CompiledPolicy {
        generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        cas: cas.into(),
        zones: zones.into(),
        zone_index,
        conduits: conduits.into(),
        routes: routes.into_iter().map(Vec::into_boxed_slice).collect(),
        profiles: profiles.into(),
    })
}

struct Cx<'a> {
    file: &'a str,
    src: &'a str,
    diags: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, error: PolicyError) {
        let (line, column) = locate(self.src, span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            error,
        });
    }

    /// Byte offset of `offset` inside the string value `s`, when the source
    /// holds it verbatim between quotes; otherwise the start of the value.
    fn inner(&self, s: &Spanned<String>, offset: usize) -> Range<usize> {
        let span = s.span();
        let raw = self.src.get(span.clone()).unwrap_or("");
        let verbatim = raw.len() == s.get_ref().len() + 2
            && raw.get(1..raw.len() - 1) == Some(s.get_ref().as_str());
        let at = if verbatim {
            span.start + 1 + offset
        } else {
            span.start
        };
        at..at
    }

    /// An integer in `min..=max`, or `default` when absent (or wrong, after reporting).
    fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        owner: &str,
        key: &'static str,
        (min, max): (i64, i64),
        default: i64,
    ) -> i64 {
        let Some(v) = value else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(
                v.span(),
                PolicyError::OutOfRange {
                    owner: owner.to_owned(),
                    key,
                    value: n,
                    min,
                    max,
                },
            );
            return default;
        }
        n
    }

    /// Registers an id, reporting invalid and duplicate ones.
    fn id(&mut self, kind: &'static str, id: &Spanned<String>, seen: &mut HashMap<String, u16>) {
        let text = id.get_ref();
        if !valid_id(text) {
            self.err(
                id.span(),
                PolicyError::InvalidId {
                    kind,
                    id: text.clone(),
                },
            );
        }
        if seen.contains_key(text) {
            self.err(
                id.span(),
                PolicyError::DuplicateId {
                    kind,
                    id: text.clone(),
                },
            );
        } else if let Ok(i) = u16::try_from(seen.len()) {
            seen.insert(text.clone(), i);
        }
    }

    /// A filter without placeholders (zone namespaces, conduit topics).
    fn plain_filter(&mut self, owner: &str, f: &Spanned<String>) -> Option<TopicFilter> {
        if let Some(at) = f.get_ref().find("${") {
            let name = f
                .get_ref()
                .get(at + 2..)
                .and_then(|r| r.split('}').next())
                .unwrap_or("")
                .to_owned();
            self.err(
                self.inner(f, at),
                PolicyError::PlaceholderNotAllowed {
                    owner: owner.to_owned(),
                    name,
                },
            );
            return None;
        }
        match TopicFilter::new(f.get_ref()) {
            Ok(t) => Some(t),
            Err(error) => {
                self.err(
                    f.span(),
                    PolicyError::InvalidFilter {
                        owner: owner.to_owned(),
                        filter: f.get_ref().clone(),
                        error,
                    },
                );
                None
            }
        }
    }

    fn template(&mut self, owner: &str, f: &Spanned<String>) -> Option<Template> {
        let t = match Template::parse(f.get_ref()) {
            Ok(t) => t,
            Err(TemplateError::Unknown { name, offset }) => {
                self.err(
                    self.inner(f, offset),
                    PolicyError::UnknownPlaceholder {
                        owner: owner.to_owned(),
                        name,
                    },
                );
                return None;
            }
            Err(TemplateError::Unterminated { offset }) => {
                self.err(
                    self.inner(f, offset),
                    PolicyError::UnterminatedPlaceholder {
                        owner: owner.to_owned(),
                    },
                );
                return None;
            }
        };
        Some(t)
    }

    fn list_len(&mut self, owner: &str, key: &'static str, len: usize, span: Range<usize>) -> bool {
        if len == 0 {
            self.err(
                span,
                PolicyError::Empty {
                    owner: owner.to_owned(),
                    key,
                },
            );
            return false;
        }
        if len > MAX_FILTERS_PER_LIST {
            self.err(
                span,
                PolicyError::OutOfRange {
                    owner: owner.to_owned(),
                    key,
                    value: i64::try_from(len).unwrap_or(i64::MAX),
                    min: 1,
                    max: MAX_FILTERS_PER_LIST as i64,
                },
            );
            return false;
        }
        true
    }
}

fn compile_cas(cx: &mut Cx<'_>, defs: &[model::CaDef]) -> (Vec<Ca>, HashMap<String, u16>) {
    let mut index = HashMap::new();
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        cx.id("ca", &def.id, &mut index);
        let id = def.id.get_ref();
        if def.subject.is_none() && def.key_id.is_none() {
            cx.err(
                def.id.span(),
                PolicyError::CaWithoutIdentity { ca: id.clone() },
            );
        }
        let subject = def.subject.as_ref().and_then(|s| {
            let dn = parse_dn(s.get_ref());
            if dn.is_none() {
                cx.err(
                    s.span(),
                    PolicyError::InvalidDn {
                        ca: id.clone(),
                        subject: s.get_ref().clone(),
                    },
                );
            }
            dn
        });
        let key_id = def.key_id.as_ref().and_then(|k| {
            let bytes = parse_hex(k.get_ref()).filter(|b| !b.is_empty());
            if bytes.is_none() {
                cx.err(
                    k.span(),
                    PolicyError::InvalidHex {
                        owner: format!("ca {id:?} key_id"),
                        value: k.get_ref().clone(),
                    },
                );
            }
            bytes.map(Vec::into_boxed_slice)
        });
        out.push(Ca {
            id: id.as_str().into(),
            subject,
            key_id,
        });
    }
    (out, index)
}

fn compile_zones(
    cx: &mut Cx<'_>,
    defs: &[model::ZoneDef],
    cas: &HashMap<String, u16>,
) -> (Vec<Zone>, HashMap<Box<str>, ZoneId>) {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        cx.id("zone", &def.id, &mut seen);
        let id = def.id.get_ref();
        let owner = format!("zone {id:?}");
        let level = cx.int(
            &Some(def.security_level.clone()),
            &owner,
            "security_level",
            (1, 4),
            1,
        );
        let mut trusted = Vec::new();
        for ca in &def.trusted_cas {
            match cas.get(ca.get_ref()) {
                Some(&i) => trusted.push(CaId(i)),
                None => cx.err(
                    ca.span(),
                    PolicyError::UnknownCa {
                        owner: owner.clone(),
                        ca: ca.get_ref().clone(),
                    },
                ),
            }
        }
        let mut namespace = Vec::new();
        let ns = def.namespace.get_ref();
        if cx.list_len(&owner, "namespace", ns.len(), def.namespace.span()) {
            let owner = format!("{owner} namespace");
            namespace.extend(ns.iter().filter_map(|f| cx.plain_filter(&owner, f)));
        }
        out.push(Zone {
            id: id.as_str().into(),
            description: def.description.as_deref().map(Into::into),
            security_level: u8::try_from(level).unwrap_or(1),
            trusted_cas: trusted.into(),
            namespace: namespace.into(),
        });
    }
    let index = seen
        .into_iter()
        .map(|(k, v)| (k.into_boxed_str(), ZoneId(v)))
        .collect();
    (out, index)
}

/// Namespaces of different zones must not overlap, so that every topic has
/// at most one owner.
fn check_overlaps(cx: &mut Cx<'_>, defs: &[model::ZoneDef]) {
    for (j, b) in defs.iter().enumerate() {
        for a in defs.iter().take(j) {
            for fb in b.namespace.get_ref() {
                if let Some(fa) = a
                    .namespace
                    .get_ref()
                    .iter()
                    .find(|fa| topic::intersects(fa.get_ref(), fb.get_ref()))
                {
                    cx.err(
                        fb.span(),
                        PolicyError::OverlappingNamespaces {
                            zone: b.id.get_ref().clone(),
                            filter: fb.get_ref().clone(),
                            other_zone: a.id.get_ref().clone(),
                            other_filter: fa.get_ref().clone(),
                        },
                    );
                }
            }
        }
    }
}

fn compile_conduits(
    cx: &mut Cx<'_>,
    defs: &[model::ConduitDef],
    zones: &HashMap<Box<str>, ZoneId>,
) -> Vec<Conduit> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        cx.id("conduit", &def.id, &mut seen);
        let id = def.id.get_ref();
        let owner = format!("conduit {id:?}");
        let mut zone = |name: &Spanned<String>| match zones.get(name.get_ref().as_str()) {
            Some(&z) => Some(z),
            None => {
                cx.err(
                    name.span(),
                    PolicyError::UnknownZone {
                        owner: owner.clone(),
                        zone: name.get_ref().clone(),
                    },
                );
                None
            }
        };
        let (from, to) = (zone(&def.from), zone(&def.to));
        if from.is_some() && from == to {
            cx.err(
                def.to.span(),
                PolicyError::ConduitToSelf {
                    conduit: id.clone(),
                    zone: def.to.get_ref().clone(),
                },
            );
        }
        let mut topics = Vec::new();
        let list = def.topics.get_ref();
        if cx.list_len(&owner, "topics", list.len(), def.topics.span()) {
            let owner = format!("{owner} topics");
            topics.extend(list.iter().filter_map(|f| cx.plain_filter(&owner, f)));
        }
        let max_qos = cx.int(
            &def.max_qos,
            &owner,
            "max_qos",
            (0, 2),
            DEFAULT_MAX_QOS.into(),
        );
        let max_payload = payload(cx, &def.max_payload, &owner);
        let message_rate = rate(
            cx,
            &owner,
            ("messages_per_second", &def.messages_per_second),
            ("message_burst", &def.message_burst),
            None,
            1,
        );
        let byte_rate = rate(
            cx,
            &owner,
            ("bytes_per_second", &def.bytes_per_second),
            ("byte_burst", &def.byte_burst),
            None,
            max_payload,
        );
        out.push(Conduit {
            id: id.as_str().into(),
            description: def.description.as_deref().map(Into::into),
            from: from.unwrap_or(ZoneId(0)),
            to: to.unwrap_or(ZoneId(0)),
            topics: topics.into(),
            max_qos: u8::try_from(max_qos).unwrap_or(DEFAULT_MAX_QOS),
            max_payload,
            message_rate,
            byte_rate,
        });
    }
    out
}

/// The zone/conduit graph, for "can never match" checks.
///
/// Each check first marks the zones whose namespace intersects the filter
/// (`hits`), so one check costs O(namespace filters + conduits + conduit
/// topics), whatever the number of zones a profile may use.
struct Graph<'a> {
    zones: &'a [Zone],
    conduits: &'a [Conduit],
    /// Conduit ids by their `from` zone.
    routes: &'a [Vec<ConduitId>],
}

impl Graph<'_> {
    /// Per zone: does its namespace intersect `shape`?
    fn hits(&self, shape: &str) -> Vec<bool> {
        self.zones
            .iter()
            .map(|z| z.namespace.iter().any(|f| f.intersects(shape)))
            .collect()
    }

    /// Zones whose namespace a publisher in `z` can write to: its own and
    /// every zone it has a conduit to.
    fn publish_reach(&self, z: ZoneId) -> impl Iterator<Item = ZoneId> + '_ {
        let out = self.routes.get(z.at()).map_or(&[][..], |r| &r[..]);
        std::iter::once(z).chain(
            out.iter()
                .filter_map(|id| self.conduits.get(id.at()).map(|c| c.to)),
        )
    }

    /// With `hits` for a filter: can a publisher in `z` publish a topic it matches?
    fn publishable_from(&self, z: ZoneId, hits: &[bool]) -> bool {
        self.publish_reach(z)
            .any(|t| hits.get(t.at()).copied().unwrap_or(false))
    }

    fn name(&self, z: ZoneId) -> &str {
        self.zones.get(z.at()).map_or("?", |z| &z.id[..])
    }

    fn names(&self, zs: &[ZoneId]) -> String {
        let names: Vec<String> = zs.iter().map(|&z| format!("{:?}", self.name(z))).collect();
        names.join(", ")
    }

    /// Whether `shape` can match a topic that a publisher in one of `zones` may publish.
    fn publishable(&self, zones: &[ZoneId], shape: &str) -> bool {
        let hits = self.hits(shape);
        zones.iter().any(|&z| self.publishable_from(z, &hits))
    }

    /// Whether `shape` can match a topic delivered to a subscriber in one of
    /// `zones` (`member` marks them): published inside such a zone, or
    /// carried into it by a conduit from a zone that can publish it.
    fn deliverable(&self, zones: &[ZoneId], member: &[bool], shape: &str) -> bool {
        let hits = self.hits(shape);
        zones.iter().any(|&z| self.publishable_from(z, &hits))
            || self.conduits.iter().any(|c| {
                member.get(c.to.at()).copied().unwrap_or(false)
                    && c.topics.iter().any(|f| f.intersects(shape))
                    && self.publishable_from(c.from, &hits)
            })
    }
}

/// A conduit from Y carries topics that Y publishes: in Y's namespace, or in
/// the namespace of a zone Y has a conduit to. A filter outside all of them
/// can never match.
fn check_conduit_reach(cx: &mut Cx<'_>, defs: &[model::ConduitDef], g: &Graph<'_>) {
    for (def, c) in defs.iter().zip(g.conduits) {
        for f in def.topics.get_ref() {
            if !g.publishable(&[c.from], f.get_ref()) {
                let reach: Vec<ZoneId> = g.publish_reach(c.from).collect();
                cx.err(
                    f.span(),
                    PolicyError::NeverMatches {
                        owner: format!("conduit {:?} topics", c.id),
                        filter: f.get_ref().clone(),
                        why: format!(
                            "zone {:?} can only publish in the namespaces of zones {}",
                            g.name(c.from),
                            g.names(&reach)
                        ),
                    },
                );
            }
        }
    }
}

fn compile_profiles(
    cx: &mut Cx<'_>,
    defs: &[model::ProfileDef],
    cas: &HashMap<String, u16>,
    zones: &HashMap<Box<str>, ZoneId>,
    graph: Option<&Graph<'_>>,
) -> Vec<Profile> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        cx.id("profile", &def.id, &mut seen);
        out.push(compile_profile(cx, def, cas, zones, graph));
    }
    out
}

fn compile_profile(
    cx: &mut Cx<'_>,
    def: &model::ProfileDef,
    cas: &HashMap<String, u16>,
    zones: &HashMap<Box<str>, ZoneId>,
    graph: Option<&Graph<'_>>,
) -> Profile {
    let id = def.id.get_ref();
    let owner = format!("profile {id:?}");
    let errors_before = cx.diags.len();
    let zone_ref =
        |cx: &mut Cx<'_>, name: &Spanned<String>| match zones.get(name.get_ref().as_str()) {
            Some(&z) => Some(z),
            None => {
                cx.err(
                    name.span(),
                    PolicyError::UnknownZone {
                        owner: owner.clone(),
                        zone: name.get_ref().clone(),
                    },
                );
                None
            }
        };

    // Which certificates.
    let mut issuers = Vec::new();
    for ca in &def.issuers {
        match cas.get(ca.get_ref()) {
            Some(&i) => issuers.push(CaId(i)),
            None => cx.err(
                ca.span(),
                PolicyError::UnknownCa {
                    owner: owner.clone(),
                    ca: ca.get_ref().clone(),
                },
            ),
        }
    }
    let policy_oid = def.policy_oid.as_ref().and_then(|o| oid(cx, &owner, o));
    let mut fingerprints = Vec::new();
    for f in &def.fingerprints {
        match parse_hex(f.get_ref()).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(fp) => fingerprints.push(fp),
            None => cx.err(
                f.span(),
                PolicyError::InvalidFingerprint {
                    owner: owner.clone(),
                    value: f.get_ref().clone(),
                },
            ),
        }
    }

    // Identity mapping.
    let device = *def.device.get_ref();
    let zone = match def.zone.get_ref() {
        ZoneSource::Cn => ZoneRule::Cn,
        ZoneSource::Ou => ZoneRule::Ou,
        ZoneSource::O => ZoneRule::O,
        ZoneSource::SanUri => ZoneRule::SanUri,
        ZoneSource::SanDns => ZoneRule::SanDns,
        ZoneSource::Fixed(name) => ZoneRule::Fixed(zone_ref(cx, name).unwrap_or(ZoneId(0))),
        ZoneSource::PolicyOid(map) => {
            if map.is_empty() {
                cx.err(
                    def.zone.span(),
                    PolicyError::Empty {
                        owner: owner.clone(),
                        key: "zone.policy_oid",
                    },
                );
            }
            let mut rules = Vec::new();
            for (o, z) in map {
                if !valid_oid(o) {
                    cx.err(
                        def.zone.span(),
                        PolicyError::InvalidOid {
                            owner: owner.clone(),
                            oid: o.clone(),
                        },
                    );
                }
                if let Some(z) = zone_ref(cx, z) {
                    rules.push((o.as_str().into(), z));
                }
            }
            ZoneRule::PolicyOid(rules.into())
        }
    };
    let san_uri = pattern(
        cx,
        id,
        "san_uri",
        def.san_uri.as_ref(),
        device == DeviceSource::SanUri,
        matches!(def.zone.get_ref(), ZoneSource::SanUri),
        &def.device,
        &def.zone,
    );
    let san_dns = pattern(
        cx,
        id,
        "san_dns",
        def.san_dns.as_ref(),
        device == DeviceSource::SanDns,
        matches!(def.zone.get_ref(), ZoneSource::SanDns),
        &def.device,
        &def.zone,
    );
    let allowed_zones = def.zones.as_ref().map(|list| {
        list.iter()
            .filter_map(|z| zone_ref(cx, z))
            .collect::<Box<[ZoneId]>>()
    });
    let identity = match &def.identity {
        None => Some(Template::device_only()),
        Some(text) => {
            let owner = format!("{owner} identity");
            let t = cx.template(&owner, text);
            if let Some(t) = &t {
                if t.uses(Var::ClientId) {
                    let at = text.get_ref().find("${client_id}").unwrap_or(0);
                    cx.err(
                        cx.inner(text, at),
                        PolicyError::PlaceholderNotAllowed {
                            owner,
                            name: "client_id".into(),
                        },
                    );
                } else if !t.uses(Var::Device) {
                    cx.err(
                        text.span(),
                        PolicyError::IdentityWithoutDevice {
                            profile: id.clone(),
                            identity: text.get_ref().clone(),
                        },
                    );
                }
            }
            t
        }
    };

    // Rights.
    let publish = rights(cx, &owner, "publish", &def.publish);
    let subscribe = rights(cx, &owner, "subscribe", &def.subscribe);
    let max_qos = cx.int(
        &def.max_qos,
        &owner,
        "max_qos",
        (0, 2),
        DEFAULT_MAX_QOS.into(),
    );
    let max_payload = payload(cx, &def.max_payload, &owner);
    let max_subscriptions = cx.int(
        &def.max_subscriptions,
        &owner,
        "max_subscriptions",
        (0, 65_535),
        DEFAULT_MAX_SUBSCRIPTIONS.into(),
    );
    let messages = rate(
        cx,
        &owner,
        ("messages_per_second", &def.messages_per_second),
        ("message_burst", &def.message_burst),
        Some(DEFAULT_MESSAGES_PER_SECOND),
        1,
    )
    .unwrap_or(Rate {
        per_second: DEFAULT_MESSAGES_PER_SECOND,
        burst: DEFAULT_MESSAGES_PER_SECOND,
    });
    let bytes = rate(
        cx,
        &owner,
        ("bytes_per_second", &def.bytes_per_second),
        ("byte_burst", &def.byte_burst),
        Some(DEFAULT_BYTES_PER_SECOND),
        max_payload,
    )
    .unwrap_or(Rate {
        per_second: DEFAULT_BYTES_PER_SECOND,
        burst: DEFAULT_BYTES_PER_SECOND,
    });
    let listeners = def.listeners.as_ref().map(|l| {
        if l.get_ref().is_empty() {
            cx.err(
                l.span(),
                PolicyError::Empty {
                    owner: owner.clone(),
                    key: "listeners",
                },
            );
        }
        l.get_ref()
            .iter()
            .map(|s| s.get_ref().as_str().into())
            .collect::<Box<[Box<str>]>>()
    });
    let transports = match &def.transports {
        None => TransportSet::DEFAULT,
        Some(list) => {
            if list.get_ref().is_empty() {
                cx.err(
                    list.span(),
                    PolicyError::Empty {
                        owner: owner.clone(),
                        key: "transports",
                    },
                );
            }
            TransportSet::from_list(list.get_ref())
        }
    };

    let profile = Profile {
        id: id.as_str().into(),
        description: def.description.as_deref().map(Into::into),
        issuers: issuers.into(),
        policy_oid,
        fingerprints: fingerprints.into(),
        device,
        zone,
        san_uri,
        san_dns,
        zones: allowed_zones,
        identity: identity.unwrap_or_else(Template::device_only),
        any_client_id: def.danger_allow_any_client_id,
        publish: publish.iter().map(|(t, _)| t.clone()).collect(),
        subscribe: subscribe.iter().map(|(t, _)| t.clone()).collect(),
        limits: Limits {
            max_qos: u8::try_from(max_qos).unwrap_or(DEFAULT_MAX_QOS),
            retain: def.retain,
            max_payload,
            max_subscriptions: u32::try_from(max_subscriptions).unwrap_or(0),
            messages,
            bytes,
        },
        listeners,
        transports,
    };
    // Reach checks on a profile that already has errors would only repeat them.
    if let (Some(g), true) = (graph, cx.diags.len() == errors_before) {
        check_profile_reach(cx, def, &profile, &publish, &subscribe, g);
    }
    profile
}

/// Checks that the profile can place devices somewhere, and that each of its
/// filters can match something its zones can publish or receive.
fn check_profile_reach(
    cx: &mut Cx<'_>,
    def: &model::ProfileDef,
    p: &Profile,
    publish: &[(Template, usize)],
    subscribe: &[(Template, usize)],
    g: &Graph<'_>,
) {
    let candidates: Vec<ZoneId> = match &p.zone {
        ZoneRule::Fixed(z) => vec![*z],
        ZoneRule::PolicyOid(rules) => rules.iter().map(|(_, z)| *z).collect(),
        _ => (0..g.zones.len())
            .filter_map(|i| u16::try_from(i).ok().map(ZoneId))
            .collect(),
    };
    let restricted: Vec<ZoneId> = candidates
        .into_iter()
        .filter(|z| p.zones.as_ref().is_none_or(|allowed| allowed.contains(z)))
        .collect();
    let possible: Vec<ZoneId> = restricted
        .iter()
        .copied()
        .filter(|z| {
            g.zones.get(z.at()).is_some_and(|zone| {
                zone.trusted_cas
                    .iter()
                    .any(|ca| p.issuers.is_empty() || p.issuers.contains(ca))
            })
        })
        .collect();
    let mut member = vec![false; g.zones.len()];
    for z in &possible {
        if let Some(m) = member.get_mut(z.at()) {
            *m = true;
        }
    }
    if possible.is_empty() {
        let why = if restricted.is_empty() {
            "its zone rule and `zones` have no zone in common".to_owned()
        } else if p.issuers.is_empty() {
            format!("zones {} trust no CA", g.names(&restricted))
        } else {
            format!("zones {} trust none of its issuers", g.names(&restricted))
        };
        cx.err(
            def.id.span(),
            PolicyError::NoZone {
                profile: p.id.to_string(),
                why,
            },
        );
        return;
    }
    for (t, i) in publish {
        let Some(src) = def.publish.get(*i) else {
            continue;
        };
        if !g.publishable(&possible, &t.shape()) {
            cx.err(
                src.span(),
                PolicyError::NeverMatches {
                    owner: format!("profile {:?} publish", p.id),
                    filter: t.as_str().to_owned(),
                    why: format!(
                        "it lies outside every namespace that zones {} may publish to",
                        g.names(&possible)
                    ),
                },
            );
        }
    }
    for (t, i) in subscribe {
        let Some(src) = def.subscribe.get(*i) else {
            continue;
        };
        if !g.deliverable(&possible, &member, &t.shape()) {
            cx.err(
                src.span(),
                PolicyError::NeverMatches {
                    owner: format!("profile {:?} subscribe", p.id),
                    filter: t.as_str().to_owned(),
                    why: format!(
                        "no topic it matches is published in or carried into zones {}",
                        g.names(&possible)
                    ),
                },
            );
        }
    }
}

fn rights(
    cx: &mut Cx<'_>,
    owner: &str,
    key: &'static str,
    list: &[Spanned<String>],
) -> Vec<(Template, usize)> {
    let owner = format!("{owner} {key}");
    if list.len() > MAX_FILTERS_PER_LIST {
        cx.list_len(
            &owner,
            key,
            list.len(),
            list.first().map_or(0..0, |f| f.span()),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let Some(t) = cx.template(&owner, f) else {
            continue;
        };
        if let Err(error) = topic::validate_filter(&t.probe()) {
            cx.err(
                f.span(),
                PolicyError::InvalidFilter {
                    owner: owner.clone(),
                    filter: f.get_ref().clone(),
                    error,
                },
            );
            continue;
        }
        out.push((t, i));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn pattern(
    cx: &mut Cx<'_>,
    profile: &str,
    key: &'static str,
    text: Option<&Spanned<String>>,
    for_device: bool,
    for_zone: bool,
    device_span: &Spanned<DeviceSource>,
    zone_span: &Spanned<ZoneSource>,
) -> Option<NamePattern> {
    let Some(text) = text else {
        if for_device {
            cx.err(
                device_span.span(),
                PolicyError::MissingPattern {
                    profile: profile.to_owned(),
                    what: "the device",
                    key,
                },
            );
        } else if for_zone {
            cx.err(
                zone_span.span(),
                PolicyError::MissingPattern {
                    profile: profile.to_owned(),
                    what: "the zone",
                    key,
                },
            );
        }
        return None;
    };
    if !for_device && !for_zone {
        cx.err(
            text.span(),
            PolicyError::UnusedPattern {
                profile: profile.to_owned(),
                key,
            },
        );
        return None;
    }
    let p = match NamePattern::parse(text.get_ref()) {
        Ok(p) => p,
        Err(why) => {
            cx.err(
                text.span(),
                PolicyError::InvalidPattern {
                    owner: format!("profile {profile:?} {key}"),
                    pattern: text.get_ref().clone(),
                    why,
                },
            );
            return None;
        }
    };
    for (needed, capture) in [(for_device, "device"), (for_zone, "zone")] {
        if needed && !p.has_capture(capture) {
            cx.err(
                text.span(),
                PolicyError::PatternLacksCapture {
                    profile: profile.to_owned(),
                    key,
                    pattern: p.as_str().to_owned(),
                    capture,
                },
            );
        }
    }
    Some(p)
}

fn payload(cx: &mut Cx<'_>, value: &Option<Spanned<i64>>, owner: &str) -> usize {
    let max = i64::try_from(MAX_PAYLOAD_LIMIT).unwrap_or(i64::MAX);
    let default = i64::try_from(DEFAULT_MAX_PAYLOAD).unwrap_or(max);
    let n = cx.int(value, owner, "max_payload", (1, max), default);
    usize::try_from(n).unwrap_or(DEFAULT_MAX_PAYLOAD)
}

/// A rate and its burst. Without a rate the burst is an error and the result
/// is `default` (None for conduits: no limit). The burst defaults to one
/// second's worth, and never less than `min_burst` (the largest message).
fn rate(
    cx: &mut Cx<'_>,
    owner: &str,
    (rate_key, rate): (&'static str, &Option<Spanned<i64>>),
    (burst_key, burst): (&'static str, &Option<Spanned<i64>>),
    default: Option<u64>,
    min_burst: usize,
) -> Option<Rate> {
    let min_burst = u64::try_from(min_burst).unwrap_or(u64::MAX);
    let per_second = match rate {
        Some(_) => u64::try_from(cx.int(rate, owner, rate_key, (1, MAX_RATE), 1)).ok()?,
        None => {
            if let Some(b) = burst {
                cx.err(
                    b.span(),
                    PolicyError::Empty {
                        owner: format!("{owner} ({burst_key} is set)"),
                        key: rate_key,
                    },
                );
            }
            let per_second = default?;
            return Some(Rate {
                per_second,
                burst: per_second.max(min_burst),
            });
        }
    };
    let burst = match burst {
        None => per_second.max(min_burst),
        Some(b) => {
            let n = u64::try_from(cx.int(burst, owner, burst_key, (1, MAX_RATE), 1)).ok()?;
            if n < min_burst {
                cx.err(
                    b.span(),
                    PolicyError::BurstBelowPayload {
                        owner: owner.to_owned(),
                        burst_key,
                        burst: *b.get_ref(),
                        max_payload: i64::try_from(min_burst).unwrap_or(i64::MAX),
                    },
                );
            }
            n
        }
    };
    Some(Rate { per_second, burst })
}

fn oid(cx: &mut Cx<'_>, owner: &str, o: &Spanned<String>) -> Option<Box<str>> {
    if valid_oid(o.get_ref()) {
        return Some(o.get_ref().as_str().into());
    }
    cx.err(
        o.span(),
        PolicyError::InvalidOid {
            owner: owner.to_owned(),
            oid: o.get_ref().clone(),
        },
    );
    None
}

/// Ids are also `${zone}` and `${device}` values in topics, so they use a
/// small safe alphabet.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `1.3.6.1.4.1.55555.1`: at least two arcs of decimal digits.
pub(crate) fn valid_oid(oid: &str) -> bool {
    let arcs: Vec<&str> = oid.split('.').collect();
    arcs.len() >= 2
        && arcs
            .iter()
            .all(|a| !a.is_empty() && a.len() <= 20 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// Hex with optional `:` separators (as `openssl` prints fingerprints).
pub(crate) fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [h, l] => Some((hex_val(*h)? << 4) | hex_val(*l)?),
            _ => None,
        })
        .collect()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_oids() {
        assert_eq!(parse_hex("ab:CD:01"), Some(vec![0xab, 0xcd, 0x01]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
        assert!(valid_oid("1.3.6.1.4.1.55555.1"));
        assert!(!valid_oid("1"));
        assert!(!valid_oid("1..3"));
        assert!(!valid_oid("1.x"));
    }

    #[test]
    fn ids() {
        assert!(valid_id("cell-a"));
        assert!(valid_id("plant1.cell_b"));
        assert!(!valid_id(""));
        assert!(!valid_id("cell a"));
        assert!(!valid_id("cell/a"));
        assert!(!valid_id("$cell"));
    }
}
