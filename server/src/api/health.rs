//! `GET /health` (the process is alive) and `GET /ready` (it can take requests now).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::types::Status;
use super::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Ready when not draining, at least one model is served, and every backend is ready.
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.draining.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the server is draining".into()));
    }
    if state.backends.is_empty() {
        return Err(ApiError::Unavailable("no models are loaded".into()));
    }
    if let Some((model, _)) = state.backends.iter().find(|(_, b)| !b.is_ready()) {
        return Err(ApiError::Unavailable(format!(
            "the backend for model `{model}` is not ready"
        )));
    }
    Ok(Json(Status { status: "ok" }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::api::testing::{send, TestServer};

    fn get(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn health_is_ok_even_while_draining() {
        let server = TestServer::new();
        server.state().draining.store(true, Ordering::Release);
        let reply = send(&server.router(), get("/health")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json, json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn ready_follows_draining_and_backends() {
        let server = TestServer::new();
        let reply = send(&server.router(), get("/ready")).await;
        assert_eq!(reply.status, StatusCode::OK);

        server.backend.set_ready(false);
        let reply = send(&server.router(), get("/ready")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.json["error"]["type"], "service_unavailable");
        assert!(reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("test-model"));

        server.backend.set_ready(true);
        server.state().draining.store(true, Ordering::Release);
        let reply = send(&server.router(), get("/ready")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("draining"));
    }
}
