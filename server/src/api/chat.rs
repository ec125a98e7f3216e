//! `POST /v1/chat/completions`.

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
use super::tools;
use super::types::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion,
    ChatCompletionRequest, ChatDelta, ChatLogprobs, ChatMessageIn, FunctionChunk, Role,
    ToolCallChunk, UsageOut,
};
use super::{respond_streaming, served_by, AppState};
use crate::backend::{ChatMessage, FinishReason, GenerateRequest, Prompt, ToolCallDelta, Usage};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(create))
}

async fn create(
    State(state): State<AppState>,
    request_id: RequestId,
    Deadline(deadline): Deadline,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state.ensure_accepting()?;
    super::record_request_fields(&body.model, body.user.as_deref());
    reject_unsupported(&body)?;
    let messages = messages(&body.messages)?;
    let tool_specs = tools::tools(body.tools.as_ref())?;
    let tool_choice = tools::tool_choice(body.tool_choice.as_ref(), &tool_specs)?;
    let options = common_params(&body).validate()?;
    let backend = state.backend(&body.model)?;
    let logprobs = options.sampling.logprobs.is_some();

    let request = GenerateRequest {
        request_id: request_id.0,
        model: body.model.clone(),
        prompt: Prompt::Chat(messages),
        sampling: options.sampling,
        max_tokens_explicit: options.max_tokens_explicit,
        stop: options.stop,
        deadline,
        tools: tool_specs,
        tool_choice,
        set_by_client: options.set_by_client,
        stream: options.stream,
    };
    let meta = ChunkMeta {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: body.model,
        include_usage: options.include_usage,
        logprobs,
        n: options.n,
    };
    if options.stream {
        return respond_streaming(&state, backend, vec![request], options.n, ChatFormat(meta))
            .await;
    }
    let generations = admit(backend.as_ref(), vec![request], options.n).await?;
    let served = served_by(&state, &meta.model, &generations);
    let completed = collect_all(generations).await?;
    let usages: Vec<_> = completed.iter().map(|c| c.usage).collect();
    let response = ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: completed
            .into_iter()
            .enumerate()
            .map(|(index, c)| ChatChoice {
                index,
                logprobs: meta.logprobs.then(|| logprobs::chat(&c.logprobs)),
                message: AssistantMessage {
                    role: "assistant",
                    // OpenAI sends `null` content for an answer that is only tool calls.
                    content: (!c.text.is_empty() || c.tool_calls.is_empty()).then_some(c.text),
                    tool_calls: c.tool_calls,
                },
                finish_reason: c.finish_reason.as_str(),
            })
            .collect(),
        usage: response_usage(&usages, meta.n).into(),
    };
    Ok((served, Json(response)).into_response())
}

/// The sampling fields of a chat request; `max_completion_tokens` wins over `max_tokens`.
pub(crate) fn common_params(body: &ChatCompletionRequest) -> CommonParams<'_> {
    let max_tokens = match (body.max_completion_tokens, body.max_tokens) {
        (Some(value), _) => Some(("max_completion_tokens", value)),
        (None, Some(value)) => Some(("max_tokens", value)),
        (None, None) => None,
    };
    CommonParams {
        max_tokens,
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
        logprobs: LogprobsParams::Chat {
            logprobs: body.logprobs,
            top_logprobs: body.top_logprobs.as_ref(),
        },
    }
}

/// Known OpenAI features we do not implement must fail loudly, never be ignored.
fn reject_unsupported(body: &ChatCompletionRequest) -> Result<(), ApiError> {
    let is_empty_list = |v: &Value| v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
    let is_none_choice = |v: &Value| v.is_null() || v.as_str() == Some("none");
    if body.functions.as_ref().is_some_and(|v| !is_empty_list(v)) {
        return Err(ApiError::unsupported("functions", ""));
    }
    if body
        .function_call
        .as_ref()
        .is_some_and(|v| !is_none_choice(v))
    {
        return Err(ApiError::unsupported(
            "function_call",
            "; only \"none\" is accepted",
        ));
    }
    if let Some(format) = body.response_format.as_ref().filter(|v| !v.is_null()) {
        let kind = format.get("type").and_then(Value::as_str);
        if kind != Some("text") {
            let detail = match kind {
                Some(kind) => format!(" (type `{kind}`); only {{\"type\": \"text\"}} is accepted"),
                None => "; only {\"type\": \"text\"} is accepted".to_owned(),
            };
            return Err(ApiError::unsupported("response_format", detail));
        }
    }
    Ok(())
}

/// Wire messages to backend messages: text parts are concatenated (as OpenAI does).
fn messages(wire: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must contain at least one message",
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(i, message)| {
            let tool_calls = tools::message_tool_calls(i, message.tool_calls.as_ref())?;
            if !tool_calls.is_empty() && message.role != Role::Assistant {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls"),
                    format!("messages[{i}].tool_calls is only allowed on assistant messages"),
                ));
            }
            if message.role == Role::Tool && message.tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    format!("messages[{i}].tool_call_id is required on tool messages"),
                ));
            }
            Ok(ChatMessage {
                role: message.role.as_str().to_owned(),
                content: content_text(i, &message.content)?,
                tool_calls,
                tool_call_id: message.tool_call_id.clone(),
                name: message.name.clone(),
            })
        })
        .collect()
}

fn content_text(i: usize, content: &Value) -> Result<String, ApiError> {
    let parts = match content {
        Value::Null => return Ok(String::new()),
        Value::String(text) => return Ok(text.clone()),
        Value::Array(parts) => parts,
        _ => {
            return Err(ApiError::invalid(
                format!("messages[{i}].content"),
                format!(
                    "messages[{i}].content must be a string, null, or an array of content parts"
                ),
            ))
        }
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}].type");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(other) => {
                let detail = format!(" (got `{other}`); only `text` content parts are accepted");
                return Err(ApiError::unsupported(param, detail));
            }
            None => {
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("{param} is required and must be a string"),
                ))
            }
        }
        match part.get("text").and_then(Value::as_str) {
            Some(part_text) => text.push_str(part_text),
            None => {
                let param = format!("messages[{i}].content[{j}].text");
                return Err(ApiError::invalid(
                    param.clone(),
                    format!("{param} is required and must be a string"),
                ));
            }
        }
    }
    Ok(text)
}

/// Chat chunks: `"object": "chat.completion.chunk"`, text under `delta.content`.
struct ChatFormat(ChunkMeta);

impl ChatFormat {
    fn chunk(&self, choices: Vec<ChatChunkChoice<'_>>, usage: Option<Option<UsageOut>>) -> Event {
        json_event(&ChatChunk {
            id: &self.0.id,
            object: "chat.completion.chunk",
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
        delta: ChatDelta<'_>,
        logprobs: Option<ChatLogprobs>,
        finish: Option<FinishReason>,
    ) -> Event {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason: finish.map(FinishReason::as_str),
        };
        self.chunk(vec![choice], self.0.usage_placeholder())
    }
}

impl ChunkFormat for ChatFormat {
    fn meta(&self) -> &ChunkMeta {
        &self.0
    }

    fn opening(&self, index: usize) -> Option<Event> {
        let delta = ChatDelta {
            role: Some("assistant"),
            content: Some(""),
            tool_calls: None,
        };
        Some(self.choice_chunk(index, delta, None, None))
    }

    fn delta(&self, index: usize, delta: DeltaRef<'_>) -> Event {
        let logprobs = self.0.logprobs.then(|| logprobs::chat(delta.logprobs));
        let delta = ChatDelta {
            role: None,
            content: Some(delta.text),
            tool_calls: None,
        };
        self.choice_chunk(index, delta, logprobs, None)
    }

    fn tool_call(&self, index: usize, call: &ToolCallDelta) -> Option<Event> {
        let chunk = ToolCallChunk {
            index: call.index,
            id: call.id.as_deref(),
            kind: call.id.as_ref().map(|_| "function"),
            function: FunctionChunk {
                name: call.name.as_deref(),
                arguments: &call.arguments,
            },
        };
        let delta = ChatDelta {
            role: None,
            content: None,
            tool_calls: Some(vec![chunk]),
        };
        Some(self.choice_chunk(index, delta, None, None))
    }

    fn finish(&self, index: usize, reason: FinishReason) -> Event {
        self.choice_chunk(index, ChatDelta::default(), None, Some(reason))
    }

    fn usage(&self, usage: Usage) -> Event {
        self.chunk(Vec::new(), Some(Some(usage.into())))
    }
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
