//! Bedrock's answer → `GenEvent`s: stop reasons, usage, and the non-streaming `Converse`
//! output, which becomes the same event sequence a stream would (text deltas, one
//! `ToolCall` per `toolUse` with its whole input, `Finished`).

use aws_sdk_bedrockruntime::types::{ContentBlock, ConverseOutput, StopReason, TokenUsage};

use super::document::to_json;
use crate::backend::{FinishReason, GenEvent, ToolCallDelta, Usage};

/// Bedrock's `stopReason` as OpenAI's `finish_reason`.
pub(crate) fn finish_reason(stop: &StopReason) -> FinishReason {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => FinishReason::Stop,
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => FinishReason::Length,
        StopReason::ToolUse => FinishReason::ToolCalls,
        StopReason::ContentFiltered | StopReason::GuardrailIntervened => {
            FinishReason::ContentFilter
        }
        other => {
            tracing::warn!(
                stop_reason = other.as_str(),
                "unknown Bedrock stopReason; reported as finish_reason \"stop\""
            );
            FinishReason::Stop
        }
    }
}

fn count(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// Bedrock's token usage in OpenAI's terms: `prompt_tokens` includes the cached ones
/// (read and written), as OpenAI's does.
pub(crate) fn usage(u: Option<&TokenUsage>) -> Usage {
    let Some(u) = u else {
        return Usage::default();
    };
    let read = count(u.cache_read_input_tokens.unwrap_or(0));
    let write = count(u.cache_write_input_tokens.unwrap_or(0));
    Usage {
        prompt_tokens: count(u.input_tokens) + read + write,
        completion_tokens: count(u.output_tokens),
        cached_tokens: read,
    }
}

/// The events of a complete `Converse` answer, `Finished` last.
pub(crate) fn converse_events(
    output: Option<&ConverseOutput>,
    stop: &StopReason,
    token_usage: Option<&TokenUsage>,
) -> Vec<GenEvent> {
    let mut events = Vec::new();
    let blocks = output
        .and_then(|o| o.as_message().ok())
        .map(|m| m.content.as_slice())
        .unwrap_or_default();
    let mut ordinal = 0;
    for block in blocks {
        match block {
            ContentBlock::Text(text) if !text.is_empty() => events.push(GenEvent::Delta {
                text: text.clone(),
                logprobs: Vec::new(),
            }),
            ContentBlock::ToolUse(call) => {
                events.push(GenEvent::ToolCall(ToolCallDelta {
                    index: ordinal,
                    id: Some(call.tool_use_id.clone()),
                    name: Some(call.name.clone()),
                    arguments: to_json(&call.input).to_string(),
                }));
                ordinal += 1;
            }
            // Reasoning, citations and the like have no place in a chat completion.
            _ => {}
        }
    }
    events.push(GenEvent::Finished {
        reason: finish_reason(stop),
        usage: usage(token_usage),
    });
    events
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
