//! Test-only helpers that drive the real `router(...)` in-process with
//! `tower::ServiceExt::oneshot`, over the scripted backend of `backend::testing` (re-exported
//! here). The real model and engine are exercised end to end, over real sockets, in
//! `tests/tests/api.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, AppState};
pub(crate) use crate::backend::testing::*;
use crate::backend::Backend;
pub(crate) const TEST_BODY_LIMIT: usize = 1 << 20;

/// A router over one scripted backend serving `test-model`.
pub(crate) struct TestServer {
    pub backend: Arc<ScriptedBackend>,
    state: AppState,
}

impl TestServer {
    pub(crate) fn new() -> Self {
        Self::with_script(Script::Events(hello_world()))
    }

    pub(crate) fn with_script(script: Script) -> Self {
        let backend = Arc::new(ScriptedBackend::new(script));
        let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        backends.insert(TEST_MODEL.into(), backend.clone());
        TestServer {
            backend,
            state: AppState::new(backends, crate::telemetry::metrics::Metrics::new()),
        }
    }

    /// Shares the `draining` flag and backends with every router of this server.
    pub(crate) fn state(&self) -> AppState {
        self.state.clone()
    }

    pub(crate) fn router(&self) -> Router {
        router(self.state(), TEST_BODY_LIMIT)
    }
}

/// `base` with the top-level fields of `extra` set over it.
pub(crate) fn with_fields(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// A chat request for `test-model` with one user message, `Say hello`, and `extra`'s
/// fields set over it.
pub(crate) fn chat_body(extra: Value) -> Value {
    let base = json!({
        "model": TEST_MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
    });
    with_fields(base, extra)
}

/// A completions request for `test-model` with `prompt` and `extra`'s fields set over it.
pub(crate) fn completion_body(prompt: &str, extra: Value) -> Value {
    with_fields(json!({"model": TEST_MODEL, "prompt": prompt}), extra)
}

/// The `text` of each choice of a completions response, checking that choice `i` has
/// index `i`.
pub(crate) fn choice_texts(body: &Value) -> Vec<&str> {
    let choices = body["choices"].as_array().expect("a choices array");
    choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            assert_eq!(choice["index"], i);
            choice["text"].as_str().expect("a text choice")
        })
        .collect()
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, `Null` when it is not JSON (e.g. SSE).
    pub json: Value,
}

pub(crate) async fn send(router: &Router, request: Request) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes: Bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

pub(crate) fn json_request(path: &str, body: &Value) -> Request {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(crate) async fn post_json(router: &Router, path: &str, body: Value) -> Reply {
    send(router, json_request(path, &body)).await
}

pub(crate) async fn post_raw(
    router: &Router,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut builder = Request::builder().method(Method::POST).uri(path);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    send(router, builder.body(Body::from(body.to_owned())).unwrap()).await
}

/// The `data:` payloads of an SSE body, in order; checks the blank-line framing.
pub(crate) fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!data.contains('\n'), "one data line per event: {event:?}");
            data.to_owned()
        })
        .collect()
}

/// The JSON chunks of an SSE body, asserting it ends with `data: [DONE]`.
pub(crate) fn sse_chunks(body: &str) -> Vec<Value> {
    let mut data = sse_data(body);
    assert_eq!(data.pop().as_deref(), Some("[DONE]"), "{body}");
    data.iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
