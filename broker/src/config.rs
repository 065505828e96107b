//! The server's configuration: TOML in, validated `Config` out.
//!
//! Every key has a default (so `converge serve` runs with no file at all) and is documented in
//! `docs/CONFIG.md`. Unknown keys are refused (serde `deny_unknown_fields`) and every semantic
//! check names the key it rejects, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use converge_historian::api::ApiConfig;
use converge_historian::encoding::{MAX_POINTS_PER_BLOCK, TARGET_POINTS_PER_BLOCK};
use converge_historian::ingest::{Decoder, RuleConfig, Rules};
use serde::Deserialize;

/// Errors from loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, the development PKI and other state live.
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub limits: Limits,
    pub mqtt: MqttConfig,
    pub persistence: Persistence,
    pub metrics: Metrics,
    pub log: Log,
    pub runtime: Runtime,
    pub historian: HistorianConfig,
    pub security: SecurityConfig,
    pub audit: AuditSettings,
}

/// `[audit]`: the tamper-evident audit log (docs/SECURITY.md, "Audit log").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub enabled: bool,
    /// Where the log, its checkpoints and its signing key live; default `<data_dir>/audit`.
    pub dir: Option<PathBuf>,
    /// Events waiting for the writer; past it events are dropped and counted (accepted
    /// connections go to a small overflow list first). Audit writes never block MQTT.
    pub queue_capacity: usize,
    /// A signed checkpoint after this many records ...
    pub checkpoint_every_records: u64,
    /// ... or after this many seconds with new records, whichever comes first.
    pub checkpoint_interval_secs: u64,
    /// One `historian_query` record per answered historian API request (who read what).
    pub historian_queries: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            dir: None,
            queue_capacity: 4096,
            checkpoint_every_records: 1000,
            checkpoint_interval_secs: 60,
            historian_queries: true,
        }
    }
}

/// `[security]`: the certificate policy (zones, conduits, device profiles).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Policy file (docs/SECURITY.md). Without one, certificate clients get the listener rules
    /// only (client id = certificate CN); with one, every CONNECT, PUBLISH, SUBSCRIBE and
    /// delivery is decided by it, default deny. Reloaded on SIGHUP (`converge policy reload`).
    pub policy_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Threads that run connections; 0 = one per CPU core. With 1 the server runs every
    /// connection on one thread in the order their bytes arrive, like a single-threaded broker.
    pub worker_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("converge-data"),
            listeners: Listeners::default(),
            limits: Limits::default(),
            mqtt: MqttConfig::default(),
            persistence: Persistence::default(),
            metrics: Metrics::default(),
            log: Log::default(),
            runtime: Runtime::default(),
            historian: HistorianConfig::default(),
            security: SecurityConfig::default(),
            audit: AuditSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    pub tls: TlsListener,
    pub tcp: TcpListener,
    pub quic: QuicListener,
}

/// MQTT over QUIC (EMQX's mapping, ALPN `mqtt`). Certificates, identity rules and
/// `deny_subscribe` are the TLS listener's, so a device has the same identity and rights on
/// both transports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicListener {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Data streams a client may have open at once besides the control stream (QUIC stream
    /// credit: the client cannot open more).
    pub max_streams_per_connection: u32,
    /// Handshakes being processed at once; an Initial beyond this is dropped (the client
    /// retransmits it).
    pub max_handshakes_in_flight: usize,
    /// New handshakes per second above which clients must first prove their address with a
    /// Retry token (one more round trip, no state on our side until they do). 0: always.
    pub retry_above_handshakes_per_sec: u32,
    /// QUIC PING after this many seconds without anything sent on a connection (capped at half
    /// the QUIC idle timeout, 2 x `mqtt.max_keep_alive_secs`); 0 = never. Keeps a live client's
    /// QUIC idle timeout from ending its connection before the MQTT keep-alive check does; must
    /// be below the clients' own QUIC idle timeout (30 s in quinn, MsQuic and quic-go).
    pub keep_alive_interval_secs: u64,
    /// 0-RTT: a returning client may send its CONNECT in its first flight (one round trip
    /// less). Early data is replayable; only one CONNECT is accepted in it (docs/SECURITY.md).
    pub zero_rtt: bool,
    /// Resumption tickets the server keeps for 0-RTT (each holds a client's certificate chain,
    /// a few KB); oldest first out. 0 = two per `limits.max_connections`.
    pub zero_rtt_tickets: usize,
    /// Kernel receive buffer asked for on the UDP socket (bytes). A reconnect storm delivers
    /// thousands of Initials at once; what overflows the buffer is dropped and those clients
    /// wait out a retransmission timeout that doubles each time (2,000 devices: all back in
    /// 1.5 s with 32 MiB, 8-31 s with 4 MiB; docs/BENCHMARKS.md). The kernel grants at most
    /// `net.core.rmem_max`; the server logs a warning when it got less.
    pub udp_recv_buffer_bytes: usize,
}

/// Bounds of `listeners.quic.udp_recv_buffer_bytes`.
const MIN_UDP_RECV_BUFFER: usize = 64 << 10;
const MAX_UDP_RECV_BUFFER: usize = 1 << 30;

impl Default for QuicListener {
    fn default() -> Self {
        QuicListener {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 14567)),
            max_streams_per_connection: 16,
            max_handshakes_in_flight: 4096,
            retry_above_handshakes_per_sec: 200,
            keep_alive_interval_secs: 10,
            zero_rtt: false,
            zero_rtt_tickets: 0,
            udp_recv_buffer_bytes: 32 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsListener {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// PEM bundle of the CAs that issue device certificates. Empty: the development PKI's CA.
    pub ca_file: Option<PathBuf>,
    /// PEM server certificate chain. Empty: the development PKI's server certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server certificate.
    pub key_file: Option<PathBuf>,
    /// CRLs (PEM, one or more, or one DER CRL) checked on every handshake, TLS and QUIC. Empty:
    /// the development PKI's `crl.pem` when the development CA is in use, else no CRL.
    pub crl_file: Option<PathBuf>,
    /// How often the CRL file is checked for changes (seconds); a change applies to new
    /// handshakes and closes live sessions of newly revoked certificates.
    pub crl_check_interval_secs: u64,
    /// Refuse every certificate once a CRL is past its nextUpdate.
    pub crl_enforce_next_update: bool,
    /// Certificates in a client's chain, its own included; longer chains are refused unparsed.
    pub max_chain_depth: usize,
    /// Total bytes of a client's chain; larger chains are refused unparsed.
    pub max_chain_bytes: usize,
    /// The client identifier must equal the certificate's Common Name (CONNACK 0x85 otherwise).
    pub require_client_id_match: bool,
    /// Subscriptions to these filters are refused (SUBACK 0x80/0x87) on this listener.
    pub deny_subscribe: Vec<String>,
}

impl Default for TlsListener {
    fn default() -> Self {
        TlsListener {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 8883)),
            ca_file: None,
            cert_file: None,
            key_file: None,
            crl_file: None,
            crl_check_interval_secs: 2,
            crl_enforce_next_update: false,
            max_chain_depth: 4,
            max_chain_bytes: 16 * 1024,
            require_client_id_match: true,
            deny_subscribe: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListener {
    /// Plain TCP, for development and conformance testing only. Off by default.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Allow binding to a non-loopback address (plaintext MQTT on the network).
    pub insecure_allow_remote: bool,
    /// Admit clients without a certificate (the only kind this listener has).
    pub allow_anonymous: bool,
    pub deny_subscribe: Vec<String>,
}

impl Default for TcpListener {
    fn default() -> Self {
        TcpListener {
            enabled: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            insecure_allow_remote: false,
            allow_anonymous: false,
            deny_subscribe: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet accepted or sent, fixed header included (bytes). Checked before buffering.
    pub max_packet_size: u32,
    /// Open connections across all listeners; further sockets are closed at accept.
    pub max_connections: usize,
    /// Seconds a new socket may take to complete TLS and send CONNECT.
    pub connect_timeout_secs: u64,
    /// QoS 1/2 messages in flight to one client (our Receive Maximum toward the client is its own).
    pub max_inflight: u16,
    /// Receive Maximum the server advertises: QoS 1/2 PUBLISHes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Messages queued for one client (online: waiting for in-flight room; offline: persistent session).
    pub max_queued_messages: usize,
    /// Longest topic name or filter (bytes).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions_per_client: usize,
    /// Topic aliases a client may use toward the server.
    pub topic_alias_maximum: u16,
    /// Longest client identifier (bytes).
    pub max_client_id_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            max_connections: 10_000,
            connect_timeout_secs: 10,
            max_inflight: 64,
            receive_maximum: 64,
            max_queued_messages: 10_000,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions_per_client: 1000,
            topic_alias_maximum: 64,
            max_client_id_length: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Cap on the client's keep-alive (seconds), returned as Server Keep Alive to MQTT 5 clients.
    pub max_keep_alive_secs: u16,
    /// Cap on the session expiry interval a client may ask for (seconds).
    pub max_session_expiry_secs: u32,
    /// Seconds between `$SYS/` statistics publications; 0 turns them off.
    pub sys_interval_secs: u64,
    pub retain_available: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_keep_alive_secs: 60,
            max_session_expiry_secs: 7 * 24 * 3600,
            sys_interval_secs: 10,
            retain_available: true,
        }
    }
}

/// How durable an acknowledgement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync the write-ahead log once per group commit: survives power loss.
    Fsync,
    /// Leave the write-ahead log in the OS page cache: survives a process crash only.
    Os,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Persistence {
    pub sync: SyncMode,
    /// Largest number of writes merged into one group commit.
    pub max_batch: usize,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            sync: SyncMode::Fsync,
            max_batch: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub enabled: bool,
    /// Prometheus endpoint (`GET /metrics`); loopback unless you mean it.
    pub bind: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[historian]`: what is historized (rules), how it is stored and the HTTP query API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorianConfig {
    /// Whether PUBLISHes are historized at all (the column families exist either way).
    pub enabled: bool,
    /// Topic filter → decoder → tag rules, first match wins. Default: Sparkplug B under
    /// `spBv1.0/#`, the one payload format that describes itself.
    pub rules: Vec<RuleConfig>,
    /// Recent points per tag that are sealed into a compressed block.
    pub seal_threshold: usize,
    /// How often retention is enforced (range deletes of expired data), in seconds.
    pub retention_interval_secs: u64,
    /// Shortest time between two rebirth requests (NCMD) to one Sparkplug edge node.
    pub rebirth_interval_secs: u64,
    /// `[historian.api]`: the HTTP query API.
    pub api: ApiConfig,
}

impl Default for HistorianConfig {
    fn default() -> Self {
        HistorianConfig {
            enabled: true,
            rules: vec![RuleConfig::new("spBv1.0/#", Decoder::Sparkplug)],
            seal_threshold: TARGET_POINTS_PER_BLOCK,
            retention_interval_secs: 3_600,
            rebirth_interval_secs: 10,
            api: ApiConfig::default(),
        }
    }
}

impl HistorianConfig {
    /// The compiled rules; errors name the rule.
    pub fn compile_rules(&self) -> Result<Rules, ConfigError> {
        Rules::compile(self.rules.clone()).map_err(|e| invalid("historian.rules", e.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `tracing` filter, e.g. "info" or "converge_broker=debug". `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_string(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_packet_size < 64
            || l.max_packet_size as usize > crate::mqtt::codec::MAX_REMAINING_LENGTH
        {
            return Err(invalid(
                "limits.max_packet_size",
                "must be between 64 and 268435455",
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if l.connect_timeout_secs == 0 {
            return Err(invalid("limits.connect_timeout_secs", "must be at least 1"));
        }
        if l.max_inflight == 0 {
            return Err(invalid("limits.max_inflight", "must be at least 1"));
        }
        if l.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "must be at least 1"));
        }
        if l.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", "must be at least 1"));
        }
        if l.max_topic_length == 0 || l.max_topic_length > 65_535 {
            return Err(invalid(
                "limits.max_topic_length",
                "must be between 1 and 65535",
            ));
        }
        if l.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "must be at least 1"));
        }
        if l.max_client_id_length == 0 || l.max_client_id_length > 65_535 {
            return Err(invalid(
                "limits.max_client_id_length",
                "must be between 1 and 65535",
            ));
        }
        if self.persistence.max_batch == 0 {
            return Err(invalid("persistence.max_batch", "must be at least 1"));
        }
        if self.mqtt.max_keep_alive_secs == 0 {
            return Err(invalid("mqtt.max_keep_alive_secs", "must be at least 1"));
        }
        let tcp = &self.listeners.tcp;
        if tcp.enabled && !tcp.bind.ip().is_loopback() && !tcp.insecure_allow_remote {
            return Err(invalid(
                "listeners.tcp.bind",
                format!(
                    "{} is not a loopback address; plaintext MQTT off-host needs listeners.tcp.insecure_allow_remote = true",
                    tcp.bind
                ),
            ));
        }
        let quic = &self.listeners.quic;
        if !self.listeners.tls.enabled && !tcp.enabled && !quic.enabled {
            return Err(invalid("listeners", "no listener is enabled"));
        }
        if quic.max_streams_per_connection > 1_000 {
            return Err(invalid(
                "listeners.quic.max_streams_per_connection",
                "must be at most 1000",
            ));
        }
        if quic.max_handshakes_in_flight == 0 {
            return Err(invalid(
                "listeners.quic.max_handshakes_in_flight",
                "must be at least 1",
            ));
        }
        if !(MIN_UDP_RECV_BUFFER..=MAX_UDP_RECV_BUFFER).contains(&quic.udp_recv_buffer_bytes) {
            return Err(invalid(
                "listeners.quic.udp_recv_buffer_bytes",
                "must be between 65536 and 1073741824",
            ));
        }
        if self.audit.enabled && self.audit.queue_capacity == 0 {
            return Err(invalid("audit.queue_capacity", "must be at least 1"));
        }
        if self.audit.enabled && self.audit.checkpoint_every_records == 0 {
            return Err(invalid(
                "audit.checkpoint_every_records",
                "must be at least 1",
            ));
        }
        let h = &self.historian;
        h.compile_rules()?;
        if h.seal_threshold == 0 || h.seal_threshold > MAX_POINTS_PER_BLOCK / 2 {
            return Err(invalid(
                "historian.seal_threshold",
                format!("must be between 1 and {}", MAX_POINTS_PER_BLOCK / 2),
            ));
        }
        if h.retention_interval_secs == 0 {
            return Err(invalid(
                "historian.retention_interval_secs",
                "must be at least 1",
            ));
        }
        if h.enabled && h.api.enabled && h.api.tls.is_none() && !h.api.bind.ip().is_loopback() {
            return Err(invalid(
                "historian.api.bind",
                format!(
                    "{} is not a loopback address; the API off-host needs [historian.api.tls] (HTTPS with client certificates)",
                    h.api.bind
                ),
            ));
        }
        let tls = &self.listeners.tls;
        if tls.crl_check_interval_secs == 0 {
            return Err(invalid(
                "listeners.tls.crl_check_interval_secs",
                "must be at least 1",
            ));
        }
        if tls.max_chain_depth == 0 || tls.max_chain_depth > 16 {
            return Err(invalid(
                "listeners.tls.max_chain_depth",
                "must be between 1 and 16",
            ));
        }
        if !(512..=65_536).contains(&tls.max_chain_bytes) {
            return Err(invalid(
                "listeners.tls.max_chain_bytes",
                "must be between 512 and 65536",
            ));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(invalid(
                "listeners.tls.cert_file",
                "cert_file and key_file must be given together",
            ));
        }
        for (key, list) in [
            ("listeners.tls.deny_subscribe", &tls.deny_subscribe),
            ("listeners.tcp.deny_subscribe", &tcp.deny_subscribe),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|f| !crate::mqtt::topic::valid_topic_filter(f))
            {
                return Err(invalid(key, format!("{bad:?} is not a valid topic filter")));
            }
        }
        Ok(())
    }

    /// Resumption tickets the QUIC listener keeps for 0-RTT (`listeners.quic.zero_rtt_tickets`,
    /// 0 meaning two per possible connection: rustls sends two per handshake).
    pub fn zero_rtt_tickets(&self) -> usize {
        match self.listeners.quic.zero_rtt_tickets {
            0 => self.limits.max_connections.saturating_mul(2),
            n => n,
        }
    }

    /// The development PKI, which is also the plant CA's directory (`converge ca`/`cert`).
    pub fn pki_dir(&self) -> PathBuf {
        converge_security::ca::default_dir(&self.data_dir)
    }

    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.audit
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listeners.tls.bind.port(), 8883);
        assert!(!c.listeners.tcp.enabled);
        assert_eq!(c.persistence.sync, SyncMode::Fsync);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[limits]\nmax_packet_sise = 10\n").unwrap_err();
        assert!(e.to_string().contains("max_packet_sise"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[persistence]\nsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = Config::parse("[limits]\nmax_connections = 0\n").unwrap_err();
        assert!(e.to_string().contains("limits.max_connections"), "{e}");
    }

    #[test]
    fn quic_receive_buffer_is_bounded() {
        assert_eq!(
            Config::parse("")
                .unwrap()
                .listeners
                .quic
                .udp_recv_buffer_bytes,
            32 << 20
        );
        for bad in [0, 65535, (1 << 30) + 1] {
            let e = Config::parse(&format!(
                "[listeners.quic]\nudp_recv_buffer_bytes = {bad}\n"
            ))
            .unwrap_err();
            assert!(
                e.to_string()
                    .contains("listeners.quic.udp_recv_buffer_bytes"),
                "{e}"
            );
        }
        let c = Config::parse("[listeners.quic]\nudp_recv_buffer_bytes = 4194304\n").unwrap();
        assert_eq!(c.listeners.quic.udp_recv_buffer_bytes, 4 << 20);
    }

    #[test]
    fn plaintext_listener_must_stay_on_loopback() {
        let e = Config::parse("[listeners.tcp]\nenabled = true\nbind = \"0.0.0.0:1883\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("listeners.tcp.bind"), "{e}");
        Config::parse(
            "[listeners.tcp]\nenabled = true\nbind = \"0.0.0.0:1883\"\ninsecure_allow_remote = true\n",
        )
        .unwrap();
    }

    #[test]
    fn zero_rtt_is_off_by_default_and_may_be_turned_on() {
        let c = Config::parse("").unwrap();
        assert!(!c.listeners.quic.zero_rtt);
        let c = Config::parse("[listeners.quic]\nzero_rtt = true\n").unwrap();
        assert!(c.listeners.quic.zero_rtt);
        assert_eq!(
            c.zero_rtt_tickets(),
            20_000,
            "two per connection of the limit"
        );
    }

    #[test]
    fn deny_subscribe_filters_are_checked() {
        let e = Config::parse("[listeners.tcp]\ndeny_subscribe = [\"a/#/b\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("listeners.tcp.deny_subscribe"),
            "{e}"
        );
    }
}
