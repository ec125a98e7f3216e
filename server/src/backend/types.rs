//! The backend protocol: what the API asks a backend for and what comes back. These are
//! the types the gateway sends to replicas (`wire`), so they belong to this layer, not to
//! the engine: `backend::local` maps them to the engine's own types. A field added here must
//! be `#[serde(default)]` (or an `Option`) so that replicas and gateways of neighbouring
//! versions still understand each other.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How to pick the next token. Validated by the API layer before it reaches a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0.0 means greedy (argmax).
    pub temperature: f32,
    /// `None` or `Some(0)` disables top-k.
    pub top_k: Option<usize>,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// Same seed + same request => same output.
    pub seed: Option<u64>,
    /// OpenAI semantics: subtract `presence_penalty` once for every token already generated.
    pub presence_penalty: f32,
    /// OpenAI semantics: subtract `frequency_penalty * count` for every generated token.
    pub frequency_penalty: f32,
    /// HF/CTRL semantics over prompt + generated tokens; 1.0 disables.
    pub repetition_penalty: f32,
    /// Maximum number of tokens to generate.
    pub max_tokens: usize,
    /// Keep generating past EOS (benchmarks).
    pub ignore_eos: bool,
    /// Report the sampled token's log-probability and this many top alternatives
    /// (`None`: no logprobs), from the model's raw distribution (before penalties,
    /// temperature and truncation), as OpenAI and vLLM do.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            max_tokens: 16,
            ignore_eos: false,
            logprobs: None,
        }
    }
}

/// Why a generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
    /// A content filter or guardrail stopped the answer.
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Exact token counts of one choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

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
    #[serde(default)]
    pub max_tokens_explicit: bool,
    /// Stop strings: matched across token boundaries, never emitted.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Give up after this long (from admission): the stream ends with
    /// `BackendError::DeadlineExceeded`. `None`: the backend's default, if any.
    #[serde(default)]
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
    /// Part of a tool call.
    ToolCall(ToolCallDelta),
    /// The last event of a generation.
    Finished { reason: FinishReason, usage: Usage },
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
