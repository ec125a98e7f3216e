//! The seam between the API and whatever generates text: the local engine today, an
//! upstream inferd replica or AWS Bedrock tomorrow. The API layer only sees this module.
//! Wire (OpenAI) types never appear here; the engine's types never leak past it.

pub mod local;

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::Stream;
use serde::Serialize;

pub use crate::engine::types::{FinishReason, SamplingParams, Usage};

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
}

/// What a backend streams back for one generation.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// Newly decoded text, never empty, never half a UTF-8 character, never part of a
    /// stop string.
    Delta(String),
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

    /// Whether the backend can take requests now (`/ready`).
    fn is_ready(&self) -> bool;
}
