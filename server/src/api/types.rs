//! OpenAI wire types. They never leave `api/`: the handlers map them to `backend` types.
//!
//! Requests ignore unknown fields (clients send extras) but declare every known field we
//! do not implement, so validation can reject it instead of silently ignoring it.
//! Fields whose JSON type varies (`content`, `stop`, `prompt`, …) are kept as
//! `serde_json::Value` and checked by hand, to give messages that name the exact field.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Number, Value};

use crate::backend::Usage;

/// The author of a chat message.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a chat request.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: Role,
    /// A string, null (absent) or an array of content parts.
    #[serde(default)]
    pub content: Value,
    /// Assistant turns: the tool calls it made (checked in `api::tools`).
    pub tool_calls: Option<Value>,
    /// Tool turns: the call this is the result of.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The fields every generation endpoint shares, `#[serde(flatten)]`ed into each request
/// type and validated once (`api::params`). Fields the endpoints spell differently
/// (`max_completion_tokens`, `logprobs`, `top_logprobs`) stay in the endpoint's type.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<Number>,
    pub stop: Option<Value>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub ignore_eos: Option<bool>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    /// Known, not implemented yet: rejected when used.
    pub logit_bias: Option<Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    #[serde(flatten, deserialize_with = "super::json::flattened")]
    pub sampling: SamplingFields,
    /// Takes precedence over `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    /// An integer `0..=20`; kept as JSON to name the field in every error.
    pub top_logprobs: Option<Value>,
    /// Checked in `api::tools`; backends that cannot call tools refuse them.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    // Known, not implemented yet: rejected when used.
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    pub response_format: Option<Value>,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of arrays of ids.
    pub prompt: Value,
    #[serde(flatten, deserialize_with = "super::json::flattened")]
    pub sampling: SamplingFields,
    /// The number of alternatives per position, `0..=20` (`null`: no logprobs).
    pub logprobs: Option<Value>,
    // Known, not implemented yet: rejected when used.
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// Responses.

/// The usage of a whole response: each prompt counted once, every choice's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UsageOut {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

impl From<Usage> for UsageOut {
    fn from(usage: Usage) -> Self {
        UsageOut {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
            },
        }
    }
}

/// Chat logprobs of a choice (or of one chunk's delta): `{"content": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// Completions (legacy) logprobs: parallel arrays, one entry per generated token.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<TopLogprobMap>,
    /// Where each token starts in the choice's text, in characters.
    pub text_offset: Vec<usize>,
}

/// `{token: logprob, ...}`, most likely first (serialized in this order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopLogprobMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

/// A whole (non-streamed) response: `choices` are the endpoint's choice shape.
#[derive(Clone, Debug, Serialize)]
pub struct Completion<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<C>,
    pub usage: UsageOut,
}

/// One SSE chunk of a stream. `usage` is absent unless the client asked for
/// `stream_options.include_usage`; then it is `null` on every chunk but the last.
#[derive(Clone, Debug, Serialize)]
pub struct Chunk<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    /// `null` unless the client asked for logprobs.
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

/// `content` is `null` when the answer is only tool calls (as OpenAI sends it).
#[derive(Clone, Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

/// A complete tool call of a non-streamed answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FunctionOut {
    pub name: String,
    pub arguments: String,
}

/// One fragment of a streamed tool call: `id`, `type` and `function.name` on its first
/// chunk only, `function.arguments` pieces after.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCallChunk<'a> {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionChunk<'a>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FunctionChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub index: usize,
    pub delta: ChatDelta<'a>,
    /// The entries of this chunk's delta; `null` unless asked for and on role/finish chunks.
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// `{"role":"assistant","content":""}`, `{"content":…}` or `{}`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallChunk<'a>>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TextChoice {
    pub index: usize,
    pub text: String,
    /// `null` unless the client asked for logprobs.
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct TextChunkChoice<'a> {
    pub index: usize,
    pub text: &'a str,
    /// The entries of this chunk's text; `null` unless asked for and on finish chunks.
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
    pub max_model_len: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
}
