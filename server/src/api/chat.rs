//! `POST /v1/chat/completions`.

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
use super::tools;
use super::types::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionRequest, ChatDelta, ChatLogprobs,
    ChatMessageIn, FunctionChunk, Role, SamplingFields, ToolCallChunk,
};
use super::AppState;
use crate::backend::{ChatMessage, FinishReason, Prompt, ToolCallDelta};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(create::<ChatFormat>))
}

/// The validated parameters of a chat request: `max_completion_tokens` wins over
/// `max_tokens`; logprobs are `logprobs` plus `top_logprobs`.
pub(crate) fn options(body: &ChatCompletionRequest) -> Result<GenerationOptions, ApiError> {
    let logprobs = LogprobsParams::Chat {
        logprobs: body.logprobs,
        top_logprobs: body.top_logprobs.as_ref(),
    };
    body.sampling.validate(body.max_completion_tokens, logprobs)
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

/// Chat responses: `"object": "chat.completion"`, chunks `"chat.completion.chunk"` with
/// text under `delta.content`.
pub(crate) struct ChatFormat(ChunkMeta);

impl Endpoint for ChatFormat {
    type Request = ChatCompletionRequest;
    type Choice = ChatChoice;
    const ID_PREFIX: &'static str = "chatcmpl";
    const OBJECT: &'static str = "chat.completion";

    fn common(request: &ChatCompletionRequest) -> (&str, &SamplingFields) {
        (&request.model, &request.sampling)
    }

    fn prepare(body: &ChatCompletionRequest) -> Result<Prepared, ApiError> {
        reject_unsupported(body)?;
        let messages = messages(&body.messages)?;
        let tools = tools::tools(body.tools.as_ref())?;
        let tool_choice = tools::tool_choice(body.tool_choice.as_ref(), &tools)?;
        Ok(Prepared {
            prompts: vec![Prompt::Chat(messages)],
            tools,
            tool_choice,
            options: options(body)?,
        })
    }

    fn new(meta: ChunkMeta) -> Self {
        ChatFormat(meta)
    }

    fn choice(&self, index: usize, c: Completed) -> ChatChoice {
        ChatChoice {
            index,
            logprobs: self.0.logprobs.then(|| logprobs::chat(&c.logprobs)),
            message: AssistantMessage {
                role: "assistant",
                // OpenAI sends `null` content for an answer that is only tool calls.
                content: (!c.text.is_empty() || c.tool_calls.is_empty()).then_some(c.text),
                tool_calls: c.tool_calls,
            },
            finish_reason: c.finish_reason.as_str(),
        }
    }
}

impl ChatFormat {
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
        self.0.choice_chunk(Self::CHUNK_OBJECT, choice)
    }
}

impl ChunkFormat for ChatFormat {
    const CHUNK_OBJECT: &'static str = "chat.completion.chunk";

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
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
