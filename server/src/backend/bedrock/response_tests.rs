use super::*;
use crate::backend::bedrock::document::to_document;
use aws_sdk_bedrockruntime::types::{ConversationRole, Message, ToolUseBlock};
use serde_json::json;

#[test]
fn every_stop_reason_maps_to_a_finish_reason() {
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("content_filtered", FinishReason::ContentFilter),
        ("guardrail_intervened", FinishReason::ContentFilter),
        ("something_new", FinishReason::Stop),
    ];
    for (wire, want) in cases {
        assert_eq!(finish_reason(&StopReason::from(wire)), want, "{wire}");
    }
}

fn token_usage(input: i32, output: i32, read: Option<i32>, write: Option<i32>) -> TokenUsage {
    TokenUsage::builder()
        .input_tokens(input)
        .output_tokens(output)
        .total_tokens(input + output)
        .set_cache_read_input_tokens(read)
        .set_cache_write_input_tokens(write)
        .build()
        .expect("usage")
}

#[test]
fn usage_counts_cached_tokens_in_the_prompt() {
    assert_eq!(
        usage(Some(&token_usage(10, 5, Some(100), Some(7)))),
        Usage {
            prompt_tokens: 117,
            completion_tokens: 5,
            cached_tokens: 100
        }
    );
    assert_eq!(
        usage(Some(&token_usage(10, 5, None, None))),
        Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0
        }
    );
    assert_eq!(usage(None), Usage::default());
}

#[test]
fn converse_output_becomes_text_deltas_tool_calls_and_finished() {
    let message = Message::builder()
        .role(ConversationRole::Assistant)
        .content(ContentBlock::Text("Checking both.".into()))
        .content(ContentBlock::Text(String::new()))
        .content(ContentBlock::ToolUse(
            ToolUseBlock::builder()
                .tool_use_id("t1")
                .name("get_weather")
                .input(to_document(&json!({"city": "Paris"})))
                .build()
                .expect("tool use"),
        ))
        .content(ContentBlock::ToolUse(
            ToolUseBlock::builder()
                .tool_use_id("t2")
                .name("get_time")
                .input(to_document(&json!({})))
                .build()
                .expect("tool use"),
        ))
        .build()
        .expect("message");
    let output = ConverseOutput::Message(message);
    let events = converse_events(
        Some(&output),
        &StopReason::ToolUse,
        Some(&token_usage(20, 9, Some(4), None)),
    );
    assert_eq!(
        events,
        vec![
            GenEvent::Delta {
                text: "Checking both.".into(),
                logprobs: vec![]
            },
            GenEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("t1".into()),
                name: Some("get_weather".into()),
                arguments: r#"{"city":"Paris"}"#.into()
            }),
            GenEvent::ToolCall(ToolCallDelta {
                index: 1,
                id: Some("t2".into()),
                name: Some("get_time".into()),
                arguments: "{}".into()
            }),
            GenEvent::Finished {
                reason: FinishReason::ToolCalls,
                usage: Usage {
                    prompt_tokens: 24,
                    completion_tokens: 9,
                    cached_tokens: 4
                }
            },
        ]
    );
}

#[test]
fn converse_without_output_still_finishes() {
    let events = converse_events(None, &StopReason::ContentFiltered, None);
    assert_eq!(
        events,
        vec![GenEvent::Finished {
            reason: FinishReason::ContentFilter,
            usage: Usage::default()
        }]
    );
}
