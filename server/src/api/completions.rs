//! `POST /v1/completions`. A list of k prompts with `n` samples each runs k * n
//! generations concurrently: choice `prompt_index * n + sample_index` (OpenAI's order),
//! each prompt counted once in the usage.

use axum::response::sse::Event;
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use super::endpoint::{create, Endpoint, Prepared};
use super::error::ApiError;
use super::generation::Completed;
use super::logprobs;
use super::params::{GenerationOptions, LogprobsParams};
use super::stream::{ChunkFormat, ChunkMeta, DeltaRef};
use super::types::{
    CompletionLogprobs, CompletionRequest, SamplingFields, TextChoice, TextChunkChoice,
};
use super::AppState;
use crate::backend::{FinishReason, Prompt};

/// Most prompts one request may carry (each is a separate generation).
pub(crate) const MAX_PROMPTS: usize = 64;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/completions", post(create::<TextFormat>))
}

/// The validated parameters of a completions request: logprobs are `logprobs: k`.
pub(crate) fn options(body: &CompletionRequest) -> Result<GenerationOptions, ApiError> {
    let logprobs = LogprobsParams::Completion(body.logprobs.as_ref());
    body.sampling.validate(None, logprobs)
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

/// Completions responses and chunks: `"object": "text_completion"`, text under
/// `choices[].text`.
pub(crate) struct TextFormat(ChunkMeta);

impl Endpoint for TextFormat {
    type Request = CompletionRequest;
    type Choice = TextChoice;
    const ID_PREFIX: &'static str = "cmpl";
    const OBJECT: &'static str = "text_completion";

    fn common(request: &CompletionRequest) -> (&str, &SamplingFields) {
        (&request.model, &request.sampling)
    }

    fn prepare(body: &CompletionRequest) -> Result<Prepared, ApiError> {
        reject_unsupported(body)?;
        let prompts = prompts(&body.prompt)?;
        Ok(Prepared {
            prompts,
            tools: Vec::new(),
            tool_choice: Default::default(),
            options: options(body)?,
        })
    }

    fn new(meta: ChunkMeta) -> Self {
        TextFormat(meta)
    }

    fn choice(&self, index: usize, c: Completed) -> TextChoice {
        TextChoice {
            index,
            logprobs: self
                .0
                .logprobs
                .then(|| logprobs::completion(&c.logprobs, &c.text_offset)),
            text: c.text,
            finish_reason: c.finish_reason.as_str(),
        }
    }
}

impl TextFormat {
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
        self.0.choice_chunk(Self::CHUNK_OBJECT, choice)
    }
}

impl ChunkFormat for TextFormat {
    const CHUNK_OBJECT: &'static str = "text_completion";

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
}

#[cfg(test)]
#[path = "completions_tests.rs"]
mod tests;
