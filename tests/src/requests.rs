//! Talking to a test server: OpenAI request bodies, JSON POSTs with the whole answer read,
//! and the fields tests read back from OpenAI-shaped answers and event streams.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{client, Server};

/// The chat completions route.
pub const CHAT: &str = "/v1/chat/completions";
/// The (text) completions route.
pub const COMPLETIONS: &str = "/v1/completions";

/// `body` with `extra`'s fields added (or replaced).
pub fn with(mut body: Value, extra: Value) -> Value {
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// A one-message chat request for `model`, plus `extra` fields.
pub fn chat_request(model: &str, content: &str, extra: Value) -> Value {
    with(
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]}),
        extra,
    )
}

/// A one-message chat request for the server's model, plus `extra` fields.
pub fn chat_body(server: &Server, content: &str, extra: Value) -> Value {
    chat_request(&server.model, content, extra)
}

/// A completions request for the server's model (`prompt`: a string, strings or ids).
pub fn completion_body(server: &Server, prompt: impl Into<Value>, extra: Value) -> Value {
    with(
        serde_json::json!({"model": server.model, "prompt": prompt.into()}),
        extra,
    )
}

/// A whole answer: status, headers and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON; `Null` when it is not JSON (an event stream, a plain-text answer).
    pub json: Value,
}

impl HttpReply {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body; panics when the body is not JSON.
    pub fn expect_json(&self) -> &Value {
        if self.json.is_null() && self.text.trim() != "null" {
            panic!("answered {} with non-JSON {:?}", self.status, self.text);
        }
        &self.json
    }
}

/// Sends `body` as JSON to `url` through `c`, with `headers`; the response with its body
/// unread (for a stream read as it arrives).
pub async fn send_json(
    c: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = c.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// [`send_json`], with the whole answer read.
pub async fn post_with(
    c: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> HttpReply {
    let response = send_json(c, url, body, headers).await;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("read the body from {url}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    HttpReply {
        status,
        headers,
        text,
        json,
    }
}

/// POSTs `body` as JSON to the server's `path` and reads the whole answer.
pub async fn post(server: &Server, path: &str, body: &Value) -> HttpReply {
    post_with(&client(), &server.url(path), body, &[]).await
}

/// POSTs a request that must answer 200 with JSON; returns that JSON.
pub async fn post_ok(server: &Server, path: &str, body: &Value) -> Value {
    let reply = post(server, path, body).await;
    let json = reply.expect_json();
    assert_eq!(reply.status, StatusCode::OK, "{path} {body}: {json}");
    reply.json
}

/// Asserts an OpenAI-shaped error body; returns its `error` object.
pub fn openai_error(json: &Value) -> &Value {
    let error = &json["error"];
    assert!(error["message"].is_string(), "error.message: {json}");
    assert!(error["type"].is_string(), "error.type: {json}");
    error
}

/// `usage.<key>` of an answer or a usage chunk.
pub fn usage(body: &Value, key: &str) -> u64 {
    body["usage"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("usage.{key}: {body}"))
}

/// The message content of chat choice `i`.
pub fn content_of(body: &Value, i: usize) -> String {
    body["choices"][i]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("choices[{i}] has no content: {body}"))
        .to_owned()
}

/// One event-stream chunk as JSON, checked not to be an in-band error.
pub fn parse_chunk(data: &str) -> Value {
    let chunk: Value =
        serde_json::from_str(data).unwrap_or_else(|e| panic!("chunk {data:?} is not JSON: {e}"));
    assert!(chunk.get("error").is_none(), "error event: {chunk}");
    chunk
}

/// The JSON chunks of a complete stream's events, after checking that `[DONE]` ends it and
/// comes nowhere else.
pub fn sse_chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "a stream ends with data: [DONE]: {events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|data| {
            assert_ne!(data, "[DONE]", "[DONE] must be the last event");
            parse_chunk(data)
        })
        .collect()
}
