//! The load generator against an in-process fake OpenAI server with known timings: the
//! model name picks the behaviour.
//!
//! - `ok`: the role chunk at once, the first content chunk after TTFT = 50 ms, then 9 more
//!   20 ms apart, a finish chunk, a usage chunk (7 prompt, 10 completion tokens), `[DONE]`;
//! - `fail`: HTTP 500; `hang`: the role chunk, then nothing for 10 s; `midfail`: 3 content
//!   chunks then an error event.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use inferd_bench::cli::Cli;
use inferd_bench::metrics::Stats;
use inferd_bench::report::{self, json, table, Report};
use inferd_bench::runner::{arrival_offsets, Level};
use inferd_bench::workload::level_seed;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const TTFT_MS: u64 = 50;
const GAP_MS: u64 = 20;
const CHUNKS: u64 = 10;

#[derive(Clone, Default)]
struct Fake {
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]}))
}

fn chunk(chat: bool, text: Option<&str>, finish: Option<&str>) -> String {
    let choice = if chat {
        let delta = match text {
            Some(t) => json!({"content": t}),
            None if finish.is_none() => json!({"role": "assistant", "content": ""}),
            None => json!({}),
        };
        json!({"index": 0, "delta": delta, "finish_reason": finish})
    } else {
        json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": finish})
    };
    format!("data: {}\n\n", json!({"id": "x", "choices": [choice]}))
}

async fn generate(State(fake): State<Fake>, chat: bool, body: Value) -> Response {
    fake.bodies.lock().unwrap().push(body.clone());
    let model = body["model"].as_str().unwrap_or("ok").to_owned();
    if model == "fail" {
        let err = json!({"error": {"message": "boom", "type": "internal_error", "param": null, "code": null}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(err)).into_response();
    }
    let (tx, mut rx) = mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(s)).await.is_ok() }
        };
        if chat {
            send(chunk(true, None, None)).await;
        }
        if model == "hang" {
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(TTFT_MS)).await;
        for i in 0..CHUNKS {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(GAP_MS)).await;
            }
            if model == "midfail" && i == 3 {
                send(
                    "data: {\"error\":{\"message\":\"deadline exceeded\"}}\n\ndata: [DONE]\n\n"
                        .into(),
                )
                .await;
                return;
            }
            send(chunk(chat, Some(&format!(" w{i}")), None)).await;
        }
        send(chunk(chat, None, Some("length"))).await;
        let usage = json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": CHUNKS, "total_tokens": 7 + CHUNKS, "prompt_tokens_details": {"cached_tokens": 3}}});
        send(format!("data: {usage}\n\ndata: [DONE]\n\n")).await;
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn start() -> (SocketAddr, Fake) {
    let fake = Fake::default();
    let app = Router::new()
        .route("/v1/models", get(models))
        .route(
            "/v1/chat/completions",
            post(|s: State<Fake>, Json(b): Json<Value>| generate(s, true, b)),
        )
        .route(
            "/v1/completions",
            post(|s: State<Fake>, Json(b): Json<Value>| generate(s, false, b)),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, fake)
}

async fn run(argv: &[String]) -> Report {
    let mut full = vec!["inferd-bench".to_string(), "--no-progress".into()];
    full.extend_from_slice(argv);
    let cli = Cli::parse_from(&full);
    inferd_bench::sweep::run(&cli.run, full, true)
        .await
        .expect("sweep")
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn within(what: &str, v: f64, lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&v),
        "{what} = {v}, expected in [{lo}, {hi}]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timings_match_the_injected_delays() {
    let (addr, _) = start().await;
    let r = run(&args(&format!(
        "--target fake=http://{addr}/v1 --concurrency 1,4 --num-prompts 8 --warmup 1 --slo ttft=500,tpot=100"
    )))
    .await;
    assert_eq!(r.targets[0].model, "ok", "model from GET /models");
    assert_eq!(r.results.len(), 2);
    let e2e_ms = (TTFT_MS + (CHUNKS - 1) * GAP_MS) as f64; // 230 ms
    for res in &r.results {
        let s = &res.summary;
        let what = |m: &str| format!("{} {m}", res.level.label());
        assert_eq!((s.completed, s.failed), (8, 0), "{:?}", s.errors);
        assert_eq!(
            (s.input_tokens, s.output_tokens, s.cached_tokens),
            (56, 80, 24)
        );
        let (ttft, itl, tpot, e2e): (Stats, Stats, Stats, Stats) = (
            s.ttft_ms.unwrap(),
            s.itl_ms.unwrap(),
            s.tpot_ms.unwrap(),
            s.e2e_ms.unwrap(),
        );
        // Never faster than injected; slower only by scheduling noise.
        within(
            &what("TTFT p50"),
            ttft.p50,
            TTFT_MS as f64,
            TTFT_MS as f64 * 1.6,
        );
        within(
            &what("ITL p50"),
            itl.p50,
            GAP_MS as f64 * 0.9,
            GAP_MS as f64 * 1.5,
        );
        within(
            &what("ITL mean"),
            itl.mean,
            GAP_MS as f64 * 0.95,
            GAP_MS as f64 * 1.5,
        );
        within(
            &what("TPOT mean"),
            tpot.mean,
            GAP_MS as f64 * 0.95,
            GAP_MS as f64 * 1.5,
        );
        within(&what("E2E p50"), e2e.p50, e2e_ms, e2e_ms * 1.4);
        assert_eq!(
            res.requests.iter().map(|q| q.itl_us.len()).sum::<usize>(),
            8 * 9
        );
        // Closed loop: 8 requests, `c` at a time, back to back.
        let Level::Closed { concurrency: c } = res.level else {
            panic!()
        };
        let ideal = c as f64 / (e2e_ms / 1000.0); // requests/s
        within(
            &what("req/s"),
            s.request_throughput,
            ideal * 0.6,
            ideal * 1.02,
        );
        within(
            &what("out tok/s"),
            s.output_throughput,
            s.request_throughput * 9.99,
            s.request_throughput * 10.01,
        );
        assert_eq!(s.good_requests, Some(8));
        assert_eq!(s.goodput, Some(s.request_throughput));
    }
    // The report round-trips through JSON, in memory and on disk.
    let text = json::to_string(&r).unwrap();
    assert_eq!(json::from_str(&text).unwrap(), r);
    let dir = std::env::temp_dir().join(format!("inferd-bench-test-{}", std::process::id()));
    let files = report::write_all(&r, &dir).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "results.json",
            "throughput.svg",
            "ttft.svg",
            "tpot.svg",
            "itl.svg",
            "summary.md"
        ]
    );
    assert_eq!(json::read(&dir.join("results.json")).unwrap(), r);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| fake | c=4 | 8 | 0 |"), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_timeouts_are_counted() {
    let (addr, _) = start().await;
    let url = format!("http://{addr}/v1");
    let r = run(&args(&format!(
        "--target ok={url},model=ok --target bad={url},model=fail --target slow={url},model=hang \
         --target broken={url},model=midfail --concurrency 2 --num-prompts 4 --warmup 0 --timeout 0.4"
    )))
    .await;
    let get = |t: &str| &r.results.iter().find(|x| x.target == t).unwrap().summary;
    assert_eq!((get("ok").completed, get("ok").failed), (4, 0));
    for (t, err) in [
        ("bad", "HTTP 500: boom"),
        ("slow", "timeout after 0.4s"),
        ("broken", "error event: deadline exceeded"),
    ] {
        let s = get(t);
        assert_eq!((s.completed, s.failed), (0, 4), "{t}");
        assert!(s.ttft_ms.is_none() && s.output_throughput == 0.0);
        assert!(
            s.errors[0].0.starts_with(err) && s.errors[0].1 == 4,
            "{t}: {:?}",
            s.errors
        );
    }
    let bad = &r
        .results
        .iter()
        .find(|x| x.target == "bad")
        .unwrap()
        .requests[0];
    assert_eq!(bad.status, Some(500));
    let slow = r.results.iter().find(|x| x.target == "slow").unwrap();
    assert!(
        slow.requests
            .iter()
            .all(|q| (400_000..1_500_000).contains(&q.e2e_us)),
        "timed out at 0.4 s"
    );
    // Reports render with empty targets, and the ratios compare against the first target.
    let out = table::final_table(&r);
    assert!(out.contains("bad / ok") && out.contains("0.00x"), "{out}");
    let md = report::markdown::render(&r, &[]);
    assert!(
        md.contains("## Failures") && md.contains("slow c=2: 4 × timeout after 0.4s"),
        "{md}"
    );
    assert_eq!(json::from_str(&json::to_string(&r).unwrap()).unwrap(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_follows_the_seeded_arrivals() {
    let (addr, _) = start().await;
    let r = run(&args(&format!(
        "--target fake=http://{addr}/v1 --request-rate 20 --num-prompts 12 --warmup 0 --seed 9 --endpoint completions"
    )))
    .await;
    let res = &r.results[0];
    assert_eq!(res.summary.completed, 12, "{:?}", res.summary.errors);
    let want = arrival_offsets(12, Some(20.0), 1.0, level_seed(9, 0));
    for (q, at) in res.requests.iter().zip(&want) {
        let got = q.start_us as f64 / 1e6;
        assert!(
            got >= at - 0.001 && got < at + 0.030,
            "sent at {got}, due at {at}"
        );
    }
    let ttft = res.summary.ttft_ms.unwrap();
    within(
        "completions TTFT p50",
        ttft.p50,
        TTFT_MS as f64,
        TTFT_MS as f64 * 1.6,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_turns_carry_the_previous_reply() {
    let (addr, fake) = start().await;
    let r = run(&args(&format!(
        "--target fake=http://{addr}/v1 --workload agent --agent-turns 3 --agent-system-len 200 \
         --input-len 8 --concurrency 2 --num-prompts 6 --warmup 0"
    )))
    .await;
    assert_eq!(r.results[0].summary.completed, 6);
    let bodies = fake.bodies.lock().unwrap().clone();
    let lens: Vec<usize> = bodies
        .iter()
        .map(|b| b["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        {
            let mut l = lens.clone();
            l.sort();
            l
        },
        [2, 2, 4, 4, 6, 6]
    );
    let system = &bodies[0]["messages"][0]["content"];
    assert!(bodies
        .iter()
        .all(|b| &b["messages"][0]["content"] == system && b["ignore_eos"] == true));
    let third = bodies
        .iter()
        .find(|b| b["messages"].as_array().unwrap().len() == 6)
        .unwrap();
    let reply: String = (0..CHUNKS).map(|i| format!(" w{i}")).collect();
    assert_eq!(
        third["messages"][2],
        json!({"role": "assistant", "content": reply})
    );
    assert_eq!(third["messages"][4]["role"], "assistant");
}
