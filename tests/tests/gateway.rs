//! `inferd gateway` end to end, with real processes: two `inferd serve` replicas with the
//! real model, the gateway in front, and a fake Bedrock that speaks the real wire
//! protocol (event-stream framing, SigV4 checked) behind it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use inferd_tests::fake_bedrock::{self, Answer, FakeBedrock, Reply};
use inferd_tests::{
    chat_request, client, free_port, metric_value, post, post_with, send_json, smollm2_catalog,
    start_process, start_server, with, workspace_root, HttpReply, Launch, Server, ServerOptions,
    SseParser, CHAT, SMOLLM2_ID,
};
use serde_json::{json, Value};

const BEDROCK_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// The header naming the backend that served a request.
const BACKEND: &str = "x-inferd-backend";

fn replicas_table(addrs: &[String], extra: &str) -> String {
    let urls: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[model.backend]]\ntype = \"replicas\"\nurls = [{}]\nprobe_interval_ms = 100\n{extra}\n",
        urls.join(", ")
    )
}

fn bedrock_table(fake: &FakeBedrock) -> String {
    format!(
        "[[model.backend]]\ntype = \"bedrock\"\nmodel_id = \"{BEDROCK_MODEL}\"\nregion = \"{}\"\nendpoint_url = \"{}\"\nmax_attempts = 1\n",
        fake_bedrock::REGION,
        fake.endpoint()
    )
}

/// The gateway with the fake's credentials in its environment (the SDK's default chain
/// reads them, as it would read IRSA's web identity in a pod).
async fn start_gateway(catalog: &str) -> Server {
    let launch = Launch::gateway(catalog, SMOLLM2_ID)
        .env("AWS_ACCESS_KEY_ID", fake_bedrock::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", fake_bedrock::SECRET_ACCESS_KEY)
        .env("AWS_REGION", fake_bedrock::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    start_process(&launch).await
}

/// A short greedy chat request for `model` through the gateway, plus `extra` fields.
async fn chat(gateway: &Server, model: &str, extra: Value) -> HttpReply {
    let extra = with(json!({"max_tokens": 4, "temperature": 0}), extra);
    post(gateway, CHAT, &chat_request(model, "Say hello.", extra)).await
}

fn replica_label(server: &Server) -> String {
    format!("replica:{}", server.addr())
}

async fn metric(gateway: &Server, series: &str) -> f64 {
    metric_value(&gateway.metrics_text().await, series).unwrap_or(0.0)
}

#[tokio::test]
async fn balances_by_outstanding_requests_and_survives_a_killed_replica() {
    let options = ServerOptions::default();
    let (a, b) = tokio::join!(start_server(&options), start_server(&options));
    let mut replicas = [a, b];
    let addrs: Vec<String> = replicas.iter().map(Server::addr).collect();
    let catalog = format!(
        "[[model]]\nid = \"{SMOLLM2_ID}\"\n{}",
        replicas_table(&addrs, "failure_threshold = 1")
    );
    let gateway = start_gateway(&catalog).await;

    // Both replicas take traffic.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let reply = chat(&gateway, SMOLLM2_ID, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        seen.insert(reply.header(BACKEND).expect(BACKEND).to_owned());
    }
    let labels: std::collections::BTreeSet<String> = replicas.iter().map(replica_label).collect();
    assert_eq!(seen, labels, "idle replicas share the traffic");

    // A long stream occupies one replica, so the next requests go to the other one.
    let long = send_json(
        &client(),
        &gateway.url(CHAT),
        &chat_request(
            SMOLLM2_ID,
            "Count to a thousand.",
            json!({"stream": true, "max_tokens": 1500, "ignore_eos": true}),
        ),
        &[],
    )
    .await;
    assert_eq!(long.status(), 200);
    let busy = long.headers()[BACKEND].to_str().unwrap().to_owned();
    let busy_index = replicas
        .iter()
        .position(|r| replica_label(r) == busy)
        .expect("served by one of the replicas");
    let idle = replica_label(&replicas[1 - busy_index]);
    let mut long_body = long.bytes_stream();
    // Wait until tokens flow, so the stream is surely in flight on the busy replica.
    let first = long_body.next().await.expect("first bytes").unwrap();
    assert!(!first.is_empty());
    for _ in 0..3 {
        let reply = chat(&gateway, SMOLLM2_ID, json!({})).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header(BACKEND),
            Some(idle.as_str()),
            "least outstanding"
        );
    }

    // Kill the busy replica mid-stream: its stream ends with an in-band error, promptly.
    replicas[busy_index].kill().await;
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let rest = async {
        while let Some(chunk) = long_body.next().await {
            match chunk {
                Ok(bytes) => events.extend(parser.push(&bytes)),
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .expect("the broken stream ends instead of hanging");
    let error = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|e| e.get("error").is_some())
        .expect("an error event");
    assert_eq!(error["error"]["code"], "bad_gateway", "{error}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    // New requests all succeed on the survivor (retried there if they hit the dead one
    // before the gateway noticed).
    for _ in 0..4 {
        let reply = chat(&gateway, SMOLLM2_ID, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        assert_eq!(reply.header(BACKEND), Some(idle.as_str()));
    }
}

fn pushed_answers(fake: &FakeBedrock) {
    fake.push(Reply::Answer(Answer::text("Hello from Bedrock.")));
    fake.push(Reply::Answer(Answer::text("Hello from Bedrock.")));
    fake.push(Reply::Answer(Answer::tool_calls(vec![(
        "tooluse_1".into(),
        "get_weather".into(),
        json!({"city": "Paris"}),
    )])));
    fake.push(Reply::Answer(Answer::text("It is sunny in Paris.")));
    let mut parallel = Answer::tool_calls(vec![
        (
            "tooluse_2".into(),
            "get_weather".into(),
            json!({"city": "Paris"}),
        ),
        ("tooluse_3".into(), "get_time".into(), json!({"tz": "CET"})),
    ]);
    parallel.interleave_tool_deltas = true;
    fake.push(Reply::Answer(parallel));
}

async fn run_python(script: &str, base_url: &str, model: &str) -> String {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make pydeps`",
        python.display()
    );
    let out = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/python").join(script))
        .arg(base_url)
        .arg(model)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn from_zero_replicas_it_holds_falls_back_to_bedrock_and_returns_to_a_ready_replica() {
    let fake = FakeBedrock::start().await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Two ids over the same (empty) pool: one holds briefly, one holds long enough for a
    // replica to start.
    let catalog = format!(
        "[[model]]\nid = \"{SMOLLM2_ID}\"\n{}{}\n[[model]]\nid = \"patient\"\n{}",
        replicas_table(std::slice::from_ref(&addr), "max_wait_ms = 1000"),
        bedrock_table(&fake),
        replicas_table(
            std::slice::from_ref(&addr),
            &format!("max_wait_ms = 120000\nmodel = \"{SMOLLM2_ID}\""),
        ),
    );
    let gateway = start_gateway(&catalog).await;

    // Held for the budget, then answered by Bedrock.
    let started = Instant::now();
    let reply = chat(&gateway, SMOLLM2_ID, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "held first"
    );
    assert_eq!(reply.header(BACKEND), Some("bedrock"));
    assert_eq!(
        reply.json["choices"][0]["message"]["content"],
        "Hello from Bedrock."
    );
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    assert!(
        recorded[0].signature_valid,
        "SigV4 with the env credentials"
    );
    assert_eq!(recorded[0].model_id, BEDROCK_MODEL);
    let fallbacks = format!(
        "inferd:gateway_fallbacks_total{{model_name=\"{SMOLLM2_ID}\",to=\"bedrock\",reason=\"hold_timeout\"}}"
    );
    assert_eq!(metric(&gateway, &fallbacks).await, 1.0);
    assert_eq!(
        metric(
            &gateway,
            "inferd:backend_requests_total{backend=\"bedrock\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&gateway, "inferd:gateway_demand").await, 0.0);

    // The official client works unchanged through the gateway while it falls back,
    // streaming and tool calls included.
    pushed_answers(&fake);
    let stdout = run_python("openai_gateway_bedrock.py", &gateway.url("/v1"), SMOLLM2_ID).await;
    for check in [
        "bedrock chat ok",
        "bedrock chat stream ok",
        "bedrock tool round trip ok",
        "bedrock parallel tool calls stream ok",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }

    // A request held while the pool is at zero shows up as demand (what KEDA scales on).
    let gw_url = gateway.url(CHAT);
    let held = tokio::spawn(async move {
        let body = chat_request("patient", "hi", json!({"max_tokens": 1}));
        let reply = post_with(&client(), &gw_url, &body, &[]).await;
        let backend = reply.header(BACKEND).map(str::to_owned);
        (reply.status, backend.unwrap_or(reply.text), Instant::now())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &gateway,
        "inferd:gateway_requests_held{model_name=\"patient\"}",
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the request was never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&gateway, "inferd:gateway_demand{model_name=\"patient\"}").await >= 1.0);

    // The pool scales up: a replica starts at the address the gateway knows.
    let options = ServerOptions::default();
    let replica =
        start_process(&Launch::serve(&smollm2_catalog(&options), SMOLLM2_ID, &options).port(port))
            .await;
    let ready_at = Instant::now();
    let (status, backend, answered_at) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        backend,
        replica_label(&replica),
        "the held request went to the replica"
    );
    println!(
        "held request answered by the replica {} ms after it became ready",
        answered_at.saturating_duration_since(ready_at).as_millis()
    );

    // And new traffic stays there, for the official client too.
    let reply = chat(&gateway, SMOLLM2_ID, json!({})).await;
    assert_eq!(
        reply.header(BACKEND),
        Some(replica_label(&replica).as_str())
    );
    let stdout = run_python("openai_client.py", &gateway.url("/v1"), SMOLLM2_ID).await;
    assert!(stdout.contains("chat stream ok"), "{stdout}");
    assert_eq!(
        fake.requests().len(),
        6,
        "no Bedrock call once the replica is ready"
    );
}

#[tokio::test]
async fn held_streams_keep_alive_and_policies_choose_before_the_first_byte() {
    let fake = FakeBedrock::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let dead = std::slice::from_ref(&dead);
    let catalog = format!(
        "[[model]]\nid = \"{SMOLLM2_ID}\"\n{}{}\
         [[model]]\nid = \"at-once\"\n{}{}\
         [[model]]\nid = \"gpu-only\"\n{}",
        replicas_table(dead, "max_wait_ms = 1200\nkeepalive_ms = 200"),
        bedrock_table(&fake),
        replicas_table(dead, "when_none_ready = \"next\""),
        bedrock_table(&fake),
        replicas_table(dead, "max_wait_ms = 300"),
    );
    let gateway = start_gateway(&catalog).await;

    // A stream held past the keep-alive interval: comments while waiting, then the chosen
    // backend named in a comment, then the chunks. No model output before the choice.
    let response = post(
        &gateway,
        CHAT,
        &chat_request(SMOLLM2_ID, "hi", json!({"stream": true})),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response.headers.get(BACKEND).is_none());
    let text = response.text;
    let waiting = text.matches(": waiting for a backend").count();
    assert!(waiting >= 3, "keep-alives while held:\n{text}");
    let chosen = text
        .find(": x-inferd-backend: bedrock")
        .expect("backend comment");
    let first_data = text.find("data:").expect("chunks");
    assert!(chosen < first_data, "{text}");
    let mut parser = SseParser::default();
    let data = parser.push(text.as_bytes());
    let content: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "Hello from Bedrock.");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    // `when_none_ready = "next"`: Bedrock at once.
    let started = Instant::now();
    let reply = chat(&gateway, "at-once", json!({})).await;
    assert_eq!(reply.header(BACKEND), Some("bedrock"));
    assert!(started.elapsed() < Duration::from_millis(900), "not held");
    let at_once =
        "inferd:gateway_fallbacks_total{model_name=\"at-once\",reason=\"no_ready_replica\"}";
    assert_eq!(metric(&gateway, at_once).await, 1.0);

    // Nothing to fall back to: held, then a 503 in OpenAI's shape.
    let reply = chat(&gateway, "gpu-only", json!({})).await;
    assert_eq!(reply.status, 503, "{}", reply.json);
    assert_eq!(reply.json["error"]["type"], "service_unavailable");

    // Bedrock refusals map to OpenAI statuses, and the gateway keeps serving.
    fake.push(Reply::Error {
        status: 429,
        error_type: "ThrottlingException".into(),
        message: "Too many requests, please wait before trying again.".into(),
    });
    let reply = chat(&gateway, "at-once", json!({})).await;
    assert_eq!(reply.status, 429, "{}", reply.json);
    fake.push(Reply::Error {
        status: 400,
        error_type: "ValidationException".into(),
        message: "The model returned the following errors: bad input".into(),
    });
    let reply = chat(&gateway, "at-once", json!({})).await;
    assert_eq!(reply.status, 400);
    assert!(reply.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad input"));
    // Fields Bedrock cannot honour are refused by name (the default `unsupported_params`).
    let reply = chat(&gateway, "at-once", json!({"seed": 7})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["param"], "seed");
    let reply = chat(&gateway, "at-once", json!({})).await;
    assert_eq!(reply.status, 200);
}
