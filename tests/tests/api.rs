//! End-to-end tests of the OpenAI API: the real `inferd serve` binary with the real
//! SmolLM2 model, over real sockets (harness: `inferd_tests`).

use std::time::Duration;

use inferd_tests::{
    chat_body, client, completion_body, content_of, openai_error, post, post_ok, post_with,
    sse_chunks, start_default_server, usage, with, Server, SseParser, CHAT, COMPLETIONS,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Over any sane `--max-body-bytes` default, yet within the 64 MiB the server drains
/// past its limit so that a client still uploading reads the 413 (see `api::json`).
const OVERSIZED_BODY_BYTES: usize = 32 << 20;

/// Asserts an OpenAI error body with this status; returns its `error` object.
async fn post_err(server: &Server, path: &str, body: &Value, status: StatusCode) -> Value {
    let reply = post(server, path, body).await;
    let json = reply.expect_json();
    assert_eq!(reply.status, status, "{path}: {json}");
    let error = openai_error(json).clone();
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{json}"
    );
    error
}

/// POSTs a streaming request; returns its JSON chunks after checking the framing:
/// `text/event-stream`, `data: [DONE]` last and nothing after it.
async fn post_stream(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let reply = post(server, path, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{path} {body}");
    let content_type = reply.headers["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    sse_chunks(&SseParser::default().push(reply.text.as_bytes()))
}

/// (prompt, completion, total) tokens of an answer or a usage chunk.
fn usage_of(body: &Value) -> (u64, u64, u64) {
    (
        usage(body, "prompt_tokens"),
        usage(body, "completion_tokens"),
        usage(body, "total_tokens"),
    )
}

async fn max_model_len(server: &Server) -> u64 {
    let response = client()
        .get(server.url("/v1/models"))
        .send()
        .await
        .expect("GET /v1/models");
    let models: Value = response.json().await.expect("models JSON");
    models["data"]
        .as_array()
        .and_then(|data| data.iter().find(|m| m["id"] == server.model.as_str()))
        .and_then(|m| m["max_model_len"].as_u64())
        .unwrap_or_else(|| panic!("the model is not listed: {models}"))
}

#[tokio::test]
async fn lists_the_served_model() {
    let server = start_default_server().await;
    let response = client().get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let models: Value = response.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let card = models["data"]
        .as_array()
        .and_then(|data| data.iter().find(|m| m["id"] == server.model.as_str()))
        .unwrap_or_else(|| panic!("{} not in {models}", server.model));
    assert_eq!(card["object"], "model");
    assert!(card["created"].as_u64().is_some(), "{card}");
    assert!(card["owned_by"].is_string(), "{card}");
    assert_eq!(card["max_model_len"], 2048, "the default catalog's context");

    let path = format!("/v1/models/{}", server.model);
    let response = client().get(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let one: Value = response.json().await.unwrap();
    assert_eq!(one["id"], server.model.as_str());

    for probe in ["/health", "/ready"] {
        let response = client().get(server.url(probe)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
}

#[tokio::test]
async fn chat_completion() {
    let server = start_default_server().await;
    let body = chat_body(
        &server,
        "What is the capital of France?",
        json!({"max_tokens": 32}),
    );
    let response = post(&server, CHAT, &body).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["x-inferd-backend"], "local");
    let reply = response.expect_json();
    assert!(
        reply["id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("chatcmpl-"),
        "{reply}"
    );
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], server.model.as_str());
    assert_eq!(
        reply["choices"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    assert_eq!(reply["choices"][0]["index"], 0);
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    assert!(!content_of(reply, 0).trim().is_empty(), "{reply}");
    let finish = reply["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(matches!(finish, "stop" | "length"), "{reply}");
    let (prompt, completion, total) = usage_of(reply);
    assert!(prompt > 0, "{reply}");
    assert!((1..=32).contains(&completion), "{reply}");
    assert_eq!(prompt + completion, total, "{reply}");
}

#[tokio::test]
async fn max_tokens_with_ignore_eos_finishes_by_length() {
    let server = start_default_server().await;
    let body = chat_body(&server, "Hi!", json!({"max_tokens": 5, "ignore_eos": true}));
    let reply = post_ok(&server, CHAT, &body).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "length", "{reply}");
    assert_eq!(usage_of(&reply).1, 5, "exactly max_tokens tokens: {reply}");
}

#[tokio::test]
async fn a_short_answer_stops_before_max_tokens() {
    let server = start_default_server().await;
    let body = chat_body(
        &server,
        "What is the capital of France? Answer in one short sentence.",
        json!({"max_tokens": 200, "temperature": 0}),
    );
    let reply = post_ok(&server, CHAT, &body).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
    assert!(usage_of(&reply).1 < 200, "{reply}");
    assert!(!content_of(&reply, 0).trim().is_empty(), "{reply}");
}

#[tokio::test]
async fn chat_stream_matches_the_greedy_non_stream_answer() {
    let server = start_default_server().await;
    let body = chat_body(
        &server,
        "Name three colors.",
        json!({"max_tokens": 24, "temperature": 0}),
    );
    let whole = post_ok(&server, CHAT, &body).await;

    let streaming = with(
        body.clone(),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let chunks = post_stream(&server, CHAT, &streaming).await;
    assert!(chunks.len() >= 3, "role, content, finish: {chunks:?}");
    let id = chunks[0]["id"].as_str().unwrap_or_default();
    assert!(id.starts_with("chatcmpl-"), "{}", chunks[0]);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], id, "one id per stream");
    }

    let first = &chunks[0]["choices"][0];
    assert_eq!(
        first["delta"],
        json!({"role": "assistant", "content": ""}),
        "{first}"
    );
    assert!(first["finish_reason"].is_null());

    let (usage_chunk, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    assert_eq!(
        usage_of(usage_chunk),
        usage_of(&whole),
        "{usage_chunk} vs {whole}"
    );
    let (finish_chunk, content_chunks) = rest.split_last().expect("chunks");
    for chunk in rest {
        assert!(
            chunk.get("usage").is_some_and(Value::is_null),
            "usage: null: {chunk}"
        );
    }
    assert_eq!(
        finish_chunk["choices"][0]["delta"],
        json!({}),
        "{finish_chunk}"
    );
    assert_eq!(
        finish_chunk["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let streamed: String = content_chunks[1..]
        .iter()
        .map(|chunk| {
            assert!(chunk["choices"][0]["finish_reason"].is_null(), "{chunk}");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_else(|| panic!("content delta: {chunk}"))
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, content_of(&whole, 0));
}

#[tokio::test]
async fn completions_stream_matches_non_stream() {
    let server = start_default_server().await;
    let body = completion_body(
        &server,
        "The quick brown fox",
        json!({"max_tokens": 16, "temperature": 0}),
    );
    let whole = post_ok(&server, COMPLETIONS, &body).await;
    assert_eq!(whole["object"], "text_completion");
    assert!(whole["id"]
        .as_str()
        .unwrap_or_default()
        .starts_with("cmpl-"));
    let text = whole["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    let (prompt, completion, total) = usage_of(&whole);
    assert!(
        prompt > 0 && completion <= 16 && prompt + completion == total,
        "{whole}"
    );

    let chunks = post_stream(&server, COMPLETIONS, &with(body, json!({"stream": true}))).await;
    let (last, deltas) = chunks.split_last().expect("chunks");
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let streamed: String = deltas
        .iter()
        .map(|chunk| {
            assert_eq!(chunk["object"], "text_completion");
            chunk["choices"][0]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, text);
}

/// Picks a stop string from `text`: 4 characters, not blank, starting at or after the
/// 8th character, whose first occurrence is not at the very start.
fn pick_stop_string(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    (8..chars.len().saturating_sub(4))
        .map(|start| chars[start..start + 4].iter().collect::<String>())
        .find(|s| !s.trim().is_empty() && text.find(s.as_str()).is_some_and(|at| at > 0))
        .unwrap_or_else(|| panic!("no stop string candidate in {text:?}"))
}

#[tokio::test]
async fn stop_strings_cut_the_output_before_the_match() {
    let server = start_default_server().await;
    let body = chat_body(
        &server,
        "Write a short story about a cat.",
        json!({"max_tokens": 40, "temperature": 0, "ignore_eos": true}),
    );
    let free = content_of(&post_ok(&server, CHAT, &body).await, 0);
    assert!(
        free.chars().count() >= 16,
        "need some text to cut: {free:?}"
    );
    let stop = pick_stop_string(&free);
    let expected = &free[..free.find(&stop).expect("picked from the text")];

    let stopped = post_ok(&server, CHAT, &with(body, json!({"stop": [stop.clone()]}))).await;
    let content = content_of(&stopped, 0);
    assert_eq!(content, expected, "stop string {stop:?} in {free:?}");
    assert!(!content.contains(&stop));
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let server = start_default_server().await;
    let run = |seed: u64| {
        let body = completion_body(
            &server,
            "Once upon a time",
            json!({"max_tokens": 32, "temperature": 1.0, "seed": seed, "ignore_eos": true}),
        );
        let server = &server;
        async move {
            let reply = post_ok(server, COMPLETIONS, &body).await;
            reply["choices"][0]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        }
    };
    let first = run(42).await;
    let again = run(42).await;
    assert_eq!(first, again, "same seed, same output");
    let other = run(43).await;
    assert_ne!(
        first, other,
        "another seed should (very likely) sample differently"
    );
}

#[tokio::test]
async fn errors_are_openai_shaped_and_the_server_keeps_serving() {
    let server = start_default_server().await;

    // Malformed JSON.
    let response = client()
        .post(server.url(CHAT))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    // Unknown model.
    let mut body = chat_body(&server, "hi", json!({}));
    body["model"] = json!("no-such-model");
    let error = post_err(&server, CHAT, &body, StatusCode::NOT_FOUND).await;
    assert_eq!(error["code"], "model_not_found", "{error}");
    assert_eq!(error["param"], "model", "{error}");

    // Out of range.
    let body = chat_body(&server, "hi", json!({"temperature": 5}));
    let error = post_err(&server, CHAT, &body, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["param"], "temperature", "{error}");
    assert!(
        error["message"].as_str().unwrap_or_default().contains('2'),
        "{error}"
    );

    // n over the limit.
    let body = chat_body(&server, "hi", json!({"n": 17}));
    let error = post_err(&server, CHAT, &body, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["param"], "n", "{error}");
    assert!(
        error["message"].as_str().unwrap_or_default().contains("16"),
        "names the limit: {error}"
    );

    // A prompt longer than the context.
    let context = max_model_len(&server).await;
    let body = chat_body(&server, &"hello ".repeat(3000), json!({}));
    let error = post_err(&server, CHAT, &body, StatusCode::BAD_REQUEST).await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&context.to_string()),
        "names the context length: {error}"
    );

    // A body over the limit.
    let huge = "x".repeat(OVERSIZED_BODY_BYTES);
    let body = completion_body(&server, huge.as_str(), json!({}));
    let response = client()
        .post(server.url(COMPLETIONS))
        .timeout(Duration::from_secs(60))
        .json(&body)
        .send()
        .await
        .expect("the server answers 413 instead of dropping the connection");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");

    // Unknown route, wrong method.
    let response = client().get(server.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client().get(server.url(CHAT)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Still serving.
    let body = chat_body(&server, "Say hi.", json!({"max_tokens": 8}));
    let reply = post_ok(&server, CHAT, &body).await;
    assert!(usage_of(&reply).1 >= 1, "{reply}");
    let response = client().get(server.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = start_default_server().await;
    let body = chat_body(&server, "hi", json!({"max_tokens": 2}));
    let response = post_with(
        &client(),
        &server.url(CHAT),
        &body,
        &[("x-request-id", "e2e-req-1")],
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["x-request-id"], "e2e-req-1");

    let response = client().get(server.url("/health")).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap_or_default();
    assert!(!generated.is_empty());

    // Also on errors.
    let response = client()
        .post(server.url(CHAT))
        .header("x-request-id", "e2e-req-2")
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-request-id"], "e2e-req-2");
}
