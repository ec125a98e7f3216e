//! `POST /internal/v1/generate`: the replica's side of the gateway protocol (see
//! `backend::wire`). The gateway already validated the OpenAI request; this admits the
//! forwarded `GenerateRequest` on the model's backend and streams its events back as
//! NDJSON, one flushed line per frame.
//!
//! The response body owns the generations' streams and nothing else does: when the
//! gateway goes away hyper drops the body, which drops the streams, which cancels in the
//! engine.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use tracing::Span;

use super::error::ApiError;
use super::json::ApiJson;
use super::params::MAX_N;
use super::AppState;
use crate::backend::wire::{
    WireFrame, WireRefusal, WireRequest, GENERATE_PATH, NDJSON, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use crate::backend::{BackendError, GenStream, Generation};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(GENERATE_PATH, post(generate))
}

async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<WireRequest>, ApiError>,
) -> Response {
    match admit(&state, &headers, body).await {
        Ok(generations) => ndjson(generations),
        Err(error) => refusal(error),
    }
}

/// Admits the request's `n` samples before the response starts, so a refusal is the
/// response's status.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<ApiJson<WireRequest>, ApiError>,
) -> Result<Vec<Generation>, BackendError> {
    check_protocol(headers)?;
    state.ensure_accepting().map_err(backend_error)?;
    let ApiJson(WireRequest { request, n }) = body.map_err(backend_error)?;
    super::record_request_fields(&request.model, None);
    if !(1..=MAX_N).contains(&n) {
        return Err(BackendError::InvalidRequest {
            message: format!("n must be between 1 and {MAX_N}, got {n}"),
            param: Some("n".into()),
        });
    }
    let backend = state.backend(&request.model).map_err(backend_error)?;
    let generations = backend.generate_n(request, n).await?;
    if generations.len() != n {
        return Err(BackendError::Internal(format!(
            "the backend admitted {} generations for n = {n}",
            generations.len()
        )));
    }
    Ok(generations)
}

/// A gateway speaking another protocol version gets a 400 naming the header (the gateway
/// treats that as the replica's fault and tries another, e.g. mid rolling upgrade).
fn check_protocol(headers: &HeaderMap) -> Result<(), BackendError> {
    let version = headers.get(PROTOCOL_HEADER).map(HeaderValue::as_bytes);
    if version == Some(PROTOCOL_VERSION.as_bytes()) {
        return Ok(());
    }
    let got = version.map_or("none".into(), |v| String::from_utf8_lossy(v).into_owned());
    Err(BackendError::InvalidRequest {
        message: format!(
            "this replica speaks internal protocol version {PROTOCOL_VERSION}, the request \
             asked for {got}: the gateway and the engine run different releases"
        ),
        param: Some(PROTOCOL_HEADER.into()),
    })
}

/// The refusals this handler makes itself (draining, unknown model, bad body), as the
/// backend errors the gateway expects in a refusal body.
fn backend_error(error: ApiError) -> BackendError {
    match error {
        ApiError::Unavailable(reason) => BackendError::Unavailable(reason),
        ApiError::ModelNotFound(model) => BackendError::ModelNotFound(model),
        ApiError::InvalidRequest { message, param } => {
            BackendError::InvalidRequest { message, param }
        }
        other => BackendError::InvalidRequest {
            message: other.to_string(),
            param: None,
        },
    }
}

/// The status `api::error` gives `error`, `Retry-After` when overloaded, and the error
/// itself as the body.
fn refusal(error: BackendError) -> Response {
    if let BackendError::Internal(details) = &error {
        tracing::error!(%details, "internal error admitting a gateway request");
    }
    let status = ApiError::from(error.clone()).status();
    let retry_after = match &error {
        BackendError::Overloaded { retry_after_secs } => Some((*retry_after_secs).max(1)),
        _ => None,
    };
    let mut response = (
        status,
        Json(WireRefusal {
            backend_error: error,
        }),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The admitted response: the `Admitted` frame, then every sample's frames as they come.
fn ndjson(generations: Vec<Generation>) -> Response {
    let prompt_tokens = generations.iter().map(|g| g.prompt_tokens).collect();
    let admitted = stream::iter([WireFrame::Admitted { prompt_tokens }]);
    let samples = stream::select_all(
        generations
            .into_iter()
            .enumerate()
            .map(|(index, generation)| sample_frames(index, generation.events)),
    );
    let mut lines = Box::pin(
        admitted
            .chain(samples)
            .map(|f| Ok::<_, Infallible>(encode(&f))),
    );
    // Re-enter the request's span on every poll, so the backend's logs carry its id.
    let span = Span::current();
    let body = stream::poll_fn(move |cx| {
        let _entered = span.enter();
        lines.as_mut().poll_next(cx)
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(body),
    )
        .into_response()
}

/// One sample's frames. An error ends the sample: its stream is dropped at once.
fn sample_frames(index: usize, events: GenStream) -> BoxStream<'static, WireFrame> {
    stream::unfold(Some(events), move |events| async move {
        let mut events = events?;
        match events.next().await? {
            Ok(event) => Some((WireFrame::Event { index, event }, Some(events))),
            Err(error) => Some((WireFrame::Error { index, error }, None)),
        }
    })
    .boxed()
}

/// One NDJSON line.
fn encode(frame: &WireFrame) -> Bytes {
    let mut line = serde_json::to_vec(frame).unwrap_or_else(|error| {
        let index = match frame {
            WireFrame::Event { index, .. } | WireFrame::Error { index, .. } => *index,
            WireFrame::Admitted { .. } => 0,
        };
        let error = BackendError::Internal(format!("serializing a frame: {error}"));
        serde_json::to_vec(&WireFrame::Error { index, error }).unwrap_or_default()
    });
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
#[path = "internal_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "internal_upstream_tests.rs"]
mod upstream_tests;
