//! What can go wrong talking to a tailnet, typed so callers can react (re-read on a
//! precondition failure, back off when rate limited, ...).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `If-Match` did not match: someone else changed the policy first.
    #[error("precondition failed: the policy changed since it was read")]
    PreconditionFailed,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("rate limited{}", .retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request was refused as invalid (HTTP 400), with the API's message.
    #[error("bad request: {message}")]
    BadRequest {
        message: String,
        data: Option<serde_json::Value>,
    },
    /// 5xx, a dropped connection, or a timeout: the tailnet is not answering properly.
    #[error("tailnet unavailable: {0}")]
    Unavailable(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("unexpected response: {0}")]
    Protocol(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// A short label for logs and metrics: the HTTP status where one is implied.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PreconditionFailed => "412",
            Error::NotFound(_) => "404",
            Error::RateLimited { .. } => "429",
            Error::Unauthorized(_) => "401",
            Error::Forbidden(_) => "403",
            Error::BadRequest { .. } => "400",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
        }
    }

    /// Worth trying again later (the request was not, or may not have been, processed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. } | Error::Unavailable(_) | Error::Timeout(_)
        )
    }
}
