//! `ApiJson<T>`: a JSON body extractor whose every failure is an OpenAI-shaped error.
//!
//! axum's own `Json` answers malformed bodies with plain text; clients of an OpenAI API
//! expect `{"error":{…}}`. This extractor checks the content type, reads the body under
//! the router's limit (413 beyond it) and reports serde's message, which carries the
//! field path (e.g. `messages[0].role: unknown variant …`), with `param` set to that path.
//!
//! An over-limit body is drained (bounded in bytes and time) before the 413 goes out:
//! a client still uploading would otherwise get a reset connection ("broken pipe")
//! instead of the error, because closing a socket with unread data resets it.

use std::error::Error as _;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use futures::StreamExt;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// The body-size limit the router was built with (the same as its `DefaultBodyLimit`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimit(pub usize);

/// axum's default, for a router built without [`BodyLimit`].
const FALLBACK_LIMIT: usize = 2 << 20;

/// How much of an over-limit body is read and discarded before answering 413; larger
/// uploads get the 413 at once (and, likely, a reset connection).
const DRAIN_MAX_BYTES: usize = 64 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// A JSON request body; see the module docs.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(req.headers())?;
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(FALLBACK_LIMIT, |limit| limit.0);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit.saturating_add(DRAIN_MAX_BYTES)) {
            return Err(ApiError::PayloadTooLarge { limit: Some(limit) });
        }
        let bytes = read_body(req.into_body(), limit).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// Reads at most `limit` bytes; beyond that, drains what is left (bounded) and fails 413.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::invalid_body(format!("Could not read the request body: {error}"))
        })?;
        if buffer.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(ApiError::PayloadTooLarge { limit: Some(limit) });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

async fn drain(mut stream: BodyDataStream) {
    let discard = async {
        let mut discarded = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            discarded += chunk.len();
            if discarded > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    // Past the deadline the connection is simply closed.
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard).await;
}

/// Accepts `application/json` and `application/<anything>+json`, with parameters.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::invalid_body(
            "Missing Content-Type header; expected `application/json`.",
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = match essence.split_once('/') {
        Some((kind, subtype)) => {
            kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
        }
        None => false,
    };
    if is_json {
        Ok(())
    } else {
        Err(ApiError::invalid_body(format!(
            "Unsupported Content-Type `{}`; expected `application/json`.",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

/// Deserializes a body, turning serde's errors into 400s that name the field.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(rejection_to_error(&rejection)),
    }
}

fn rejection_to_error(rejection: &JsonRejection) -> ApiError {
    // axum wraps serde_path_to_error's error, whose Display is `<path>: <serde message>`.
    let detail = rejection
        .source()
        .map(|source| source.to_string())
        .unwrap_or_else(|| rejection.body_text());
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::InvalidRequest {
            param: param_of(&detail),
            message: detail,
        },
        _ => ApiError::invalid_body(format!(
            "We could not parse the JSON body of your request: {detail}"
        )),
    }
}

/// The field a serde data error is about: the path before `: `, or the name in
/// "missing field `x`" for fields missing at the top level.
fn param_of(detail: &str) -> Option<String> {
    if let Some((path, _)) = detail.split_once(": ") {
        if !path.is_empty() && !path.contains(' ') {
            return Some(path.to_owned());
        }
    }
    let rest = detail.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// `deserialize_with` for a `#[serde(flatten)]` field, so that its errors still name the
/// field: serde hands a flattened struct its fields outside the outer deserializer's path
/// tracking, so without this `temperature: "hot"` would report no path (and no `param`).
/// The message reads as for a plain field: `<path>: <serde message> at line …`.
pub(crate) fn flattened<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::api::testing::{post_json, post_raw, send, TestServer};

    #[test]
    fn param_is_the_serde_path() {
        assert_eq!(
            param_of("messages[0].role: unknown variant `bob`").as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of("missing field `model` at line 1 column 2").as_deref(),
            Some("model")
        );
        assert_eq!(param_of("expected value at line 1 column 1"), None);
    }

    #[test]
    fn content_type_rules() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ];
        for value in ok {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert!(check_content_type(&headers).is_ok(), "{value}");
        }
        let bad = [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ];
        for value in bad {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert!(check_content_type(&headers).is_err(), "{value}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }

    #[tokio::test]
    async fn malformed_json_is_an_openai_400() {
        let server = TestServer::new();
        let reply = post_raw(
            &server.router(),
            "/v1/chat/completions",
            Some("application/json"),
            "{\"model\": ",
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json["error"]["type"], "invalid_request_error");
        assert!(reply.json["error"]["param"].is_null());
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("could not parse the JSON body"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn wrong_types_name_the_field_path() {
        let server = TestServer::new();
        let reply = post_json(
            &server.router(),
            "/v1/chat/completions",
            json!({"model": "test-model", "messages": [{"role": "robot", "content": "hi"}]}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json["error"]["param"], "messages[0].role");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("messages[0].role: unknown variant `robot`"),
            "{message}"
        );

        let reply = post_json(
            &server.router(),
            "/v1/chat/completions",
            json!({"model": "test-model", "messages": [], "temperature": "hot"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json["error"]["param"], "temperature");

        let reply = post_json(
            &server.router(),
            "/v1/chat/completions",
            json!({"messages": []}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json["error"]["param"], "model");
        assert!(reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `model`"));
    }

    /// Type errors in the shared, flattened fields name their path like any other field.
    #[test]
    fn flattened_fields_keep_their_path() {
        use crate::api::types::{ChatCompletionRequest, CompletionRequest};
        let body = br#"{"model": "m", "prompt": "hi", "stream_options": {"include_usage": 1}}"#;
        let error = parse::<CompletionRequest>(body)
            .unwrap_err()
            .envelope()
            .error;
        assert_eq!(error.param.as_deref(), Some("stream_options.include_usage"));
        let expected = "stream_options.include_usage: invalid type: integer `1`";
        assert!(error.message.starts_with(expected), "{}", error.message);

        let body = br#"{"model": "m", "messages": [], "max_tokens": 1.5}"#;
        let error = parse::<ChatCompletionRequest>(body)
            .unwrap_err()
            .envelope()
            .error;
        assert_eq!(error.param.as_deref(), Some("max_tokens"));
        let expected = "max_tokens: invalid type: floating point `1.5`, expected i64";
        assert!(error.message.starts_with(expected), "{}", error.message);
    }

    #[tokio::test]
    async fn missing_or_wrong_content_type_is_an_openai_400() {
        let server = TestServer::new();
        let body = json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
        for content_type in [None, Some("text/plain")] {
            let reply = post_raw(
                &server.router(),
                "/v1/chat/completions",
                content_type,
                &body,
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{content_type:?}");
            assert_eq!(reply.json["error"]["type"], "invalid_request_error");
            assert!(reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"));
        }
    }

    #[tokio::test]
    async fn body_over_the_limit_is_413() {
        let server = TestServer::new();
        let router = crate::api::router(server.state(), 1024);
        let big = "x".repeat(4096);
        let body = json!({"model": "test-model", "messages": [{"role": "user", "content": big}]});
        let reply = post_json(&router, "/v1/chat/completions", body).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.json["error"]["code"], "request_too_large");
        assert!(reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"));
        assert!(reply.headers.contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn an_absurd_content_length_is_refused_without_reading() {
        let server = TestServer::new();
        let request = Request::builder()
            .method("POST")
            .uri("/v1/completions")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (1usize << 40).to_string())
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let reply = send(&server.router(), request).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.json["error"]["code"], "request_too_large");
    }
}
