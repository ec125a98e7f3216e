//! Request ids and the per-request tracing span.
//!
//! Every request gets an id: the client's `x-request-id` when it is 1–128 visible ASCII
//! characters, a fresh UUID v4 otherwise. The id is stored in the request extensions
//! (extract it with [`RequestId`]), echoed in the `x-request-id` response header (errors
//! included), and carried by the `request` span that wraps the rest of the request, so
//! every log line of the request names it. Streaming bodies re-enter the same span (see
//! `api::stream`). One line is logged per request when its response head is ready.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we accept.
const MAX_LEN: usize = 128;

/// The id of the current request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn generate() -> Self {
        RequestId(uuid::Uuid::new_v4().to_string())
    }

    /// The client's id if it is acceptable: 1–128 visible ASCII characters.
    fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let visible = bytes.iter().all(|b| b.is_ascii_graphic());
        (visible && (1..=MAX_LEN).contains(&bytes.len()))
            .then(|| RequestId(String::from_utf8_lossy(bytes).into_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware always inserts one; a router built without it still works.
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate))
    }
}

/// Probes hit these every few seconds; their log line goes to `debug`.
fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready")
}

/// The request-id middleware; install with `axum::middleware::from_fn(request_id::layer)`.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());

    let path = req.uri().path().to_owned();
    // `model` and `user` are recorded by the generation handlers once the body is parsed.
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %req.method(),
        path = %path,
        model = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut pending = Unanswered {
        span: span.clone(),
        started,
        armed: true,
    };
    let mut response = next.run(req).instrument(span.clone()).await;
    pending.armed = false;

    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    span.in_scope(|| {
        if is_probe(&path) {
            tracing::debug!(status, latency_ms, "request answered");
        } else if status >= 500 {
            tracing::warn!(status, latency_ms, "request answered");
        } else {
            tracing::info!(status, latency_ms, "request answered");
        }
    });

    // Visible ASCII (checked above) or a UUID: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Logs requests whose client left before the response head was ready (the whole
/// handler future is dropped then, e.g. a non-streaming generation).
struct Unanswered {
    span: tracing::Span,
    started: Instant,
    armed: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.armed {
            let latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
            self.span.in_scope(|| {
                tracing::info!(latency_ms, "client went away before the response was ready");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, StatusCode};

    use super::*;
    use crate::api::testing::{send, TestServer};

    fn accepts(raw: &[u8]) -> bool {
        RequestId::from_client(&HeaderValue::from_bytes(raw).unwrap()).is_some()
    }

    #[test]
    fn client_ids_must_be_short_visible_ascii() {
        assert!(accepts(b"abc-123"));
        assert!(accepts("x".repeat(128).as_bytes()));
        assert!(!accepts("x".repeat(129).as_bytes()));
        assert!(!accepts(b""));
        assert!(!accepts(b"has space"));
        assert!(!accepts(b"tab\there"));
        assert!(!accepts("caf\u{e9}".as_bytes()));
    }

    fn get(path: &str, id: Option<&str>) -> Request {
        let mut builder = Request::builder().method(Method::GET).uri(path);
        if let Some(id) = id {
            builder = builder.header(REQUEST_ID_HEADER, id);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn generates_a_uuid_when_absent_or_invalid() {
        let server = TestServer::new();
        for id in [None, Some("bad id with spaces")] {
            let reply = send(&server.router(), get("/health", id)).await;
            assert_eq!(reply.status, StatusCode::OK);
            let echoed = reply.headers[REQUEST_ID_HEADER].to_str().unwrap();
            assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
        }
    }

    #[tokio::test]
    async fn echoes_a_valid_client_id_also_on_errors() {
        let server = TestServer::new();
        let reply = send(&server.router(), get("/health", Some("req-42"))).await;
        assert_eq!(reply.headers[REQUEST_ID_HEADER], "req-42");
        let reply = send(&server.router(), get("/no/such/route", Some("req-43"))).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.headers[REQUEST_ID_HEADER], "req-43");
    }
}
