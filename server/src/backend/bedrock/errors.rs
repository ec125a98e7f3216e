//! SDK errors → `BackendError`, and which of them are worth another attempt.
//!
//! Final mapping (what the client sees once retries are spent):
//! - throttling / quota → 429 `Overloaded` with the response's `Retry-After` (else 1 s),
//!   never retried here: the client should back off, not us on its behalf;
//! - `ValidationException` → 400 carrying Bedrock's message;
//! - access / credential / missing model errors → 502 `Upstream` (a deployment problem);
//! - `ServiceUnavailableException` → 503 `Unavailable`;
//! - timeouts, connection failures, 5xx and the other transient exceptions → retried,
//!   then 502 `Upstream`.
//!
//! Messages are built from Bedrock's error code and message or from the transport error's
//! display: never from the request, its headers or the SDK config (no credentials).

use std::time::Duration;

use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::backend::BackendError;

/// One failed attempt, classified.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    /// What the client gets if this is the last attempt.
    pub error: BackendError,
    /// Worth another attempt (nothing was yielded yet).
    pub retryable: bool,
    /// A short label for logs (`ThrottlingException`, `timeout`, `dispatch`, ...).
    pub kind: String,
}

/// Error codes that mean the deployment (credentials, permissions, model id) is wrong.
const DEPLOYMENT_CODES: &[&str] = &[
    "AccessDeniedException",
    "ResourceNotFoundException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "UnauthorizedException",
];

/// `Retry-After` in whole seconds (at least 1); 1 when absent or not a number.
pub(crate) fn retry_after_secs(header: Option<&str>) -> u64 {
    header
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s.ceil() as u64).max(1))
        .unwrap_or(1)
}

/// A service error (Bedrock answered with an error status) from its code, message, HTTP
/// status and `Retry-After` header.
pub(crate) fn classify_service(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    retry_after: Option<&str>,
) -> Failure {
    let message = message.unwrap_or("no message");
    let kind = code
        .map(str::to_owned)
        .or_else(|| status.map(|s| format!("HTTP {s}")))
        .unwrap_or_else(|| "unknown error".to_owned());
    let upstream = |retryable| Failure {
        error: BackendError::Upstream(format!("Bedrock: {kind}: {message}")),
        retryable,
        kind: kind.clone(),
    };
    let overloaded = || Failure {
        error: BackendError::Overloaded {
            retry_after_secs: retry_after_secs(retry_after),
        },
        retryable: false,
        kind: kind.clone(),
    };
    let unavailable = || Failure {
        error: BackendError::Unavailable(format!("Bedrock: {kind}: {message}")),
        retryable: true,
        kind: kind.clone(),
    };
    let invalid = || Failure {
        error: BackendError::InvalidRequest {
            message: format!("Bedrock rejected the request: {message}"),
            param: None,
        },
        retryable: false,
        kind: kind.clone(),
    };
    match code.unwrap_or("") {
        "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException" => {
            overloaded()
        }
        "ValidationException" => invalid(),
        c if DEPLOYMENT_CODES.contains(&c) => upstream(false),
        "InternalServerException" | "ModelNotReadyException" | "ModelTimeoutException" => {
            upstream(true)
        }
        "ServiceUnavailableException" => unavailable(),
        "ModelErrorException" | "ModelStreamErrorException" => upstream(false),
        _ => match status {
            Some(429) => overloaded(),
            Some(400) => invalid(),
            Some(503) => unavailable(),
            Some(s) if s >= 500 => upstream(true),
            _ => upstream(false),
        },
    }
}

/// An attempt that did not answer within `timeout`.
pub(crate) fn timeout_failure(timeout: Duration) -> Failure {
    Failure {
        error: BackendError::Upstream(format!(
            "Bedrock did not answer within {} ms",
            timeout.as_millis()
        )),
        retryable: true,
        kind: "timeout".into(),
    }
}

/// A failed `send()` of Converse or ConverseStream.
pub(crate) fn classify_sdk<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let context = || DisplayErrorContext(err).to_string();
    match err {
        SdkError::ServiceError(ctx) => classify_service(
            err.code(),
            err.message(),
            Some(ctx.raw().status().as_u16()),
            ctx.raw().headers().get("retry-after"),
        ),
        SdkError::TimeoutError(_) => Failure {
            error: BackendError::Upstream(format!("Bedrock: timeout: {}", context())),
            retryable: true,
            kind: "timeout".into(),
        },
        SdkError::DispatchFailure(ctx) => Failure {
            error: BackendError::Upstream(format!("Bedrock: connection failed: {}", context())),
            retryable: !ctx.is_user(),
            kind: "dispatch".into(),
        },
        SdkError::ResponseError(ctx) => Failure {
            error: BackendError::Upstream(format!("Bedrock: unreadable response: {}", context())),
            retryable: ctx.raw().status().is_server_error(),
            kind: "response".into(),
        },
        _ => Failure {
            error: BackendError::Upstream(format!(
                "Bedrock: the request could not be made: {}",
                context()
            )),
            retryable: false,
            kind: "construction".into(),
        },
    }
}

/// A failure of a ConverseStream after it started: events may have reached the client,
/// so it is never retried; the API turns it into an in-band error event.
pub(crate) fn stream_failure<E, R>(err: &SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(_) => BackendError::Upstream(format!(
            "Bedrock stream failed: {}: {}",
            err.code().unwrap_or("unknown error"),
            err.message().unwrap_or("no message")
        )),
        _ => BackendError::Upstream(format!(
            "Bedrock stream failed: {}",
            DisplayErrorContext(err)
        )),
    }
}

/// The pause before attempt `retry + 2`: 200 ms × 2^retry, capped at 2 s, with jitter
/// (uniform in its upper half) so that callers failing together do not retry together.
pub(crate) fn backoff(retry: u32) -> Duration {
    let base_ms = 200u64.saturating_mul(1u64 << retry.min(10)).min(2000);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    Duration::from_millis((base_ms as f64 * jitter) as u64)
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;
