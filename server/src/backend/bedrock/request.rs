//! OpenAI-neutral `GenerateRequest` → the parts of a Converse / ConverseStream call
//! (docs/architecture.md §7). Pure: no I/O, no logging, so every rule is unit-tested.
//!
//! Choices made where Bedrock and OpenAI differ:
//! - A `tool` message becomes a `toolResult` block whose content is one `text` block with
//!   the message's content verbatim (OpenAI tool output is a string; the model reads it the
//!   same either way). An empty output becomes the text `(no output)`: Bedrock refuses
//!   blank text blocks.
//! - Bedrock refuses `toolUse`/`toolResult` blocks in the history unless `toolConfig` is
//!   sent, and it has no `toolChoice` "none". So when no `toolConfig` goes out (no tools,
//!   or `tool_choice: "none"`), earlier tool calls and results are rendered as plain text
//!   (`[tool call <id>: <name>(<arguments>)]`, `[tool result <id>: <output>]`) in the
//!   same turns: the model sees what happened and cannot call a tool.
//! - Penalties, `top_k`, `min_p` and `ignore_eos` count as unsupported only when the
//!   client set them to a value that changes sampling: SDKs often send the neutral
//!   defaults (`presence_penalty: 0`), which every backend honours trivially.

use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, AutoToolChoice, ContentBlock, ConversationRole, InferenceConfiguration, Message,
    SpecificToolChoice, SystemContentBlock, Tool, ToolChoice as BrToolChoice, ToolConfiguration,
    ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::error::operation::BuildError;

use super::document::to_document;
use crate::backend::{BackendError, ChatMessage, GenerateRequest, Prompt, ToolChoice};
use crate::config::gateway::UnsupportedParams;

/// The content of a `toolResult` whose tool printed nothing.
pub(crate) const EMPTY_TOOL_OUTPUT: &str = "(no output)";

/// Everything of a Converse call but the model id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConverseParts {
    pub system: Vec<SystemContentBlock>,
    pub messages: Vec<Message>,
    pub inference: Option<InferenceConfiguration>,
    pub tool_config: Option<ToolConfiguration>,
}

/// A translated request and the unsupported fields it dropped (with `Drop`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Translated {
    pub parts: ConverseParts,
    pub dropped: Vec<&'static str>,
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest {
        message: message.into(),
        param: Some(param.into()),
    }
}

/// The SDK's builders fail only on a missing required field, which this module always
/// sets: a failure is our bug, not the client's.
fn built<T>(result: Result<T, BuildError>) -> Result<T, BackendError> {
    result.map_err(|e| BackendError::Internal(format!("building a Bedrock request: {e}")))
}

/// Translate `req` for the Bedrock backend of `served_model`.
pub(crate) fn translate(
    req: &GenerateRequest,
    policy: UnsupportedParams,
    served_model: &str,
) -> Result<Translated, BackendError> {
    let messages = match &req.prompt {
        Prompt::Chat(messages) => messages,
        Prompt::Text(_) | Prompt::Tokens(_) => {
            return Err(invalid(
                "the Bedrock backend serves chat completions only; use /v1/chat/completions",
                "prompt",
            ))
        }
    };
    let unsupported = unsupported_params(req);
    if let (UnsupportedParams::Reject, Some(first)) = (policy, unsupported.first()) {
        return Err(invalid(
            format!("`{first}` is not supported by the Bedrock backend of model `{served_model}`"),
            *first,
        ));
    }
    let tool_config = tool_config(req)?;
    let (system, messages) = conversation(messages, tool_config.is_some())?;
    Ok(Translated {
        parts: ConverseParts {
            system,
            messages,
            inference: inference_config(req),
            tool_config,
        },
        dropped: unsupported,
    })
}

/// Request fields Bedrock cannot honour, in a fixed order (the first is the one a
/// rejection names).
pub(crate) fn unsupported_params(req: &GenerateRequest) -> Vec<&'static str> {
    let s = &req.sampling;
    let set = &req.set_by_client;
    let mut out = Vec::new();
    if s.logprobs.is_some() {
        out.push("logprobs");
    }
    if set.seed && s.seed.is_some() {
        out.push("seed");
    }
    if set.presence_penalty && s.presence_penalty != 0.0 {
        out.push("presence_penalty");
    }
    if set.frequency_penalty && s.frequency_penalty != 0.0 {
        out.push("frequency_penalty");
    }
    if set.repetition_penalty && s.repetition_penalty != 1.0 {
        out.push("repetition_penalty");
    }
    if set.top_k && s.top_k.is_some_and(|k| k > 0) {
        out.push("top_k");
    }
    if set.min_p && s.min_p > 0.0 {
        out.push("min_p");
    }
    if set.ignore_eos && s.ignore_eos {
        out.push("ignore_eos");
    }
    out
}

/// Only what the client set: Bedrock models have their own defaults, and some refuse
/// `temperature` together with `top_p`.
pub(crate) fn inference_config(req: &GenerateRequest) -> Option<InferenceConfiguration> {
    let max_tokens = req
        .max_tokens_explicit
        .then(|| i32::try_from(req.sampling.max_tokens).unwrap_or(i32::MAX));
    let temperature = req
        .set_by_client
        .temperature
        .then_some(req.sampling.temperature);
    let top_p = req.set_by_client.top_p.then_some(req.sampling.top_p);
    let stop = (!req.stop.is_empty()).then(|| req.stop.clone());
    if max_tokens.is_none() && temperature.is_none() && top_p.is_none() && stop.is_none() {
        return None;
    }
    Some(
        InferenceConfiguration::builder()
            .set_max_tokens(max_tokens)
            .set_temperature(temperature)
            .set_top_p(top_p)
            .set_stop_sequences(stop)
            .build(),
    )
}

/// `tools`/`tool_choice` → `toolConfig`; `None` when no tools go out (none given, or
/// `tool_choice: "none"`).
pub(crate) fn tool_config(
    req: &GenerateRequest,
) -> Result<Option<ToolConfiguration>, BackendError> {
    let choice = match &req.tool_choice {
        ToolChoice::None => return Ok(None),
        ToolChoice::Auto if req.tools.is_empty() => return Ok(None),
        ToolChoice::Auto => BrToolChoice::Auto(AutoToolChoice::builder().build()),
        ToolChoice::Required if req.tools.is_empty() => {
            return Err(invalid(
                "tool_choice `required` needs at least one tool in `tools`",
                "tool_choice",
            ))
        }
        ToolChoice::Required => BrToolChoice::Any(AnyToolChoice::builder().build()),
        ToolChoice::Function(name) => {
            if !req.tools.iter().any(|t| &t.name == name) {
                return Err(invalid(
                    format!("tool_choice names the function `{name}`, which is not in `tools`"),
                    "tool_choice",
                ));
            }
            BrToolChoice::Tool(built(SpecificToolChoice::builder().name(name).build())?)
        }
    };
    let mut tools = Vec::with_capacity(req.tools.len());
    for t in &req.tools {
        let spec = ToolSpecification::builder()
            .name(&t.name)
            .set_description(t.description.clone().filter(|d| !d.trim().is_empty()))
            .input_schema(ToolInputSchema::Json(to_document(&t.parameters)))
            .build();
        tools.push(Tool::ToolSpec(built(spec)?));
    }
    Ok(Some(built(
        ToolConfiguration::builder()
            .set_tools(Some(tools))
            .tool_choice(choice)
            .build(),
    )?))
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// Converse turns under construction: consecutive same-role blocks share one message.
#[derive(Default)]
struct Turns {
    turns: Vec<(ConversationRole, Vec<ContentBlock>)>,
}

impl Turns {
    fn push(&mut self, role: ConversationRole, blocks: Vec<ContentBlock>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }
}

/// System blocks and merged user/assistant turns. `structured_tools`: tool calls and
/// results become `toolUse`/`toolResult` blocks (only valid with a `toolConfig`), else text.
pub(crate) fn conversation(
    messages: &[ChatMessage],
    structured_tools: bool,
) -> Result<(Vec<SystemContentBlock>, Vec<Message>), BackendError> {
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => {
                if !is_blank(&m.content) {
                    system.push(SystemContentBlock::Text(m.content.clone()));
                }
            }
            "user" => turns.push(ConversationRole::User, text_block(&m.content)),
            "assistant" => {
                let mut blocks = text_block(&m.content);
                for (j, call) in m.tool_calls.iter().enumerate() {
                    blocks.push(tool_use(i, j, call, structured_tools)?);
                }
                turns.push(ConversationRole::Assistant, blocks);
            }
            "tool" => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    invalid(
                        format!("messages[{i}] has role `tool` but no `tool_call_id`"),
                        format!("messages[{i}].tool_call_id"),
                    )
                })?;
                turns.push(
                    ConversationRole::User,
                    vec![tool_result(id, &m.content, structured_tools)?],
                );
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}] has the unknown role `{other}`"),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }
    match turns.turns.first() {
        None => {
            return Err(invalid(
                "Bedrock needs at least one user message with content",
                "messages",
            ))
        }
        Some((ConversationRole::Assistant, _)) => {
            return Err(invalid(
                "Bedrock requires the conversation to start with a user message, but the first non-system message is from the assistant",
                "messages",
            ))
        }
        Some(_) => {}
    }
    let mut out = Vec::with_capacity(turns.turns.len());
    for (role, content) in turns.turns {
        out.push(built(
            Message::builder()
                .role(role)
                .set_content(Some(content))
                .build(),
        )?);
    }
    Ok((system, out))
}

fn text_block(text: &str) -> Vec<ContentBlock> {
    if is_blank(text) {
        Vec::new()
    } else {
        vec![ContentBlock::Text(text.to_owned())]
    }
}

fn tool_use(
    i: usize,
    j: usize,
    call: &crate::backend::ToolCall,
    structured: bool,
) -> Result<ContentBlock, BackendError> {
    // Some clients send "" for a call without arguments: that is the empty object.
    let input: serde_json::Value = if is_blank(&call.arguments) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(&call.arguments).map_err(|e| {
            invalid(
                format!("messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e}"),
                format!("messages[{i}].tool_calls[{j}].function.arguments"),
            )
        })?
    };
    if !structured {
        return Ok(ContentBlock::Text(format!(
            "[tool call {}: {}({})]",
            call.id, call.name, input
        )));
    }
    Ok(ContentBlock::ToolUse(built(
        ToolUseBlock::builder()
            .tool_use_id(&call.id)
            .name(&call.name)
            .input(to_document(&input))
            .build(),
    )?))
}

fn tool_result(id: &str, output: &str, structured: bool) -> Result<ContentBlock, BackendError> {
    let output = if is_blank(output) {
        EMPTY_TOOL_OUTPUT
    } else {
        output
    };
    if !structured {
        return Ok(ContentBlock::Text(format!("[tool result {id}: {output}]")));
    }
    Ok(ContentBlock::ToolResult(built(
        ToolResultBlock::builder()
            .tool_use_id(id)
            .content(ToolResultContentBlock::Text(output.to_owned()))
            .build(),
    )?))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
