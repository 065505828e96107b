//! The endpoints. Each handler parses its parameters, then runs the
//! engine work (catalog and storage reads, which block) on a blocking
//! thread under the query deadline, and renders the answer. Every tag a
//! request names passes `Access::authorize` first; a tag the client may not
//! read is 403 whether it exists or not, so existence does not leak.

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
use crate::api::catalog::{Catalog, TagInfo};
use crate::api::error::RequestError;
use crate::api::metrics::ApiMetrics;
use crate::api::output::{negotiate, Output, TagPoints};
use crate::api::params::{
    parse_boundary, parse_interval, parse_mode, parse_summary_types, parse_weighting, Params,
};
use crate::api::pattern::MAX_PATTERN_LEN;
use crate::api::{token, ApiConfig};
use crate::encoding::Timestamp;
use crate::query::{self, Interpolation, QueryLimits, Source};

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
}

/// Parameters every stream endpoint takes.
const COMMON: [&str; 3] = ["tag", "format", "time_format"];

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

/// The context of one query on its blocking thread.
pub(crate) struct Ctx {
    shared: Arc<Shared>,
    identity: ClientIdentity,
    now: Timestamp,
    /// Set when the deadline passed: the answer is no longer wanted.
    cancelled: Arc<AtomicBool>,
}

impl Ctx {
    fn check_cancelled(&self) -> Result<(), RequestError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(deadline_error(&self.shared.config));
        }
        Ok(())
    }

    /// The explicit tags of a request: at least one, at most the limit,
    /// each readable by the client (403) and known (404).
    fn tags(&self, names: Vec<String>) -> Result<Vec<TagInfo>, RequestError> {
        if names.is_empty() {
            return Err(RequestError::bad(
                "missing_parameter",
                "tag",
                "name at least one tag (repeat tag=, or a JSON body {\"tags\": [...]})",
            ));
        }
        let max = self.shared.config.max_tags_per_request;
        if names.len() > max {
            return Err(RequestError::bad(
                "too_many_tags",
                "tag",
                format!("{} tags named, at most {max} per request", names.len()),
            ));
        }
        for name in &names {
            self.authorize(name)?;
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            self.check_cancelled()?;
            let info = self
                .shared
                .catalog
                .tag(&name)?
                .ok_or_else(|| unknown_tag(&name))?;
            out.push(info);
        }
        Ok(out)
    }

    fn authorize(&self, tag: &str) -> Result<(), RequestError> {
        if self.shared.access.authorize(&self.identity, tag) {
            return Ok(());
        }
        tracing::info!(identity = %self.identity, tag, "read denied");
        Err(RequestError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "client {:?} may not read tag {tag:?}",
                self.identity.as_str()
            ),
            parameter: Some("tag".to_owned()),
        })
    }

    /// Keeps a running total of points against `max_points_per_response`.
    fn charge(&self, total: &mut usize, n: usize) -> Result<(), RequestError> {
        *total = total.saturating_add(n);
        let max = self.shared.config.max_points_per_response;
        if *total > max {
            return Err(RequestError::bad(
                "too_many_points",
                "tag",
                format!("the response would hold more than {max} points; ask for fewer tags, a shorter range or fewer intervals"),
            ));
        }
        Ok(())
    }
}

fn unknown_tag(name: &str) -> RequestError {
    RequestError {
        status: StatusCode::NOT_FOUND,
        code: "unknown_tag",
        message: format!("no tag named {name:?}"),
        parameter: Some("tag".to_owned()),
    }
}

fn deadline_error(config: &ApiConfig) -> RequestError {
    RequestError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded",
        format!(
            "the query did not finish within {} ms; ask for less data or try again",
            config.deadline_ms
        ),
    )
}

/// The weighting for `info`: the `weighting` parameter, else the tag's own.
fn weighting(params: &Params, info: &TagInfo) -> Result<Interpolation, RequestError> {
    Ok(params
        .parsed("weighting", parse_weighting)?
        .unwrap_or(if info.step {
            Interpolation::Step
        } else {
            Interpolation::Linear
        }))
}

fn names(params: &Params) -> Vec<String> {
    params.all("tag").map(str::to_owned).collect()
}

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    COMMON.iter().chain(extra).copied().collect()
}

// --- Jobs: the engine work of each endpoint, run on a blocking thread. ---

fn latest_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&[]))?;
    let tags = ctx.tags(names(params))?;
    let mut out = Vec::with_capacity(tags.len());
    for info in tags {
        ctx.check_cancelled()?;
        let p = ctx
            .shared
            .source
            .latest(&info.name)
            .map_err(query::QueryError::from)?;
        out.push((info.name, p));
    }
    Ok(Output::Values(out))
}

fn value_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&["time", "mode", "weighting"]))?;
    let t = params.time("time", "*", ctx.now)?;
    let tags = ctx.tags(names(params))?;
    let mut out = Vec::with_capacity(tags.len());
    for info in tags {
        ctx.check_cancelled()?;
        let w = weighting(params, &info)?;
        let mode = params
            .parsed("mode", |s| parse_mode(s, w))?
            .unwrap_or(query::RetrievalMode::AtOrBefore);
        let p = query::value_at(ctx.shared.source.as_ref(), &info.name, t, mode)?;
        out.push((info.name, p));
    }
    Ok(Output::Values(out))
}

fn recorded_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&[
        "start",
        "end",
        "boundary",
        "max_count",
        "continuation",
        "weighting",
    ]))?;
    let start = params.time("start", "*-1d", ctx.now)?;
    let end = params.time("end", "*", ctx.now)?;
    let max_count = params.parsed("max_count", |s| {
        s.parse::<usize>()
            .map_err(|_| format!("{s:?} is not a count"))
    })?;
    // Continuations replace the tag list: each names the tag it resumes.
    let mut resume = Vec::new();
    for t in params.all("continuation") {
        resume.push(token::decode(t)?);
    }
    let tag_names = if resume.is_empty() {
        names(params)
    } else {
        if params.all("tag").next().is_some() {
            return Err(RequestError::bad(
                "bad_parameter",
                "tag",
                "give either tag or continuation: continuation tokens name their tags",
            ));
        }
        resume.iter().map(|(tag, _)| tag.clone()).collect()
    };
    let tags = ctx.tags(tag_names)?;
    let per_response = ctx.shared.config.max_points_per_response;
    // Without an explicit max_count, pages shrink so the response fits.
    let max_count = max_count.unwrap_or_else(|| {
        let share = per_response / tags.len().max(1);
        ctx.shared.config.default_max_count.min(share).max(1)
    });
    if tags.len().saturating_mul(max_count) > per_response
        && max_count <= ctx.shared.limits.max_page_points
    {
        return Err(RequestError::bad(
            "too_many_points",
            "max_count",
            format!(
                "{} tags × max_count {max_count} exceeds {} points per response; lower max_count and page",
                tags.len(),
                ctx.shared.config.max_points_per_response
            ),
        ));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, info) in tags.into_iter().enumerate() {
        ctx.check_cancelled()?;
        let w = weighting(params, &info)?;
        let boundary = params
            .parsed("boundary", |s| parse_boundary(s, w))?
            .unwrap_or(query::Boundary::Inside);
        let cont = resume.get(i).map(|(_, c)| c);
        let page = query::recorded(
            ctx.shared.source.as_ref(),
            &info.name,
            start,
            end,
            boundary,
            max_count,
            cont,
            &ctx.shared.limits,
        )?;
        let next = page.next.map(|n| token::encode(&info.name, &n));
        out.push(TagPoints {
            tag: info.name,
            points: page.points,
            next,
        });
    }
    Ok(Output::Points(out))
}

fn interpolated_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&["start", "end", "interval", "weighting"]))?;
    let start = params.time("start", "*-1d", ctx.now)?;
    let end = params.time("end", "*", ctx.now)?;
    let interval = params
        .parsed("interval", parse_interval)?
        .unwrap_or(std::time::Duration::from_secs(3_600));
    let tags = ctx.tags(names(params))?;
    let mut out = Vec::with_capacity(tags.len());
    let mut total = 0;
    for info in tags {
        ctx.check_cancelled()?;
        let w = weighting(params, &info)?;
        let points = query::interpolated(
            ctx.shared.source.as_ref(),
            &info.name,
            start,
            end,
            interval,
            w,
            &ctx.shared.limits,
        )?;
        ctx.charge(&mut total, points.len())?;
        out.push(TagPoints {
            tag: info.name,
            points,
            next: None,
        });
    }
    Ok(Output::Points(out))
}

fn summary_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&[
        "start",
        "end",
        "interval",
        "types",
        "weighting",
    ]))?;
    let start = params.time("start", "*-1d", ctx.now)?;
    let end = params.time("end", "*", ctx.now)?;
    let interval = params.parsed("interval", parse_interval)?;
    let mut kinds = parse_summary_types(params.all("types"))
        .map_err(|m| RequestError::bad("bad_parameter", "types", format!("types: {m}")))?;
    if kinds.is_empty() {
        kinds = parse_summary_types(["all"].into_iter()).unwrap_or_default();
    }
    let tags = ctx.tags(names(params))?;
    let mut out = Vec::with_capacity(tags.len());
    let mut total = 0;
    for info in tags {
        ctx.check_cancelled()?;
        let w = weighting(params, &info)?;
        let rows = query::summary(
            ctx.shared.source.as_ref(),
            &info.name,
            start,
            end,
            interval,
            &kinds,
            w,
            &ctx.shared.limits,
        )?;
        ctx.charge(&mut total, rows.len().saturating_mul(kinds.len()))?;
        out.push((info.name, rows));
    }
    Ok(Output::Summary(out))
}

fn plot_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&["start", "end", "intervals"]))?;
    let start = params.time("start", "*-1d", ctx.now)?;
    let end = params.time("end", "*", ctx.now)?;
    let intervals = params
        .parsed("intervals", |s| {
            s.parse::<u32>()
                .map_err(|_| format!("{s:?} is not a pixel count"))
        })?
        .unwrap_or(PLOT_DEFAULT_INTERVALS);
    let tags = ctx.tags(names(params))?;
    let mut out = Vec::with_capacity(tags.len());
    let mut total = 0;
    for info in tags {
        ctx.check_cancelled()?;
        let points = query::plot(
            ctx.shared.source.as_ref(),
            &info.name,
            start,
            end,
            intervals,
            &ctx.shared.limits,
        )?;
        ctx.charge(&mut total, points.len())?;
        out.push(TagPoints {
            tag: info.name,
            points,
            next: None,
        });
    }
    Ok(Output::Points(out))
}

/// PI Web API's default number of plot intervals.
const PLOT_DEFAULT_INTERVALS: u32 = 24;

/// Search results when `limit` is not given.
const DEFAULT_SEARCH_LIMIT: usize = 100;

fn tags_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&["q", "limit", "format", "time_format"])?;
    let pattern = params.one("q")?.unwrap_or("*");
    if pattern.chars().count() > MAX_PATTERN_LEN {
        return Err(RequestError::bad(
            "bad_parameter",
            "q",
            format!("q is longer than {MAX_PATTERN_LEN} characters"),
        ));
    }
    let max = ctx.shared.config.max_search_results;
    let limit = params
        .parsed("limit", |s| {
            s.parse::<usize>()
                .map_err(|_| format!("{s:?} is not a count"))
        })?
        .unwrap_or(DEFAULT_SEARCH_LIMIT.min(max));
    if limit > max {
        return Err(RequestError::bad(
            "bad_parameter",
            "limit",
            format!("limit {limit} is over the maximum of {max}"),
        ));
    }
    let visible = |name: &str| ctx.shared.access.authorize(&ctx.identity, name);
    Ok(Output::Tags(
        ctx.shared.catalog.search(pattern, limit, &visible)?,
    ))
}

fn tag_job(ctx: &Ctx, params: &Params, name: &str) -> Result<Output, RequestError> {
    params.check(&["format", "time_format"])?;
    ctx.authorize(name)?;
    let info = ctx
        .shared
        .catalog
        .tag(name)?
        .ok_or_else(|| unknown_tag(name))?;
    Ok(Output::Tag(info))
}

// --- Axum handlers. ---

type Job = fn(&Ctx, &Params) -> Result<Output, RequestError>;

pub(crate) async fn latest(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::LATEST, req, latest_job).await
}
pub(crate) async fn value(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::VALUE, req, value_job).await
}
pub(crate) async fn recorded(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::RECORDED, req, recorded_job).await
}
pub(crate) async fn interpolated(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::INTERPOLATED, req, interpolated_job).await
}
pub(crate) async fn summary(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::SUMMARY, req, summary_job).await
}
pub(crate) async fn plot(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::PLOT, req, plot_job).await
}
pub(crate) async fn tags(State(s): State<Arc<Shared>>, req: Request) -> Response {
    run(s, endpoint::TAGS, req, tags_job).await
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
        tag_job(ctx, params, &name)
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
    let response = match answer(s, req, job).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    metrics.record(endpoint, response.status().as_u16(), started.elapsed());
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
        job(&ctx, &params)
    });
    let output = match tokio::time::timeout_at(deadline, work).await {
        Err(_) => {
            cancelled.store(true, Ordering::Relaxed);
            return Err(deadline_error(&s.config));
        }
        Ok(Err(join)) => return Err(RequestError::internal(&join)),
        Ok(Ok(result)) => result?,
    };
    Ok(output.render(format, time_format))
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
