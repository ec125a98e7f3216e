//! What the fake sends back: the Converse JSON body and the ConverseStream events, each
//! event framed with aws-smithy-eventstream's own writer so that the SDK's decoder sees
//! exactly the bytes Bedrock would send (prelude, headers, payload, both CRCs).

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use serde_json::{json, Value};

use super::{Answer, Block};

/// Bedrock pads every stream event with a `p` field (so that event sizes leak nothing);
/// clients must ignore it, so the fake sends it too.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0";

/// Characters per text delta: Bedrock streams text in small pieces.
const TEXT_CHUNK_CHARS: usize = 4;
/// Characters per tool-input delta: small enough to split keys and values across events.
const TOOL_CHUNK_CHARS: usize = 5;

/// One ConverseStream event before framing: its `:event-type` and JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Event {
    pub event_type: &'static str,
    pub payload: Value,
}

/// A frame that could not be written (a header or payload over the format's limits).
#[derive(Debug)]
pub(super) struct FrameError(pub String);

/// The Converse response body for `answer`.
pub(super) fn converse_body(answer: &Answer, latency_ms: u64) -> Value {
    let content: Vec<Value> = answer
        .blocks
        .iter()
        .map(|block| match block {
            Block::Text(text) => json!({ "text": text }),
            Block::ToolUse { id, name, input } => {
                json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } })
            }
        })
        .collect();
    json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": answer.stop_reason,
        "usage": usage(answer),
        "metrics": { "latencyMs": latency_ms },
    })
}

fn usage(answer: &Answer) -> Value {
    json!({
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "totalTokens": answer.input_tokens + answer.output_tokens,
        "cacheReadInputTokens": answer.cache_read_input_tokens,
        "cacheWriteInputTokens": answer.cache_write_input_tokens,
    })
}

/// The ConverseStream events for `answer`, in the order they are sent:
/// `messageStart`; per block, in order: text → `contentBlockDelta{text}` per ~4 chars then
/// `contentBlockStop` (no `contentBlockStart`, as Bedrock does), tool use →
/// `contentBlockStart{toolUse}`, `contentBlockDelta{toolUse.input}` per ~5 chars of the
/// input JSON, `contentBlockStop`; then `messageStop` and `metadata`. With
/// `interleave_tool_deltas`, each run of consecutive tool blocks sends all its starts, then
/// its deltas round-robin, then all its stops.
pub(super) fn stream_events(answer: &Answer, latency_ms: u64) -> Vec<Event> {
    let mut events = vec![event("messageStart", json!({ "role": "assistant" }))];
    let mut index = 0;
    while index < answer.blocks.len() {
        let run_end = if answer.interleave_tool_deltas {
            answer.blocks[index..]
                .iter()
                .position(|b| !matches!(b, Block::ToolUse { .. }))
                .map_or(answer.blocks.len(), |n| index + n)
        } else {
            index
        };
        if run_end > index + 1 {
            interleaved_tools(&answer.blocks[index..run_end], index, &mut events);
            index = run_end;
        } else {
            block_events(&answer.blocks[index], index, &mut events);
            index += 1;
        }
    }
    events.push(event(
        "messageStop",
        json!({ "stopReason": answer.stop_reason }),
    ));
    events.push(event(
        "metadata",
        json!({ "usage": usage(answer), "metrics": { "latencyMs": latency_ms } }),
    ));
    events
}

fn block_events(block: &Block, index: usize, events: &mut Vec<Event>) {
    match block {
        Block::Text(text) => {
            for piece in chunks(text, TEXT_CHUNK_CHARS) {
                events.push(delta(index, json!({ "text": piece })));
            }
        }
        Block::ToolUse { id, name, input } => {
            events.push(tool_start(index, id, name));
            for piece in chunks(&input.to_string(), TOOL_CHUNK_CHARS) {
                events.push(delta(index, json!({ "toolUse": { "input": piece } })));
            }
        }
    }
    events.push(stop(index));
}

/// `blocks` are all tool uses; the first has content block index `first`.
fn interleaved_tools(blocks: &[Block], first: usize, events: &mut Vec<Event>) {
    let mut pieces: Vec<std::vec::IntoIter<String>> = Vec::new();
    for (offset, block) in blocks.iter().enumerate() {
        if let Block::ToolUse { id, name, input } = block {
            events.push(tool_start(first + offset, id, name));
            pieces.push(chunks(&input.to_string(), TOOL_CHUNK_CHARS).into_iter());
        }
    }
    loop {
        let mut sent = false;
        for (offset, queue) in pieces.iter_mut().enumerate() {
            if let Some(piece) = queue.next() {
                events.push(delta(
                    first + offset,
                    json!({ "toolUse": { "input": piece } }),
                ));
                sent = true;
            }
        }
        if !sent {
            break;
        }
    }
    for offset in 0..blocks.len() {
        events.push(stop(first + offset));
    }
}

fn event(event_type: &'static str, mut payload: Value) -> Event {
    if let Some(object) = payload.as_object_mut() {
        object.insert("p".into(), Value::String(PADDING.into()));
    }
    Event {
        event_type,
        payload,
    }
}

fn tool_start(index: usize, id: &str, name: &str) -> Event {
    event(
        "contentBlockStart",
        json!({
            "contentBlockIndex": index,
            "start": { "toolUse": { "toolUseId": id, "name": name } },
        }),
    )
}

fn delta(index: usize, delta: Value) -> Event {
    event(
        "contentBlockDelta",
        json!({ "contentBlockIndex": index, "delta": delta }),
    )
}

fn stop(index: usize) -> Event {
    event("contentBlockStop", json!({ "contentBlockIndex": index }))
}

/// `text` cut into pieces of `size` characters (never inside a UTF-8 character).
pub(super) fn chunks(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The wire frame of an `event` message.
pub(super) fn event_frame(ev: &Event) -> Result<Vec<u8>, FrameError> {
    frame(
        Message::new(ev.payload.to_string().into_bytes())
            .add_header(string_header(":event-type", ev.event_type.to_string()))
            .add_header(string_header(":content-type", "application/json".into()))
            .add_header(string_header(":message-type", "event".into())),
    )
}

/// The wire frame of an `exception` message (e.g. `modelStreamErrorException`), which the
/// SDK turns into the stream's typed error.
pub(super) fn exception_frame(exception_type: &str, message: &str) -> Result<Vec<u8>, FrameError> {
    frame(
        Message::new(json!({ "message": message }).to_string().into_bytes())
            .add_header(string_header(":exception-type", exception_type.to_string()))
            .add_header(string_header(":content-type", "application/json".into()))
            .add_header(string_header(":message-type", "exception".into())),
    )
}

fn string_header(name: &'static str, value: String) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

fn frame(message: Message) -> Result<Vec<u8>, FrameError> {
    let mut buffer = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer)
        .map_err(|e| FrameError(e.to_string()))?;
    Ok(buffer)
}

#[cfg(test)]
#[path = "eventstream_tests.rs"]
mod tests;
