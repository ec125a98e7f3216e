//! Logprobs through the real router: the request fields reach `SamplingParams::logprobs`
//! and scripted `TokenLogprob`s come back in OpenAI's chat and completions shapes.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::api::testing::{
    chat_body, completion_body, delta_with, finished, post_json, sse_chunks, token_logprob, Script,
    TestServer,
};
use crate::backend::{BackendError, FinishReason, GenEvent};

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";

/// The prompt of `completion_body` (scripted answers do not depend on it).
const PROMPT: &str = "Say hi";

/// "Hi there" in three tokens; the second one's text is held back (a possible stop
/// string) and released with the third.
fn script() -> Vec<Result<GenEvent, BackendError>> {
    vec![
        Ok(delta_with(
            "Hi",
            vec![token_logprob("Hi", -0.25, &[("Hi", -0.25), ("Hey", -1.5)])],
        )),
        Ok(delta_with(
            "",
            vec![token_logprob(" th", -0.5, &[(" th", -0.5), (" the", -2.0)])],
        )),
        Ok(delta_with(
            " there",
            vec![token_logprob("ere", -1.0, &[("ere", -1.0), ("re", -3.0)])],
        )),
        Ok(finished(FinishReason::Stop, 3, 3, 0)),
    ]
}

fn bytes(text: &str) -> Value {
    json!(text.as_bytes())
}

/// The chat entry of one scripted token.
fn chat_entry(token: &str, logprob: f64, top: &[(&str, f64)]) -> Value {
    let top: Vec<Value> = top
        .iter()
        .map(|(t, l)| json!({"token": t, "logprob": l, "bytes": bytes(t)}))
        .collect();
    json!({"token": token, "logprob": logprob, "bytes": bytes(token), "top_logprobs": top})
}

fn chat_entries() -> [Value; 3] {
    [
        chat_entry("Hi", -0.25, &[("Hi", -0.25), ("Hey", -1.5)]),
        chat_entry(" th", -0.5, &[(" th", -0.5), (" the", -2.0)]),
        chat_entry("ere", -1.0, &[("ere", -1.0), ("re", -3.0)]),
    ]
}

#[tokio::test]
async fn chat_logprobs_have_the_openai_shape() {
    let server = TestServer::with_script(Script::Events(script()));
    let body = chat_body(json!({"logprobs": true, "top_logprobs": 2}));
    let reply = post_json(&server.router(), CHAT, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["message"]["content"], "Hi there");
    assert_eq!(choice["logprobs"], json!({"content": chat_entries()}));
    assert_eq!(server.backend.requests()[0].sampling.logprobs, Some(2));

    // `logprobs: true` alone: the sampled tokens only.
    let reply = post_json(&server.router(), CHAT, chat_body(json!({"logprobs": true}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(server.backend.requests()[1].sampling.logprobs, Some(0));
}

#[tokio::test]
async fn logprobs_are_null_unless_asked_for() {
    // Even if a backend sent some anyway.
    let server = TestServer::with_script(Script::Events(script()));
    let reply = post_json(&server.router(), CHAT, chat_body(json!({}))).await;
    assert_eq!(reply.json["choices"][0]["logprobs"], Value::Null);
    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, json!({})),
    )
    .await;
    assert_eq!(reply.json["choices"][0]["logprobs"], Value::Null);
    let reply = post_json(&server.router(), CHAT, chat_body(json!({"stream": true}))).await;
    for chunk in sse_chunks(&reply.text) {
        assert_eq!(chunk["choices"][0]["logprobs"], Value::Null, "{chunk}");
    }
    for request in server.backend.requests() {
        assert_eq!(request.sampling.logprobs, None);
    }
}

#[tokio::test]
async fn streamed_chat_chunks_carry_the_logprobs_of_their_delta() {
    let server = TestServer::with_script(Script::Events(script()));
    let body = chat_body(json!({"logprobs": true, "top_logprobs": 2, "stream": true}));
    let reply = post_json(&server.router(), CHAT, body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let choices: Vec<Value> = sse_chunks(&reply.text)
        .iter()
        .map(|c| c["choices"][0].clone())
        .collect();
    let [hi, th, ere] = chat_entries();
    assert_eq!(
        choices,
        [
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            json!({"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [hi]}, "finish_reason": null}),
            json!({"index": 0, "delta": {"content": ""}, "logprobs": {"content": [th]}, "finish_reason": null}),
            json!({"index": 0, "delta": {"content": " there"}, "logprobs": {"content": [ere]}, "finish_reason": null}),
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}),
        ]
    );
}

#[tokio::test]
async fn completion_logprobs_have_the_openai_shape() {
    let server = TestServer::with_script(Script::Events(script()));
    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, json!({"logprobs": 2})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["text"], "Hi there");
    assert_eq!(
        choice["logprobs"],
        json!({
            "tokens": ["Hi", " th", "ere"],
            "token_logprobs": [-0.25, -0.5, -1.0],
            "top_logprobs": [
                {"Hi": -0.25, "Hey": -1.5},
                {" th": -0.5, " the": -2.0},
                {"ere": -1.0, "re": -3.0}
            ],
            // "Hi there": " th" starts at 2, "ere" at 5.
            "text_offset": [0, 2, 5]
        })
    );
    assert_eq!(server.backend.requests()[0].sampling.logprobs, Some(2));

    let reply = post_json(
        &server.router(),
        COMPLETIONS,
        completion_body(PROMPT, json!({"logprobs": 0})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(server.backend.requests()[1].sampling.logprobs, Some(0));
}

#[tokio::test]
async fn streamed_completion_chunks_carry_offsets_into_the_whole_text() {
    let server = TestServer::with_script(Script::Events(script()));
    let body = completion_body(PROMPT, json!({"logprobs": 2, "stream": true}));
    let reply = post_json(&server.router(), COMPLETIONS, body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let choices: Vec<Value> = sse_chunks(&reply.text)
        .iter()
        .map(|c| c["choices"][0].clone())
        .collect();
    let logprobs = |token: &str, logprob: f64, top: Value, offset: usize| {
        json!({
            "tokens": [token], "token_logprobs": [logprob], "top_logprobs": [top],
            "text_offset": [offset]
        })
    };
    assert_eq!(
        choices,
        [
            json!({"index": 0, "text": "Hi", "finish_reason": null,
                "logprobs": logprobs("Hi", -0.25, json!({"Hi": -0.25, "Hey": -1.5}), 0)}),
            json!({"index": 0, "text": "", "finish_reason": null,
                "logprobs": logprobs(" th", -0.5, json!({" th": -0.5, " the": -2.0}), 2)}),
            json!({"index": 0, "text": " there", "finish_reason": null,
                "logprobs": logprobs("ere", -1.0, json!({"ere": -1.0, "re": -3.0}), 5)}),
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}),
        ]
    );
}

#[tokio::test]
async fn each_of_n_choices_gets_its_own_logprobs() {
    let server = TestServer::with_script(Script::Events(script()));
    let body = chat_body(json!({"logprobs": true, "n": 2}));
    let reply = post_json(&server.router(), CHAT, body).await;
    let choices = reply.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for choice in choices {
        assert_eq!(choice["logprobs"]["content"].as_array().unwrap().len(), 3);
    }
    let body = completion_body(PROMPT, json!({"logprobs": 1, "n": 2, "prompt": ["a", "b"]}));
    let reply = post_json(&server.router(), COMPLETIONS, body).await;
    let choices = reply.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for choice in choices {
        assert_eq!(choice["logprobs"]["text_offset"], json!([0, 2, 5]));
    }
}
