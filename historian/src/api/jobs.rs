//! The engine work of each endpoint, run on a blocking thread: parameter
//! parsing, authorization of every named tag (before its existence is
//! checked, so 403 does not reveal which tags exist), catalog lookups and
//! the `crate::query` calls, with the response-size cap and the deadline's
//! cancellation flag checked between tags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;

use crate::api::auth::ClientIdentity;
use crate::api::catalog::{TagInfo, TagQuery};
use crate::api::error::RequestError;
use crate::api::handlers::{deadline_error, Shared};
use crate::api::output::{Output, TagPoints};
use crate::api::params::{
    parse_boundary, parse_interval, parse_mode, parse_summary_types, parse_value_type,
    parse_weighting, Params,
};
use crate::api::token;
use crate::encoding::Timestamp;
use crate::pattern::MAX_PATTERN_LEN;
use crate::query::{self, Interpolation, SourceError};

/// Parameters every stream endpoint takes.
const COMMON: [&str; 3] = ["tag", "format", "time_format"];

/// The context of one query on its blocking thread.
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) identity: ClientIdentity,
    pub(crate) now: Timestamp,
    /// Set when the deadline passed: the answer is no longer wanted.
    pub(crate) cancelled: Arc<AtomicBool>,
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
        let names = self.readable(names)?;
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

    /// The explicit tag names of a request: at least one, at most the
    /// limit, each readable by the client (403). Whether they exist is the
    /// caller's to find out.
    fn readable(&self, names: Vec<String>) -> Result<Vec<String>, RequestError> {
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
        Ok(names)
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

pub(crate) fn latest_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&allowed(&[]))?;
    // Only the names are needed: no catalog lookup (and copy) per tag.
    let names = ctx.readable(names(params))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        ctx.check_cancelled()?;
        let p = match ctx.shared.source.latest(&name) {
            Ok(p) => p,
            Err(SourceError::UnknownTag(_)) => return Err(unknown_tag(&name)),
            Err(e) => return Err(query::QueryError::from(e).into()),
        };
        out.push((name, p));
    }
    Ok(Output::Values(out))
}

pub(crate) fn value_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
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

pub(crate) fn recorded_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
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

pub(crate) fn interpolated_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
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

pub(crate) fn summary_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
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

pub(crate) fn plot_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
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

pub(crate) fn tags_job(ctx: &Ctx, params: &Params) -> Result<Output, RequestError> {
    params.check(&[
        "q",
        "limit",
        "unit",
        "description",
        "value_type",
        "format",
        "time_format",
    ])?;
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
    let mut query = TagQuery::new(pattern);
    if let Some(unit) = params.one("unit")? {
        query = query.unit(unit);
    }
    if let Some(text) = params.one("description")? {
        query = query.description(text);
    }
    let mut types = Vec::new();
    for t in params.all("value_type") {
        types.push(
            parse_value_type(t).map_err(|m| RequestError::bad("bad_parameter", "value_type", m))?,
        );
    }
    query = query.value_types(&types);
    let visible = |name: &str| ctx.shared.access.authorize(&ctx.identity, name);
    Ok(Output::Tags(
        ctx.shared.catalog.search(&query, limit, &visible)?,
    ))
}

pub(crate) fn tag_job(ctx: &Ctx, params: &Params, name: &str) -> Result<Output, RequestError> {
    params.check(&["format", "time_format"])?;
    ctx.authorize(name)?;
    let info = ctx
        .shared
        .catalog
        .tag(name)?
        .ok_or_else(|| unknown_tag(name))?;
    Ok(Output::Tag(info))
}
