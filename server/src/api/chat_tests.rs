//! Tests of `POST /v1/chat/completions` through the real router, against the scripted
//! test backend of `api::testing` (the real model is exercised in `tests/tests/api.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{header, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::testing::{
    chat_body, delta, finished, json_request, post_json, send, sse_chunks, with_fields, Script,
    TestServer,
};
use crate::backend::{BackendError, ChatMessage, FinishReason, GenEvent, Prompt, ToolCallDelta};

const PATH: &str = "/v1/chat/completions";

#[tokio::test]
async fn non_streaming_response_has_the_openai_shape() {
    let server = TestServer::new();
    let reply = post_json(&server.router(), PATH, chat_body(json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.headers["x-inferd-backend"], "local");
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let body = reply.json;
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world"},
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    );
}

#[tokio::test]
async fn the_backend_gets_the_mapped_request() {
    let server = TestServer::new();
    let body = chat_body(json!({
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": null},
            {"role": "user", "content": [
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "there"}
            ], "name": "alice"},
            {"role": "assistant", "content": "Hi."},
            {"role": "tool", "content": "42", "tool_call_id": "call_1"}
        ],
        "max_tokens": 9, "temperature": 0, "stop": "END", "seed": 7, "ignore_eos": true,
        "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
        "logprobs": false, "top_logprobs": null, "some_future_field": {"x": 1}
    }));
    let mut request = json_request(PATH, &body);
    request
        .headers_mut()
        .insert("x-request-id", "rid-7".parse().unwrap());
    let reply = send(&server.router(), request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let requests = server.backend.requests();
    assert_eq!(requests.len(), 1);
    let got = &requests[0];
    assert_eq!(got.request_id, "rid-7");
    assert_eq!(got.model, "test-model");
    let message = ChatMessage::text;
    assert_eq!(
        got.prompt,
        Prompt::Chat(vec![
            message("system", "Be terse."),
            message("developer", ""),
            ChatMessage {
                name: Some("alice".into()),
                ..message("user", "Hello there")
            },
            message("assistant", "Hi."),
            ChatMessage {
                tool_call_id: Some("call_1".into()),
                ..message("tool", "42")
            },
        ])
    );
    assert!(got.tools.is_empty());
    assert_eq!(got.tool_choice, crate::backend::ToolChoice::None);
    assert_eq!(got.sampling.max_tokens, 9);
    assert!(got.max_tokens_explicit);
    assert_eq!(got.sampling.temperature, 0.0);
    assert_eq!(got.sampling.seed, Some(7));
    assert!(got.sampling.ignore_eos);
    assert_eq!(got.sampling.logprobs, None);
    assert_eq!(got.stop, vec!["END".to_owned()]);
    assert_eq!(got.deadline, None);
    assert_eq!(server.backend.samples(), [1]);
}

#[tokio::test]
async fn stream_framing_without_usage() {
    let server = TestServer::new();
    let reply = post_json(&server.router(), PATH, chat_body(json!({"stream": true}))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(reply.headers["x-inferd-backend"], "local");
    let chunks = sse_chunks(&reply.text);
    let choices: Vec<Value> = chunks.iter().map(|c| c["choices"].clone()).collect();
    assert_eq!(
        choices,
        vec![
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            json!([{"index": 0, "delta": {"content": "Hello"}, "logprobs": null, "finish_reason": null}]),
            json!([{"index": 0, "delta": {"content": ", world"}, "logprobs": null, "finish_reason": null}]),
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        ]
    );
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "test-model");
        assert!(
            chunk.get("usage").is_none(),
            "no usage key unless asked: {chunk}"
        );
    }
}

#[tokio::test]
async fn stream_framing_with_usage() {
    let server = TestServer::new();
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let reply = post_json(&server.router(), PATH, body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.len(), 5);
    for chunk in &chunks[..4] {
        assert_eq!(chunk["usage"], Value::Null, "usage: null on content chunks");
        assert!(chunk.get("usage").is_some());
    }
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    );
}

#[tokio::test]
async fn an_error_after_the_stream_started_is_an_error_event_then_done() {
    let server = TestServer::with_script(Script::Events(vec![
        Ok(delta("Hi")),
        Err(BackendError::Internal("the GPU fell off the bus".into())),
    ]));
    let reply = post_json(&server.router(), PATH, chat_body(json!({"stream": true}))).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the status was sent before the error"
    );
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        chunks[2],
        json!({"error": {"message": "internal server error", "type": "internal_error", "param": null, "code": null}})
    );
}

#[tokio::test]
async fn a_stream_that_ends_without_finishing_is_an_error() {
    let server = TestServer::with_script(Script::Events(vec![Ok(delta("Hi"))]));
    let reply = post_json(&server.router(), PATH, chat_body(json!({"stream": true}))).await;
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.last().unwrap()["error"]["type"], "internal_error");

    let reply = post_json(&server.router(), PATH, chat_body(json!({}))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json["error"]["message"], "internal server error");
}

#[tokio::test]
async fn length_finish_reason() {
    let server = TestServer::with_script(Script::Events(vec![
        Ok(delta("a b")),
        Ok(finished(FinishReason::Length, 4, 2, 0)),
    ]));
    let reply = post_json(&server.router(), PATH, chat_body(json!({"max_tokens": 2}))).await;
    assert_eq!(reply.json["choices"][0]["finish_reason"], "length");
    assert_eq!(reply.json["usage"]["total_tokens"], 6);
}

#[tokio::test]
async fn admission_errors_are_http_statuses_even_when_streaming() {
    let cases = [
        (
            BackendError::Overloaded {
                retry_after_secs: 2,
            },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            BackendError::InvalidRequest {
                message: "the prompt has 3000 tokens but the context holds 2048".into(),
                param: Some("messages".into()),
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            BackendError::Unavailable("engine stopped".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    for (error, status) in cases {
        let server = TestServer::with_script(Script::Refuse(error.clone()));
        for stream in [false, true] {
            let reply =
                post_json(&server.router(), PATH, chat_body(json!({"stream": stream}))).await;
            assert_eq!(reply.status, status, "{error:?} stream={stream}");
            assert!(reply.json["error"]["message"].is_string());
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(reply.headers[header::RETRY_AFTER], "2");
            }
        }
    }
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let server = TestServer::new();
    let reply = post_json(
        &server.router(),
        PATH,
        chat_body(json!({"model": "gpt-17"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json["error"]["code"], "model_not_found");
    assert_eq!(reply.json["error"]["param"], "model");
    assert!(reply.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-17"));
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn draining_refuses_new_generations_with_503() {
    let server = TestServer::new();
    server.state().draining.store(true, Ordering::Release);
    let reply = post_json(&server.router(), PATH, chat_body(json!({}))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json["error"]["type"], "service_unavailable");
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn unsupported_features_are_rejected_by_name() {
    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    ]}]);
    let cases = [
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"function_call": "auto"}), "function_call"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "response_format",
        ),
        (json!({"messages": image}), "messages[0].content[1].type"),
    ];
    let server = TestServer::new();
    for (extra, param) in cases {
        let reply = post_json(&server.router(), PATH, chat_body(extra.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(reply.json["error"]["param"], param, "{extra}");
        assert_eq!(
            reply.json["error"]["code"], "unsupported_parameter",
            "{extra}"
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(param) && message.contains("not supported yet"),
            "{message}"
        );
    }
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn malformed_messages_are_400_naming_the_field() {
    let cases = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
        ),
        (json!({"messages": [{"content": "x"}]}), "messages[0]"),
    ];
    let server = TestServer::new();
    for (extra, param) in cases {
        let reply = post_json(&server.router(), PATH, chat_body(extra.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(
            reply.json["error"]["param"], param,
            "{extra}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_client_disconnect_drops_the_generation_stream() {
    let server = TestServer::with_script(Script::Hang(vec![Ok(delta("Hi"))]));
    let request = json_request(PATH, &chat_body(json!({"stream": true})));
    let response = server.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    assert_eq!(
        server.backend.live_streams(),
        1,
        "the generation is in flight"
    );
    drop(body);
    assert_eq!(
        server.backend.live_streams(),
        0,
        "dropping the body drops the stream"
    );
}

#[tokio::test]
async fn a_dropped_non_streaming_request_drops_the_generation_stream() {
    let server = TestServer::with_script(Script::Hang(vec![Ok(delta("Hi"))]));
    let call = server
        .router()
        .oneshot(json_request(PATH, &chat_body(json!({}))));
    let outcome = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(outcome.is_err(), "the generation never finishes");
    assert_eq!(server.backend.requests().len(), 1);
    assert_eq!(server.backend.live_streams(), 0);
}

fn tool_fragment(index: usize, head: Option<(&str, &str)>, arguments: &str) -> GenEvent {
    GenEvent::ToolCall(ToolCallDelta {
        index,
        id: head.map(|(id, _)| id.to_owned()),
        name: head.map(|(_, name)| name.to_owned()),
        arguments: arguments.to_owned(),
    })
}

/// Two parallel calls whose fragments interleave, as a remote backend streams them.
fn parallel_tool_calls() -> Vec<Result<GenEvent, BackendError>> {
    vec![
        Ok(tool_fragment(0, Some(("call_a", "get_weather")), "")),
        Ok(tool_fragment(1, Some(("call_b", "get_time")), "{\"tz\":")),
        Ok(tool_fragment(0, None, "{\"city\":\"Paris\"}")),
        Ok(tool_fragment(1, None, "\"CET\"}")),
        Ok(finished(FinishReason::ToolCalls, 20, 9, 0)),
    ]
}

fn tools_body(extra: Value) -> Value {
    let body = chat_body(json!({
        "tools": [
            {"type": "function", "function": {"name": "get_weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time", "description": "now"}}
        ],
        "tool_choice": "required",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}
        ]
    }));
    with_fields(body, extra)
}

#[tokio::test]
async fn tools_and_tool_turns_reach_the_backend() {
    let server = TestServer::with_script(Script::Events(parallel_tool_calls()));
    let reply = post_json(&server.router(), PATH, tools_body(json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let got = &server.backend.requests()[0];
    assert_eq!(got.tools.len(), 2);
    assert_eq!(got.tools[0].name, "get_weather");
    assert_eq!(got.tools[1].description.as_deref(), Some("now"));
    assert_eq!(got.tool_choice, crate::backend::ToolChoice::Required);
    let Prompt::Chat(messages) = &got.prompt else {
        panic!("chat prompt expected")
    };
    assert_eq!(messages[1].tool_calls[0].id, "call_0");
    assert_eq!(messages[1].tool_calls[0].arguments, "{\"city\":\"Rome\"}");
    assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_0"));
}

#[tokio::test]
async fn tool_calls_are_reassembled_in_a_response() {
    let server = TestServer::with_script(Script::Events(parallel_tool_calls()));
    let reply = post_json(&server.router(), PATH, tools_body(json!({}))).await;
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
        ])
    );
}

#[tokio::test]
async fn tool_call_fragments_stream_as_openai_deltas() {
    let server = TestServer::with_script(Script::Events(parallel_tool_calls()));
    let reply = post_json(&server.router(), PATH, tools_body(json!({"stream": true}))).await;
    let chunks = sse_chunks(&reply.text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls[0],
        &json!([{"index": 0, "id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}])
    );
    assert_eq!(
        calls[2],
        &json!([{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(calls[3][0]["index"], 1);
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn bad_tool_fields_are_400s_naming_the_field() {
    let server = TestServer::new();
    let cases = [
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages[0].tool_calls",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]}),
            "messages[0].tool_calls[0].function.name",
        ),
    ];
    for (extra, param) in cases {
        let reply = post_json(&server.router(), PATH, tools_body(extra.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(reply.json["error"]["param"], param, "{extra}");
    }
    assert!(server.backend.requests().is_empty());
}
