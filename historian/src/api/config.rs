//! `ApiConfig`: the `[historian.api]` section of the server TOML. Every
//! limit a client can push against is here, with its default and reason.
//! Validation that needs more than serde (TLS on public addresses) happens
//! in `serve`, which refuses to start with an error naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::api::error::ApiError;
use crate::pattern::MAX_PATTERN_LEN;
use crate::query::QueryLimits;

/// Largest `deadline_ms` and `handshake_timeout_ms`, one day: longer is a
/// mistake, and deadlines are added to `Instant::now()`, which must not overflow.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Largest `max_connections` and `max_concurrent_queries`: each is a
/// semaphore, and far beyond what one process serves anyway.
pub const MAX_SLOTS: usize = 1 << 20;

/// Configuration of the HTTP query API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ApiConfig {
    /// Whether the server starts the API. Default true.
    pub enabled: bool,
    /// Listen address. Default `127.0.0.1:8080`: plain HTTP is only allowed
    /// on loopback; any other address requires `tls`.
    pub bind: SocketAddr,
    /// TLS with required client certificates; required off loopback.
    pub tls: Option<TlsConfig>,
    /// Longest a query may run, in milliseconds. Default 10,000: a stuck
    /// storage read must not hold a client (or a worker) forever.
    pub deadline_ms: u64,
    /// Most tags one request may name. Default 1,000 (a dashboard's worth).
    pub max_tags_per_request: usize,
    /// Most points (rows, values) one response may carry across all its
    /// tags. Default 1,000,000: bounds the response held in memory.
    pub max_points_per_response: usize,
    /// `max_count` of `recorded` when the request gives none. Default 1,000
    /// (PI Web API's default `maxCount`).
    pub default_max_count: usize,
    /// Most results `GET /api/v1/tags` returns. Default 10,000.
    pub max_search_results: usize,
    /// Queries running at once (each on a blocking thread). Default 16:
    /// queries abandoned at their deadline keep a thread until storage
    /// answers, so this also caps the threads they can pin.
    pub max_concurrent_queries: usize,
    /// Open connections. Default 256 (each costs a task and buffers).
    pub max_connections: usize,
    /// Time for a TLS handshake and for a request's headers, in
    /// milliseconds. Default 10,000: stops slow-loris clients.
    pub handshake_timeout_ms: u64,
    /// Largest POST body, in bytes. Default 1 MiB (a long tag list).
    pub max_body_bytes: usize,
    /// Work caps of one engine call (per tag).
    pub limits: LimitsConfig,
    /// Who may read which tags; deny by default.
    pub clients: Vec<ClientConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            deadline_ms: 10_000,
            max_tags_per_request: 1_000,
            max_points_per_response: 1_000_000,
            default_max_count: 1_000,
            max_search_results: 10_000,
            max_concurrent_queries: 16,
            max_connections: 256,
            handshake_timeout_ms: 10_000,
            max_body_bytes: 1 << 20,
            limits: LimitsConfig::default(),
            // The loopback pseudo-identity may read everything.
            clients: vec![ClientConfig {
                identity: LOCAL_IDENTITY.to_owned(),
                tags: vec!["*".to_owned()],
            }],
        }
    }
}

impl ApiConfig {
    /// The query deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The handshake (and header read) timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// The identity of a client on plain HTTP over loopback.
pub const LOCAL_IDENTITY: &str = "local";

/// Server certificate, key and the CA that signs client certificates.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file of the CA(s) whose client certificates are accepted.
    pub ca_file: PathBuf,
    /// PEM file of the server certificate chain.
    pub cert_file: PathBuf,
    /// PEM file of the server private key.
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// A TLS section from its three files.
    pub fn new(ca_file: PathBuf, cert_file: PathBuf, key_file: PathBuf) -> Self {
        TlsConfig {
            ca_file,
            cert_file,
            key_file,
        }
    }
}

/// The tags one client identity may read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Certificate CN, or `local` for loopback HTTP.
    pub identity: String,
    /// Tag patterns (`*` any run of characters, `?` one character).
    pub tags: Vec<String>,
}

impl ClientConfig {
    /// A rule granting `identity` the tags matching `tags`.
    pub fn new(identity: &str, tags: &[&str]) -> Self {
        ClientConfig {
            identity: identity.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// `QueryLimits` as config keys; see `QueryLimits` for the reasons.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Most points in one `recorded` page (default 150,000).
    pub max_page_points: usize,
    /// Most intervals of one call (default 100,000).
    pub max_intervals: u64,
    /// Most points or rollups one summary or plot reads (default 10,000,000).
    pub max_points_scanned: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let q = QueryLimits::default();
        LimitsConfig {
            max_page_points: q.max_page_points,
            max_intervals: q.max_intervals,
            max_points_scanned: q.max_points_scanned,
        }
    }
}

impl From<LimitsConfig> for QueryLimits {
    fn from(c: LimitsConfig) -> Self {
        QueryLimits {
            max_page_points: c.max_page_points,
            max_intervals: c.max_intervals,
            max_points_scanned: c.max_points_scanned,
        }
    }
}

/// Checks what serde cannot: positive limits, semaphore sizes, client rules.
pub(crate) fn validate(config: &ApiConfig) -> Result<(), ApiError> {
    for (key, value) in [
        ("max_connections", config.max_connections),
        ("max_concurrent_queries", config.max_concurrent_queries),
        ("max_tags_per_request", config.max_tags_per_request),
        ("max_points_per_response", config.max_points_per_response),
        ("default_max_count", config.default_max_count),
        ("max_search_results", config.max_search_results),
        ("max_body_bytes", config.max_body_bytes),
        ("limits.max_page_points", config.limits.max_page_points),
    ] {
        if value == 0 {
            return Err(ApiError::ZeroLimit(key));
        }
    }
    for (key, value) in [
        ("deadline_ms", config.deadline_ms),
        ("handshake_timeout_ms", config.handshake_timeout_ms),
        ("limits.max_intervals", config.limits.max_intervals),
        (
            "limits.max_points_scanned",
            config.limits.max_points_scanned,
        ),
    ] {
        if value == 0 {
            return Err(ApiError::ZeroLimit(key));
        }
    }
    for (key, value) in [
        ("max_connections", config.max_connections),
        ("max_concurrent_queries", config.max_concurrent_queries),
    ] {
        if value > MAX_SLOTS {
            return Err(ApiError::LimitTooLarge {
                key,
                max: MAX_SLOTS,
            });
        }
    }
    for (key, value) in [
        ("deadline_ms", config.deadline_ms),
        ("handshake_timeout_ms", config.handshake_timeout_ms),
    ] {
        if value > MAX_TIMEOUT_MS {
            return Err(ApiError::LimitTooLarge {
                key,
                max: usize::try_from(MAX_TIMEOUT_MS).unwrap_or(usize::MAX),
            });
        }
    }
    for (index, client) in config.clients.iter().enumerate() {
        let bad = |reason: String| ApiError::BadClient { index, reason };
        if client.identity.is_empty() {
            return Err(bad("identity is empty".to_owned()));
        }
        if let Some(p) = client
            .tags
            .iter()
            .find(|p| p.chars().count() > MAX_PATTERN_LEN)
        {
            return Err(bad(format!(
                "tag pattern {:?}... is longer than {MAX_PATTERN_LEN} characters",
                p.chars().take(20).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: ApiConfig = toml::from_str("").unwrap();
        assert_eq!(c, ApiConfig::default());
        let c: ApiConfig = toml::from_str(
            "bind = \"0.0.0.0:8443\"\ndeadline_ms = 5\n[limits]\nmax_intervals = 7\n\
             [[clients]]\nidentity = \"a\"\ntags = [\"plant1/*\"]\n",
        )
        .unwrap();
        assert_eq!(c.deadline_ms, 5);
        assert_eq!(c.limits.max_intervals, 7);
        assert_eq!(c.clients, vec![ClientConfig::new("a", &["plant1/*"])]);
        assert!(toml::from_str::<ApiConfig>("deadline = 5").is_err());
        assert!(validate(&ApiConfig::default()).is_ok());
        let c = ApiConfig {
            max_connections: usize::MAX,
            ..ApiConfig::default()
        };
        assert!(matches!(
            validate(&c),
            Err(ApiError::LimitTooLarge {
                key: "max_connections",
                ..
            })
        ));
        let mut c = ApiConfig::default();
        c.clients.push(ClientConfig::new("", &["*"]));
        assert!(matches!(
            validate(&c),
            Err(ApiError::BadClient { index: 1, .. })
        ));
        let c = ApiConfig {
            deadline_ms: 0,
            ..ApiConfig::default()
        };
        assert_eq!(
            validate(&c).unwrap_err().to_string(),
            "historian.api.deadline_ms must be greater than zero"
        );
    }
}
