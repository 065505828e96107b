//! The historian's HTTP query API for IT applications (axum), following the
//! PI Web API streams calls; docs/API.md documents it for users.
//!
//! * `config` — `ApiConfig`, the `[historian.api]` section.
//! * `serve` — the accept loop: plain HTTP on loopback, else HTTPS with
//!   client certificates; connection cap, handshake timeout, shutdown.
//! * `handlers` — axum plumbing: body, identity, deadline, metrics.
//! * `jobs` — one job per endpoint, run on a blocking thread (storage reads
//!   block): parameters, authorization, engine calls.
//! * `params`, `token`, `output` — parameters in, continuation tokens, JSON
//!   and CSV out.
//! * `auth` — `Access::authorize`, the one place a read is allowed.
//! * `catalog` — the `Catalog` trait storage implements for search and metadata.
//! * `pattern` — the `*`/`?` glob shared by search and authorization.
//! * `metrics` — counters by endpoint and status, latency.
//!
//! Query semantics live in `crate::query`; this layer only maps HTTP to it.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod auth;
mod catalog;
mod config;
mod error;
mod handlers;
mod jobs;
mod metrics;
mod observe;
mod output;
mod params;
mod points_json;
mod serve;
mod token;

use std::sync::Arc;

use axum::handler::Handler;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tokio::sync::Semaphore;

pub use crate::pattern::{matches as pattern_matches, MAX_PATTERN_LEN};
pub use auth::{Access, ClientIdentity};
pub use catalog::{Catalog, CatalogError, MemCatalog, TagInfo, TagQuery};
pub use config::{ApiConfig, ClientConfig, LimitsConfig, TlsConfig, LOCAL_IDENTITY};
pub use error::{ApiError, RequestError};
pub use metrics::{ApiMetrics, Latency};
pub use observe::{QueryObserver, QueryRecord};
pub use output::CONTINUATION_HEADER;
pub use serve::{prepare, serve, serve_on, Prepared};

use crate::query::Source;

/// The OpenAPI 3.0 description of every route `router` serves.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every path the router serves, for the OpenAPI completeness test.
pub const ROUTES: [&str; 10] = [
    "/api/openapi.json",
    "/api/v1/tags",
    "/api/v1/tags/{name}",
    "/api/v1/streams/latest",
    "/api/v1/streams/value",
    "/api/v1/streams/recorded",
    "/api/v1/streams/interpolated",
    "/api/v1/streams/summary",
    "/api/v1/streams/plot",
    "/api/v1/metrics",
];

/// What the API reads: storage's `Source` and `Catalog`, plus the metrics
/// it updates.
#[derive(Clone)]
pub struct ApiState {
    source: Arc<dyn Source + Send + Sync>,
    catalog: Arc<dyn Catalog + Send + Sync>,
    metrics: Arc<ApiMetrics>,
    observer: Option<Arc<dyn QueryObserver>>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl ApiState {
    /// State over `source` and `catalog`, with fresh metrics.
    pub fn new(
        source: Arc<dyn Source + Send + Sync>,
        catalog: Arc<dyn Catalog + Send + Sync>,
    ) -> Self {
        ApiState {
            source,
            catalog,
            metrics: Arc::new(ApiMetrics::new()),
            observer: None,
            client_verifier: None,
        }
    }

    /// Over HTTPS, checks client certificates with `verifier` instead of one built from
    /// `tls.ca_file` alone: the server passes the MQTT listeners' verifier (CRLs, RFC 5280
    /// end-entity rules) when both trust the same CA file.
    pub fn with_client_verifier(
        mut self,
        verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Self {
        self.client_verifier = Some(verifier);
        self
    }

    /// Reports every answered request to `observer` (the server's audit log).
    pub fn with_observer(mut self, observer: Arc<dyn QueryObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Use `metrics` (shared with the server's exporter) instead.
    pub fn with_metrics(mut self, metrics: Arc<ApiMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this state updates.
    pub fn metrics(&self) -> &Arc<ApiMetrics> {
        &self.metrics
    }
}

/// The axum router. Requests must carry a `ClientIdentity` extension (the
/// accept loop in `serve` adds it); without one nothing is readable.
pub fn router(config: &ApiConfig, state: ApiState) -> Result<Router, ApiError> {
    config::validate(config)?;
    let shared = Arc::new(handlers::Shared {
        source: state.source,
        catalog: state.catalog,
        metrics: state.metrics.clone(),
        access: Access::compile(&config.clients),
        limits: config.limits.into(),
        config: config.clone(),
        query_slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
        observer: state.observer,
    });
    let metrics = state.metrics;
    Ok(Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/tags", get(handlers::tags))
        .route("/api/v1/tags/{*name}", get(handlers::tag))
        .route("/api/v1/streams/latest", stream(handlers::latest))
        .route("/api/v1/streams/value", stream(handlers::value))
        .route("/api/v1/streams/recorded", stream(handlers::recorded))
        .route(
            "/api/v1/streams/interpolated",
            stream(handlers::interpolated),
        )
        .route("/api/v1/streams/summary", stream(handlers::summary))
        .route("/api/v1/streams/plot", stream(handlers::plot))
        .route(
            "/api/v1/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // The handlers read the body themselves, with their own cap.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared))
}

/// GET and POST (a JSON body for long tag lists) to one handler.
fn stream<H, T>(h: H) -> MethodRouter<Arc<handlers::Shared>>
where
    H: Handler<T, Arc<handlers::Shared>> + Clone,
    T: 'static,
{
    get(h.clone()).post(h)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ROUTES;

    /// Every `.route(` in `router` is in `ROUTES` (which the OpenAPI test
    /// checks against openapi.json), so a new route cannot go undocumented.
    #[test]
    fn routes_lists_every_route() {
        let source = include_str!("mod.rs");
        let body = source.split("pub fn router(").nth(1).unwrap();
        let body = body.split("\n}\n").next().unwrap();
        let mut served: Vec<String> = body
            .split(".route(")
            .skip(1)
            .map(|r| r.split('"').nth(1).unwrap().replace("{*name}", "{name}"))
            .collect();
        served.sort();
        let mut listed: Vec<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
        listed.sort();
        assert_eq!(served, listed);
    }
}
