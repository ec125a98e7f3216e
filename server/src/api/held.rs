//! Streaming responses whose admission takes long: the gateway holding a request while
//! GPU replicas scale up from zero.
//!
//! If the backend has chosen by the time its keep-alive interval ends (the default: the
//! hold budget is shorter than the interval), the response is an ordinary stream and
//! `x-inferd-backend` is a header. Otherwise the stream starts with SSE comments
//! (`: waiting for a backend`), one per interval, which keep proxies and clients from
//! timing the connection out; no model output is sent before the backend is chosen.
//! Then a comment `: x-inferd-backend: <backend>` names it (the header is already gone)
//! and the chunks follow; a refusal (e.g. nothing ready and no fallback) becomes an
//! in-band error event and `[DONE]`. Dropping the body (client gone) drops the pending
//! admission, which releases the held request.

use std::time::Duration;

use axum::response::sse::Event;
use axum::response::Response;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::error::ApiError;
use super::stream::{error_event, sse_body, sse_events, ChunkFormat};
use super::AppState;
use crate::backend::Generation;

/// The comment sent while the backend is being chosen.
pub(crate) const WAITING_COMMENT: &str = "waiting for a backend";

type Admission = BoxFuture<'static, Result<Vec<Generation>, ApiError>>;

enum Phase<F> {
    Waiting { admission: Admission, format: F },
    Streaming(BoxStream<'static, Event>),
}

/// The response for a stream whose admission is still pending after one interval.
pub(crate) fn held_response<F: ChunkFormat>(
    state: AppState,
    format: F,
    admission: Admission,
    interval: Duration,
) -> Response {
    let start = Phase::Waiting { admission, format };
    let events = stream::unfold(start, move |phase| {
        let state = state.clone();
        async move {
            match phase {
                Phase::Waiting {
                    mut admission,
                    format,
                } => {
                    tokio::select! {
                        result = &mut admission => Some(admitted(&state, format, result)),
                        _ = tokio::time::sleep(interval) => Some((
                            Event::default().comment(WAITING_COMMENT),
                            Phase::Waiting { admission, format },
                        )),
                    }
                }
                Phase::Streaming(mut events) => {
                    let event = events.next().await?;
                    Some((event, Phase::Streaming(events)))
                }
            }
        }
    });
    sse_body(events)
}

fn admitted<F: ChunkFormat>(
    state: &AppState,
    format: F,
    result: Result<Vec<Generation>, ApiError>,
) -> (Event, Phase<F>) {
    match result {
        Ok(generations) => {
            let served = super::endpoint::count_served(state, &format.meta().model, &generations);
            let comment = Event::default().comment(format!("x-inferd-backend: {served}"));
            (comment, Phase::Streaming(sse_events(format, generations)))
        }
        Err(error) => {
            tracing::warn!(error = %error, "held request refused");
            let done = stream::iter([Event::default().data("[DONE]")]).boxed();
            (error_event(&error), Phase::Streaming(done))
        }
    }
}
