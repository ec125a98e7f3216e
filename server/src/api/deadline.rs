//! The optional `x-inferd-deadline-ms` request header: how long the backend may spend on
//! a generation request (from admission) before giving up with a 504.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use super::error::ApiError;

pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-inferd-deadline-ms");

/// The request's deadline, `None` without the header. A present but invalid header is a
/// 400 naming it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Deadline(pub Option<Duration>);

impl Deadline {
    /// A positive integer number of milliseconds (ASCII digits only).
    fn parse(value: &HeaderValue) -> Result<Duration, ApiError> {
        let millis = value
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&ms| ms > 0);
        millis.map(Duration::from_millis).ok_or_else(|| {
            let shown = String::from_utf8_lossy(value.as_bytes());
            ApiError::invalid(
                DEADLINE_HEADER.as_str(),
                format!(
                    "{DEADLINE_HEADER} must be a positive integer number of milliseconds (at most {}), got {shown:?}",
                    u64::MAX
                ),
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Deadline {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(&DEADLINE_HEADER)
            .map(Deadline::parse)
            .transpose()
            .map(Deadline)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::testing::{
        chat_body, completion_body, delta, json_request, post_json, send, sse_chunks, Reply,
        Script, TestServer,
    };
    use crate::backend::BackendError;

    const CHAT: &str = "/v1/chat/completions";
    const COMPLETIONS: &str = "/v1/completions";

    fn body(path: &str, extra: Value) -> Value {
        if path == CHAT {
            chat_body(extra)
        } else {
            completion_body("hi", extra)
        }
    }

    async fn post_with_deadline(server: &TestServer, path: &str, raw: &str, extra: Value) -> Reply {
        let mut request = json_request(path, &body(path, extra));
        request
            .headers_mut()
            .insert(DEADLINE_HEADER, HeaderValue::from_str(raw).unwrap());
        send(&server.router(), request).await
    }

    #[tokio::test]
    async fn the_header_reaches_the_backend() {
        let server = TestServer::new();
        for path in [CHAT, COMPLETIONS] {
            let reply = post_with_deadline(&server, path, "250", json!({})).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            let reply = post_json(&server.router(), path, body(path, json!({}))).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        }
        let deadlines: Vec<_> = server
            .backend
            .requests()
            .iter()
            .map(|r| r.deadline)
            .collect();
        let some = Some(Duration::from_millis(250));
        assert_eq!(deadlines, [some, None, some, None]);
    }

    #[tokio::test]
    async fn an_invalid_header_is_a_400_naming_it() {
        let server = TestServer::new();
        for path in [CHAT, COMPLETIONS] {
            for raw in ["0", "soon", "-1", "1.5"] {
                let reply = post_with_deadline(&server, path, raw, json!({})).await;
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{raw}");
                let error = &reply.json["error"];
                assert_eq!(error["type"], "invalid_request_error");
                assert_eq!(error["param"], "x-inferd-deadline-ms");
                let message = error["message"].as_str().unwrap();
                assert!(message.contains("x-inferd-deadline-ms"), "{message}");
            }
        }
        assert!(server.backend.requests().is_empty());
    }

    fn assert_deadline_error(error: &Value) {
        assert_eq!(error["type"], "timeout_error", "{error}");
        assert_eq!(error["code"], "deadline_exceeded", "{error}");
        assert_eq!(error["message"], "the deadline of 5ms passed", "{error}");
    }

    #[tokio::test]
    async fn a_passed_deadline_is_a_504_before_the_first_byte() {
        let passed = || BackendError::DeadlineExceeded("the deadline of 5ms passed".into());
        // Refused at admission, streaming or not.
        let server = TestServer::with_script(Script::Refuse(passed()));
        for path in [CHAT, COMPLETIONS] {
            for stream in [false, true] {
                let reply = post_with_deadline(&server, path, "5", json!({"stream": stream})).await;
                assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{path} {stream}");
                assert_deadline_error(&reply.json["error"]);
            }
        }
        // Or while a non-streaming response is collected.
        let server = TestServer::with_script(Script::Events(vec![Ok(delta("Hi")), Err(passed())]));
        for path in [CHAT, COMPLETIONS] {
            let reply = post_with_deadline(&server, path, "5", json!({})).await;
            assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
            assert_deadline_error(&reply.json["error"]);
        }
        // Mid-stream: an error event, then [DONE].
        for path in [CHAT, COMPLETIONS] {
            let reply = post_with_deadline(&server, path, "5", json!({"stream": true})).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            let chunks = sse_chunks(&reply.text);
            assert_deadline_error(&chunks.last().unwrap()["error"]);
        }
    }

    fn parse(raw: &str) -> Result<Duration, ApiError> {
        Deadline::parse(&HeaderValue::from_str(raw).unwrap())
    }

    #[test]
    fn positive_integer_milliseconds() {
        assert_eq!(parse("1").unwrap(), Duration::from_millis(1));
        assert_eq!(parse("2500").unwrap(), Duration::from_millis(2500));
        assert_eq!(
            parse("18446744073709551615").unwrap(),
            Duration::from_millis(u64::MAX)
        );
        for bad in [
            "0",
            "",
            "-5",
            "+5",
            "1.5",
            " 5",
            "5s",
            "soon",
            "18446744073709551616",
        ] {
            let error = parse(bad).unwrap_err();
            let envelope = error.envelope().error;
            assert_eq!(envelope.param.as_deref(), Some("x-inferd-deadline-ms"));
            assert!(envelope.message.contains("x-inferd-deadline-ms"), "{bad}");
            assert!(envelope.message.contains("positive integer"), "{bad}");
        }
    }
}
