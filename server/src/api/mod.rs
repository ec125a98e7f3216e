//! The OpenAI-compatible HTTP API: routers, wire types, validation, SSE and errors.
//!
//! Handlers talk to generation only through `crate::backend::Backend`. OpenAI wire types
//! live in [`types`] and never leave this module; every error becomes HTTP in [`error`].

pub mod error;
pub mod json;
pub mod request_id;
pub mod types;

mod chat;
#[cfg(test)]
mod choices_tests;
mod completions;
mod deadline;
mod generation;
mod health;
mod held;
mod internal;
mod logprobs;
#[cfg(test)]
mod logprobs_tests;
pub mod metrics;
mod models;
mod sampling;
mod stream;
#[cfg(test)]
pub(crate) mod testing;
mod tools;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::{middleware, Extension, Router};

use crate::backend::{served_by_kind, Backend, GenerateRequest, Generation, SERVED_BY_LOCAL};
use error::ApiError;
use json::BodyLimit;
use stream::{sse_response, ChunkFormat};

pub use deadline::DEADLINE_HEADER;

/// Which backend served a response (`local`, `replica:<addr>`, `bedrock`).
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-inferd-backend");

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Model id → the backend that serves it.
    pub backends: Arc<BTreeMap<String, Arc<dyn Backend>>>,
    /// Set on SIGTERM: `/ready` turns 503 and new generation requests get 503.
    pub draining: Arc<AtomicBool>,
    /// Prometheus registry served at `/metrics`.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
}

impl AppState {
    pub fn new(backends: BTreeMap<String, Arc<dyn Backend>>) -> Self {
        AppState {
            backends: Arc::new(backends),
            draining: Arc::new(AtomicBool::new(false)),
            metrics: crate::telemetry::metrics::Metrics::new(),
        }
    }

    /// New generations are refused while draining.
    pub(crate) fn ensure_accepting(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Acquire) {
            Err(ApiError::Unavailable(
                "the server is shutting down and accepts no new requests".into(),
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) fn backend(&self, model: &str) -> Result<Arc<dyn Backend>, ApiError> {
        self.backends
            .get(model)
            .cloned()
            .ok_or_else(|| ApiError::ModelNotFound(model.to_owned()))
    }
}

/// The whole API: per-resource routers merged here, OpenAI-shaped 404/405, the body
/// limit (413 beyond `max_body_bytes`) and the request-id middleware around everything.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(chat::routes())
        .merge(completions::routes())
        .merge(models::routes())
        .merge(health::routes())
        .merge(internal::routes())
        .merge(metrics::routes())
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::UnknownRoute {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

/// Which backend serves admitted generations; counts the request for that backend kind.
fn count_served(state: &AppState, model: &str, generations: &[Generation]) -> String {
    let served = generations
        .first()
        .map_or(SERVED_BY_LOCAL, |g| g.served_by.as_str())
        .to_owned();
    state
        .metrics
        .inc_backend_request(model, served_by_kind(&served));
    served
}

/// `x-inferd-backend` for admitted generations (and the per-backend request count).
fn served_by(
    state: &AppState,
    model: &str,
    generations: &[Generation],
) -> [(HeaderName, HeaderValue); 1] {
    let served = count_served(state, model, generations);
    let value = HeaderValue::from_str(&served).unwrap_or(HeaderValue::from_static("unknown"));
    [(BACKEND_HEADER, value)]
}

/// Admits and answers a streaming request. Refusals become the HTTP status, unless the
/// backend may hold requests (the gateway, see [`held`]) and admission outlasts its
/// keep-alive interval.
async fn respond_streaming<F: ChunkFormat>(
    state: &AppState,
    backend: Arc<dyn Backend>,
    requests: Vec<GenerateRequest>,
    n: usize,
    format: F,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let keepalive = backend.admission_keepalive();
    let mut admission: futures::future::BoxFuture<'static, _> =
        Box::pin(async move { generation::admit(backend.as_ref(), requests, n).await });
    let result = match keepalive {
        None => admission.await,
        Some(interval) => tokio::select! {
            result = &mut admission => result,
            _ = tokio::time::sleep(interval) => {
                return Ok(held::held_response(state.clone(), format, admission, interval));
            }
        },
    };
    let generations = result?;
    let served = served_by(state, &format.meta().model, &generations);
    Ok((served, sse_response(format, generations)).into_response())
}

/// Adds the model and the client's `user` to the request span (and so to its log lines).
fn record_request_fields(model: &str, user: Option<&str>) {
    let span = tracing::Span::current();
    span.record("model", model);
    if let Some(user) = user {
        span.record("user", user);
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Method, StatusCode};

    use super::testing::{send, TestServer};
    use super::*;

    #[tokio::test]
    async fn unknown_path_is_an_openai_404() {
        let server = TestServer::new();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/embeddings")
            .body(Body::empty())
            .unwrap();
        let reply = send(&server.router(), request).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            reply.json["error"]["message"],
            "Invalid URL (POST /v1/embeddings)"
        );
        assert_eq!(reply.json["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn wrong_method_is_an_openai_405_with_allow() {
        let server = TestServer::new();
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/chat/completions")
            .body(Body::empty())
            .unwrap();
        let reply = send(&server.router(), request).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.json["error"]["code"], "method_not_allowed");
        assert_eq!(reply.headers[header::ALLOW], "POST");
        assert!(reply.headers.contains_key("x-request-id"));
    }
}
