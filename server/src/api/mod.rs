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
mod endpoint;
mod generation;
mod health;
mod held;
mod internal;
mod logprobs;
#[cfg(test)]
mod logprobs_tests;
pub mod metrics;
mod models;
mod params;
mod stream;
#[cfg(test)]
pub(crate) mod testing;
mod tools;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::{middleware, Extension, Router};

use crate::backend::Backend;
use crate::telemetry::metrics::Metrics;
use error::ApiError;
use json::BodyLimit;

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
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The state of a server over `backends` (both roles and the tests build it here);
    /// not draining.
    pub fn new(backends: BTreeMap<String, Arc<dyn Backend>>, metrics: Arc<Metrics>) -> Self {
        AppState {
            backends: Arc::new(backends),
            draining: Arc::new(AtomicBool::new(false)),
            metrics,
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

/// The whole API: the route groups merged here, OpenAI-shaped 404/405, the body limit
/// (413 beyond `max_body_bytes`) and the request-id middleware around everything.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(public_routes())
        .merge(ops_routes())
        .merge(internal_routes())
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// `/v1/*`: the OpenAI surface clients call (the group that client auth and rate limits
/// belong around).
fn public_routes() -> Router<AppState> {
    Router::new()
        .merge(chat::routes())
        .merge(completions::routes())
        .merge(models::routes())
}

/// `/health`, `/ready` and `/metrics`: probes and scrapes, open while draining.
fn ops_routes() -> Router<AppState> {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
}

/// `/internal/*`: the replica's side of the gateway protocol (`backend::wire`).
fn internal_routes() -> Router<AppState> {
    internal::routes()
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
