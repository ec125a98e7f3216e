//! The Bedrock backend against the fake Bedrock (`inferd_tests::fake_bedrock`), which
//! speaks the real wire protocol: the real AWS SDK signs, sends, and decodes event streams.
//! Each scenario runs through Converse (`stream: false`) and ConverseStream (`stream:
//! true`) where both apply.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use inferd::backend::bedrock::{static_sdk_config, BedrockBackend};
use inferd::backend::{
    Backend, BackendError, ChatMessage, FinishReason, GenEvent, GenerateRequest, Generation,
    Prompt, SamplingParams, SetByClient, ToolCall, ToolChoice, ToolSpec, Usage, SERVED_BY_BEDROCK,
};
use inferd::config::gateway::{BedrockSpec, UnsupportedParams};
use inferd::telemetry::metrics::Metrics;
use inferd_tests::fake_bedrock::{
    Answer, Block, FakeBedrock, Recorded, Reply, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY,
};
use serde_json::{json, Value};

const MODEL_ID: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const SERVED: &str = "claude-haiku";
const MODES: [bool; 2] = [false, true];

/// Errors, retries, time limits and broken streams.
#[path = "bedrock/failures.rs"]
mod failures;

struct Fixture {
    fake: FakeBedrock,
    backend: BedrockBackend,
    metrics: Arc<Metrics>,
}

fn spec(policy: UnsupportedParams, max_attempts: u32, timeout: Duration) -> BedrockSpec {
    BedrockSpec {
        model_id: MODEL_ID.into(),
        region: None,
        endpoint_url: None,
        unsupported_params: policy,
        max_attempts,
        timeout,
    }
}

async fn fixture_with(spec: BedrockSpec) -> Fixture {
    let fake = FakeBedrock::start().await;
    let sdk = static_sdk_config(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        REGION,
        Some(&fake.endpoint()),
    );
    let metrics = Metrics::new();
    let backend = BedrockBackend::from_sdk_config(SERVED, &spec, &sdk, metrics.clone());
    Fixture {
        fake,
        backend,
        metrics,
    }
}

async fn fixture() -> Fixture {
    fixture_with(spec(UnsupportedParams::Reject, 3, Duration::from_secs(10))).await
}

impl Fixture {
    /// Every request so far, each checked to carry a valid SigV4 signature for the model.
    fn requests(&self) -> Vec<Recorded> {
        let requests = self.fake.requests();
        for r in &requests {
            assert!(r.signature_valid, "bad signature on {r:?}");
            assert_eq!(r.model_id, MODEL_ID);
        }
        requests
    }
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

fn chat(messages: Vec<ChatMessage>, stream: bool) -> GenerateRequest {
    GenerateRequest {
        request_id: "req-bedrock".into(),
        model: SERVED.into(),
        prompt: Prompt::Chat(messages),
        sampling: SamplingParams::default(),
        max_tokens_explicit: false,
        stop: vec![],
        deadline: None,
        tools: vec![],
        tool_choice: ToolChoice::Auto,
        set_by_client: SetByClient::default(),
        stream,
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: Some("Current weather of a city".into()),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
    }
}

fn time_tool() -> ToolSpec {
    ToolSpec {
        name: "get_time".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
    }
}

async fn collect(generation: Generation) -> Vec<Result<GenEvent, BackendError>> {
    tokio::time::timeout(
        Duration::from_secs(20),
        generation.events.collect::<Vec<_>>(),
    )
    .await
    .expect("the event stream ends")
}

async fn run(f: &Fixture, request: GenerateRequest) -> Vec<GenEvent> {
    let generation = f.backend.generate(request).await.expect("admitted");
    assert_eq!(generation.served_by, SERVED_BY_BEDROCK);
    assert_eq!(generation.prompt_tokens, 0);
    collect(generation)
        .await
        .into_iter()
        .map(|e| e.expect("no error event"))
        .collect()
}

fn text_of(events: &[GenEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            GenEvent::Delta { text, .. } => {
                assert!(!text.is_empty(), "empty delta");
                Some(text.as_str())
            }
            _ => None,
        })
        .collect()
}

/// The one `Finished`, which must be the last event.
fn finished(events: &[GenEvent]) -> (FinishReason, Usage) {
    let all: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, GenEvent::Finished { .. }))
        .collect();
    assert_eq!(all.len(), 1, "exactly one Finished in {events:?}");
    match events.last() {
        Some(GenEvent::Finished { reason, usage }) => (*reason, *usage),
        other => panic!("Finished is not last: {other:?}"),
    }
}

/// Tool calls reassembled by index: (id, name, arguments). Checks that each call's first
/// fragment carries id and name and later ones do not, and that indexes are dense.
fn tool_calls(events: &[GenEvent]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for e in events {
        let GenEvent::ToolCall(d) = e else { continue };
        if d.index == calls.len() {
            calls.push((
                d.id.clone().expect("first fragment has the id"),
                d.name.clone().expect("first fragment has the name"),
                d.arguments.clone(),
            ));
        } else {
            assert!(d.index < calls.len(), "index {} skips ahead", d.index);
            assert_eq!((&d.id, &d.name), (&None, &None), "later fragment {d:?}");
            calls[d.index].2.push_str(&d.arguments);
        }
    }
    calls
}

async fn admission_error(f: &Fixture, request: GenerateRequest) -> BackendError {
    match f.backend.generate(request).await {
        Ok(_) => panic!("expected an admission error"),
        Err(e) => e,
    }
}

fn parse(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|e| panic!("arguments {arguments:?}: {e}"))
}

#[tokio::test]
async fn plain_chat_returns_text_and_usage_with_cached_tokens() {
    for stream in MODES {
        let f = fixture().await;
        let mut answer = Answer::text("Paris is the capital of France.");
        answer.input_tokens = 12;
        answer.output_tokens = 7;
        answer.cache_read_input_tokens = 100;
        answer.cache_write_input_tokens = 5;
        f.fake.push(Reply::Answer(answer));
        let events = run(&f, chat(vec![msg("user", "Capital of France?")], stream)).await;
        assert_eq!(text_of(&events), "Paris is the capital of France.");
        assert_eq!(
            finished(&events),
            (
                FinishReason::Stop,
                Usage {
                    prompt_tokens: 117,
                    completion_tokens: 7,
                    cached_tokens: 100
                }
            ),
            "stream={stream}"
        );
        let requests = f.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].streaming, stream);
        assert_eq!(f.backend.in_flight(), 0);
    }
}

#[tokio::test]
async fn the_request_body_is_the_exact_converse_json() {
    for stream in MODES {
        let f = fixture().await;
        let mut request = chat(
            vec![
                msg("system", "You are terse."),
                msg("user", "Hi"),
                msg("user", " "),
                msg("user", "What is the weather?"),
                msg("developer", "Use metric units."),
                msg("assistant", "Where?"),
                msg("user", "Paris"),
            ],
            stream,
        );
        request.sampling.max_tokens = 256;
        request.max_tokens_explicit = true;
        request.sampling.temperature = 0.5;
        request.set_by_client.temperature = true;
        request.sampling.top_p = 0.25; // not set by the client: not sent
        request.stop = vec!["END".into()];
        request.tools = vec![weather_tool(), time_tool()];
        request.tool_choice = ToolChoice::Function("get_weather".into());
        run(&f, request).await;
        let body = &f.requests()[0].body;
        assert_eq!(
            body,
            &json!({
                "system": [{"text": "You are terse."}, {"text": "Use metric units."}],
                "messages": [
                    {"role": "user", "content": [{"text": "Hi"}, {"text": "What is the weather?"}]},
                    {"role": "assistant", "content": [{"text": "Where?"}]},
                    {"role": "user", "content": [{"text": "Paris"}]}
                ],
                "inferenceConfig": {"maxTokens": 256, "temperature": 0.5, "stopSequences": ["END"]},
                "toolConfig": {
                    "tools": [
                        {"toolSpec": {
                            "name": "get_weather",
                            "description": "Current weather of a city",
                            "inputSchema": {"json": weather_tool().parameters}
                        }},
                        {"toolSpec": {
                            "name": "get_time",
                            "inputSchema": {"json": time_tool().parameters}
                        }}
                    ],
                    "toolChoice": {"tool": {"name": "get_weather"}}
                }
            }),
            "stream={stream}"
        );

        // Nothing set: no system, no inferenceConfig, no toolConfig.
        run(&f, chat(vec![msg("user", "Hi")], stream)).await;
        assert_eq!(
            f.requests()[1].body,
            json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]})
        );
    }
}

#[tokio::test]
async fn a_tool_call_round_trip() {
    for stream in MODES {
        let f = fixture().await;
        f.fake.push(Reply::Answer(Answer::tool_calls(vec![(
            "tooluse_1".into(),
            "get_weather".into(),
            json!({"city": "Paris"}),
        )])));
        let mut first = chat(vec![msg("user", "Weather in Paris?")], stream);
        first.tools = vec![weather_tool()];
        first.tool_choice = ToolChoice::Required;
        let events = run(&f, first.clone()).await;
        assert_eq!(text_of(&events), "");
        let calls = tool_calls(&events);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].0.as_str(), calls[0].1.as_str()),
            ("tooluse_1", "get_weather")
        );
        assert_eq!(parse(&calls[0].2), json!({"city": "Paris"}));
        assert_eq!(finished(&events).0, FinishReason::ToolCalls);
        assert_eq!(
            f.requests()[0].body["toolConfig"]["toolChoice"],
            json!({"any": {}})
        );

        f.fake
            .push(Reply::Answer(Answer::text("It is 18C and sunny in Paris.")));
        let mut second = first;
        second.tool_choice = ToolChoice::Auto;
        let Prompt::Chat(messages) = &mut second.prompt else {
            unreachable!()
        };
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: calls[0].0.clone(),
                name: calls[0].1.clone(),
                arguments: calls[0].2.clone(),
            }],
            ..Default::default()
        });
        messages.push(ChatMessage {
            role: "tool".into(),
            content: "18C, sunny".into(),
            tool_call_id: Some("tooluse_1".into()),
            ..Default::default()
        });
        let events = run(&f, second).await;
        assert_eq!(text_of(&events), "It is 18C and sunny in Paris.");
        assert_eq!(finished(&events).0, FinishReason::Stop);
        let body = &f.requests()[1].body;
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [{"toolUse": {
                    "toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}
                }}]},
                {"role": "user", "content": [{"toolResult": {
                    "toolUseId": "tooluse_1", "content": [{"text": "18C, sunny"}]
                }}]}
            ]),
            "stream={stream}"
        );
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"auto": {}}));
    }
}

#[tokio::test]
async fn parallel_tool_calls_reassemble_by_call_index() {
    let inputs = [
        json!({"city": "Paris", "units": "metric", "detail": "full"}),
        json!({"tz": "Europe/Rome"}),
    ];
    for stream in MODES {
        let f = fixture().await;
        let mut answer = Answer::tool_calls(vec![
            ("tu_a".into(), "get_weather".into(), inputs[0].clone()),
            ("tu_b".into(), "get_time".into(), inputs[1].clone()),
        ]);
        // A text block first, so Bedrock's block indexes (1, 2) differ from the call
        // indexes (0, 1).
        answer
            .blocks
            .insert(0, Block::Text("Checking both.".into()));
        answer.interleave_tool_deltas = true;
        f.fake.push(Reply::Answer(answer));
        let mut request = chat(vec![msg("user", "Weather in Paris, time in Rome?")], stream);
        request.tools = vec![weather_tool(), time_tool()];
        let events = run(&f, request).await;
        assert_eq!(text_of(&events), "Checking both.");
        let calls = tool_calls(&events);
        assert_eq!(calls.len(), 2, "{events:?}");
        assert_eq!(
            (calls[0].0.as_str(), calls[0].1.as_str()),
            ("tu_a", "get_weather")
        );
        assert_eq!(
            (calls[1].0.as_str(), calls[1].1.as_str()),
            ("tu_b", "get_time")
        );
        assert_eq!(parse(&calls[0].2), inputs[0]);
        assert_eq!(parse(&calls[1].2), inputs[1]);
        assert_eq!(finished(&events).0, FinishReason::ToolCalls);
        if stream {
            // The fragments really were interleaved: call 1 got a fragment before call 0's
            // last one.
            let indexes: Vec<usize> = events
                .iter()
                .filter_map(|e| match e {
                    GenEvent::ToolCall(d) if !d.arguments.is_empty() => Some(d.index),
                    _ => None,
                })
                .collect();
            let last_of_0 = indexes.iter().rposition(|&i| i == 0).expect("call 0");
            let first_of_1 = indexes.iter().position(|&i| i == 1).expect("call 1");
            assert!(first_of_1 < last_of_0, "not interleaved: {indexes:?}");
        }
    }
}

#[tokio::test]
async fn every_stop_reason_maps_to_its_finish_reason() {
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("content_filtered", FinishReason::ContentFilter),
        ("guardrail_intervened", FinishReason::ContentFilter),
    ];
    let f = fixture().await;
    for stream in MODES {
        for (wire, want) in cases {
            let mut answer = Answer::text("Some words here.");
            answer.stop_reason = wire.into();
            f.fake.push(Reply::Answer(answer));
            let events = run(&f, chat(vec![msg("user", "q")], stream)).await;
            assert_eq!(finished(&events).0, want, "{wire} stream={stream}");
        }
    }
    assert_eq!(f.requests().len(), 2 * cases.len());
}

fn with_seed_and_penalty(stream: bool) -> GenerateRequest {
    let mut request = chat(vec![msg("user", "q")], stream);
    request.sampling.seed = Some(42);
    request.set_by_client.seed = true;
    request.sampling.presence_penalty = 0.5;
    request.set_by_client.presence_penalty = true;
    request
}

#[tokio::test]
async fn unsupported_params_are_rejected_or_dropped_and_counted() {
    let f = fixture().await;
    let err = admission_error(&f, with_seed_and_penalty(false)).await;
    assert!(
        matches!(&err, BackendError::InvalidRequest { param: Some(p), .. } if p == "seed"),
        "{err:?}"
    );
    assert!(f.requests().is_empty(), "rejected before any call");

    let f = fixture_with(spec(UnsupportedParams::Drop, 3, Duration::from_secs(10))).await;
    for stream in MODES {
        let events = run(&f, with_seed_and_penalty(stream)).await;
        assert_eq!(text_of(&events), "Hello from Bedrock.");
    }
    for r in f.requests() {
        assert_eq!(
            r.body,
            json!({"messages": [{"role": "user", "content": [{"text": "q"}]}]})
        );
    }
    let exposition = f.metrics.encode();
    for param in ["seed", "presence_penalty"] {
        let line = exposition
            .lines()
            .find(|l| {
                l.contains("bedrock_dropped_params")
                    && l.contains(&format!("param=\"{param}\""))
                    && l.contains(&format!("model_name=\"{SERVED}\""))
            })
            .unwrap_or_else(|| panic!("no dropped-param sample for {param}:\n{exposition}"));
        assert!(line.ends_with(" 2"), "{line}");
    }
}

#[tokio::test]
async fn n_above_one_is_rejected_or_made_as_independent_calls() {
    let f = fixture().await;
    let err = match f
        .backend
        .generate_n(chat(vec![msg("user", "q")], false), 2)
        .await
    {
        Ok(_) => panic!("n = 2 with reject"),
        Err(e) => e,
    };
    assert_eq!(
        err,
        BackendError::InvalidRequest {
            message: format!("n > 1 is not supported by the Bedrock backend of model {SERVED}"),
            param: Some("n".into())
        }
    );
    assert!(f.requests().is_empty());

    let f = fixture_with(spec(UnsupportedParams::Drop, 3, Duration::from_secs(10))).await;
    f.fake.push(Reply::Answer(Answer::text("first")));
    f.fake.push(Reply::Answer(Answer::text("second")));
    let generations = f
        .backend
        .generate_n(chat(vec![msg("user", "q")], true), 2)
        .await
        .expect("admitted");
    assert_eq!(generations.len(), 2);
    assert_eq!(f.backend.in_flight(), 2);
    let mut texts = Vec::new();
    for g in generations {
        let events: Vec<GenEvent> = collect(g)
            .await
            .into_iter()
            .map(|e| e.expect("ok"))
            .collect();
        texts.push(text_of(&events));
    }
    texts.sort();
    assert_eq!(texts, vec!["first".to_string(), "second".to_string()]);
    assert_eq!(f.requests().len(), 2);
    assert_eq!(f.backend.in_flight(), 0);
}

#[tokio::test]
async fn requests_bedrock_cannot_take_fail_before_any_call() {
    let f = fixture().await;
    let mut text_prompt = chat(vec![], false);
    text_prompt.prompt = Prompt::Text("Once upon a time".into());
    let err = admission_error(&f, text_prompt).await;
    assert!(
        matches!(&err, BackendError::InvalidRequest { param: Some(p), .. } if p == "prompt"),
        "{err:?}"
    );
    let assistant_first = chat(vec![msg("assistant", "Hello!"), msg("user", "Hi")], true);
    let err = admission_error(&f, assistant_first).await;
    assert!(
        matches!(&err, BackendError::InvalidRequest { param: Some(p), .. } if p == "messages"),
        "{err:?}"
    );
    assert!(f.requests().is_empty());
    let cards = f.backend.models();
    assert_eq!(cards.len(), 1);
    assert_eq!(
        (cards[0].id.as_str(), cards[0].owned_by.as_str()),
        (SERVED, "bedrock")
    );
    assert!(f.backend.is_ready());
}

#[tokio::test]
async fn a_dropped_stream_is_no_longer_in_flight() {
    let f = fixture().await;
    let generation = f
        .backend
        .generate(chat(vec![msg("user", "q")], true))
        .await
        .expect("admitted");
    assert_eq!(f.backend.in_flight(), 1);
    drop(generation);
    assert_eq!(f.backend.in_flight(), 0);
}
