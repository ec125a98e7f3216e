//! The seam between the API and whatever generates text: the local engine (`serve`), or
//! upstream inferd replicas and AWS Bedrock behind a routing policy (`gateway`). The API
//! layer only sees this module. Wire (OpenAI) types never appear here; the engine's types
//! never leak past it.
//!
//! Every type here is serde-serializable: the gateway forwards them to replicas as-is
//! (see `wire`), so a field added here travels without a second mapping.

pub mod bedrock;
pub mod local;
pub mod policy;
pub mod upstream;
pub mod wire;

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use crate::engine::types::{FinishReason, SamplingParams, Usage};

use std::time::Duration;

/// One chat message, backend-neutral. Serialized as `{"role": .., "content": ..}` (plus
/// the tool fields when set) for chat templates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (content parts already concatenated); may be empty for an assistant turn
    /// that only calls tools.
    pub content: String,
    /// Tool calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the id of the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.into(),
            ..Default::default()
        }
    }
}

/// A complete tool call of an assistant turn (`arguments` is the JSON text the model wrote).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments (`{"type":"object"}` when the client gave none).
    pub parameters: serde_json::Value,
}

/// OpenAI `tool_choice`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// The model must call some tool.
    Required,
    /// The model must not call tools.
    None,
    /// The model must call this function.
    Function(String),
}

/// Which sampling fields the client set itself, as opposed to defaults. Backends that
/// cannot honour a field (Bedrock: `seed`, penalties, ...) or must not be sent defaults
/// (some Bedrock models refuse `temperature` together with `top_p`) look here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetByClient {
    pub temperature: bool,
    pub top_p: bool,
    pub top_k: bool,
    pub min_p: bool,
    pub seed: bool,
    pub presence_penalty: bool,
    pub frequency_penalty: bool,
    pub repetition_penalty: bool,
    pub ignore_eos: bool,
}

/// What to continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Rendered through the model's own chat template (with the generation prompt).
    Chat(Vec<ChatMessage>),
    /// A raw completion prompt.
    Text(String),
    /// Already tokenized (OpenAI `prompt` as a list of token ids).
    Tokens(Vec<u32>),
}

/// One generation (one choice) as the API asks for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Functions the model may call (chat only; empty: none).
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Which of `sampling`'s fields the client set.
    #[serde(default)]
    pub set_by_client: SetByClient,
    /// The client asked for a stream (`stream: true`). Backends stream either way; a
    /// remote one may pick a cheaper non-streaming call when this is false.
    #[serde(default)]
    pub stream: bool,
}

/// Log-probability of one generated token (when `SamplingParams::logprobs` is set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (may be part of a multi-byte character: see `bytes`).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely alternatives at this position, most likely first.
    pub top: Vec<TopLogprob>,
}

/// One alternative of a [`TokenLogprob`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A fragment of one tool call of the answer. The first fragment of call `index` carries
/// its `id` and `name`; later ones append to `arguments` (JSON text, split anywhere).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position of the call in the answer's `tool_calls` (0, 1, ... in order of appearance).
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// What a backend streams back for one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenEvent {
    /// Newly decoded text, never half a UTF-8 character, never part of a stop string.
    /// `text` is never empty unless `logprobs` is not (a token whose text is held back).
    /// `logprobs` has one entry per generated token covered by this event, when asked for.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Part of a tool call (remote backends only, for now).
    ToolCall(ToolCallDelta),
    /// The last event of a generation.
    Finished { reason: FinishReason, usage: Usage },
}

pub type GenStream = Pin<Box<dyn Stream<Item = Result<GenEvent, BackendError>> + Send>>;

/// An admitted generation: the prompt was accepted and work is under way.
pub struct Generation {
    /// Prompt tokens when the backend knows them at admission (0 otherwise: Bedrock
    /// reports usage only at the end).
    pub prompt_tokens: usize,
    pub events: GenStream,
    /// Which backend serves it, for the `x-inferd-backend` header and per-backend metrics:
    /// `local`, `replica:<addr>` or `bedrock`.
    pub served_by: String,
}

/// The one generation of an `n = 1` admission (for backends whose `generate` is their
/// `generate_n` with one sample).
pub fn only_generation(mut generations: Vec<Generation>) -> Result<Generation, BackendError> {
    match generations.len() {
        1 => generations
            .pop()
            .ok_or_else(|| BackendError::Internal("no generation admitted".into())),
        k => Err(BackendError::Internal(format!(
            "the backend admitted {k} generations for n = 1"
        ))),
    }
}

/// The backend kinds `Generation::served_by` starts with.
pub const SERVED_BY_LOCAL: &str = "local";
pub const SERVED_BY_BEDROCK: &str = "bedrock";

/// `replica:<addr>` for a generation an upstream replica serves.
pub fn served_by_replica(addr: &str) -> String {
    format!("replica:{addr}")
}

/// The kind part of a `served_by` value (`replica:10.0.0.7:8080` -> `replica`): a
/// bounded label for metrics.
pub fn served_by_kind(served_by: &str) -> &str {
    served_by.split(':').next().unwrap_or(served_by)
}

/// A model a backend serves, as listed by `/v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub owned_by: String,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    pub max_model_len: usize,
}

/// Errors a backend reports. Mapped to HTTP in exactly one place (`api::error`).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// A remote backend failed (5xx, timeouts, a broken stream) and retries did not help:
    /// 502. The message is safe to return (no credentials, no signed headers).
    #[error("{0}")]
    Upstream(String),
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

    /// When admission may take long (the gateway holding a request while GPU replicas
    /// scale up), a streaming response is started after this long and SSE comments keep
    /// the connection alive until a backend is chosen. `None`: admission is quick; the
    /// response starts once it is done.
    fn admission_keepalive(&self) -> Option<Duration> {
        None
    }
}
