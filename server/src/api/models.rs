//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::types::{ModelList, ModelObject};
use super::AppState;
use crate::backend::ModelCard;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list))
        // Wildcard: model ids such as `HuggingFaceTB/SmolLM2-135M-Instruct` contain `/`.
        .route("/v1/models/{*id}", get(retrieve))
}

async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .backends
        .keys()
        .filter_map(|id| card(&state, id))
        .map(model_object)
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    card(&state, &id)
        .map(|card| Json(model_object(card)))
        .ok_or(ApiError::ModelNotFound(id))
}

/// The card the backend registered under `id` publishes for it.
fn card(state: &AppState, id: &str) -> Option<ModelCard> {
    let backend = state.backends.get(id)?;
    let card = backend.models().into_iter().find(|card| card.id == id);
    if card.is_none() {
        tracing::warn!(
            model = id,
            "backend does not list a model it is registered for"
        );
    }
    card
}

fn model_object(card: ModelCard) -> ModelObject {
    ModelObject {
        id: card.id,
        object: "model",
        created: card.created,
        owned_by: card.owned_by,
        max_model_len: card.max_model_len,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::api::testing::{send, TestServer};

    fn get(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn lists_every_model() {
        let server = TestServer::new();
        let reply = send(&server.router(), get("/v1/models")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json,
            json!({"object": "list", "data": [{
                "id": "test-model", "object": "model", "created": 1_700_000_000,
                "owned_by": "inferd", "max_model_len": 2048
            }]})
        );
    }

    #[tokio::test]
    async fn retrieves_one_model_or_404() {
        let server = TestServer::new();
        let reply = send(&server.router(), get("/v1/models/test-model")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json["id"], "test-model");
        assert_eq!(reply.json["max_model_len"], 2048);

        let reply = send(&server.router(), get("/v1/models/org/other-model")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json["error"]["code"], "model_not_found");
        assert_eq!(reply.json["error"]["param"], "model");
        assert!(reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("org/other-model"));
    }
}
