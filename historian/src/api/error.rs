//! Errors of the API layer. `RequestError` is one refused or failed
//! request: a status, a stable code, a message and the parameter at fault,
//! sent as `{ "error": { "code", "message", "parameter" } }`. `ApiError`
//! is why the server could not start or run.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

use crate::api::catalog::CatalogError;
use crate::query::QueryError;

/// Why `serve` could not start or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Plain HTTP off loopback would expose tags without authentication.
    #[error("historian.api.bind = {0} is not a loopback address, so historian.api.tls (ca_file, cert_file, key_file) is required")]
    TlsRequired(std::net::SocketAddr),
    /// A TLS file could not be read or parsed.
    #[error("historian.api.tls.{key} ({path}): {reason}")]
    TlsFile {
        /// The config key (`ca_file`, `cert_file`, `key_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("historian.api.tls: {0}")]
    Tls(String),
    /// A limit that must be positive is zero.
    #[error("historian.api.{0} must be greater than zero")]
    ZeroLimit(&'static str),
    /// A limit is larger than the server can honour.
    #[error("historian.api.{key} must be at most {max}")]
    LimitTooLarge {
        /// The config key.
        key: &'static str,
        /// Its largest accepted value.
        max: usize,
    },
    /// A `[[historian.api.clients]]` entry is unusable.
    #[error("historian.api.clients[{index}]: {reason}")]
    BadClient {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Binding or accepting failed.
    #[error("historian.api.bind: {0}")]
    Io(#[from] std::io::Error),
}

/// One failed request, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `end_before_start`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The request parameter at fault, if one is.
    pub parameter: Option<String>,
}

impl RequestError {
    /// A 400 about `parameter`.
    pub fn bad(code: &'static str, parameter: &str, message: impl Into<String>) -> Self {
        RequestError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            parameter: Some(parameter.to_owned()),
        }
    }

    /// Any status, no parameter.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            status,
            code,
            message: message.into(),
            parameter: None,
        }
    }

    /// The same error, blamed on `parameter`.
    pub fn at(mut self, parameter: &str) -> Self {
        self.parameter = Some(parameter.to_owned());
        self
    }

    /// 500, with the cause logged but not sent (it may name files or keys).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "query failed");
        RequestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the historian failed to answer; see its log",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "parameter": self.parameter,
            }
        })
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<QueryError> for RequestError {
    // docs/API.md Part II §8 gives this mapping.
    fn from(e: QueryError) -> Self {
        let message = e.to_string();
        let (status, code, parameter) = match &e {
            QueryError::EndBeforeStart { .. } => {
                (StatusCode::BAD_REQUEST, "end_before_start", "end")
            }
            QueryError::ZeroInterval => (StatusCode::BAD_REQUEST, "zero_interval", "interval"),
            QueryError::TooManyIntervals { .. } => {
                (StatusCode::BAD_REQUEST, "too_many_intervals", "interval")
            }
            QueryError::ZeroCount => (StatusCode::BAD_REQUEST, "zero_count", "max_count"),
            QueryError::TooManyPoints { .. } => {
                (StatusCode::BAD_REQUEST, "too_many_points", "max_count")
            }
            QueryError::TooManyPointsScanned { .. } => {
                (StatusCode::BAD_REQUEST, "too_many_points_scanned", "start")
            }
            QueryError::WrongValueType { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "wrong_value_type", "tag")
            }
            QueryError::BadContinuation => {
                (StatusCode::BAD_REQUEST, "bad_continuation", "continuation")
            }
            QueryError::UnknownTag(_) => (StatusCode::NOT_FOUND, "unknown_tag", "tag"),
            _ => return RequestError::internal(&e),
        };
        RequestError {
            status,
            code,
            message,
            parameter: Some(parameter.to_owned()),
        }
    }
}

impl From<CatalogError> for RequestError {
    fn from(e: CatalogError) -> Self {
        RequestError::internal(&e)
    }
}
