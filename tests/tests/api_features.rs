//! End-to-end tests of the newer OpenAI API fields with the real `inferd serve` binary
//! and SmolLM2 over real sockets: `n` samples per prompt, logprobs, cached prompt tokens
//! in the usage, and the `x-inferd-deadline-ms` header.

use inferd_tests::{
    chat_body, client, completion_body, post, post_ok, post_with, sse_data, start_default_server,
    usage, with, Server, CHAT, COMPLETIONS,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// POSTs a chat request with an `x-inferd-deadline-ms` header; returns the status and the
/// body as JSON (`Null` when it is not JSON).
async fn post_with_deadline(
    server: &Server,
    body: &Value,
    deadline_ms: &str,
) -> (StatusCode, Value) {
    let headers = [("x-inferd-deadline-ms", deadline_ms)];
    let reply = post_with(&client(), &server.url(CHAT), body, &headers).await;
    (reply.status, reply.json)
}

fn cached(usage: &Value) -> u64 {
    usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("prompt_tokens_details.cached_tokens: {usage}"))
}

#[tokio::test]
async fn n_samples_count_the_prompt_once() {
    let server = start_default_server().await;
    let one = chat_body(&server, "Tell me a fun fact.", json!({"max_tokens": 6}));
    let single = post_ok(&server, CHAT, &one).await;
    let three = with(one, json!({"n": 3, "temperature": 1.0}));
    let reply = post_ok(&server, CHAT, &three).await;
    let choices = reply["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3, "{reply}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i, "{reply}");
        assert!(choice["message"]["content"].is_string(), "{reply}");
    }
    assert_eq!(
        usage(&reply, "prompt_tokens"),
        usage(&single, "prompt_tokens"),
        "the prompt counts once: {reply}"
    );
    let completion = usage(&reply, "completion_tokens");
    assert!(
        (3..=18).contains(&completion),
        "summed over choices: {reply}"
    );
    assert!(cached(&reply["usage"]) <= usage(&reply, "prompt_tokens"));

    // Two prompts, two samples each: prompt-major order.
    let body = completion_body(
        &server,
        json!(["Roses are red,", "One, two,"]),
        json!({"n": 2, "max_tokens": 4, "temperature": 0}),
    );
    let reply = post_ok(&server, COMPLETIONS, &body).await;
    let texts: Vec<&str> = reply["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i, "{reply}");
            c["text"].as_str().expect("text")
        })
        .collect();
    assert_eq!(texts.len(), 4, "{reply}");
    assert_eq!(texts[0], texts[1], "greedy samples of one prompt agree");
    assert_eq!(texts[2], texts[3], "greedy samples of one prompt agree");
}

#[tokio::test]
async fn greedy_logprobs_pick_the_top_alternative() {
    let server = start_default_server().await;
    let extra = json!({
        "max_tokens": 6, "temperature": 0, "ignore_eos": true,
        "logprobs": true, "top_logprobs": 3
    });
    let body = chat_body(&server, "Count to ten.", extra);
    let reply = post_ok(&server, CHAT, &body).await;
    let content = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.content: {reply}"));
    assert_eq!(content.len(), 6, "one entry per token: {reply}");
    for entry in content {
        let logprob = entry["logprob"].as_f64().expect("logprob");
        assert!(logprob <= 0.0, "{entry}");
        assert!(
            entry["token"].is_string() && entry["bytes"].is_array(),
            "{entry}"
        );
        let top = entry["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 3, "{entry}");
        let best = top[0]["logprob"].as_f64().expect("top logprob");
        assert!(
            (logprob - best).abs() < 1e-3,
            "greedy takes the top: {entry}"
        );
    }

    // Streamed: the same entries, spread over the chunks.
    let stream = with(body, json!({"stream": true}));
    let reply = post(&server, CHAT, &stream).await;
    assert_eq!(reply.status, StatusCode::OK);
    let streamed: Vec<Value> = sse_data(&reply.text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
        .flat_map(|c| {
            c["choices"][0]["logprobs"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(&streamed, content, "stream and non-stream agree");

    let body = completion_body(
        &server,
        json!("The alphabet: a, b,"),
        json!({"max_tokens": 6, "temperature": 0, "ignore_eos": true, "logprobs": 2}),
    );
    let reply = post_ok(&server, COMPLETIONS, &body).await;
    let logprobs = &reply["choices"][0]["logprobs"];
    let text = reply["choices"][0]["text"].as_str().expect("text");
    let len = |key: &str| logprobs[key].as_array().map_or(0, Vec::len);
    assert_eq!(len("tokens"), 6, "{reply}");
    assert_eq!(len("token_logprobs"), 6, "{reply}");
    assert_eq!(len("top_logprobs"), 6, "{reply}");
    let offsets: Vec<u64> = logprobs["text_offset"]
        .as_array()
        .expect("text_offset")
        .iter()
        .map(|o| o.as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets.len(), 6, "{reply}");
    assert_eq!(offsets[0], 0, "{reply}");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{reply}");
    assert!(offsets[5] <= text.chars().count() as u64, "{reply}");
}

#[tokio::test]
async fn a_repeated_prompt_reports_cached_tokens() {
    let server = start_default_server().await;
    let prompt = "In the beginning the library held only a few scrolls. ".repeat(20);
    let body = completion_body(&server, json!(prompt), json!({"max_tokens": 1}));
    let first = post_ok(&server, COMPLETIONS, &body).await;
    let second = post_ok(&server, COMPLETIONS, &body).await;
    let prompt_tokens = usage(&second, "prompt_tokens");
    assert!(cached(&first["usage"]) <= prompt_tokens, "{first}");
    let hit = cached(&second["usage"]);
    assert!(
        hit > 0 && hit <= prompt_tokens,
        "the prefix cache hit: {second}"
    );
}

#[tokio::test]
async fn the_deadline_header_bounds_a_request() {
    let server = start_default_server().await;
    let body = chat_body(
        &server,
        "Write a long story.",
        json!({"max_tokens": 1000, "ignore_eos": true}),
    );
    let (status, reply) = post_with_deadline(&server, &body, "soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["param"], "x-inferd-deadline-ms", "{reply}");

    let (status, reply) = post_with_deadline(&server, &body, "1").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{reply}");
    assert_eq!(reply["error"]["type"], "timeout_error", "{reply}");
    assert_eq!(reply["error"]["code"], "deadline_exceeded", "{reply}");

    // Still serving, and a generous deadline changes nothing.
    let body = chat_body(&server, "Say hi.", json!({"max_tokens": 4}));
    let (status, reply) = post_with_deadline(&server, &body, "600000").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}
