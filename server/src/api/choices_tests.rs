//! `n` samples per prompt and the usage of whole responses (each prompt counted once,
//! cached prompt tokens reported), for chat and completions, through the real router.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::api::testing::{
    chat_body, choice_texts, completion_body, finished, hello_world, post_json, sse_chunks, Script,
    TestServer,
};
use crate::backend::FinishReason;

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";

/// The prompt of `completion_body` unless a test sets its own; Echo counts its 4 bytes as
/// prompt tokens.
const PROMPT: &str = "Once";

fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached}
    })
}

/// Each choice's text from a stream, by index; checks every choice finishes once.
fn streamed_texts(chunks: &[Value], choices: usize, field: &str) -> Vec<String> {
    let mut texts = vec![String::new(); choices];
    let mut finishes = vec![0; choices];
    for chunk in chunks {
        for choice in chunk["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            let text = if field == "content" {
                &choice["delta"]["content"]
            } else {
                &choice["text"]
            };
            texts[index].push_str(text.as_str().unwrap_or_default());
            if choice["finish_reason"] == "stop" {
                finishes[index] += 1;
            }
        }
    }
    assert_eq!(finishes, vec![1; choices], "{chunks:?}");
    texts
}

#[tokio::test]
async fn chat_n_gives_n_choices_and_counts_the_prompt_once() {
    let server = TestServer::with_script(Script::Echo);
    let reply = post_json(&server.router(), CHAT, chat_body(json!({"n": 3}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let choices = reply.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(
            choice["message"]["content"],
            format!("echo:user=Say hello/{i}")
        );
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(choice["logprobs"], Value::Null);
    }
    // "user=Say hello" is 14 prompt tokens, counted once; completions 2 + 3 + 4.
    assert_eq!(reply.json["usage"], usage(14, 9, 0));
    assert_eq!(server.backend.samples(), [3], "one generate_n call for all");
    assert_eq!(server.backend.requests().len(), 1);
}

#[tokio::test]
async fn chat_n_streams_every_choice_by_index() {
    let server = TestServer::with_script(Script::Echo);
    let body =
        chat_body(json!({"n": 3, "stream": true, "stream_options": {"include_usage": true}}));
    let reply = post_json(&server.router(), CHAT, body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let chunks = sse_chunks(&reply.text);
    let (last, content) = chunks.split_last().unwrap();
    let openings: Vec<&Value> = content
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"] == "assistant")
        .map(|c| &c["choices"][0]["index"])
        .collect();
    assert_eq!(openings, [0, 1, 2], "a role chunk per choice, first");
    let texts = streamed_texts(content, 3, "content");
    assert_eq!(
        texts,
        (0..3)
            .map(|i| format!("echo:user=Say hello/{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], usage(14, 9, 0));
}

#[tokio::test]
async fn completions_with_k_prompts_and_n_samples_use_openai_order() {
    let server = TestServer::with_script(Script::Echo);
    let body = completion_body(PROMPT, json!({"prompt": ["ab", "cde"], "n": 2}));
    let reply = post_json(&server.router(), COMPLETIONS, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let texts = choice_texts(&reply.json);
    // Choice index = prompt_index * n + sample_index.
    assert_eq!(
        texts,
        ["echo:ab/0", "echo:ab/1", "echo:cde/0", "echo:cde/1"]
    );
    // Prompts 2 + 3 once each; completions (2 + 3) per prompt.
    assert_eq!(reply.json["usage"], usage(5, 10, 0));
    assert_eq!(server.backend.samples(), [2, 2]);

    let body = completion_body(
        PROMPT,
        json!({
            "prompt": ["ab", "cde"], "n": 2, "stream": true,
            "stream_options": {"include_usage": true}
        }),
    );
    let reply = post_json(&server.router(), COMPLETIONS, body).await;
    let chunks = sse_chunks(&reply.text);
    let (last, content) = chunks.split_last().unwrap();
    let texts = streamed_texts(content, 4, "text");
    assert_eq!(
        texts,
        ["echo:ab/0", "echo:ab/1", "echo:cde/0", "echo:cde/1"]
    );
    assert_eq!(last["usage"], usage(5, 10, 0));
}

#[tokio::test]
async fn n_over_the_limit_is_rejected_before_the_backend() {
    let server = TestServer::new();
    for (path, body) in [
        (CHAT, chat_body(json!({"n": 17}))),
        (COMPLETIONS, completion_body(PROMPT, json!({"n": 17}))),
    ] {
        let reply = post_json(&server.router(), path, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.json["error"]["param"], "n");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("at most 16"), "{message}");
    }
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn cached_tokens_are_in_every_usage_object() {
    let events = vec![
        Ok(crate::api::testing::delta("ok")),
        Ok(finished(FinishReason::Stop, 10, 1, 8)),
    ];
    let server = TestServer::with_script(Script::Events(events));
    let reply = post_json(&server.router(), CHAT, chat_body(json!({}))).await;
    assert_eq!(reply.json["usage"], usage(10, 1, 8));
    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, json!({})),
    )
    .await;
    assert_eq!(reply.json["usage"], usage(10, 1, 8));

    let stream = json!({"stream": true, "stream_options": {"include_usage": true}});
    let reply = post_json(&server.router(), CHAT, chat_body(stream.clone())).await;
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.last().unwrap()["usage"], usage(10, 1, 8));
    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, stream),
    )
    .await;
    let chunks = sse_chunks(&reply.text);
    assert_eq!(chunks.last().unwrap()["usage"], usage(10, 1, 8));

    // Two prompts: cached tokens add up like prompt tokens.
    let body = completion_body(PROMPT, json!({"prompt": ["a", "b"]}));
    let reply = post_json(&server.router(), COMPLETIONS, body).await;
    assert_eq!(reply.json["usage"], usage(20, 2, 16));
}

#[tokio::test]
async fn samples_after_the_first_do_not_count_the_shared_prompt_as_cached() {
    // Echo reports the whole prompt as cached for samples 1.., none for sample 0.
    let server = TestServer::with_script(Script::Echo);
    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, json!({"n": 4})),
    )
    .await;
    assert_eq!(reply.json["usage"], usage(4, 2 + 3 + 4 + 5, 0));
    let server = TestServer::with_script(Script::Events(hello_world()));
    let reply = post_json(&server.router(), CHAT, chat_body(json!({"n": 2}))).await;
    assert_eq!(reply.json["usage"], usage(3, 4, 0));
}
