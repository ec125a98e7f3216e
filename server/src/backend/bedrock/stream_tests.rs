use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::backend::FinishReason;
use aws_sdk_bedrockruntime::types::{
    ContentBlockDeltaEvent, ContentBlockStartEvent, ContentBlockStopEvent, ConversationRole,
    ConverseStreamMetadataEvent, MessageStartEvent, MessageStopEvent, TokenUsage,
    ToolUseBlockDelta, ToolUseBlockStart,
};

fn message_start() -> ConverseStreamOutput {
    ConverseStreamOutput::MessageStart(
        MessageStartEvent::builder()
            .role(ConversationRole::Assistant)
            .build()
            .expect("start"),
    )
}

fn text(index: i32, t: &str) -> ConverseStreamOutput {
    ConverseStreamOutput::ContentBlockDelta(
        ContentBlockDeltaEvent::builder()
            .content_block_index(index)
            .delta(ContentBlockDelta::Text(t.into()))
            .build()
            .expect("delta"),
    )
}

fn tool_start(index: i32, id: &str, name: &str) -> ConverseStreamOutput {
    ConverseStreamOutput::ContentBlockStart(
        ContentBlockStartEvent::builder()
            .content_block_index(index)
            .start(ContentBlockStart::ToolUse(
                ToolUseBlockStart::builder()
                    .tool_use_id(id)
                    .name(name)
                    .build()
                    .expect("tool start"),
            ))
            .build()
            .expect("start"),
    )
}

fn tool_input(index: i32, input: &str) -> ConverseStreamOutput {
    ConverseStreamOutput::ContentBlockDelta(
        ContentBlockDeltaEvent::builder()
            .content_block_index(index)
            .delta(ContentBlockDelta::ToolUse(
                ToolUseBlockDelta::builder()
                    .input(input)
                    .build()
                    .expect("tool delta"),
            ))
            .build()
            .expect("delta"),
    )
}

fn block_stop(index: i32) -> ConverseStreamOutput {
    ConverseStreamOutput::ContentBlockStop(
        ContentBlockStopEvent::builder()
            .content_block_index(index)
            .build()
            .expect("stop"),
    )
}

fn message_stop(reason: &str) -> ConverseStreamOutput {
    ConverseStreamOutput::MessageStop(
        MessageStopEvent::builder()
            .stop_reason(StopReason::from(reason))
            .build()
            .expect("message stop"),
    )
}

fn metadata(input: i32, output: i32, cache_read: i32) -> ConverseStreamOutput {
    ConverseStreamOutput::Metadata(
        ConverseStreamMetadataEvent::builder()
            .usage(
                TokenUsage::builder()
                    .input_tokens(input)
                    .output_tokens(output)
                    .total_tokens(input + output)
                    .cache_read_input_tokens(cache_read)
                    .build()
                    .expect("usage"),
            )
            .build(),
    )
}

fn feed(events: Vec<ConverseStreamOutput>) -> (Vec<GenEvent>, Assembler) {
    let mut a = Assembler::default();
    let mut out = Vec::new();
    for e in events {
        out.extend(a.push(e).expect("valid event"));
    }
    (out, a)
}

fn call(index: usize, id: Option<&str>, name: Option<&str>, arguments: &str) -> GenEvent {
    GenEvent::ToolCall(ToolCallDelta {
        index,
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        arguments: arguments.into(),
    })
}

fn delta(t: &str) -> GenEvent {
    GenEvent::Delta {
        text: t.into(),
        logprobs: vec![],
    }
}

#[test]
fn text_and_two_interleaved_tool_calls_reassemble_with_call_ordinals() {
    let (events, a) = feed(vec![
        message_start(),
        text(0, "Let me "),
        text(0, ""),
        text(0, "check."),
        block_stop(0),
        tool_start(1, "tu_a", "get_weather"),
        tool_start(2, "tu_b", "get_time"),
        tool_input(1, "{\"ci"),
        tool_input(2, "{\"tz\":"),
        tool_input(1, "ty\":\"Paris\"}"),
        tool_input(2, "\"UTC\"}"),
        block_stop(1),
        block_stop(2),
        message_stop("tool_use"),
        metadata(30, 12, 8),
    ]);
    assert_eq!(
        events,
        vec![
            delta("Let me "),
            delta("check."),
            call(0, Some("tu_a"), Some("get_weather"), ""),
            call(1, Some("tu_b"), Some("get_time"), ""),
            call(0, None, None, "{\"ci"),
            call(1, None, None, "{\"tz\":"),
            call(0, None, None, "ty\":\"Paris\"}"),
            call(1, None, None, "\"UTC\"}"),
            GenEvent::Finished {
                reason: FinishReason::ToolCalls,
                usage: Usage {
                    prompt_tokens: 38,
                    completion_tokens: 12,
                    cached_tokens: 8
                }
            },
        ]
    );
    assert!(a.is_finished());
    // What a client concatenating by index gets:
    let mut args = [String::new(), String::new()];
    for e in &events {
        if let GenEvent::ToolCall(d) = e {
            args[d.index].push_str(&d.arguments);
        }
    }
    assert_eq!(args[0], r#"{"city":"Paris"}"#);
    assert_eq!(args[1], r#"{"tz":"UTC"}"#);
}

#[test]
fn finished_needs_both_message_stop_and_metadata_in_either_order() {
    let (events, a) = feed(vec![text(0, "hi"), message_stop("end_turn")]);
    assert_eq!(events, vec![delta("hi")]);
    assert!(!a.is_finished());

    let (events, _) = feed(vec![
        text(0, "hi"),
        metadata(1, 1, 0),
        message_stop("max_tokens"),
    ]);
    assert!(matches!(
        events.last(),
        Some(GenEvent::Finished {
            reason: FinishReason::Length,
            ..
        })
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, GenEvent::Finished { .. }))
            .count(),
        1
    );
}

#[test]
fn a_tool_call_without_input_gets_empty_object_arguments() {
    let (events, _) = feed(vec![
        tool_start(0, "t", "now"),
        block_stop(0),
        message_stop("tool_use"),
        metadata(1, 1, 0),
    ]);
    assert_eq!(events[0], call(0, Some("t"), Some("now"), ""));
    assert_eq!(events[1], call(0, None, None, "{}"));
}

#[test]
fn tool_input_for_a_block_that_never_started_is_an_error() {
    let mut a = Assembler::default();
    let err = a.push(tool_input(3, "{}")).unwrap_err();
    assert!(matches!(err, BackendError::Upstream(_)), "{err:?}");
}

#[test]
fn an_end_without_message_stop_is_an_error_and_without_metadata_finishes() {
    let (_, mut a) = feed(vec![text(0, "partial")]);
    assert!(matches!(a.end(), Err(BackendError::Upstream(_))));

    let (_, mut a) = feed(vec![text(0, "done"), message_stop("end_turn")]);
    assert_eq!(
        a.end().expect("complete answer"),
        Some(GenEvent::Finished {
            reason: FinishReason::Stop,
            usage: Usage::default()
        })
    );
}

type Ended = Arc<Mutex<Vec<Option<String>>>>;

fn recorder() -> (OnEnd, Ended) {
    let ended: Ended = Arc::default();
    let e = ended.clone();
    let on_end: OnEnd = Box::new(move |_, error| {
        e.lock().expect("lock").push(error.map(|e| e.to_string()));
    });
    (on_end, ended)
}

fn source(items: Vec<Result<ConverseStreamOutput, BackendError>>) -> SourceStream {
    stream::iter(items).boxed()
}

#[tokio::test]
async fn gen_stream_yields_events_then_finished_and_reports_the_end_once() {
    let (on_end, ended) = recorder();
    let s = gen_stream(
        source(vec![
            Ok(text(0, "a")),
            Ok(message_stop("end_turn")),
            Ok(metadata(2, 1, 0)),
            Ok(text(0, "after the end is ignored")),
        ]),
        Limits::default(),
        on_end,
    );
    let got: Vec<_> = s.collect().await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Ok(delta("a")));
    assert!(matches!(got[1], Ok(GenEvent::Finished { .. })));
    assert_eq!(*ended.lock().expect("lock"), vec![None]);
}

#[tokio::test]
async fn a_stream_error_midway_ends_with_an_err_item_and_no_finished() {
    let (on_end, ended) = recorder();
    let s = gen_stream(
        source(vec![
            Ok(text(0, "a")),
            Err(BackendError::Upstream("Bedrock stream failed: boom".into())),
            Ok(message_stop("end_turn")),
        ]),
        Limits::default(),
        on_end,
    );
    let got: Vec<_> = s.collect().await;
    assert_eq!(
        got,
        vec![
            Ok(delta("a")),
            Err(BackendError::Upstream("Bedrock stream failed: boom".into()))
        ]
    );
    assert_eq!(ended.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_stream_that_ends_before_message_stop_ends_with_an_err_item() {
    let (on_end, _) = recorder();
    let got: Vec<_> = gen_stream(source(vec![Ok(text(0, "a"))]), Limits::default(), on_end)
        .collect()
        .await;
    assert_eq!(got.len(), 2);
    assert!(matches!(got[1], Err(BackendError::Upstream(_))), "{got:?}");
}

#[tokio::test]
async fn dropping_the_stream_reports_the_end() {
    let (on_end, ended) = recorder();
    let mut s = gen_stream(
        source(vec![Ok(text(0, "a")), Ok(text(0, "b"))]),
        Limits::default(),
        on_end,
    );
    assert_eq!(s.next().await, Some(Ok(delta("a"))));
    assert!(ended.lock().expect("lock").is_empty());
    drop(s);
    assert_eq!(ended.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_deadline() {
    let (on_end, _) = recorder();
    let stalled = stream::iter(vec![Ok(text(0, "a"))])
        .chain(stream::pending())
        .boxed();
    let budget = Duration::from_millis(50);
    let limits = Limits {
        idle: Some(Duration::from_secs(30)),
        deadline: Some((Instant::now() + budget, budget)),
    };
    let s = gen_stream(stalled, limits, on_end);
    let got: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
        .await
        .expect("the deadline ends the stream");
    assert_eq!(got[0], Ok(delta("a")));
    assert!(
        matches!(got[1], Err(BackendError::DeadlineExceeded(_))),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_stalled_stream_ends_after_the_idle_limit() {
    let (on_end, ended) = recorder();
    let stalled = stream::iter(vec![Ok(text(0, "a"))])
        .chain(stream::pending())
        .boxed();
    let budget = Duration::from_secs(30);
    let limits = Limits {
        idle: Some(Duration::from_millis(50)),
        deadline: Some((Instant::now() + budget, budget)),
    };
    let got: Vec<_> = tokio::time::timeout(
        Duration::from_secs(5),
        gen_stream(stalled, limits, on_end).collect::<Vec<_>>(),
    )
    .await
    .expect("the idle limit ends the stream");
    assert_eq!(got.len(), 2);
    match &got[1] {
        Err(BackendError::Upstream(m)) => assert!(m.contains("stalled"), "{m}"),
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert_eq!(ended.lock().expect("lock").len(), 1);
}
