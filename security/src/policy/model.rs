//! The policy file as written: serde structs mirroring the TOML, with spans.
//!
//! Nothing is checked here beyond what serde checks (types, unknown keys,
//! enum spellings). Numbers are read as `i64` so that `compile` can report
//! range errors in words of its own. `compile.rs` turns this into a
//! `CompiledPolicy`; docs/SECURITY.md documents every key.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::eval::Transport;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub version: Spanned<i64>,
    #[serde(default, rename = "ca")]
    pub cas: Vec<CaDef>,
    #[serde(default, rename = "zone")]
    pub zones: Vec<ZoneDef>,
    #[serde(default, rename = "conduit")]
    pub conduits: Vec<ConduitDef>,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<ProfileDef>,
}

/// `[[ca]]`: an issuing CA that zones and profiles refer to by id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaDef {
    pub id: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // documentation only
    pub description: Option<String>,
    /// Subject DN of the CA, e.g. `"CN=Plant1 Cell CA, O=ACME"`.
    pub subject: Option<Spanned<String>>,
    /// Subject key identifier of the CA (hex), compared with the leaf's AKI.
    pub key_id: Option<Spanned<String>>,
}

/// `[[zone]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZoneDef {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub security_level: Spanned<i64>,
    #[serde(default)]
    pub trusted_cas: Vec<Spanned<String>>,
    pub namespace: Spanned<Vec<Spanned<String>>>,
}

/// `[[conduit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConduitDef {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub topics: Spanned<Vec<Spanned<String>>>,
    pub max_qos: Option<Spanned<i64>>,
    pub max_payload: Option<Spanned<i64>>,
    pub messages_per_second: Option<Spanned<i64>>,
    pub message_burst: Option<Spanned<i64>>,
    pub bytes_per_second: Option<Spanned<i64>>,
    pub byte_burst: Option<Spanned<i64>>,
}

/// `[[profile]]`: a device profile (per-device certificate policy).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileDef {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,

    // Which certificates the profile applies to.
    #[serde(default)]
    pub issuers: Vec<Spanned<String>>,
    pub policy_oid: Option<Spanned<String>>,
    #[serde(default)]
    pub fingerprints: Vec<Spanned<String>>,

    // Identity mapping.
    pub device: Spanned<DeviceSource>,
    pub zone: Spanned<ZoneSource>,
    pub san_uri: Option<Spanned<String>>,
    pub san_dns: Option<Spanned<String>>,
    pub zones: Option<Vec<Spanned<String>>>,
    pub identity: Option<Spanned<String>>,
    #[serde(default)]
    pub danger_allow_any_client_id: bool,

    // Rights.
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    #[serde(default)]
    pub subscribe: Vec<Spanned<String>>,
    pub max_qos: Option<Spanned<i64>>,
    #[serde(default)]
    pub retain: bool,
    pub max_payload: Option<Spanned<i64>>,
    pub max_subscriptions: Option<Spanned<i64>>,
    pub messages_per_second: Option<Spanned<i64>>,
    pub message_burst: Option<Spanned<i64>>,
    pub bytes_per_second: Option<Spanned<i64>>,
    pub byte_burst: Option<Spanned<i64>>,
    pub listeners: Option<Spanned<Vec<Spanned<String>>>>,
    pub transports: Option<Spanned<Vec<Transport>>>,
}

/// Where the device name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeviceSource {
    Cn,
    Ou,
    O,
    SanUri,
    SanDns,
    Fingerprint,
}

/// Where the zone comes from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ZoneSource {
    Cn,
    Ou,
    O,
    SanUri,
    SanDns,
    /// `zone = { fixed = "scada" }`
    Fixed(Spanned<String>),
    /// `zone = { policy_oid = { "1.3.6.1.4.1.55555.2.1" = "cell-a" } }`
    PolicyOid(BTreeMap<String, Spanned<String>>),
}
