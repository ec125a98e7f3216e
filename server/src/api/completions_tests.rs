//! Tests of `POST /v1/completions` through the real router, against the scripted test
//! backend of `api::testing` (the real model is exercised in `tests/tests/api.rs`).

use axum::http::{header, StatusCode};
use serde_json::{json, Value};

use super::MAX_PROMPTS;
use crate::api::testing::{
    choice_texts, completion_body, json_request, post_json, send, sse_chunks, Script, TestServer,
};
use crate::backend::Prompt;

const PATH: &str = "/v1/completions";

/// The prompt of `completion_body` unless a test sets its own.
const PROMPT: &str = "Once upon a time";

#[tokio::test]
async fn non_streaming_response_has_the_openai_shape() {
    let server = TestServer::new();
    let reply = post_json(
        &server.router(),
        PATH,
        completion_body(PROMPT, json!({"max_tokens": 4})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.headers["x-inferd-backend"], "local");
    let body = reply.json;
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "text": "Hello, world", "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    );
    let requests = server.backend.requests();
    assert_eq!(requests[0].prompt, Prompt::Text(PROMPT.into()));
    assert_eq!(requests[0].sampling.max_tokens, 4);
}

#[tokio::test]
async fn a_prompt_list_runs_one_generation_per_prompt_in_order() {
    let server = TestServer::with_script(Script::Echo);
    let mut request = json_request(
        PATH,
        &completion_body(PROMPT, json!({"prompt": ["ab", "cde", "f"]})),
    );
    request
        .headers_mut()
        .insert("x-request-id", "batch".parse().unwrap());
    let reply = send(&server.router(), request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let texts = choice_texts(&reply.json);
    assert_eq!(texts, ["echo:ab", "echo:cde", "echo:f"]);
    assert_eq!(
        reply.json["usage"],
        json!({
            "prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    );
    assert_eq!(server.backend.samples(), [1, 1, 1]);
    let ids: Vec<String> = server
        .backend
        .requests()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["batch-0", "batch-1", "batch-2"]);
}

#[tokio::test]
async fn token_id_prompts() {
    let server = TestServer::with_script(Script::Echo);
    let reply = post_json(
        &server.router(),
        PATH,
        completion_body(PROMPT, json!({"prompt": [1, 2, 3]})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["choices"].as_array().unwrap().len(), 1);
    assert_eq!(
        server.backend.requests()[0].prompt,
        Prompt::Tokens(vec![1, 2, 3])
    );

    let reply = post_json(
        &server.router(),
        PATH,
        completion_body(PROMPT, json!({"prompt": [[7], [8, 9]]})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["choices"][1]["text"], "echo:[8, 9]");
}

#[tokio::test]
async fn bad_prompts_are_400() {
    let too_many: Vec<String> = (0..=MAX_PROMPTS).map(|i| format!("p{i}")).collect();
    let cases = [
        (json!(""), "prompt", "must not be empty"),
        (json!([]), "prompt", "must not be empty"),
        (json!(["a", ""]), "prompt[1]", "must not be empty"),
        (json!([[1], []]), "prompt[1]", "must not be empty"),
        (json!([1, -1]), "prompt", "prompt[1] must be a token id"),
        (
            json!([1, 4_294_967_296_u64]),
            "prompt",
            "prompt[1] must be a token id",
        ),
        (json!([1.5]), "prompt", "prompt[0] must be a token id"),
        (
            json!([[1], [2, "x"]]),
            "prompt[1]",
            "prompt[1][1] must be a token id",
        ),
        (json!(["a", 1]), "prompt", "array of strings"),
        (json!({"text": "x"}), "prompt", "array of strings"),
        (json!(null), "prompt", "array of strings"),
        (json!(too_many), "prompt", "at most 64 prompts"),
    ];
    let server = TestServer::new();
    for (prompt, param, needle) in cases {
        let reply = post_json(
            &server.router(),
            PATH,
            completion_body(PROMPT, json!({"prompt": prompt})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{prompt}");
        assert_eq!(reply.json["error"]["param"], param, "{prompt}");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{prompt}: {message}");
    }
    let reply = post_json(&server.router(), PATH, json!({"model": "test-model"})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"]["param"], "prompt");
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn unsupported_features_are_rejected_by_name() {
    let server = TestServer::new();
    let cases = [
        (json!({"echo": true}), "echo"),
        (json!({"suffix": "the end"}), "suffix"),
        (json!({"best_of": 3}), "best_of"),
        (json!({"logit_bias": {"1": 5}}), "logit_bias"),
    ];
    for (extra, param) in cases {
        let reply = post_json(
            &server.router(),
            PATH,
            completion_body(PROMPT, extra.clone()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(reply.json["error"]["param"], param, "{extra}");
        assert_eq!(
            reply.json["error"]["code"], "unsupported_parameter",
            "{extra}"
        );
    }
    let reply = post_json(
        &server.router(),
        PATH,
        completion_body(PROMPT, json!({"best_of": 0})),
    )
    .await;
    assert_eq!(reply.json["error"]["param"], "best_of");
    assert!(reply.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at least 1, got 0"));
    assert!(server.backend.requests().is_empty());

    let accepted =
        json!({"echo": false, "suffix": "", "best_of": 1, "logprobs": null, "logit_bias": {}});
    let reply = post_json(&server.router(), PATH, completion_body(PROMPT, accepted)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn stream_framing() {
    let server = TestServer::new();
    let reply = post_json(
        &server.router(),
        PATH,
        completion_body(PROMPT, json!({"stream": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
    let chunks = sse_chunks(&reply.text);
    let choices: Vec<Value> = chunks.iter().map(|c| c["choices"].clone()).collect();
    assert_eq!(
        choices,
        vec![
            json!([{"index": 0, "text": "Hello", "logprobs": null, "finish_reason": null}]),
            json!([{"index": 0, "text": ", world", "logprobs": null, "finish_reason": null}]),
            json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}]),
        ]
    );
    for chunk in &chunks {
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk.get("usage").is_none());
    }
}

#[tokio::test]
async fn streaming_several_prompts_with_usage() {
    let server = TestServer::with_script(Script::Echo);
    let body = completion_body(
        PROMPT,
        json!({
            "prompt": ["ab", "cde"], "stream": true, "stream_options": {"include_usage": true}
        }),
    );
    let reply = post_json(&server.router(), PATH, body).await;
    let chunks = sse_chunks(&reply.text);
    let (usage, content) = chunks.split_last().unwrap();
    let mut texts = [String::new(), String::new()];
    let mut finished = [0, 0];
    for chunk in content {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
        let choice = &chunk["choices"][0];
        let index = choice["index"].as_u64().unwrap() as usize;
        texts[index].push_str(choice["text"].as_str().unwrap());
        if choice["finish_reason"] == "stop" {
            finished[index] += 1;
        }
    }
    assert_eq!(texts, ["echo:ab", "echo:cde"]);
    assert_eq!(finished, [1, 1]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({
            "prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    );
}
