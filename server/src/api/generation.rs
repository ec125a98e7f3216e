//! Plumbing shared by the generation handlers: admission and non-streaming collection.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use futures::StreamExt;

use super::error::ApiError;
use crate::backend::{Backend, FinishReason, GenEvent, GenerateRequest, Generation, Usage};

/// Unix seconds, for the `created` field of responses.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Admits every choice before the response starts, so that refusals (429, 400 prompt too
/// long, 503) become the HTTP status. Choices are admitted concurrently; if one is
/// refused the others are dropped, which releases them in the backend.
pub(crate) async fn admit(
    backend: &dyn Backend,
    requests: Vec<GenerateRequest>,
) -> Result<Vec<Generation>, ApiError> {
    try_join_all(
        requests
            .into_iter()
            .map(|request| backend.generate(request)),
    )
    .await
    .map_err(ApiError::from)
}

/// One finished choice of a non-streaming response.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Completed {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Drains one generation into its text. Dropping the future (client gone) drops the
/// stream, which tells the backend to stop.
pub(crate) async fn collect(generation: Generation) -> Result<Completed, ApiError> {
    let mut events = generation.events;
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event? {
            GenEvent::Delta(delta) => text.push_str(&delta),
            GenEvent::Finished { reason, usage } => {
                return Ok(Completed {
                    text,
                    finish_reason: reason,
                    usage,
                })
            }
        }
    }
    Err(ApiError::Internal(
        "generation stream ended without a Finished event".to_owned(),
    ))
}

/// Collects every choice concurrently; the first error drops the rest.
pub(crate) async fn collect_all(generations: Vec<Generation>) -> Result<Vec<Completed>, ApiError> {
    try_join_all(generations.into_iter().map(collect)).await
}

/// Sums the usage of several choices.
pub(crate) fn total_usage<'a>(usages: impl IntoIterator<Item = &'a Usage>) -> Usage {
    usages
        .into_iter()
        .fold(Usage::default(), |total, usage| Usage {
            prompt_tokens: total.prompt_tokens + usage.prompt_tokens,
            completion_tokens: total.completion_tokens + usage.completion_tokens,
        })
}
