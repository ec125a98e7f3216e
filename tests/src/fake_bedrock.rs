//! A fake AWS Bedrock Runtime for tests: it speaks the real wire protocol (REST-JSON
//! Converse, `application/vnd.amazon.eventstream` ConverseStream, SigV4-signed requests,
//! `x-amzn-ErrorType` errors), so the real `aws_sdk_bedrockruntime::Client` can be pointed at
//! it with `endpoint_url` and exercised end to end, including the failures that are hard to
//! get from the real service on demand (throttling, a stream cut midway, a stream exception).
//!
//! Replies are scripted with [`FakeBedrock::push`]; every request is recorded with its body
//! and whether its signature was valid. Requests with a bad signature get a 403 and do not
//! consume a scripted reply.

mod eventstream;
mod sigv4;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

pub const ACCESS_KEY_ID: &str = "AKIDFAKEBEDROCK0001";
pub const SECRET_ACCESS_KEY: &str = "fake/secret/for/tests";
pub const REGION: &str = "us-east-1";
/// The SigV4 signing name of Bedrock Runtime.
pub const SERVICE: &str = "bedrock";

/// The largest request body the fake reads (Bedrock's own limit is far below this).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A running fake; stops accepting connections when dropped.
pub struct FakeBedrock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    next_request_id: AtomicU64,
}

/// A lock that survives a panicking test thread (the data is plain and always consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeBedrock {
    /// Binds 127.0.0.1:0 and serves on a tokio task.
    pub async fn start() -> FakeBedrock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Bedrock");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Bedrock");
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake Bedrock stopped: {e}");
            }
        });
        FakeBedrock { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT` (give it to the SDK as endpoint_url).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a scripted reply; each request to /model/{id}/converse or /converse-stream
    /// takes the next one. With the queue empty, the reply is
    /// `Reply::Answer(Answer::text("Hello from Bedrock."))`.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for FakeBedrock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Percent-decoded `{id}` of the path.
    pub model_id: String,
    /// `converse-stream` rather than `converse`.
    pub streaming: bool,
    /// The JSON request body as the SDK sent it (`Null` if it was not JSON).
    pub body: Value,
    /// SigV4 checked against ACCESS_KEY_ID / SECRET_ACCESS_KEY / REGION / service "bedrock".
    pub signature_valid: bool,
    /// Lowercase names, in the order received. The `Authorization` signature and any
    /// session token are replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One content block of an answer.
#[derive(Clone, Debug)]
pub enum Block {
    Text(String),
    /// `input` is the tool input JSON object.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// A successful model answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub blocks: Vec<Block>,
    /// Bedrock stopReason: "end_turn", "tool_use", "max_tokens", "stop_sequence",
    /// "guardrail_intervened", "content_filtered", "model_context_window_exceeded".
    pub stop_reason: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    /// Streaming only: interleave the deltas of consecutive tool-use blocks (round-robin)
    /// instead of sending blocks one after the other, to test that the client keys
    /// fragments by contentBlockIndex.
    pub interleave_tool_deltas: bool,
    /// Delay before the response (tests of timeouts / holding). Default zero.
    pub delay: Duration,
}

impl Answer {
    /// One text block; `end_turn`, 10 input tokens, one output token per word, no cache.
    pub fn text(text: &str) -> Answer {
        Answer {
            blocks: vec![Block::Text(text.to_string())],
            stop_reason: "end_turn".into(),
            input_tokens: 10,
            output_tokens: text.split_whitespace().count() as u64,
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
            interleave_tool_deltas: false,
            delay: Duration::ZERO,
        }
    }

    /// One tool-use block per call (id, name, input); `tool_use`, 10 input tokens,
    /// 10 output tokens per call, no cache.
    pub fn tool_calls(calls: Vec<(String, String, Value)>) -> Answer {
        let output_tokens = 10 * calls.len() as u64;
        Answer {
            blocks: calls
                .into_iter()
                .map(|(id, name, input)| Block::ToolUse { id, name, input })
                .collect(),
            stop_reason: "tool_use".into(),
            input_tokens: 10,
            output_tokens,
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
            interleave_tool_deltas: false,
            delay: Duration::ZERO,
        }
    }
}

/// A scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Converse: the JSON ConverseResponse. ConverseStream (see
    /// [`Reply::stream_event_types`]): messageStart; per text block a contentBlockDelta
    /// per ~4 chars then contentBlockStop (no contentBlockStart, as Bedrock does); per tool
    /// block contentBlockStart{toolUse{toolUseId,name}}, a contentBlockDelta{toolUse{input}}
    /// per ~5 chars of the input JSON, contentBlockStop; then messageStop{stopReason} and
    /// metadata{usage, metrics{latencyMs}}.
    Answer(Answer),
    /// An error response (both endpoints): HTTP `status`, header
    /// `x-amzn-ErrorType: <error_type>` (what the SDK reads the error code from), JSON body
    /// `{"message": message}`.
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
    /// Streaming: the first `after_events` events of the answer, then the connection is cut
    /// (no end of the chunked body, no exception). Converse: the 200 head, then the cut.
    BreakAfter { answer: Answer, after_events: usize },
    /// Streaming: the first `after_events` events, then an exception frame
    /// (`:message-type: exception`, `:exception-type: <exception_type>` such as
    /// "modelStreamErrorException" or "throttlingException", payload `{"message": ...}`),
    /// then a clean end. Converse: the matching HTTP error (see [`exception_status`]).
    StreamException {
        answer: Answer,
        after_events: usize,
        exception_type: String,
        message: String,
    },
}

impl Reply {
    /// The `:event-type` of each event ConverseStream sends for `answer`, in order (what
    /// `after_events` counts).
    pub fn stream_event_types(answer: &Answer) -> Vec<&'static str> {
        eventstream::stream_events(answer, 0)
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

/// The HTTP status and `x-amzn-ErrorType` a Converse (non-stream) call gets for a
/// stream exception type, e.g. `throttlingException` → (429, `ThrottlingException`).
pub fn exception_status(exception_type: &str) -> (u16, String) {
    let status = match exception_type {
        "throttlingException" => 429,
        "validationException" => 400,
        "serviceUnavailableException" => 503,
        "modelStreamErrorException" => 424,
        _ => 500,
    };
    let mut chars = exception_type.chars();
    let upper = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "InternalServerException".into(),
    };
    (status, upper)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = format!(
        "fa4eb3d0-0000-4000-8000-{:012}",
        shared.next_request_id.fetch_add(1, Ordering::Relaxed)
    );
    let mut response = serve(&shared, request, started).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

async fn serve(shared: &Shared, request: Request, started: Instant) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let route = path.strip_prefix("/model/").and_then(|rest| {
        if let Some(id) = rest.strip_suffix("/converse-stream") {
            Some((id, true))
        } else {
            rest.strip_suffix("/converse").map(|id| (id, false))
        }
    });
    let Some((raw_id, streaming)) = route.filter(|(id, _)| !id.is_empty() && !id.contains('/'))
    else {
        return error_response(404, "UnknownOperationException", "Unknown operation");
    };
    if parts.method != axum::http::Method::POST {
        return error_response(404, "UnknownOperationException", "Unknown operation");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error_response(400, "ValidationException", "request body could not be read");
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.to_string(), |pq| pq.as_str().to_string());
    let expected = sigv4::Expected {
        access_key_id: ACCESS_KEY_ID,
        secret_access_key: SECRET_ACCESS_KEY,
        region: REGION,
        service: SERVICE,
    };
    let auth = sigv4::verify(parts.method.as_str(), &target, &headers, &body, &expected);
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    lock(&shared.requests).push(Recorded {
        model_id: percent_decode(raw_id),
        streaming,
        body: json.clone().unwrap_or(Value::Null),
        signature_valid: auth.is_ok(),
        headers: headers.into_iter().map(redact).collect(),
    });
    if let Err(failure) = auth {
        return error_response(403, failure.error_type(), &failure.message());
    }
    if json.is_none() {
        return error_response(400, "SerializationException", "request body is not JSON");
    }
    let reply = lock(&shared.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::Answer(Answer::text("Hello from Bedrock.")));
    if let Reply::Answer(a)
    | Reply::BreakAfter { answer: a, .. }
    | Reply::StreamException { answer: a, .. } = &reply
    {
        if !a.delay.is_zero() {
            tokio::time::sleep(a.delay).await;
        }
    }
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if streaming {
        stream_reply(reply, latency_ms)
    } else {
        converse_reply(reply, latency_ms)
    }
}

fn converse_reply(reply: Reply, latency_ms: u64) -> Response {
    match reply {
        Reply::Answer(answer) => {
            let body = eventstream::converse_body(&answer, latency_ms);
            json_response(StatusCode::OK, &body)
        }
        Reply::Error {
            status,
            error_type,
            message,
        } => error_response(status, &error_type, &message),
        Reply::BreakAfter { .. } => broken_body(Vec::new()),
        Reply::StreamException {
            exception_type,
            message,
            ..
        } => {
            let (status, error_type) = exception_status(&exception_type);
            error_response(status, &error_type, &message)
        }
    }
}

fn stream_reply(reply: Reply, latency_ms: u64) -> Response {
    let (answer, after_events, ending) = match reply {
        Reply::Error {
            status,
            error_type,
            message,
        } => return error_response(status, &error_type, &message),
        Reply::Answer(answer) => (answer, usize::MAX, None),
        Reply::BreakAfter {
            answer,
            after_events,
        } => (answer, after_events, Some(None)),
        Reply::StreamException {
            answer,
            after_events,
            exception_type,
            message,
        } => (answer, after_events, Some(Some((exception_type, message)))),
    };
    let events = eventstream::stream_events(&answer, latency_ms);
    let mut frames = Vec::new();
    for event in events.iter().take(after_events) {
        match eventstream::event_frame(event) {
            Ok(frame) => frames.push(frame),
            Err(e) => return error_response(500, "InternalServerException", &e.0),
        }
    }
    match ending {
        None => event_stream_response(Body::from_stream(futures::stream::iter(
            frames.into_iter().map(Ok::<_, std::io::Error>),
        ))),
        Some(None) => broken_body(frames),
        Some(Some((exception_type, message))) => {
            match eventstream::exception_frame(&exception_type, &message) {
                Ok(frame) => frames.push(frame),
                Err(e) => return error_response(500, "InternalServerException", &e.0),
            }
            event_stream_response(Body::from_stream(futures::stream::iter(
                frames.into_iter().map(Ok::<_, std::io::Error>),
            )))
        }
    }
}

/// A 200 event-stream response that sends `frames` and then drops the connection: the body
/// stream fails, so hyper closes the socket without the final chunk. It first yields once so
/// hyper flushes the frames to the socket before it sees the failure.
fn broken_body(frames: Vec<Vec<u8>>) -> Response {
    let cut = futures::stream::once(async {
        tokio::task::yield_now().await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fake Bedrock: scripted connection cut",
        ))
    });
    let body = futures::stream::iter(frames.into_iter().map(Ok)).chain(cut);
    event_stream_response(Body::from_stream(body))
}

fn event_stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An AWS REST-JSON error: the SDK takes the code from `x-amzn-ErrorType` and the message
/// from the body's `message`.
fn error_response(status: u16, error_type: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &json!({ "message": message }));
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn redact((name, value): (String, String)) -> (String, String) {
    let value = match name.as_str() {
        "authorization" => sigv4::redact_authorization(&value),
        "x-amz-security-token" => "<redacted>".into(),
        _ => value,
    };
    (name, value)
}

/// `%XX` sequences decoded (invalid ones kept as they are); the SDK encodes the model id
/// label, e.g. `:` as `%3A`.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "fake_bedrock/tests.rs"]
mod tests;
