//! Request metrics: requests by endpoint and status, latency per
//! endpoint, and refused TLS handshakes by reason. Plain counters behind a std `Mutex` (held for a map update,
//! never across an await), so the broker can export them however it
//! exports the rest; `render` gives the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency of one endpoint's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Sum of their durations, in microseconds.
    pub total_us: u64,
    /// The slowest, in microseconds.
    pub max_us: u64,
}

/// Counters of the query API.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Latency>>,
    handshakes_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl ApiMetrics {
    /// Zeroed counters.
    pub fn new() -> Self {
        ApiMetrics::default()
    }

    /// Counts one request to `endpoint` answered with `status` after `took`.
    pub fn record(&self, endpoint: &'static str, status: u16, took: Duration) {
        // A poisoned lock only means another thread panicked mid-increment;
        // the counts are still usable.
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let n = requests.entry((endpoint, status)).or_default();
        *n = n.saturating_add(1);
        drop(requests);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let l = latency.entry(endpoint).or_default();
        l.count = l.count.saturating_add(1);
        l.total_us = l.total_us.saturating_add(us);
        l.max_us = l.max_us.max(us);
    }

    /// Requests to `endpoint` answered with `status`.
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .iter()
            .filter(|((e, s), _)| *e == endpoint && *s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Counts an HTTPS client refused before any request, by reason.
    pub fn record_handshake_refused(&self, reason: &'static str) {
        let mut refused = self
            .handshakes_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = refused.entry(reason).or_default();
        *n = n.saturating_add(1);
    }

    /// HTTPS clients refused for `reason` (`certificate`, `timeout`, `no_identity`, `other`).
    pub fn handshakes_refused(&self, reason: &str) -> u64 {
        let refused = self
            .handshakes_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refused.get(reason).copied().unwrap_or(0)
    }

    /// Latency of `endpoint`.
    pub fn latency(&self, endpoint: &str) -> Latency {
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        latency.get(endpoint).copied().unwrap_or_default()
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE historian_api_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((endpoint, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "historian_api_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        drop(requests);
        out.push_str("# TYPE historian_api_request_seconds summary\n");
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (endpoint, l) in latency.iter() {
            // Micro-second counts as seconds; f64 is exact to 2^53 µs (285 years).
            let _ = writeln!(
                out,
                "historian_api_request_seconds_sum{{endpoint=\"{endpoint}\"}} {}\n\
                 historian_api_request_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                l.total_us as f64 / 1e6,
                l.count
            );
        }
        drop(latency);
        out.push_str("# TYPE historian_api_tls_handshakes_refused_total counter\n");
        let refused = self
            .handshakes_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (reason, n) in refused.iter() {
            let _ = writeln!(
                out,
                "historian_api_tls_handshakes_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}
