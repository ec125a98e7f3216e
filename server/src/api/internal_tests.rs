//! The replica side of the gateway protocol, through the real router, plus [`Replica`]:
//! the real router on a real TCP listener, for the gateway-side tests.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::serve::ListenerExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::testing::{delta, hello_world, send, Script, TestServer, TEST_MODEL};
use crate::backend::wire::{WireFrame, WireRefusal, WireRequest, GENERATE_PATH, PROTOCOL_HEADER};
use crate::backend::{
    BackendError, ChatMessage, FinishReason, GenEvent, GenerateRequest, Prompt, SamplingParams,
    SetByClient, ToolChoice, ToolSpec,
};

/// A replica: the real router over a scripted backend, on a real socket.
pub(super) struct Replica {
    pub server: TestServer,
    pub addr: String,
    task: Option<JoinHandle<()>>,
    /// Duplicates of every accepted socket, to cut them when the replica is killed.
    connections: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Replica {
    pub(super) async fn start(script: Script) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Replica::serve(listener, script)
    }

    /// Serves on `listener` (bound earlier, so clients may already be waiting on it).
    pub(super) fn serve(listener: TcpListener, script: Script) -> Replica {
        let addr = listener.local_addr().unwrap().to_string();
        let server = TestServer::with_script(script);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let kept = connections.clone();
        let listener = listener.tap_io(move |tcp: &mut tokio::net::TcpStream| {
            tcp.set_nodelay(true).unwrap();
            let dup = tcp.as_fd().try_clone_to_owned().unwrap();
            kept.lock().unwrap().push(std::net::TcpStream::from(dup));
        });
        let router = server.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Replica {
            server,
            addr,
            task: Some(task),
            connections,
        }
    }

    /// A crash: the listener closes (new connections are refused) and every open
    /// connection is cut mid-response.
    pub(super) async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    pub(super) fn set_draining(&self, draining: bool) {
        self.server
            .state()
            .draining
            .store(draining, Ordering::SeqCst);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

/// Polls `condition` until it holds; fails the test after 10 s.
pub(super) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request that sets every field, so a lossy hop would show.
pub(super) fn full_request(prompt: Prompt) -> GenerateRequest {
    GenerateRequest {
        request_id: "req-upstream-1".into(),
        model: TEST_MODEL.into(),
        prompt,
        sampling: SamplingParams {
            temperature: 0.5,
            top_k: Some(40),
            top_p: 0.9,
            min_p: 0.05,
            seed: Some(7),
            presence_penalty: 0.1,
            frequency_penalty: 0.2,
            repetition_penalty: 1.1,
            max_tokens: 33,
            ignore_eos: false,
            logprobs: Some(2),
        },
        max_tokens_explicit: true,
        stop: vec!["\n\n".into(), "END".into()],
        deadline: Some(Duration::from_millis(30_500)),
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: Some("Weather of a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }],
        tool_choice: ToolChoice::Function("get_weather".into()),
        set_by_client: SetByClient {
            temperature: true,
            seed: true,
            top_k: true,
            ..SetByClient::default()
        },
        stream: true,
    }
}

pub(super) fn chat(text: &str) -> Prompt {
    Prompt::Chat(vec![
        ChatMessage::text("system", "Be brief."),
        ChatMessage::text("user", text),
    ])
}

fn generate_request(body: &Value, version: Option<&str>) -> Request {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(GENERATE_PATH)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(version) = version {
        builder = builder.header(PROTOCOL_HEADER, version);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

fn wire(request: GenerateRequest, n: usize) -> Value {
    serde_json::to_value(WireRequest { request, n }).unwrap()
}

fn frames(text: &str) -> Vec<WireFrame> {
    assert!(text.ends_with('\n'), "every frame ends its line: {text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn refusal(json: &Value) -> BackendError {
    serde_json::from_value::<WireRefusal>(json.clone())
        .unwrap()
        .backend_error
}

#[tokio::test]
async fn admitted_samples_stream_as_ndjson_frames() {
    let server = TestServer::with_script(Script::Echo);
    let request = full_request(Prompt::Text("hi".into()));
    let reply = send(
        &server.router(),
        generate_request(&wire(request.clone(), 2), Some("1")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let frames = frames(&reply.text);
    assert_eq!(
        frames[0],
        WireFrame::Admitted {
            prompt_tokens: vec![3, 3]
        }
    );
    for sample in 0..2 {
        let events: Vec<GenEvent> = frames[1..]
            .iter()
            .filter_map(|f| match f {
                WireFrame::Event { index, event } if *index == sample => Some(event.clone()),
                WireFrame::Event { .. } => None,
                other => panic!("unexpected frame {other:?}"),
            })
            .collect();
        let expected = vec![
            delta("echo:"),
            delta("hi"),
            delta(&format!("/{sample}")),
            crate::api::testing::finished(FinishReason::Stop, 2, 2 + sample, 2 * sample),
        ];
        assert_eq!(events, expected, "sample {sample}");
    }
    // The forwarded request arrives whole, as one call for both samples.
    assert_eq!(server.backend.requests(), vec![request]);
    assert_eq!(server.backend.samples(), vec![2]);
    assert_eq!(server.backend.live_streams(), 0);
}

#[tokio::test]
async fn an_error_ends_its_sample_and_drops_its_stream() {
    let server = TestServer::with_script(Script::Hang(vec![
        Ok(delta("a")),
        Err(BackendError::DeadlineExceeded("too late".into())),
    ]));
    let request = full_request(Prompt::Text("x".into()));
    let reply = send(
        &server.router(),
        generate_request(&wire(request, 1), Some("1")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The hanging stream was dropped after its error, or the body would never end.
    assert_eq!(
        frames(&reply.text)[1..],
        [
            WireFrame::Event {
                index: 0,
                event: delta("a")
            },
            WireFrame::Error {
                index: 0,
                error: BackendError::DeadlineExceeded("too late".into())
            },
        ]
    );
    assert_eq!(server.backend.live_streams(), 0);
}

#[tokio::test]
async fn another_protocol_version_is_a_400_naming_the_header() {
    let server = TestServer::new();
    let body = wire(full_request(chat("hi")), 1);
    for version in [None, Some("2"), Some("")] {
        let reply = send(&server.router(), generate_request(&body, version)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{version:?}");
        match refusal(&reply.json) {
            BackendError::InvalidRequest { message, param } => {
                assert_eq!(param.as_deref(), Some(PROTOCOL_HEADER));
                assert!(message.contains("different releases"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn admission_refusals_carry_the_backend_error_and_its_status() {
    let overloaded = BackendError::Overloaded {
        retry_after_secs: 0,
    };
    let server = TestServer::with_script(Script::Refuse(overloaded.clone()));
    let body = wire(full_request(chat("hi")), 1);
    let reply = send(&server.router(), generate_request(&body, Some("1"))).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    assert_eq!(refusal(&reply.json), overloaded);

    let invalid = BackendError::InvalidRequest {
        message: "prompt too long".into(),
        param: Some("messages".into()),
    };
    let server = TestServer::with_script(Script::Refuse(invalid.clone()));
    let reply = send(&server.router(), generate_request(&body, Some("1"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(refusal(&reply.json), invalid);

    let mut unknown = full_request(chat("hi"));
    unknown.model = "no-such-model".into();
    let reply = send(
        &server.router(),
        generate_request(&wire(unknown, 1), Some("1")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        refusal(&reply.json),
        BackendError::ModelNotFound("no-such-model".into())
    );
}

#[tokio::test]
async fn a_draining_replica_refuses_with_503() {
    let server = TestServer::new();
    server.state().draining.store(true, Ordering::SeqCst);
    let body = wire(full_request(chat("hi")), 1);
    let reply = send(&server.router(), generate_request(&body, Some("1"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(refusal(&reply.json), BackendError::Unavailable(_)));
    assert!(server.backend.requests().is_empty());
}

#[tokio::test]
async fn bad_bodies_and_sample_counts_are_400s() {
    let server = TestServer::new();
    for n in [0, 17] {
        let body = wire(full_request(chat("hi")), n);
        let reply = send(&server.router(), generate_request(&body, Some("1"))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "n = {n}");
        assert!(matches!(
            refusal(&reply.json),
            BackendError::InvalidRequest { param: Some(p), .. } if p == "n"
        ));
    }
    let reply = send(
        &server.router(),
        generate_request(
            &json!({"request": {"model": TEST_MODEL}, "n": 1}),
            Some("1"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(matches!(
        refusal(&reply.json),
        BackendError::InvalidRequest { .. }
    ));
    assert!(server.backend.requests().is_empty());
}

/// The real socket path: a replica answers while its listener is up, and after
/// `kill` refuses connections.
#[tokio::test]
async fn a_killed_replica_refuses_connections() {
    let mut replica = Replica::start(Script::Events(hello_world())).await;
    let url = format!("http://{}/ready", replica.addr);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    replica.kill().await;
    let fresh = reqwest::Client::new();
    let error = fresh.get(&url).send().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}
