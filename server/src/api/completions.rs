//! `POST /v1/completions`. A list of k prompts with `n` samples each runs k * n
//! generations concurrently: choice `prompt_index * n + sample_index` (OpenAI's order),
//! each prompt counted once in the usage.

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use super::deadline::Deadline;
use super::error::ApiError;
use super::generation::{admit, collect_all, response_usage, unix_now};
use super::json::ApiJson;
use super::logprobs;
use super::request_id::RequestId;
use super::sampling::{CommonParams, LogprobsParams};
use super::stream::{json_event, ChunkFormat, ChunkMeta, DeltaRef};
use super::types::{
    CompletionLogprobs, CompletionRequest, TextChoice, TextChunk, TextChunkChoice, TextCompletion,
    UsageOut,
};
use super::{respond_streaming, served_by, AppState};
use crate::backend::{FinishReason, GenerateRequest, Prompt, Usage};

/// Most prompts one request may carry (each is a separate generation).
pub(crate) const MAX_PROMPTS: usize = 64;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/completions", post(create))
}

async fn create(
    State(state): State<AppState>,
    request_id: RequestId,
    Deadline(deadline): Deadline,
    ApiJson(body): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.ensure_accepting()?;
    super::record_request_fields(&body.model, body.user.as_deref());
    reject_unsupported(&body)?;
    let prompts = prompts(&body.prompt)?;
    let options = common_params(&body).validate()?;
    let backend = state.backend(&body.model)?;

    let several = prompts.len() > 1;
    let requests = prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| GenerateRequest {
            // Each choice gets its own id in the backend's logs.
            request_id: if several {
                format!("{}-{i}", request_id.0)
            } else {
                request_id.0.clone()
            },
            model: body.model.clone(),
            prompt,
            sampling: options.sampling.clone(),
            max_tokens_explicit: options.max_tokens_explicit,
            stop: options.stop.clone(),
            deadline,
            tools: Vec::new(),
            tool_choice: Default::default(),
            set_by_client: options.set_by_client,
            stream: options.stream,
        })
        .collect();
    let meta = ChunkMeta {
        id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: body.model,
        include_usage: options.include_usage,
        logprobs: options.sampling.logprobs.is_some(),
        n: options.n,
    };
    if options.stream {
        return respond_streaming(&state, backend, requests, options.n, TextFormat(meta)).await;
    }
    let generations = admit(backend.as_ref(), requests, options.n).await?;
    let served = served_by(&state, &meta.model, &generations);
    let completed = collect_all(generations).await?;
    let usages: Vec<_> = completed.iter().map(|c| c.usage).collect();
    let usage = response_usage(&usages, meta.n);
    let response = TextCompletion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices: completed
            .into_iter()
            .enumerate()
            .map(|(index, c)| TextChoice {
                index,
                logprobs: meta
                    .logprobs
                    .then(|| logprobs::completion(&c.logprobs, &c.text_offset)),
                text: c.text,
                finish_reason: c.finish_reason.as_str(),
            })
            .collect(),
        usage: usage.into(),
    };
    Ok((served, Json(response)).into_response())
}

pub(crate) fn common_params(body: &CompletionRequest) -> CommonParams<'_> {
    CommonParams {
        max_tokens: body.max_tokens.map(|value| ("max_tokens", value)),
        temperature: body.temperature,
        top_p: body.top_p,
        top_k: body.top_k,
        min_p: body.min_p,
        seed: body.seed.as_ref(),
        stop: body.stop.as_ref(),
        presence_penalty: body.presence_penalty,
        frequency_penalty: body.frequency_penalty,
        repetition_penalty: body.repetition_penalty,
        ignore_eos: body.ignore_eos,
        n: body.n,
        stream: body.stream,
        stream_options: body.stream_options,
        logit_bias: body.logit_bias.as_ref(),
        logprobs: LogprobsParams::Completion(body.logprobs.as_ref()),
    }
}

fn reject_unsupported(body: &CompletionRequest) -> Result<(), ApiError> {
    if body.echo == Some(true) {
        return Err(ApiError::unsupported("echo", ""));
    }
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("suffix", ""));
    }
    match body.best_of {
        None | Some(1) => {}
        Some(n) if n < 1 => {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of must be at least 1, got {n}"),
            ))
        }
        Some(_) => {
            return Err(ApiError::unsupported(
                "best_of",
                "; only best_of = 1 is accepted",
            ))
        }
    }
    Ok(())
}

const PROMPT_SHAPES: &str =
    "prompt must be a string, an array of strings, an array of token ids, or an array of arrays of token ids";

/// The prompt forms OpenAI accepts, each non-empty; at most `MAX_PROMPTS` prompts.
fn prompts(value: &Value) -> Result<Vec<Prompt>, ApiError> {
    let empty =
        |param: String| ApiError::invalid(param.clone(), format!("{param} must not be empty"));
    let items = match value {
        Value::String(s) if s.is_empty() => return Err(empty("prompt".into())),
        Value::String(s) => return Ok(vec![Prompt::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => return Err(empty("prompt".into())),
        Value::Array(items) => items,
        _ => return Err(ApiError::invalid("prompt", PROMPT_SHAPES)),
    };
    if items.iter().all(Value::is_number) {
        return Ok(vec![Prompt::Tokens(token_ids("prompt", items)?)]);
    }
    if items.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "prompt must hold at most {MAX_PROMPTS} prompts, got {}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.is_empty() => Err(empty(format!("prompt[{i}]"))),
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            Value::Array(ids) if ids.is_empty() => Err(empty(format!("prompt[{i}]"))),
            Value::Array(ids) => Ok(Prompt::Tokens(token_ids(&format!("prompt[{i}]"), ids)?)),
            _ => Err(ApiError::invalid("prompt", PROMPT_SHAPES)),
        })
        .collect()
}

fn token_ids(param: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            item.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        param,
                        format!(
                            "{param}[{j}] must be a token id (an integer from 0 to {}), got {item}",
                            u32::MAX
                        ),
                    )
                })
        })
        .collect()
}

/// Completion chunks: `"object": "text_completion"`, text under `choices[].text`.
struct TextFormat(ChunkMeta);

impl TextFormat {
    fn chunk(&self, choices: Vec<TextChunkChoice<'_>>, usage: Option<Option<UsageOut>>) -> Event {
        json_event(&TextChunk {
            id: &self.0.id,
            object: "text_completion",
            created: self.0.created,
            model: &self.0.model,
            choices,
            usage,
        })
    }

    /// A chunk for one choice, with `"usage": null` when usage was asked for.
    fn choice_chunk(
        &self,
        index: usize,
        text: &str,
        logprobs: Option<CompletionLogprobs>,
        finish: Option<FinishReason>,
    ) -> Event {
        let choice = TextChunkChoice {
            index,
            text,
            logprobs,
            finish_reason: finish.map(FinishReason::as_str),
        };
        self.chunk(vec![choice], self.0.usage_placeholder())
    }
}

impl ChunkFormat for TextFormat {
    fn meta(&self) -> &ChunkMeta {
        &self.0
    }

    fn opening(&self, _index: usize) -> Option<Event> {
        None
    }

    fn delta(&self, index: usize, delta: DeltaRef<'_>) -> Event {
        let logprobs = self
            .0
            .logprobs
            .then(|| logprobs::completion(delta.logprobs, delta.text_offset));
        self.choice_chunk(index, delta.text, logprobs, None)
    }

    fn finish(&self, index: usize, reason: FinishReason) -> Event {
        self.choice_chunk(index, "", None, Some(reason))
    }

    fn usage(&self, usage: Usage) -> Event {
        self.chunk(Vec::new(), Some(Some(usage.into())))
    }
}

#[cfg(test)]
#[path = "completions_tests.rs"]
mod tests;
