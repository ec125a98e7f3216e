//! Plumbing shared by the generation handlers: admission, non-streaming collection and
//! the usage of a whole response.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use futures::StreamExt;

use super::error::ApiError;
use super::logprobs::TextOffsets;
use super::tools::ToolCallAssembler;
use super::types::ToolCallOut;
use crate::backend::{
    Backend, FinishReason, GenEvent, GenerateRequest, Generation, TokenLogprob, Usage,
};

/// Unix seconds, for the `created` field of responses.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Admits every choice before the response starts, so that refusals (429, 400 prompt too
/// long, 503) become the HTTP status. Each prompt gets `n` samples from one
/// `generate_n` call (they share the prompt's KV); prompts are admitted concurrently. If
/// one is refused the others are dropped, which releases them in the backend.
///
/// Choice `prompt_index * n + sample_index` is the result's element of that index.
pub(crate) async fn admit(
    backend: &dyn Backend,
    requests: Vec<GenerateRequest>,
    n: usize,
) -> Result<Vec<Generation>, ApiError> {
    let per_prompt = try_join_all(
        requests
            .into_iter()
            .map(|request| backend.generate_n(request, n)),
    )
    .await?;
    let mut choices = Vec::with_capacity(per_prompt.len() * n);
    for samples in per_prompt {
        if samples.len() != n {
            return Err(ApiError::Internal(format!(
                "the backend admitted {} generations for n = {n}",
                samples.len()
            )));
        }
        choices.extend(samples);
    }
    Ok(choices)
}

/// One finished choice of a non-streaming response.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Completed {
    pub text: String,
    /// One entry per generated token when logprobs were asked for, else empty.
    pub logprobs: Vec<TokenLogprob>,
    /// Where each token of `logprobs` starts in `text` (see [`TextOffsets`]).
    pub text_offset: Vec<usize>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The answer's tool calls, reassembled from their fragments.
    pub tool_calls: Vec<ToolCallOut>,
}

/// Drains one generation into its text. Dropping the future (client gone) drops the
/// stream, which tells the backend to stop.
pub(crate) async fn collect(generation: Generation) -> Result<Completed, ApiError> {
    let mut events = generation.events;
    let mut text = String::new();
    let mut all_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    let mut offsets = TextOffsets::default();
    let mut tool_calls = ToolCallAssembler::default();
    while let Some(event) = events.next().await {
        match event? {
            GenEvent::Delta {
                text: delta,
                logprobs,
            } => {
                if !logprobs.is_empty() {
                    text_offset.extend(offsets.advance(&delta, &logprobs));
                    all_logprobs.extend(logprobs);
                } else {
                    offsets.advance(&delta, &[]);
                }
                text.push_str(&delta);
            }
            GenEvent::ToolCall(delta) => tool_calls.push(delta),
            GenEvent::Finished { reason, usage } => {
                return Ok(Completed {
                    text,
                    logprobs: all_logprobs,
                    text_offset,
                    finish_reason: reason,
                    usage,
                    tool_calls: tool_calls.finish(),
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

/// The usage of a response from its choices' (in choice order, `n` consecutive choices
/// per prompt). A prompt is counted once however many samples it has: its prompt tokens
/// as the most any sample reports (all should agree), its cached tokens as the fewest
/// (samples after the first may find the prompt the first computed); completion tokens
/// of every choice are summed.
pub(crate) fn response_usage(choices: &[Usage], n: usize) -> Usage {
    let mut total = Usage::default();
    for samples in choices.chunks(n.max(1)) {
        let most = |field: fn(&Usage) -> usize| samples.iter().map(field).max().unwrap_or(0);
        let fewest = |field: fn(&Usage) -> usize| samples.iter().map(field).min().unwrap_or(0);
        total.prompt_tokens += most(|u| u.prompt_tokens);
        total.cached_tokens += fewest(|u| u.cached_tokens);
        total.completion_tokens += samples.iter().map(|u| u.completion_tokens).sum::<usize>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        }
    }

    #[test]
    fn usage_counts_each_prompt_once() {
        // Two prompts, three samples each.
        let choices = [
            usage(10, 1, 0),
            usage(10, 2, 10),
            usage(10, 3, 10),
            usage(7, 4, 4),
            usage(7, 5, 7),
            usage(7, 6, 7),
        ];
        assert_eq!(response_usage(&choices, 3), usage(17, 21, 4));
        assert_eq!(response_usage(&choices[..1], 1), usage(10, 1, 0));
        assert_eq!(response_usage(&[], 2), Usage::default());
    }
}
