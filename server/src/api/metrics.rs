//! `GET /metrics`: the Prometheus text exposition of `crate::telemetry::metrics`.
//!
//! Served outside the OpenAI surface: no auth, no body, and it stays up while draining
//! so the last scrapes see the drain.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::AppState;
use crate::telemetry::metrics::{Metrics, CONTENT_TYPE};

/// `GET /metrics`, for merging into the API router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// `GET /metrics`: `text/plain; version=0.0.4; charset=utf-8`.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    render(&state.metrics)
}

fn render(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn serves_the_text_exposition() {
        let metrics = Metrics::new();
        metrics.model("m").set_running(2);
        let response = render(&metrics);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("inferd:num_requests_running{model_name=\"m\"} 2\n"),
            "{body}"
        );
        assert!(
            body.contains("# TYPE inferd:prompt_tokens_total counter\n"),
            "{body}"
        );
    }
}
