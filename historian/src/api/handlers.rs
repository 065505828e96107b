//! The axum handlers: each reads the request (query string, JSON body,
//! identity, output format), runs its endpoint's job (`jobs`) on a blocking
//! thread under the query deadline and a concurrency slot, renders the
//! answer and counts it in the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::api::auth::{Access, ClientIdentity};
use crate::api::catalog::Catalog;
use crate::api::error::RequestError;
use crate::api::jobs::{self, Ctx};
use crate::api::metrics::ApiMetrics;
use crate::api::observe::{PeerAddr, QueryObserver, QueryRecord};
use crate::api::output::{negotiate, Output};
use crate::api::params::Params;
use crate::api::ApiConfig;
use crate::encoding::Timestamp;
use crate::query::{QueryLimits, Source};

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) source: Arc<dyn Source + Send + Sync>,
    pub(crate) catalog: Arc<dyn Catalog + Send + Sync>,
    pub(crate) metrics: Arc<ApiMetrics>,
    pub(crate) access: Access,
    pub(crate) limits: QueryLimits,
    pub(crate) config: ApiConfig,
    /// One permit per query running on a blocking thread.
    pub(crate) query_slots: Arc<Semaphore>,
    /// Told of every answered request (the audit log).
    pub(crate) observer: Option<Arc<dyn QueryObserver>>,
}

/// Endpoint names, as metrics label them.
pub(crate) mod endpoint {
    pub const TAGS: &str = "tags";
    pub const TAG: &str = "tag";
    pub const LATEST: &str = "latest";
    pub const VALUE: &str = "value";
    pub const RECORDED: &str = "recorded";
    pub const INTERPOLATED: &str = "interpolated";
    pub const SUMMARY: &str = "summary";
    pub const PLOT: &str = "plot";
}

pub(crate) fn deadline_error(config: &ApiConfig) -> RequestError {
    RequestError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded",
        format!(
            "the query did not finish within {} ms; ask for less data or try again",
            config.deadline_ms
        ),
    )
}
// --- Axum handlers. ---

type Job = fn(&Ctx, &Params) -> Result<Output, RequestError>;

pub(crate) async fn latest(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::LATEST, req, jobs::latest_job).await
}

pub(crate) async fn value(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::VALUE, req, jobs::value_job).await
}

pub(crate) async fn recorded(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::RECORDED, req, jobs::recorded_job).await
}

pub(crate) async fn interpolated(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::INTERPOLATED, req, jobs::interpolated_job).await
}

pub(crate) async fn summary(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::SUMMARY, req, jobs::summary_job).await
}

pub(crate) async fn plot(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::PLOT, req, jobs::plot_job).await
}

pub(crate) async fn tags(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::TAGS, req, jobs::tags_job).await
}

pub(crate) async fn tag(
    State(s): State<Arc<Shared>>,
    name: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    run_with(s, endpoint::TAG, req, move |ctx, params| {
        // Percent-decoding to something other than UTF-8.
        let Path(name) =
            name.map_err(|e| RequestError::bad("bad_parameter", "name", e.body_text()))?;
        jobs::tag_job(ctx, params, &name)
    })
    .await
}

/// JSON 404 for paths the router does not serve.
pub(crate) async fn not_found() -> Response {
    RequestError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/openapi.json",
    )
    .into_response()
}

/// JSON 405 for a known path with the wrong method.
pub(crate) async fn method_not_allowed() -> Response {
    RequestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint takes GET (and POST for streams)",
    )
    .into_response()
}

async fn run(s: Arc<Shared>, endpoint: &'static str, req: Request, job: Job) -> Response {
    run_with(s, endpoint, req, job).await
}

/// Parses, runs `job` under the deadline, renders and counts.
async fn run_with(
    s: Arc<Shared>,
    endpoint: &'static str,
    req: Request,
    job: impl FnOnce(&Ctx, &Params) -> Result<Output, RequestError> + Send + 'static,
) -> Response {
    let started = Instant::now();
    let metrics = s.metrics.clone();
    let observer = s.observer.clone();
    let asked = observer.as_ref().map(|_| {
        let identity = req
            .extensions()
            .get::<ClientIdentity>()
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default();
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        (identity, peer, req.uri().query().unwrap_or("").to_owned())
    });
    let response = match answer(s, req, job).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    metrics.record(endpoint, status, started.elapsed());
    if let (Some(observer), Some((identity, peer, query))) = (observer, asked) {
        observer.answered(&QueryRecord {
            identity: &identity,
            peer,
            endpoint,
            query: &query,
            status,
        });
    }
    response
}

async fn answer(
    s: Arc<Shared>,
    req: Request,
    job: impl FnOnce(&Ctx, &Params) -> Result<Output, RequestError> + Send + 'static,
) -> Result<Response, RequestError> {
    let deadline = tokio::time::Instant::now() + s.config.deadline();
    let (parts, body) = req.into_parts();
    // Set by the accept loop; a router used without it reads nothing.
    let identity = parts
        .extensions
        .get::<ClientIdentity>()
        .cloned()
        .unwrap_or_else(|| ClientIdentity::new(""));
    let mut params = Params::from_query(parts.uri.query());
    // A body trickled in slowly must not outlive the deadline either.
    let body = tokio::time::timeout_at(deadline, read_body(body, s.config.max_body_bytes))
        .await
        .map_err(|_| {
            RequestError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive within the deadline",
            )
        })??;
    if !body.is_empty() {
        params.add_json(&body)?;
    }
    let headers: HeaderMap = parts.headers;
    let (format, time_format) = negotiate(&params, &headers)?;

    let permit = tokio::time::timeout_at(deadline, s.query_slots.clone().acquire_owned())
        .await
        .map_err(|_| {
            RequestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many queries are running; try again",
            )
        })?
        .map_err(|e| RequestError::internal(&e))?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let ctx = Ctx {
        shared: s.clone(),
        identity,
        now: now(),
        cancelled: cancelled.clone(),
    };
    let work = tokio::task::spawn_blocking(move || {
        // The permit lives as long as the work, even after the deadline.
        let _permit = permit;
        // Encoding a large answer is CPU work too: keep it off the async
        // workers and under the deadline.
        job(&ctx, &params).map(|output| output.render(format, time_format))
    });
    match tokio::time::timeout_at(deadline, work).await {
        Err(_) => {
            cancelled.store(true, Ordering::Relaxed);
            Err(deadline_error(&s.config))
        }
        Ok(Err(join)) => Err(RequestError::internal(&join)),
        Ok(Ok(result)) => result,
    }
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, RequestError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        RequestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes (or could not be read)"),
        )
    })
}

fn now() -> Timestamp {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(us)
}
