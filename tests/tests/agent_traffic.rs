//! The traffic an agent fleet sends, end to end over real sockets with the real model:
//! long shared system prompts (prefix cache), clients that hang up mid-stream, bursts past
//! the queue (429), rolling restarts (SIGTERM drain), `n > 1`, logprobs and deadlines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::stream::BoxStream;
use futures::StreamExt;
use inferd_tests::{
    chat_body, client, completion_body, content_of, metric_value, openai_error, parse_chunk, post,
    post_ok, post_with, send_json, sse_chunks, start_server, usage, with, Server, ServerOptions,
    SseParser, CHAT, COMPLETIONS,
};
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KV_USAGE: &str = "inferd:kv_cache_usage_perc{model_name=\"smollm2-135m-instruct\"}";
/// Summed over every label set (the server runs one model).
const RUNNING: &str = "inferd:num_requests_running";

/// `usage.prompt_tokens_details.cached_tokens`, `None` when the details are absent.
fn cached_tokens(body: &Value) -> Option<u64> {
    body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64()
}

/// An open SSE response, read event by event.
struct SseStream {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    parser: SseParser,
    queued: VecDeque<String>,
}

impl SseStream {
    /// POSTs a streaming request and checks it was accepted as an event stream.
    async fn open(c: &reqwest::Client, url: &str, body: &Value) -> SseStream {
        let r = send_json(c, url, body, &[]).await;
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != StatusCode::OK {
            let text = r.text().await.unwrap_or_default();
            panic!("stream {body} answered {status}: {text}");
        }
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseStream {
            body: r.bytes_stream().map(|b| b.map(|b| b.to_vec())).boxed(),
            parser: SseParser::default(),
            queued: VecDeque::new(),
        }
    }

    /// The next event's data (`[DONE]` included); `None` at the end of the body.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(data) = self.queued.pop_front() {
                return Some(data);
            }
            let chunk = self.body.next().await?.expect("stream body");
            self.queued.extend(self.parser.push(&chunk));
        }
    }

    /// Reads until `n` chunks carrying content arrived; returns every event read.
    async fn read_content_chunks(&mut self, n: usize) -> Vec<String> {
        let mut events = Vec::new();
        let mut seen = 0;
        while seen < n {
            let data = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended after {seen} content chunks"));
            assert_ne!(data, "[DONE]", "stream done after {seen} content chunks");
            if has_content(&parse_chunk(&data)) {
                seen += 1;
            }
            events.push(data);
        }
        events
    }

    /// Reads to the end; returns every remaining event.
    async fn read_to_end(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Some(data) = self.next().await {
            events.push(data);
        }
        events
    }
}

fn has_content(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|choices| {
        choices.iter().any(|c| {
            c["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
    })
}

/// Polls `/metrics` every 20 ms until KV usage and running requests are both 0; returns
/// how long that took, or panics with the last values once `budget` has passed.
async fn wait_kv_idle(server: &Server, since: Instant, budget: Duration) -> Duration {
    loop {
        let text = server.metrics_text().await;
        let kv = metric_value(&text, KV_USAGE);
        let running = metric_value(&text, RUNNING);
        if kv == Some(0.0) && running == Some(0.0) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() <= budget,
            "KV usage {kv:?} and running {running:?} not back to 0 within {budget:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn metric_value_reads_prometheus_text() {
    let text = "# HELP inferd:num_requests_running Running.\n\
        # TYPE inferd:num_requests_running gauge\n\
        inferd:num_requests_running{model_name=\"a\",engine=\"0\"} 3\n\
        inferd:num_requests_running{engine=\"0\",model_name=\"b\"} 4\n\
        inferd:num_requests_running_total 99\n\
        inferd:kv_cache_usage_perc{model_name=\"a, b\"} 0.25\n\
        plain 1.5e3\n";
    assert_eq!(
        metric_value(text, "inferd:num_requests_running{model_name=\"b\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric_value(text, "inferd:num_requests_running"),
        Some(7.0),
        "no labels: every series of the metric, summed"
    );
    assert_eq!(
        metric_value(text, "inferd:kv_cache_usage_perc{model_name=\"a, b\"}"),
        Some(0.25)
    );
    assert_eq!(metric_value(text, "plain"), Some(1500.0));
    assert_eq!(
        metric_value(text, "inferd:num_requests_running{model_name=\"c\"}"),
        None
    );
    assert_eq!(metric_value(text, "inferd:num_requests"), None);
}

/// A deterministic agent system prompt: a numbered catalog of tool definitions, well over
/// 512 tokens (SmolLM2 splits digits one by one).
fn tool_catalog_prompt() -> String {
    let mut s = String::from(
        "You are a careful coding agent. Call at most one tool per turn. The tools:\n",
    );
    for i in 1..=18 {
        s.push_str(&format!(
            "{i}. tool_{i}(path: string, limit: integer) -> object. Reads up to `limit` \
             records from store {i} and returns them as a JSON object.\n"
        ));
    }
    s
}

fn agent_turn(server: &Server, user: &str) -> Value {
    json!({
        "model": server.model,
        "messages": [
            {"role": "system", "content": tool_catalog_prompt()},
            {"role": "user", "content": user},
        ],
        "temperature": 0,
        "max_tokens": 24,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_system_prompt_is_served_from_the_prefix_cache_with_identical_output() {
    let on = ServerOptions::default();
    let off = ServerOptions {
        enable_prefix_caching: false,
        ..ServerOptions::default()
    };
    let (cached, uncached) = tokio::join!(start_server(&on), start_server(&off));
    let first = post_ok(
        &cached,
        CHAT,
        &agent_turn(&cached, "Which tool reads store 3?"),
    )
    .await;
    let prompt_tokens = usage(&first, "prompt_tokens");
    assert!(
        prompt_tokens >= 600,
        "the system prompt should be well over 512 tokens, the request has {prompt_tokens}"
    );
    let first_cached = cached_tokens(&first).unwrap_or(0);
    assert!(
        first_cached <= 64,
        "nothing was cached before the first request, yet it reports {first_cached} cached tokens"
    );

    let second_body = |s: &Server| agent_turn(s, "List the tools that take a path.");
    let second = post_ok(&cached, CHAT, &second_body(&cached)).await;
    let second_cached = cached_tokens(&second)
        .unwrap_or_else(|| panic!("usage.prompt_tokens_details.cached_tokens: {second}"));
    assert!(
        second_cached >= 512,
        "the shared system prompt should come from the cache: {second_cached} cached of {} ({second})",
        usage(&second, "prompt_tokens")
    );
    assert!(second_cached < usage(&second, "prompt_tokens"));
    println!(
        "prefix cache: first request {first_cached} of {prompt_tokens} prompt tokens cached, \
         second {second_cached} of {}",
        usage(&second, "prompt_tokens")
    );

    let reference = post_ok(&uncached, CHAT, &second_body(&uncached)).await;
    assert_eq!(
        cached_tokens(&reference).unwrap_or(0),
        0,
        "prefix caching is off: {reference}"
    );
    assert_eq!(
        usage(&reference, "prompt_tokens"),
        usage(&second, "prompt_tokens")
    );
    let (got, want) = (content_of(&second, 0), content_of(&reference, 0));
    assert!(!want.is_empty(), "empty greedy output: {reference}");
    assert_eq!(
        got, want,
        "greedy output over cached K/V differs from the output computed from scratch"
    );
    assert_eq!(
        usage(&second, "completion_tokens"),
        usage(&reference, "completion_tokens")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_streams_free_their_kv_blocks_within_a_second() {
    let server = start_server(&ServerOptions::default()).await;
    let c = client();
    let url = server.url(CHAT);
    let streams = join_all((0..16).map(|i| {
        let body = chat_body(
            &server,
            &format!("Tell me a very long story about the number {i}."),
            json!({"stream": true, "max_tokens": 400, "ignore_eos": true}),
        );
        let (c, url) = (c.clone(), url.clone());
        async move {
            let mut s = SseStream::open(&c, &url, &body).await;
            s.read_content_chunks(3).await;
            s
        }
    }))
    .await;

    let text = server.metrics_text().await;
    let running = metric_value(&text, RUNNING);
    let kv = metric_value(&text, KV_USAGE);
    assert!(
        running.is_some_and(|r| r > 0.0) && kv.is_some_and(|k| k > 0.0),
        "16 streams mid-generation, yet running = {running:?}, KV usage = {kv:?}:\n{text}"
    );

    drop(streams);
    let dropped = Instant::now();
    let took = wait_kv_idle(&server, dropped, Duration::from_secs(1)).await;
    println!("16 dropped streams: KV usage and running back to 0 after {took:?}");

    let reply = post_ok(
        &server,
        CHAT,
        &chat_body(
            &server,
            "Say hello.",
            json!({"max_tokens": 8, "temperature": 0}),
        ),
    )
    .await;
    assert!(usage(&reply, "completion_tokens") > 0, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_past_the_queue_gets_429_with_retry_after_and_the_rest_complete() {
    let server = start_server(&ServerOptions {
        max_num_seqs: 2,
        max_waiting: 4,
        ..ServerOptions::default()
    })
    .await;
    let c = client();
    let replies = join_all((0..24).map(|i| {
        let body = chat_body(
            &server,
            &format!("Count from {i} upwards."),
            json!({"max_tokens": 32, "ignore_eos": true}),
        );
        let c = c.clone();
        let server = &server;
        async move { post_with(&c, &server.url(CHAT), &body, &[]).await }
    }))
    .await;

    let (mut ok, mut overloaded) = (0, 0);
    for reply in &replies {
        let body = reply.expect_json();
        match reply.status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(usage(body, "completion_tokens"), 32, "{body}");
                assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                overloaded += 1;
                let secs: u64 = reply
                    .header(RETRY_AFTER.as_str())
                    .unwrap_or_else(|| panic!("429 without Retry-After: {body}"))
                    .parse()
                    .expect("Retry-After is a number of seconds");
                assert!(secs >= 1, "Retry-After: {secs}");
                openai_error(body);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    println!("burst of 24: {ok} completed, {overloaded} got 429");
    assert_eq!(ok + overloaded, 24);
    assert!(ok >= 1, "nothing completed");
    assert!(
        overloaded >= 1,
        "24 requests against 2 running + 4 waiting, yet none got 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_streams_then_exits_cleanly() {
    let mut server = start_server(&ServerOptions::default()).await;
    let c = client();
    let url = server.url(CHAT);
    let finished = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(8);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let body = chat_body(
                &server,
                &format!("Describe city number {i} in detail."),
                json!({
                    "stream": true,
                    "max_tokens": 64,
                    "ignore_eos": true,
                    "stream_options": {"include_usage": true},
                }),
            );
            let (c, url) = (c.clone(), url.clone());
            let (finished, started) = (finished.clone(), started_tx.clone());
            tokio::spawn(async move {
                let mut s = SseStream::open(&c, &url, &body).await;
                let mut events = s.read_content_chunks(1).await;
                started.send(()).await.expect("test is waiting");
                events.extend(s.read_to_end().await);
                finished.fetch_add(1, Ordering::SeqCst);
                events
            })
        })
        .collect();
    drop(started_tx);
    for n in 0..8 {
        tokio::time::timeout(Duration::from_secs(120), started_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of 8 streams delivered content"))
            .expect("a stream task failed before its first content chunk");
    }

    server.sigterm();
    let signalled = Instant::now();
    loop {
        let r = c
            .get(server.url("/ready"))
            .send()
            .await
            .expect("the listener stays open while draining");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "/ready still 200 five seconds after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done_when_unready = finished.load(Ordering::SeqCst);
    assert!(
        done_when_unready < 8,
        "all streams had finished before /ready turned 503; the test proves nothing"
    );
    let reply = post_with(
        &c,
        &server.url(CHAT),
        &chat_body(&server, "Too late?", json!({"max_tokens": 4})),
        &[],
    )
    .await;
    let body = reply.expect_json();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    openai_error(body);

    for (i, task) in tasks.into_iter().enumerate() {
        let events = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .unwrap_or_else(|_| panic!("stream {i} did not finish"))
            .expect("stream task panicked");
        let chunks = sse_chunks(&events);
        let reasons: Vec<_> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|choice| !choice["finish_reason"].is_null())
            .map(|choice| choice["finish_reason"].clone())
            .collect();
        assert_eq!(reasons, vec![json!("length")], "stream {i}");
        let usage_chunk = chunks
            .iter()
            .rev()
            .find(|c| c["usage"].is_object())
            .unwrap_or_else(|| panic!("stream {i} has no usage chunk"));
        assert_eq!(usage(usage_chunk, "completion_tokens"), 64, "stream {i}");
    }

    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .expect("the server did not exit within 60 s of its drain")
        .expect("wait for the server");
    assert!(status.success(), "the drained server exited with {status}");
    println!(
        "drain: {done_when_unready} of 8 streams done when /ready turned 503; exit after {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_choices_share_one_prompt_and_sum_their_completions() {
    let server = start_server(&ServerOptions::default()).await;
    let sampling = json!({"temperature": 1.0, "seed": 7, "max_tokens": 16, "ignore_eos": true});
    let question = "Name a color and explain why you like it.";
    let three = post_ok(
        &server,
        CHAT,
        &chat_body(&server, question, with(sampling.clone(), json!({"n": 3}))),
    )
    .await;
    let one = post_ok(
        &server,
        CHAT,
        &chat_body(&server, question, sampling.clone()),
    )
    .await;

    let choices = three["choices"].as_array().expect("choices");
    let mut indices: Vec<_> = choices.iter().map(|c| c["index"].as_u64()).collect();
    indices.sort();
    assert_eq!(indices, vec![Some(0), Some(1), Some(2)], "{three}");
    for c in choices {
        assert_eq!(c["finish_reason"], "length", "{three}");
        assert!(c["message"]["content"].is_string(), "{three}");
    }
    assert_eq!(
        usage(&three, "prompt_tokens"),
        usage(&one, "prompt_tokens"),
        "the prompt is counted once, not once per choice"
    );
    assert_eq!(
        usage(&three, "completion_tokens"),
        3 * 16,
        "three choices of 16 tokens each: {three}"
    );
    assert_eq!(
        usage(&three, "total_tokens"),
        usage(&three, "prompt_tokens") + usage(&three, "completion_tokens")
    );

    let body = chat_body(
        &server,
        question,
        with(
            sampling,
            json!({"n": 3, "stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    let mut stream = SseStream::open(&client(), &server.url(CHAT), &body).await;
    let chunks = sse_chunks(&stream.read_to_end().await);
    let mut content: BTreeMap<u64, String> = BTreeMap::new();
    let mut finishes: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for chunk in &chunks {
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().expect("choice index");
            if let Some(text) = choice["delta"]["content"].as_str() {
                content.entry(index).or_default().push_str(text);
            }
            if !choice["finish_reason"].is_null() {
                finishes
                    .entry(index)
                    .or_default()
                    .push(choice["finish_reason"].clone());
            }
        }
    }
    assert_eq!(
        content.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "content for every index"
    );
    assert!(content.values().all(|t| !t.is_empty()), "{content:?}");
    for index in 0..3 {
        assert_eq!(
            finishes.get(&index),
            Some(&vec![json!("length")]),
            "exactly one finish_reason for index {index}"
        );
    }
    let last = chunks
        .iter()
        .rev()
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage(last, "prompt_tokens"), usage(&one, "prompt_tokens"));
    assert_eq!(usage(last, "completion_tokens"), 3 * 16);
}

/// Asserts that `chosen` is the most likely of `top` (which it must head) and that every
/// logprob is a log-probability.
fn assert_greedy_logprob(position: usize, chosen: f64, top: &[f64]) {
    assert!(!top.is_empty(), "position {position}: no alternatives");
    assert!(chosen <= 0.0, "position {position}: logprob {chosen} > 0");
    for &alt in top {
        assert!(alt <= 0.0, "position {position}: top logprob {alt} > 0");
        assert!(
            chosen >= alt,
            "position {position}: greedy chose {chosen}, yet an alternative has {alt}"
        );
    }
    let best = top.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(
        (chosen - best).abs() <= 1e-5,
        "position {position}: chosen {chosen} is not the best alternative {best}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_logprobs_put_the_chosen_token_first() {
    let server = start_server(&ServerOptions::default()).await;
    let chat = post_ok(
        &server,
        CHAT,
        &chat_body(
            &server,
            "Write a long story about a dragon who learns to paint.",
            json!({"temperature": 0, "logprobs": true, "top_logprobs": 5, "max_tokens": 16}),
        ),
    )
    .await;
    assert_eq!(
        chat["choices"][0]["finish_reason"], "length",
        "pick a prompt whose answer outruns 16 tokens: {chat}"
    );
    let entries = chat["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("choices[0].logprobs.content: {chat}"));
    assert_eq!(entries.len() as u64, usage(&chat, "completion_tokens"));
    let mut text = String::new();
    for (i, e) in entries.iter().enumerate() {
        let chosen = e["logprob"].as_f64().expect("logprob");
        let top = e["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(top.len(), 5, "position {i}: {e}");
        let top_values: Vec<f64> = top
            .iter()
            .map(|t| t["logprob"].as_f64().expect("top logprob"))
            .collect();
        assert_greedy_logprob(i, chosen, &top_values);
        assert_eq!(
            chosen, top_values[0],
            "position {i}: greedy picks the first top_logprobs entry: {e}"
        );
        text.push_str(e["token"].as_str().expect("token"));
    }
    assert_eq!(
        text,
        content_of(&chat, 0),
        "tokens concatenate to the content"
    );

    let completion = post_ok(
        &server,
        COMPLETIONS,
        &completion_body(
            &server,
            "Once upon a time, in a land far away, there lived a",
            json!({"temperature": 0, "logprobs": 3, "max_tokens": 16}),
        ),
    )
    .await;
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{completion}");
    let lp = &choice["logprobs"];
    let token_logprobs = lp["token_logprobs"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.token_logprobs: {completion}"));
    let top_logprobs = lp["top_logprobs"].as_array().expect("top_logprobs");
    let tokens = lp["tokens"].as_array().expect("tokens");
    assert_eq!(
        token_logprobs.len() as u64,
        usage(&completion, "completion_tokens")
    );
    assert_eq!(top_logprobs.len(), token_logprobs.len());
    assert_eq!(tokens.len(), token_logprobs.len());
    for (i, (chosen, top)) in token_logprobs.iter().zip(top_logprobs).enumerate() {
        let chosen = chosen.as_f64().expect("token logprob");
        let top = top.as_object().expect("top_logprobs[i] is an object");
        // 3 alternatives; vLLM adds the sampled token when it is not among them.
        assert!(
            (1..=4).contains(&top.len()),
            "position {i}: {top:?} for logprobs = 3"
        );
        let values: Vec<f64> = top.values().map(|v| v.as_f64().expect("logprob")).collect();
        assert_greedy_logprob(i, chosen, &values);
    }
    let joined: String = tokens.iter().map(|t| t.as_str().expect("token")).collect();
    assert_eq!(
        joined,
        choice["text"].as_str().expect("text"),
        "{completion}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passed_deadline_answers_504_and_frees_the_kv_cache() {
    let server = start_server(&ServerOptions::default()).await;
    let body = chat_body(
        &server,
        "Write an endless list of animals.",
        json!({"max_tokens": 2000, "ignore_eos": true}),
    );
    let sent = Instant::now();
    let reply = post_with(
        &client(),
        &server.url(CHAT),
        &body,
        &[("x-inferd-deadline-ms", "300")],
    )
    .await;
    let json = reply.expect_json();
    let elapsed = sent.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{json}");
    assert_eq!(openai_error(json)["code"], "deadline_exceeded", "{json}");
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered 504 after {elapsed:?}, before the 300 ms deadline"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "a 300 ms deadline took {elapsed:?}: the generation was not cut"
    );
    let took = wait_kv_idle(&server, Instant::now(), Duration::from_secs(1)).await;
    println!("deadline: 504 after {elapsed:?}; KV usage back to 0 {took:?} later");
}

#[tokio::test]
async fn the_configured_request_timeout_applies_without_a_header() {
    let server = start_server(&ServerOptions {
        request_timeout_secs: Some(1),
        ..ServerOptions::default()
    })
    .await;
    let body = chat_body(
        &server,
        "Write an endless list of animals.",
        json!({"max_tokens": 2000, "ignore_eos": true}),
    );
    let sent = Instant::now();
    let reply = post(&server, CHAT, &body).await;
    let json = reply.expect_json();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{json}");
    assert_eq!(openai_error(json)["code"], "deadline_exceeded", "{json}");
    assert!(sent.elapsed() >= Duration::from_secs(1));
    wait_kv_idle(&server, Instant::now(), Duration::from_secs(1)).await;
}
