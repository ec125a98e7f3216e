//! One streaming request and its timings, measured as vLLM's benchmark client measures them
//! (`vllm/benchmarks/lib/endpoint_request_func.py`), with one deliberate difference: the
//! first token is the first chunk that carries generated text (or a tool call). vLLM takes
//! the first chunk with a `choices` entry, but chat servers (inferd, OpenAI, llama.cpp) may
//! send the `{"role":"assistant"}` chunk before any token exists, which would make TTFT
//! meaningless.
//!
//! - TTFT: request sent → first content chunk.
//! - ITL: the gaps between consecutive content chunks (a chunk may hold several tokens).
//! - E2E: request sent → last SSE event (the usage chunk or `[DONE]`).
//! - Tokens: `usage.prompt_tokens` / `usage.completion_tokens` from the final usage chunk
//!   (`stream_options.include_usage`); without usage, the bench's estimate of the prompt and
//!   the number of content chunks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workload::Prepared;

/// One request as measured; times in microseconds. Serialized into results.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Conversation index in the level, and turn within it.
    pub conversation: usize,
    pub turn: usize,
    /// When the request was sent, from the start of the level.
    pub start_us: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP status, when a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub ttft_us: Option<u64>,
    pub e2e_us: u64,
    /// Gaps between consecutive content chunks.
    pub itl_us: Vec<u64>,
    /// Content chunks received.
    pub chunks: u64,
    /// From the server's usage (None when it sent none).
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    /// The bench's own prompt length estimate.
    pub prompt_tokens_est: u64,
}

impl RequestRecord {
    /// Prompt tokens: the server's count, else the estimate.
    pub fn input_tokens(&self) -> u64 {
        self.prompt_tokens.unwrap_or(self.prompt_tokens_est)
    }

    /// Output tokens: the server's count, else the number of content chunks.
    pub fn output_tokens(&self) -> u64 {
        self.completion_tokens.unwrap_or(self.chunks)
    }
}

/// HTTP client shared by every request of a run.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api_key: Option<String>,
    timeout: Duration,
}

/// Accumulates a response as it streams (kept when the request times out half-way).
#[derive(Default)]
struct State {
    status: Option<u16>,
    first: Option<Instant>,
    last_content: Option<Instant>,
    last_event: Option<Instant>,
    itl_us: Vec<u64>,
    chunks: u64,
    text: String,
    usage: Option<Value>,
    done: bool,
    finished: bool,
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

impl Client {
    pub fn new(api_key: Option<String>, timeout: Duration) -> Client {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Client {
            http,
            api_key,
            timeout,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET `{base_url}/{path}` as JSON.
    pub async fn get_json(&self, base_url: &str, path: &str) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .get(format!("{base_url}/{path}"))
            .timeout(Duration::from_secs(30));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await?.error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Sends `req` to `base_url` and streams the answer; never fails: errors and timeouts
    /// are in the record. Returns the record and the generated text.
    pub async fn send(&self, base_url: &str, req: &Prepared) -> (RequestRecord, String) {
        let mut st = State::default();
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.stream(base_url, req, &mut st)).await;
        let end = Instant::now();
        let error = match result {
            Err(_) => Some(format!("timeout after {:.1}s", self.timeout.as_secs_f64())),
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) if !(st.done || st.finished) => Some("stream ended before [DONE]".into()),
            Ok(Ok(())) => None,
        };
        let usage = st.usage.take().unwrap_or(Value::Null);
        let count = |v: &Value| v.as_u64();
        let record = RequestRecord {
            ok: error.is_none(),
            status: st.status,
            ttft_us: st.first.map(|t| us(t - start)),
            e2e_us: us(st.last_event.filter(|_| error.is_none()).unwrap_or(end) - start),
            itl_us: st.itl_us,
            chunks: st.chunks,
            prompt_tokens: count(&usage["prompt_tokens"]),
            completion_tokens: count(&usage["completion_tokens"]),
            cached_tokens: count(&usage["prompt_tokens_details"]["cached_tokens"]),
            prompt_tokens_est: req.prompt_tokens_est,
            error,
            ..RequestRecord::default()
        };
        (record, st.text)
    }

    async fn stream(&self, base_url: &str, req: &Prepared, st: &mut State) -> Result<(), String> {
        let mut r = self
            .http
            .post(format!("{base_url}/{}", req.endpoint.path()))
            .json(&req.body);
        if let Some(k) = &self.api_key {
            r = r.bearer_auth(k);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = resp.status();
        st.status = Some(status.as_u16());
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                truncate(&msg.unwrap_or(body), 300)
            ));
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("stream broke: {}", error_chain(&e)))?;
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(data) = line.strip_prefix("data:") {
                    on_data(data.trim_start(), now, st)?;
                }
            }
        }
        Ok(())
    }
}

/// One SSE `data:` payload.
fn on_data(data: &str, now: Instant, st: &mut State) -> Result<(), String> {
    st.last_event = Some(now);
    if data == "[DONE]" {
        st.done = true;
        return Ok(());
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("bad SSE chunk ({e}): {}", truncate(data, 200)))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err["message"]
            .as_str()
            .map_or_else(|| err.to_string(), str::to_owned);
        return Err(format!("error event: {}", truncate(&msg, 300)));
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        st.usage = Some(u.clone());
    }
    let Some(choice) = v["choices"].get(0) else {
        return Ok(());
    };
    st.finished |= choice["finish_reason"].is_string();
    let delta = &choice["delta"];
    let text = delta["content"]
        .as_str()
        .or_else(|| choice["text"].as_str())
        .or_else(|| delta["reasoning_content"].as_str())
        .unwrap_or("");
    let tool = delta["tool_calls"]
        .as_array()
        .is_some_and(|t| !t.is_empty());
    if text.is_empty() && !tool {
        return Ok(());
    }
    match st.last_content {
        None => st.first = Some(now),
        Some(prev) => st.itl_us.push(us(now - prev)),
    }
    st.last_content = Some(now);
    st.chunks += 1;
    st.text.push_str(text);
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_update_the_state() {
        let mut st = State::default();
        let t0 = Instant::now();
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        on_data(role, t0, &mut st).unwrap();
        assert!(st.first.is_none());
        let tok = |s: &str| format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"{s}"}}}}]}}"#);
        on_data(&tok("Hel"), t0 + Duration::from_millis(50), &mut st).unwrap();
        on_data(&tok("lo"), t0 + Duration::from_millis(70), &mut st).unwrap();
        on_data(
            r#"{"choices":[{"index":0,"text":"!","finish_reason":"length"}]}"#,
            t0 + Duration::from_millis(100),
            &mut st,
        )
        .unwrap();
        on_data(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#, t0 + Duration::from_millis(101), &mut st).unwrap();
        on_data("[DONE]", t0 + Duration::from_millis(102), &mut st).unwrap();
        assert_eq!(st.first, Some(t0 + Duration::from_millis(50)));
        assert_eq!(st.itl_us, [20_000, 30_000]);
        assert_eq!(
            (st.chunks, st.text.as_str(), st.done, st.finished),
            (3, "Hello!", true, true)
        );
        assert_eq!(
            st.usage.as_ref().unwrap()["prompt_tokens_details"]["cached_tokens"],
            2
        );
        let err = on_data(r#"{"error":{"message":"deadline exceeded"}}"#, t0, &mut st);
        assert_eq!(err.unwrap_err(), "error event: deadline exceeded");
        assert!(on_data("not json", t0, &mut st).is_err());
    }
}
