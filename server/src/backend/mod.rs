//! The seam between the API and whatever generates text: the local engine today, an
//! upstream inferd replica or AWS Bedrock tomorrow. The API layer only sees this module.
//! Wire (OpenAI) types never appear here; the engine's types never leak past it.

pub mod local;

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::Stream;
use serde::Serialize;

pub use crate::engine::types::{FinishReason, SamplingParams, Usage};

use std::time::Duration;

/// One chat message, backend-neutral. Serialized as `{"role": .., "content": ..}` for
/// chat templates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What to continue.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Rendered through the model's own chat template (with the generation prompt).
    Chat(Vec<ChatMessage>),
    /// A raw completion prompt.
    Text(String),
    /// Already tokenized (OpenAI `prompt` as a list of token ids).
    Tokens(Vec<u32>),
}

/// One generation (one choice) as the API asks for it.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The `x-request-id` of the HTTP request.
    pub request_id: String,
    /// The model id the client sent (already known to exist in this backend).
    pub model: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// `true` when the client set `max_tokens`/`max_completion_tokens` itself: then a
    /// prompt + max_tokens over the context is a 400; otherwise max_tokens is clamped to
    /// what the context leaves.
    pub max_tokens_explicit: bool,
    /// Stop strings: matched across token boundaries, never emitted.
    pub stop: Vec<String>,
    /// Give up after this long (from admission): the stream ends with
    /// `BackendError::DeadlineExceeded`. `None`: the backend's default, if any.
    pub deadline: Option<Duration>,
}

/// Log-probability of one generated token (when `SamplingParams::logprobs` is set).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (may be part of a multi-byte character: see `bytes`).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely alternatives at this position, most likely first.
    pub top: Vec<TopLogprob>,
}

/// One alternative of a [`TokenLogprob`].
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// What a backend streams back for one generation.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// Newly decoded text, never half a UTF-8 character, never part of a stop string.
    /// `text` is never empty unless `logprobs` is not (a token whose text is held back).
    /// `logprobs` has one entry per generated token covered by this event, when asked for.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The last event of a generation.
    Finished { reason: FinishReason, usage: Usage },
}

pub type GenStream = Pin<Box<dyn Stream<Item = Result<GenEvent, BackendError>> + Send>>;

/// An admitted generation: the prompt was accepted and work is under way.
pub struct Generation {
    pub prompt_tokens: usize,
    pub events: GenStream,
}

/// A model a backend serves, as listed by `/v1/models`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCard {
    pub id: String,
    pub owned_by: String,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    pub max_model_len: usize,
}

/// Errors a backend reports. Mapped to HTTP in exactly one place (`api::error`).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum BackendError {
    #[error("The model `{0}` does not exist.")]
    ModelNotFound(String),
    /// The request is invalid for this model; `param` names the offending field.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The queue is full; retry after the given number of seconds.
    #[error("The server is overloaded; retry in {retry_after_secs}s.")]
    Overloaded { retry_after_secs: u64 },
    /// No capacity to serve at all (draining, engine stopped).
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed before it finished.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else: the details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

/// Something that can generate for the models it lists.
pub trait Backend: Send + Sync + 'static {
    /// Models this backend serves.
    fn models(&self) -> Vec<ModelCard>;

    /// Admit one generation. Returns once the backend has accepted (or refused) the
    /// request, before any token: the API picks its response status from this result.
    fn generate(&self, request: GenerateRequest)
        -> BoxFuture<'_, Result<Generation, BackendError>>;

    /// Admit `n` parallel samples of one request (OpenAI `n`), in sample order. Backends
    /// that can share the prompt's work between them override this; the default admits `n`
    /// independent generations (seeds offset by the sample index so seeded samples differ).
    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let mut r = request.clone();
                r.sampling.seed = r.sampling.seed.map(|s| s.wrapping_add(i as u64));
                out.push(self.generate(r).await?);
            }
            Ok(out)
        })
    }

    /// Whether the backend can take requests now (`/ready`).
    fn is_ready(&self) -> bool;

    /// Generations admitted and not finished yet (drain waits for 0).
    fn in_flight(&self) -> usize {
        0
    }
}
