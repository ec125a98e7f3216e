//! The fake Bedrock driven by the real `aws_sdk_bedrockruntime::Client`: if the SDK parses
//! what the fake sends (answers, streams, typed errors, broken streams) and the fake accepts
//! the SDK's SigV4 signatures and refuses wrong ones, tests of our Bedrock backend against
//! the fake exercise the same code paths as production.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseOutput,
    ConverseStreamOutput, Message, StopReason, TokenUsage,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::{Document, Number};
use inferd_tests::fake_bedrock::{
    Answer, Block, FakeBedrock, Reply, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY,
};
use serde_json::{json, Value};

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

async fn client_with(fake: &FakeBedrock, access_key: &str, secret: &str) -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(REGION)
        .endpoint_url(fake.endpoint())
        .credentials_provider(Credentials::new(access_key, secret, None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await;
    Client::new(&config)
}

async fn client(fake: &FakeBedrock) -> Client {
    client_with(fake, ACCESS_KEY_ID, SECRET_ACCESS_KEY).await
}

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .expect("a valid message")
}

async fn converse(
    client: &Client,
    model: &str,
) -> Result<
    aws_sdk_bedrockruntime::operation::converse::ConverseOutput,
    SdkError<ConverseError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
> {
    client
        .converse()
        .model_id(model)
        .messages(user("Hi"))
        .send()
        .await
}

/// A ConverseStream call to [`HAIKU`] with one user message.
async fn try_converse_stream(
    client: &Client,
) -> Result<
    aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamOutput,
    SdkError<ConverseStreamError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
> {
    client
        .converse_stream()
        .model_id(HAIKU)
        .messages(user("Hi"))
        .send()
        .await
}

async fn converse_stream(
    client: &Client,
) -> aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamOutput {
    try_converse_stream(client)
        .await
        .expect("converse-stream starts")
}

/// (input, output, total) tokens of a usage block.
fn token_counts(usage: &TokenUsage) -> (i32, i32, i32) {
    (
        usage.input_tokens(),
        usage.output_tokens(),
        usage.total_tokens(),
    )
}

/// Every event of a stream that ends cleanly.
async fn all_events(
    output: &mut aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamOutput,
) -> Vec<ConverseStreamOutput> {
    let mut events = Vec::new();
    while let Some(event) = output.stream.recv().await.expect("a well-formed event") {
        events.push(event);
    }
    events
}

fn to_json(doc: &Document) -> Value {
    match doc {
        Document::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        Document::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Document::Number(Number::PosInt(n)) => json!(n),
        Document::Number(Number::NegInt(n)) => json!(n),
        Document::Number(Number::Float(f)) => json!(f),
        Document::String(s) => json!(s),
        Document::Bool(b) => json!(b),
        Document::Null => Value::Null,
    }
}

fn message_content(
    out: &aws_sdk_bedrockruntime::operation::converse::ConverseOutput,
) -> &[ContentBlock] {
    match out.output() {
        Some(ConverseOutput::Message(m)) => m.content(),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn converse_text_answer_is_parsed_by_the_sdk() {
    let fake = FakeBedrock::start().await;
    let mut answer = Answer::text("Bonjour tout le monde");
    answer.cache_read_input_tokens = 4;
    answer.cache_write_input_tokens = 2;
    fake.push(Reply::Answer(answer));
    let out = converse(&client(&fake).await, HAIKU)
        .await
        .expect("converse");

    let content = message_content(&out);
    assert_eq!(content.len(), 1);
    assert_eq!(
        content[0].as_text().map(String::as_str),
        Ok("Bonjour tout le monde")
    );
    assert_eq!(out.stop_reason(), &StopReason::EndTurn);
    let usage = out.usage().expect("usage");
    assert_eq!(token_counts(usage), (10, 4, 14));
    assert_eq!(usage.cache_read_input_tokens(), Some(4));
    assert_eq!(usage.cache_write_input_tokens(), Some(2));
    assert!(out.metrics().is_some());
    use aws_sdk_bedrockruntime::operation::RequestId;
    assert!(out.request_id().is_some_and(|id| !id.is_empty()));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        r.model_id, HAIKU,
        "the ':' of the model id survives the path encoding"
    );
    assert!(!r.streaming);
    assert!(r.signature_valid, "the SDK's SigV4 signature is accepted");
    assert_eq!(r.body["messages"][0]["role"], "user");
    assert_eq!(r.body["messages"][0]["content"][0]["text"], "Hi");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let auth = r.header("authorization").expect("authorization recorded");
    assert!(
        auth.contains(&format!("Credential={ACCESS_KEY_ID}/")),
        "{auth}"
    );
    assert!(auth.ends_with("Signature=<redacted>"), "{auth}");
}

#[tokio::test]
async fn empty_queue_answers_hello() {
    let fake = FakeBedrock::start().await;
    let out = converse(&client(&fake).await, HAIKU)
        .await
        .expect("converse");
    assert_eq!(
        message_content(&out)[0].as_text().map(String::as_str),
        Ok("Hello from Bedrock.")
    );
}

#[tokio::test]
async fn converse_tool_use_input_is_a_document() {
    let fake = FakeBedrock::start().await;
    let input = json!({"city": "Paris", "days": 3, "offset": -2, "ratio": 0.5, "tags": ["a", "b"], "metric": true, "note": null});
    fake.push(Reply::Answer(Answer::tool_calls(vec![(
        "tooluse_1".into(),
        "get_weather".into(),
        input.clone(),
    )])));
    let out = converse(&client(&fake).await, HAIKU)
        .await
        .expect("converse");
    assert_eq!(out.stop_reason(), &StopReason::ToolUse);
    let tool = message_content(&out)[0]
        .as_tool_use()
        .expect("a toolUse block");
    assert_eq!(tool.tool_use_id(), "tooluse_1");
    assert_eq!(tool.name(), "get_weather");
    assert_eq!(to_json(tool.input()), input);
}

#[tokio::test]
async fn converse_stream_text_yields_bedrock_events() {
    let fake = FakeBedrock::start().await;
    let mut answer = Answer::text("The quick brown fox jumps");
    answer.cache_read_input_tokens = 7;
    answer.cache_write_input_tokens = 3;
    fake.push(Reply::Answer(answer));
    let mut output = converse_stream(&client(&fake).await).await;
    let events = all_events(&mut output).await;

    match events.first() {
        Some(ConverseStreamOutput::MessageStart(start)) => {
            assert_eq!(start.role(), &ConversationRole::Assistant)
        }
        other => panic!("first event must be messageStart, got {other:?}"),
    }
    assert!(!events
        .iter()
        .any(ConverseStreamOutput::is_content_block_start));
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ConverseStreamOutput::ContentBlockDelta(d) => {
                assert_eq!(d.content_block_index(), 0);
                match d.delta() {
                    Some(ContentBlockDelta::Text(t)) => Some(t.clone()),
                    other => panic!("expected a text delta, got {other:?}"),
                }
            }
            _ => None,
        })
        .collect();
    assert!(
        deltas.len() > 3,
        "text arrives in several deltas: {deltas:?}"
    );
    assert_eq!(deltas.concat(), "The quick brown fox jumps");
    let n = events.len();
    assert!(events[n - 3].is_content_block_stop());
    match &events[n - 2] {
        ConverseStreamOutput::MessageStop(stop) => {
            assert_eq!(stop.stop_reason(), &StopReason::EndTurn)
        }
        other => panic!("expected messageStop, got {other:?}"),
    }
    match &events[n - 1] {
        ConverseStreamOutput::Metadata(meta) => {
            let usage = meta.usage().expect("usage");
            assert_eq!(token_counts(usage), (10, 5, 15));
            assert_eq!(usage.cache_read_input_tokens(), Some(7));
            assert_eq!(usage.cache_write_input_tokens(), Some(3));
            assert!(meta.metrics().is_some());
        }
        other => panic!("expected metadata, got {other:?}"),
    }
    let requests = fake.requests();
    assert!(requests[0].streaming);
    assert!(requests[0].signature_valid);
    assert_eq!(requests[0].model_id, HAIKU);
}

#[tokio::test]
async fn interleaved_tool_fragments_reassemble_per_content_block() {
    let fake = FakeBedrock::start().await;
    let weather = json!({"city": "Paris", "unit": "celsius"});
    let time = json!({"zone": "Europe/Paris", "format": "24h"});
    let mut answer = Answer::tool_calls(vec![
        ("t-1".into(), "get_weather".into(), weather.clone()),
        ("t-2".into(), "get_time".into(), time.clone()),
    ]);
    answer.blocks.insert(0, Block::Text("Checking.".into()));
    answer.interleave_tool_deltas = true;
    fake.push(Reply::Answer(answer));
    let mut output = converse_stream(&client(&fake).await).await;
    let events = all_events(&mut output).await;

    let mut starts: HashMap<i32, (String, String)> = HashMap::new();
    let mut inputs: HashMap<i32, String> = HashMap::new();
    let mut order = Vec::new();
    for event in &events {
        match event {
            ConverseStreamOutput::ContentBlockStart(s) => match s.start() {
                Some(ContentBlockStart::ToolUse(t)) => {
                    starts.insert(
                        s.content_block_index(),
                        (t.tool_use_id().into(), t.name().into()),
                    );
                }
                other => panic!("unexpected start {other:?}"),
            },
            ConverseStreamOutput::ContentBlockDelta(d) => {
                if let Some(ContentBlockDelta::ToolUse(t)) = d.delta() {
                    inputs
                        .entry(d.content_block_index())
                        .or_default()
                        .push_str(t.input());
                    order.push(d.content_block_index());
                }
            }
            _ => {}
        }
    }
    assert_eq!(starts[&1], ("t-1".to_string(), "get_weather".to_string()));
    assert_eq!(starts[&2], ("t-2".to_string(), "get_time".to_string()));
    assert_eq!(
        &order[..4],
        [1, 2, 1, 2],
        "fragments of the two blocks alternate"
    );
    let parsed = |i: i32| serde_json::from_str::<Value>(&inputs[&i]).expect("fragments form JSON");
    assert_eq!(parsed(1), weather);
    assert_eq!(parsed(2), time);
    let stop = events
        .iter()
        .find_map(|e| e.as_message_stop().ok())
        .expect("messageStop");
    assert_eq!(stop.stop_reason(), &StopReason::ToolUse);
}

const ERRORS: &[(u16, &str)] = &[
    (429, "ThrottlingException"),
    (400, "ValidationException"),
    (500, "InternalServerException"),
    (503, "ServiceUnavailableException"),
    (424, "ModelErrorException"),
    (408, "ModelTimeoutException"),
    (404, "ResourceNotFoundException"),
    (403, "AccessDeniedException"),
];

fn error_reply(status: u16, error_type: &str) -> Reply {
    Reply::Error {
        status,
        error_type: error_type.into(),
        message: format!("scripted {error_type}"),
    }
}

/// The name of the typed variant the SDK chose.
fn converse_variant(e: &ConverseError) -> &'static str {
    match e {
        ConverseError::ThrottlingException(_) => "ThrottlingException",
        ConverseError::ValidationException(_) => "ValidationException",
        ConverseError::InternalServerException(_) => "InternalServerException",
        ConverseError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ConverseError::ModelErrorException(_) => "ModelErrorException",
        ConverseError::ModelTimeoutException(_) => "ModelTimeoutException",
        ConverseError::ResourceNotFoundException(_) => "ResourceNotFoundException",
        ConverseError::AccessDeniedException(_) => "AccessDeniedException",
        _ => "unhandled",
    }
}

/// The name of the typed variant the SDK chose.
fn stream_variant(e: &ConverseStreamError) -> &'static str {
    match e {
        ConverseStreamError::ThrottlingException(_) => "ThrottlingException",
        ConverseStreamError::ValidationException(_) => "ValidationException",
        ConverseStreamError::InternalServerException(_) => "InternalServerException",
        ConverseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ConverseStreamError::ModelErrorException(_) => "ModelErrorException",
        ConverseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ConverseStreamError::ResourceNotFoundException(_) => "ResourceNotFoundException",
        ConverseStreamError::AccessDeniedException(_) => "AccessDeniedException",
        _ => "unhandled",
    }
}

#[tokio::test]
async fn converse_errors_become_typed_sdk_errors() {
    let fake = FakeBedrock::start().await;
    let client = client(&fake).await;
    for &(status, error_type) in ERRORS {
        fake.push(error_reply(status, error_type));
        let err = converse(&client, HAIKU).await.expect_err(error_type);
        let SdkError::ServiceError(ctx) = &err else {
            panic!("{error_type}: expected a service error, got {err:?}");
        };
        assert_eq!(ctx.raw().status().as_u16(), status);
        let service = err.into_service_error();
        assert_eq!(service.code(), Some(error_type));
        assert_eq!(
            service.message(),
            Some(format!("scripted {error_type}").as_str())
        );
        assert_eq!(converse_variant(&service), error_type, "{service:?}");
    }
}

#[tokio::test]
async fn converse_stream_errors_become_typed_sdk_errors() {
    let fake = FakeBedrock::start().await;
    let client = client(&fake).await;
    for &(status, error_type) in ERRORS {
        fake.push(error_reply(status, error_type));
        let err = try_converse_stream(&client)
            .await
            .expect_err(error_type)
            .into_service_error();
        assert_eq!(err.code(), Some(error_type));
        assert_eq!(stream_variant(&err), error_type, "{err:?}");
        assert_eq!(
            err.message(),
            Some(format!("scripted {error_type}").as_str())
        );
    }
}

#[tokio::test]
async fn a_stream_cut_midway_fails_after_the_events_sent() {
    let fake = FakeBedrock::start().await;
    fake.push(Reply::BreakAfter {
        answer: Answer::text("one two three four five six seven"),
        after_events: 3,
    });
    let mut output = converse_stream(&client(&fake).await).await;
    for i in 0..3 {
        let event = output.stream.recv().await;
        assert!(
            matches!(event, Ok(Some(_))),
            "event {i} arrives before the cut: {event:?}"
        );
    }
    let after = output.stream.recv().await;
    assert!(
        after.is_err(),
        "the cut is an error, not a clean end: {after:?}"
    );
}

#[tokio::test]
async fn a_cut_converse_response_is_an_error() {
    let fake = FakeBedrock::start().await;
    fake.push(Reply::BreakAfter {
        answer: Answer::text("never"),
        after_events: 0,
    });
    let err = converse(&client(&fake).await, HAIKU)
        .await
        .expect_err("cut");
    assert!(!matches!(err, SdkError::ServiceError(_)), "{err:?}");
}

#[tokio::test]
async fn stream_exceptions_become_typed_stream_errors() {
    let fake = FakeBedrock::start().await;
    let client = client(&fake).await;
    fake.push(Reply::StreamException {
        answer: Answer::text("a b c d e f g h"),
        after_events: 2,
        exception_type: "modelStreamErrorException".into(),
        message: "the model stopped".into(),
    });
    fake.push(Reply::StreamException {
        answer: Answer::text("x"),
        after_events: 1,
        exception_type: "throttlingException".into(),
        message: "too fast".into(),
    });

    let mut output = converse_stream(&client).await;
    for _ in 0..2 {
        assert!(matches!(output.stream.recv().await, Ok(Some(_))));
    }
    let err = output
        .stream
        .recv()
        .await
        .expect_err("the exception")
        .into_service_error();
    match &err {
        ConverseStreamOutputError::ModelStreamErrorException(e) => {
            assert_eq!(e.message(), Some("the model stopped"))
        }
        other => panic!("expected ModelStreamErrorException, got {other:?}"),
    }

    let mut output = converse_stream(&client).await;
    assert!(matches!(
        output.stream.recv().await,
        Ok(Some(ConverseStreamOutput::MessageStart(_)))
    ));
    let err = output
        .stream
        .recv()
        .await
        .expect_err("the exception")
        .into_service_error();
    assert!(
        matches!(err, ConverseStreamOutputError::ThrottlingException(_)),
        "{err:?}"
    );
    assert_eq!(err.message(), Some("too fast"));

    // The same reply on the non-streaming endpoint is the matching HTTP error.
    fake.push(Reply::StreamException {
        answer: Answer::text("x"),
        after_events: 0,
        exception_type: "throttlingException".into(),
        message: "too fast".into(),
    });
    let err = converse(&client, HAIKU)
        .await
        .expect_err("throttled")
        .into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");
}

#[tokio::test]
async fn wrong_credentials_are_refused_without_consuming_a_reply() {
    let fake = FakeBedrock::start().await;
    fake.push(Reply::Answer(Answer::text("kept for the good call")));

    let bad_secret = client_with(&fake, ACCESS_KEY_ID, "not/the/secret").await;
    let err = converse(&bad_secret, HAIKU)
        .await
        .expect_err("wrong secret");
    let SdkError::ServiceError(ctx) = &err else {
        panic!("expected a service error, got {err:?}");
    };
    assert_eq!(ctx.raw().status().as_u16(), 403);
    assert_eq!(
        err.into_service_error().code(),
        Some("InvalidSignatureException")
    );

    let bad_key = client_with(&fake, "AKIDSOMEONEELSE00000", SECRET_ACCESS_KEY).await;
    let err = converse(&bad_key, HAIKU)
        .await
        .expect_err("unknown key")
        .into_service_error();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));

    let bad_stream = try_converse_stream(&bad_secret)
        .await
        .expect_err("wrong secret on the stream")
        .into_service_error();
    assert_eq!(bad_stream.code(), Some("InvalidSignatureException"));

    let out = converse(&client(&fake).await, HAIKU)
        .await
        .expect("good credentials");
    assert_eq!(
        message_content(&out)[0].as_text().map(String::as_str),
        Ok("kept for the good call")
    );
    let valid: Vec<bool> = fake.requests().iter().map(|r| r.signature_valid).collect();
    assert_eq!(valid, [false, false, false, true]);
}

#[tokio::test]
async fn model_ids_with_reserved_characters_round_trip() {
    let fake = FakeBedrock::start().await;
    let client = client(&fake).await;
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0";
    for model in [HAIKU, arn, "model with space+plus"] {
        converse(&client, model).await.expect("converse");
    }
    let recorded: Vec<(String, bool)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.model_id, r.signature_valid))
        .collect();
    assert_eq!(
        recorded,
        [
            (HAIKU.to_string(), true),
            (arn.to_string(), true),
            ("model with space+plus".to_string(), true)
        ]
    );
}

#[tokio::test]
async fn delayed_answers_arrive_after_the_delay() {
    let fake = FakeBedrock::start().await;
    let mut answer = Answer::text("late");
    answer.delay = Duration::from_millis(300);
    fake.push(Reply::Answer(answer));
    let started = std::time::Instant::now();
    let out = converse(&client(&fake).await, HAIKU)
        .await
        .expect("converse");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(out.metrics().is_some_and(|m| m.latency_ms() >= 300));
}
