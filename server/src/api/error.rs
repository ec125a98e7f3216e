//! The one place where errors become HTTP responses.
//!
//! Every error the API returns, as a JSON body or as an event inside an SSE stream, has
//! OpenAI's shape: `{"error":{"message":…,"type":…,"param":…|null,"code":…|null}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::backend::BackendError;

/// Everything that can go wrong while serving a request, by HTTP meaning.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request or a value out of range; `param` names the field.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// 400: a known OpenAI feature this server does not implement (yet).
    #[error("`{param}` is not supported yet{detail}")]
    Unsupported { param: String, detail: String },
    /// 404: the requested model is not served here.
    #[error("The model `{0}` does not exist.")]
    ModelNotFound(String),
    /// 404: no such route.
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    /// 405: the route exists but not for this method.
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// 413: the request body is over the configured limit (when known).
    #[error("{}", too_large_message(*.limit))]
    PayloadTooLarge { limit: Option<usize> },
    /// 429: the backend's queue is full.
    #[error("The server is overloaded; retry in {retry_after_secs}s.")]
    Overloaded { retry_after_secs: u64 },
    /// 503: nothing can serve the request now (draining, engine stopped, not ready).
    #[error("{0}")]
    Unavailable(String),
    /// 502: a remote backend (replica, Bedrock) failed and retries did not help. The
    /// message names the backend and what failed; it never holds credentials.
    #[error("{0}")]
    BadGateway(String),
    /// 504: the request's deadline (`x-inferd-deadline-ms`) passed before it finished.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// 500: the details are logged, never returned to the client.
    #[error("internal server error")]
    Internal(String),
}

fn too_large_message(limit: Option<usize>) -> String {
    match limit {
        Some(limit) => format!("The request body is larger than the limit of {limit} bytes."),
        None => "The request body is too large.".to_owned(),
    }
}

/// The JSON envelope of an error, for response bodies and SSE error events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// A 400 about the request as a whole (no single field to blame).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    /// A 400 for a known but unimplemented feature; `detail` is appended to the message.
    pub fn unsupported(param: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Unsupported {
            param: param.into(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::Unsupported { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ModelNotFound(_) | ApiError::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error body. Logs the details of internal errors (which the body
    /// hides), so call it once per error that reaches a client.
    pub fn envelope(&self) -> ErrorEnvelope {
        let (kind, param, code) = match self {
            ApiError::InvalidRequest { param, .. } => {
                ("invalid_request_error", param.clone(), None)
            }
            ApiError::Unsupported { param, .. } => (
                "invalid_request_error",
                Some(param.clone()),
                Some("unsupported_parameter"),
            ),
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model".to_owned()),
                Some("model_not_found"),
            ),
            ApiError::UnknownRoute { .. } => ("invalid_request_error", None, None),
            ApiError::MethodNotAllowed { .. } => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::Overloaded { .. } => ("server_overloaded", None, Some("overloaded")),
            // Not logged here: readiness probes hit this every few seconds while a
            // backend loads or drains, and the request line already records the 503.
            ApiError::Unavailable(_) => ("service_unavailable", None, None),
            ApiError::BadGateway(reason) => {
                tracing::warn!(reason = %reason, "upstream backend failed");
                ("upstream_error", None, Some("bad_gateway"))
            }
            ApiError::DeadlineExceeded(_) => ("timeout_error", None, Some("deadline_exceeded")),
            ApiError::Internal(details) => {
                tracing::error!(details = %details, "internal error");
                ("internal_error", None, None)
            }
        };
        ErrorEnvelope {
            error: ErrorObject {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.envelope())).into_response();
        if let ApiError::Overloaded { retry_after_secs } = self {
            // `Retry-After: 0` invites a stampede; always ask for at least a second.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::ModelNotFound(model) => ApiError::ModelNotFound(model),
            BackendError::InvalidRequest { message, param } => {
                ApiError::InvalidRequest { message, param }
            }
            BackendError::Overloaded { retry_after_secs } => {
                ApiError::Overloaded { retry_after_secs }
            }
            BackendError::Unavailable(reason) => ApiError::Unavailable(reason),
            BackendError::DeadlineExceeded(reason) => ApiError::DeadlineExceeded(reason),
            BackendError::Upstream(reason) => ApiError::BadGateway(reason),
            BackendError::Internal(details) => ApiError::Internal(details),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{json, Value};

    use super::*;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    fn body(message: &str, kind: &str, param: Value, code: Value) -> Value {
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
    }

    #[tokio::test]
    async fn every_variant_has_the_openai_shape() {
        let cases = [
            (
                ApiError::invalid("temperature", "temperature must be between 0 and 2, got 3"),
                StatusCode::BAD_REQUEST,
                body(
                    "temperature must be between 0 and 2, got 3",
                    "invalid_request_error",
                    json!("temperature"),
                    Value::Null,
                ),
            ),
            (
                ApiError::invalid_body("bad json"),
                StatusCode::BAD_REQUEST,
                body(
                    "bad json",
                    "invalid_request_error",
                    Value::Null,
                    Value::Null,
                ),
            ),
            (
                ApiError::unsupported("tools", ""),
                StatusCode::BAD_REQUEST,
                body(
                    "`tools` is not supported yet",
                    "invalid_request_error",
                    json!("tools"),
                    json!("unsupported_parameter"),
                ),
            ),
            (
                ApiError::ModelNotFound("gpt-9".into()),
                StatusCode::NOT_FOUND,
                body(
                    "The model `gpt-9` does not exist.",
                    "invalid_request_error",
                    json!("model"),
                    json!("model_not_found"),
                ),
            ),
            (
                ApiError::UnknownRoute {
                    method: "GET".into(),
                    path: "/nope".into(),
                },
                StatusCode::NOT_FOUND,
                body(
                    "Invalid URL (GET /nope)",
                    "invalid_request_error",
                    Value::Null,
                    Value::Null,
                ),
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "GET".into(),
                    path: "/v1/completions".into(),
                },
                StatusCode::METHOD_NOT_ALLOWED,
                body(
                    "Method GET is not allowed for /v1/completions",
                    "invalid_request_error",
                    Value::Null,
                    json!("method_not_allowed"),
                ),
            ),
            (
                ApiError::PayloadTooLarge { limit: Some(1024) },
                StatusCode::PAYLOAD_TOO_LARGE,
                body(
                    "The request body is larger than the limit of 1024 bytes.",
                    "invalid_request_error",
                    Value::Null,
                    json!("request_too_large"),
                ),
            ),
            (
                ApiError::Unavailable("the server is shutting down".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                body(
                    "the server is shutting down",
                    "service_unavailable",
                    Value::Null,
                    Value::Null,
                ),
            ),
            (
                ApiError::DeadlineExceeded("the request's deadline of 250ms passed".into()),
                StatusCode::GATEWAY_TIMEOUT,
                body(
                    "the request's deadline of 250ms passed",
                    "timeout_error",
                    Value::Null,
                    json!("deadline_exceeded"),
                ),
            ),
            (
                ApiError::Internal("CUDA exploded at layer 7".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                body(
                    "internal server error",
                    "internal_error",
                    Value::Null,
                    Value::Null,
                ),
            ),
        ];
        for (error, status, expected) in cases {
            let (got_status, retry_after, got) = render(error.clone()).await;
            assert_eq!(got_status, status, "{error:?}");
            assert_eq!(got, expected, "{error:?}");
            assert_eq!(retry_after, None, "{error:?}");
        }
    }

    #[tokio::test]
    async fn overloaded_sets_retry_after() {
        let (status, retry_after, got) = render(ApiError::Overloaded {
            retry_after_secs: 3,
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("3"));
        assert_eq!(got["error"]["type"], "server_overloaded");
        assert_eq!(got["error"]["code"], "overloaded");

        let (_, retry_after, _) = render(ApiError::Overloaded {
            retry_after_secs: 0,
        })
        .await;
        assert_eq!(retry_after.as_deref(), Some("1"), "never Retry-After: 0");
    }

    #[test]
    fn backend_errors_map_to_their_http_meaning() {
        let cases = [
            (
                BackendError::ModelNotFound("m".into()),
                StatusCode::NOT_FOUND,
            ),
            (
                BackendError::InvalidRequest {
                    message: "prompt too long".into(),
                    param: Some("messages".into()),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                BackendError::Overloaded {
                    retry_after_secs: 2,
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                BackendError::Unavailable("draining".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                BackendError::DeadlineExceeded("too slow".into()),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                BackendError::Internal("boom".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (backend_error, status) in cases {
            assert_eq!(ApiError::from(backend_error).status(), status);
        }
        let invalid = ApiError::from(BackendError::InvalidRequest {
            message: "prompt too long".into(),
            param: Some("messages".into()),
        });
        assert_eq!(invalid.envelope().error.param.as_deref(), Some("messages"));
        assert_eq!(invalid.envelope().error.message, "prompt too long");
    }
}
