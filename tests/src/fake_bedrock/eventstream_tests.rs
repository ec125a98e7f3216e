use super::*;
use aws_smithy_types::event_stream::HeaderValue;

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn decode(frame: &[u8]) -> Message {
    aws_smithy_eventstream::frame::read_message_from(frame).expect("a valid frame (CRCs checked)")
}

#[test]
fn event_frames_carry_the_headers_the_sdk_dispatches_on() {
    let ev = Event {
        event_type: "contentBlockDelta",
        payload: json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    };
    let frame = event_frame(&ev).expect("frame");
    let message = decode(&frame);
    assert_eq!(header(&message, ":message-type"), Some("event"));
    assert_eq!(header(&message, ":event-type"), Some("contentBlockDelta"));
    assert_eq!(header(&message, ":content-type"), Some("application/json"));
    let payload: Value = serde_json::from_slice(message.payload()).expect("JSON payload");
    assert_eq!(payload, ev.payload);

    let message = decode(&exception_frame("throttlingException", "slow down").expect("frame"));
    assert_eq!(header(&message, ":message-type"), Some("exception"));
    assert_eq!(
        header(&message, ":exception-type"),
        Some("throttlingException")
    );
    let payload: Value = serde_json::from_slice(message.payload()).expect("JSON payload");
    assert_eq!(payload, json!({"message": "slow down"}));
}

#[test]
fn a_corrupted_frame_is_rejected() {
    let ev = Event {
        event_type: "messageStart",
        payload: json!({"role": "assistant"}),
    };
    let mut frame = event_frame(&ev).expect("frame");
    let last = frame.len() - 5;
    frame[last] ^= 1;
    assert!(aws_smithy_eventstream::frame::read_message_from(&frame[..]).is_err());
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type).collect()
}

#[test]
fn text_streams_in_small_deltas_without_a_start_event() {
    let answer = Answer::text("Hello there");
    let events = stream_events(&answer, 7);
    assert_eq!(
        types(&events),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    let text: String = events
        .iter()
        .filter_map(|e| e.payload["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello there");
    assert_eq!(events[5].payload["stopReason"], "end_turn");
    assert_eq!(events[6].payload["usage"]["inputTokens"], 10);
    assert_eq!(events[6].payload["usage"]["outputTokens"], 2);
    assert_eq!(events[6].payload["usage"]["totalTokens"], 12);
    assert_eq!(events[6].payload["metrics"]["latencyMs"], 7);
}

fn two_tools() -> Answer {
    Answer::tool_calls(vec![
        ("t1".into(), "get_weather".into(), json!({"city": "Paris"})),
        (
            "t2".into(),
            "get_time".into(),
            json!({"zone": "Europe/Paris"}),
        ),
    ])
}

/// Tool input fragments per content block index, concatenated in arrival order.
fn inputs(events: &[Event]) -> Vec<(u64, String)> {
    let mut by_index: Vec<(u64, String)> = Vec::new();
    for e in events {
        if let (Some(i), Some(piece)) = (
            e.payload["contentBlockIndex"].as_u64(),
            e.payload["delta"]["toolUse"]["input"].as_str(),
        ) {
            match by_index.iter_mut().find(|(j, _)| *j == i) {
                Some((_, s)) => s.push_str(piece),
                None => by_index.push((i, piece.to_string())),
            }
        }
    }
    by_index
}

#[test]
fn tool_blocks_follow_one_another_by_default() {
    let events = stream_events(&two_tools(), 0);
    let t = types(&events);
    let first_stop = t
        .iter()
        .position(|&t| t == "contentBlockStop")
        .expect("stop");
    let second_start = t
        .iter()
        .rposition(|&t| t == "contentBlockStart")
        .expect("start");
    assert!(first_stop < second_start, "{t:?}");
    assert_eq!(events[1].payload["start"]["toolUse"]["toolUseId"], "t1");
    assert_eq!(events[1].payload["start"]["toolUse"]["name"], "get_weather");
    let inputs = inputs(&events);
    assert_eq!(inputs[0], (0, json!({"city": "Paris"}).to_string()));
    assert_eq!(inputs[1], (1, json!({"zone": "Europe/Paris"}).to_string()));
}

#[test]
fn interleaving_alternates_the_deltas_of_consecutive_tool_blocks() {
    let mut answer = two_tools();
    answer.blocks.insert(0, Block::Text("Let me check.".into()));
    answer.interleave_tool_deltas = true;
    let events = stream_events(&answer, 0);
    let indices: Vec<u64> = events
        .iter()
        .filter(|e| {
            e.event_type == "contentBlockDelta" && e.payload["delta"].get("toolUse").is_some()
        })
        .filter_map(|e| e.payload["contentBlockIndex"].as_u64())
        .collect();
    assert_eq!(&indices[..4], [1, 2, 1, 2]);
    let inputs = inputs(&events);
    assert_eq!(inputs[0], (1, json!({"city": "Paris"}).to_string()));
    assert_eq!(inputs[1], (2, json!({"zone": "Europe/Paris"}).to_string()));
    // Both blocks are opened before any fragment arrives and closed after the last one.
    let t = types(&events);
    let starts: Vec<usize> = (0..t.len())
        .filter(|&i| t[i] == "contentBlockStart")
        .collect();
    let stops: Vec<usize> = (0..t.len())
        .filter(|&i| t[i] == "contentBlockStop")
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(stops.len(), 3);
    assert_eq!(starts[1], starts[0] + 1);
    assert_eq!(t[starts[1] + 1], "contentBlockDelta");
    assert_eq!(t[t.len() - 3], "contentBlockStop");
}

#[test]
fn chunks_never_split_a_character() {
    assert_eq!(chunks("héllo wörld", 4), ["héll", "o wö", "rld"]);
    assert!(chunks("", 4).is_empty());
}

#[test]
fn converse_body_has_the_bedrock_shape() {
    let mut answer = two_tools();
    answer.blocks.insert(0, Block::Text("ok".into()));
    answer.cache_read_input_tokens = 3;
    let body = converse_body(&answer, 12);
    assert_eq!(body["output"]["message"]["role"], "assistant");
    assert_eq!(body["output"]["message"]["content"][0]["text"], "ok");
    assert_eq!(
        body["output"]["message"]["content"][1]["toolUse"]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(body["stopReason"], "tool_use");
    assert_eq!(body["usage"]["cacheReadInputTokens"], 3);
    assert_eq!(body["metrics"]["latencyMs"], 12);
}
