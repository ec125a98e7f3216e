//! Tests of `POST /v1/chat/completions` through the real router, against the scripted
//! test backend of `api::testing` (the real model is exercised in `tests/tests/api.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{header, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::testing::{
    delta, finished, json_request, post_json, send, sse_chunks, Script, TestServer,
};
use crate::backend::{BackendError, ChatMessage, FinishReason, Prompt};

const PATH: &str = "/v1/chat/completions";

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Say hello"}],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test]
async fn non_streaming_response_has_the_openai_shape() {
    let server = TestServer::new();
    let reply = post_json(&server.router(), PATH, chat(json!({}))).await;
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
    let body = chat(json!({
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
    let message = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    assert_eq!(
        got.prompt,
        Prompt::Chat(vec![
            message("system", "Be terse."),
            message("developer", ""),
            message("user", "Hello there"),
            message("assistant", "Hi."),
            message("tool", "42"),
        ])
    );
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
    let reply = post_json(&server.router(), PATH, chat(json!({"stream": true}))).await;
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
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
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
    let reply = post_json(&server.router(), PATH, chat(json!({"stream": true}))).await;
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
    let reply = post_json(&server.router(), PATH, chat(json!({"stream": true}))).await;
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.last().unwrap()["error"]["type"], "internal_error");

    let reply = post_json(&server.router(), PATH, chat(json!({}))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json["error"]["message"], "internal server error");
}

#[tokio::test]
async fn length_finish_reason() {
    let server = TestServer::with_script(Script::Events(vec![
        Ok(delta("a b")),
        Ok(finished(FinishReason::Length, 4, 2, 0)),
    ]));
    let reply = post_json(&server.router(), PATH, chat(json!({"max_tokens": 2}))).await;
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
            let reply = post_json(&server.router(), PATH, chat(json!({"stream": stream}))).await;
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
    let reply = post_json(&server.router(), PATH, chat(json!({"model": "gpt-17"}))).await;
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
    let reply = post_json(&server.router(), PATH, chat(json!({}))).await;
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
    let tool_call = json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]}]);
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (json!({"tool_choice": "auto"}), "tool_choice"),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice",
        ),
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
        (json!({"messages": tool_call}), "messages[0].tool_calls"),
    ];
    let server = TestServer::new();
    for (extra, param) in cases {
        let reply = post_json(&server.router(), PATH, chat(extra.clone())).await;
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
        let reply = post_json(&server.router(), PATH, chat(extra.clone())).await;
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
    let request = json_request(PATH, &chat(json!({"stream": true})));
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
        .oneshot(json_request(PATH, &chat(json!({}))));
    let outcome = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(outcome.is_err(), "the generation never finishes");
    assert_eq!(server.backend.requests().len(), 1);
    assert_eq!(server.backend.live_streams(), 0);
}
