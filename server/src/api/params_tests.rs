//! Tests of the shared generation parameters (`api::params`), directly and through the
//! router.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::api::testing::{chat_body, completion_body, post_json, with_fields, TestServer};

fn validate(fields: Value) -> Result<GenerationOptions, ApiError> {
    let request = serde_json::from_value(chat_body(fields)).unwrap();
    crate::api::chat::options(&request)
}

fn validate_completion(fields: Value) -> Result<GenerationOptions, ApiError> {
    let request = serde_json::from_value(completion_body("hi", fields)).unwrap();
    crate::api::completions::options(&request)
}

#[test]
fn defaults() {
    let options = validate(json!({})).unwrap();
    assert_eq!(
        options,
        GenerationOptions {
            sampling: SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: 1.0,
                min_p: 0.0,
                seed: None,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                repetition_penalty: 1.0,
                max_tokens: UNSET_MAX_TOKENS,
                ignore_eos: false,
                logprobs: None,
            },
            n: 1,
            max_tokens_explicit: false,
            stop: vec![],
            stream: false,
            include_usage: false,
            set_by_client: Default::default(),
        }
    );
}

#[test]
fn every_field_maps() {
    let options = validate(json!({
        "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "seed": 42, "stop": ["\n\n", "END"], "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "repetition_penalty": 1.1, "ignore_eos": true,
        "n": 3, "stream": true, "stream_options": {"include_usage": true},
        "user": "alice", "logit_bias": {}, "logprobs": true, "top_logprobs": 4
    }))
    .unwrap();
    assert_eq!(
        options,
        GenerationOptions {
            sampling: SamplingParams {
                temperature: 0.5,
                top_k: Some(40),
                top_p: 0.9,
                min_p: 0.05,
                seed: Some(42),
                presence_penalty: 0.5,
                frequency_penalty: -0.5,
                repetition_penalty: 1.1,
                max_tokens: 7,
                ignore_eos: true,
                logprobs: Some(4),
            },
            n: 3,
            max_tokens_explicit: true,
            stop: vec!["\n\n".to_owned(), "END".to_owned()],
            stream: true,
            include_usage: true,
            set_by_client: crate::backend::SetByClient {
                temperature: true,
                top_p: true,
                top_k: true,
                min_p: true,
                seed: true,
                presence_penalty: true,
                frequency_penalty: true,
                repetition_penalty: true,
                ignore_eos: true,
            },
        }
    );
}

#[test]
fn edge_values_map() {
    let o = validate(json!({"max_completion_tokens": 3, "max_tokens": 100})).unwrap();
    assert_eq!(o.sampling.max_tokens, 3, "max_completion_tokens wins");
    let o = validate(json!({"max_completion_tokens": 3, "max_tokens": 0})).unwrap();
    assert_eq!(
        o.sampling.max_tokens, 3,
        "the ignored max_tokens is not validated"
    );
    assert_eq!(validate(json!({"top_k": -1})).unwrap().sampling.top_k, None);
    assert_eq!(validate(json!({"top_k": 0})).unwrap().sampling.top_k, None);
    assert_eq!(
        validate(json!({"seed": -1})).unwrap().sampling.seed,
        Some(u64::MAX)
    );
    let big = json!({"seed": 18_446_744_073_709_551_615_u64});
    assert_eq!(validate(big).unwrap().sampling.seed, Some(u64::MAX));
    assert_eq!(validate(json!({"stop": "###"})).unwrap().stop, vec!["###"]);
    assert!(validate(json!({"stop": null})).unwrap().stop.is_empty());
    assert_eq!(
        validate(json!({"temperature": 0}))
            .unwrap()
            .sampling
            .temperature,
        0.0
    );
    assert_eq!(
        validate(json!({"temperature": 2}))
            .unwrap()
            .sampling
            .temperature,
        2.0
    );
    assert_eq!(validate(json!({"top_p": 1})).unwrap().sampling.top_p, 1.0);
    assert_eq!(validate(json!({"min_p": 1})).unwrap().sampling.min_p, 1.0);
    assert_eq!(
        validate(json!({"repetition_penalty": 2}))
            .unwrap()
            .sampling
            .repetition_penalty,
        2.0
    );
    let o = validate(json!({"stream": true, "stream_options": {}})).unwrap();
    assert!(o.stream && !o.include_usage);
    let sixteen: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    assert_eq!(validate(json!({"stop": sixteen})).unwrap().stop.len(), 16);
    assert_eq!(validate(json!({"n": 16})).unwrap().n, 16);
    assert_eq!(validate_completion(json!({"n": 16})).unwrap().n, 16);
}

#[test]
fn logprobs_map_per_endpoint() {
    let chat = |fields| validate(fields).unwrap().sampling.logprobs;
    assert_eq!(chat(json!({})), None);
    assert_eq!(chat(json!({"logprobs": false})), None);
    assert_eq!(chat(json!({"logprobs": true})), Some(0));
    assert_eq!(
        chat(json!({"logprobs": true, "top_logprobs": null})),
        Some(0)
    );
    assert_eq!(chat(json!({"logprobs": true, "top_logprobs": 0})), Some(0));
    assert_eq!(
        chat(json!({"logprobs": true, "top_logprobs": 20})),
        Some(20)
    );
    // As vLLM: zero alternatives without logprobs asks for nothing.
    assert_eq!(chat(json!({"logprobs": false, "top_logprobs": 0})), None);
    assert_eq!(chat(json!({"top_logprobs": 0})), None);

    let completion = |fields| validate_completion(fields).unwrap().sampling.logprobs;
    assert_eq!(completion(json!({})), None);
    assert_eq!(completion(json!({"logprobs": null})), None);
    assert_eq!(completion(json!({"logprobs": 0})), Some(0));
    assert_eq!(completion(json!({"logprobs": 5})), Some(5));
    assert_eq!(completion(json!({"logprobs": 20})), Some(20));
}

/// (extra fields, param, a substring the message must contain)
fn range_cases() -> Vec<(Value, &'static str, &'static str)> {
    let seventeen: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    vec![
        (
            json!({"temperature": 3.5}),
            "temperature",
            "between 0 and 2, got 3.5",
        ),
        (
            json!({"temperature": -0.1}),
            "temperature",
            "between 0 and 2, got -0.1",
        ),
        (
            json!({"top_p": 0}),
            "top_p",
            "greater than 0 and at most 1, got 0",
        ),
        (
            json!({"top_p": 1.5}),
            "top_p",
            "greater than 0 and at most 1, got 1.5",
        ),
        (json!({"top_k": -2}), "top_k", "positive integer, got -2"),
        (json!({"min_p": 1.5}), "min_p", "between 0 and 1, got 1.5"),
        (json!({"min_p": -0.5}), "min_p", "between 0 and 1, got -0.5"),
        (
            json!({"presence_penalty": 2.5}),
            "presence_penalty",
            "between -2 and 2, got 2.5",
        ),
        (
            json!({"presence_penalty": -3}),
            "presence_penalty",
            "between -2 and 2, got -3",
        ),
        (
            json!({"frequency_penalty": 2.1}),
            "frequency_penalty",
            "between -2 and 2, got 2.1",
        ),
        (
            json!({"frequency_penalty": -2.1}),
            "frequency_penalty",
            "between -2 and 2, got -2.1",
        ),
        (
            json!({"repetition_penalty": 0}),
            "repetition_penalty",
            "greater than 0 and at most 2, got 0",
        ),
        (
            json!({"repetition_penalty": 2.5}),
            "repetition_penalty",
            "greater than 0 and at most 2, got 2.5",
        ),
        (json!({"max_tokens": 0}), "max_tokens", "at least 1, got 0"),
        (
            json!({"max_tokens": -5}),
            "max_tokens",
            "at least 1, got -5",
        ),
        (
            json!({"max_completion_tokens": 0}),
            "max_completion_tokens",
            "at least 1, got 0",
        ),
        (json!({"n": 17}), "n", "at most 16, got 17"),
        (
            json!({"n": 1000000000000_u64}),
            "n",
            "at most 16, got 1000000000000",
        ),
        (json!({"n": 0}), "n", "at least 1, got 0"),
        (json!({"n": -3}), "n", "at least 1, got -3"),
        (json!({"seed": 1.5}), "seed", "integer, got 1.5"),
        (json!({"stop": ""}), "stop", "must not be empty"),
        (json!({"stop": ["a", ""]}), "stop", "must not be empty"),
        (
            json!({"stop": ["a", 3]}),
            "stop",
            "stop[1] must be a string",
        ),
        (json!({"stop": 3}), "stop", "string or an array of strings"),
        (
            json!({"stop": seventeen}),
            "stop",
            "at most 16 strings, got 17",
        ),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
            "only allowed when stream is true",
        ),
        (
            json!({"logit_bias": {"50256": -100}}),
            "logit_bias",
            "not supported yet",
        ),
    ]
}

async fn expect_400(path: &str, base: Value, cases: &[(Value, &str, &str)]) {
    let server = TestServer::new();
    for (fields, param, needle) in cases {
        let body = with_fields(base.clone(), fields.clone());
        let reply = post_json(&server.router(), path, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {fields}");
        let error = &reply.json["error"];
        assert_eq!(error["type"], "invalid_request_error", "{fields}");
        assert_eq!(error["param"], *param, "{fields}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(param), "{fields}: {message}");
        assert!(message.contains(needle), "{fields}: {message}");
    }
    assert!(
        server.backend.requests().is_empty(),
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn range_errors_are_400_naming_the_field_and_limit_for_chat() {
    let base = json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]});
    let mut cases = range_cases();
    cases.extend([
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
            "between 0 and 20, got 21",
        ),
        (
            json!({"logprobs": true, "top_logprobs": -1}),
            "top_logprobs",
            "between 0 and 20, got -1",
        ),
        (
            json!({"logprobs": true, "top_logprobs": 2.5}),
            "top_logprobs",
            "between 0 and 20, got 2.5",
        ),
        (
            json!({"logprobs": true, "top_logprobs": "3"}),
            "top_logprobs",
            "between 0 and 20, got \"3\"",
        ),
        (
            json!({"top_logprobs": 3}),
            "top_logprobs",
            "requires logprobs to be true",
        ),
        (
            json!({"logprobs": false, "top_logprobs": 3}),
            "top_logprobs",
            "requires logprobs to be true",
        ),
        (
            json!({"top_logprobs": 21}),
            "top_logprobs",
            "between 0 and 20, got 21",
        ),
    ]);
    expect_400("/v1/chat/completions", base, &cases).await;
}

#[tokio::test]
async fn range_errors_are_400_naming_the_field_and_limit_for_completions() {
    let base = json!({"model": "test-model", "prompt": "hi"});
    let mut cases: Vec<_> = range_cases()
        .into_iter()
        .filter(|(_, param, _)| *param != "max_completion_tokens")
        .collect();
    cases.extend([
        (
            json!({"logprobs": 21}),
            "logprobs",
            "between 0 and 20, got 21",
        ),
        (
            json!({"logprobs": -1}),
            "logprobs",
            "between 0 and 20, got -1",
        ),
        (
            json!({"logprobs": true}),
            "logprobs",
            "between 0 and 20, got true",
        ),
    ]);
    expect_400("/v1/completions", base, &cases).await;
}
