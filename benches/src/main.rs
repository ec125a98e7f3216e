//! inferd-bench: a closed-loop load generator over streaming `/v1/chat/completions` for
//! inferd or any OpenAI-compatible server. Reports, per concurrency level, output token
//! throughput, time to first token and inter-token latency. (The full suite — open loop,
//! workloads, reports — is tracked separately; this is its first cut.)

mod scenarios;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop load generator for OpenAI-compatible servers")]
struct Args {
    /// Base URL of the API, e.g. http://127.0.0.1:8080/v1
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    url: String,
    /// Model id to request.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Requests per level (per concurrent worker: requests / concurrency each).
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Tokens to generate per request (`ignore_eos` asks for exactly this many).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Run a focused scenario instead of the concurrency sweep:
    /// `prefix-cache` (TTFT with a ~1,000-token cached prefix vs a cold one) or
    /// `prefill-interference` (inter-token latency of running streams while a ~2,000-token
    /// prompt is prefilled; run it against servers with and without chunked prefill).
    #[arg(long)]
    scenario: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Sample {
    ttft: Duration,
    itls: Vec<Duration>,
    output_tokens: usize,
}

async fn one_request(c: &reqwest::Client, a: &Args, i: usize) -> anyhow::Result<Sample> {
    let body = json!({
        "model": a.model,
        "messages": [{"role": "user", "content": format!("Tell me a long story about robot number {i}.")}],
        "max_tokens": a.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let resp = c
        .post(format!("{}/chat/completions", a.url))
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "status {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let mut s = Sample::default();
    let mut last: Option<Instant> = None;
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(data).context("chunk json")?;
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    s.output_tokens = n as usize;
                }
                let has_text = v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty());
                if has_text {
                    let now = Instant::now();
                    match last {
                        None => s.ttft = now - start,
                        Some(prev) => s.itls.push(now - prev),
                    }
                    last = Some(now);
                }
            }
        }
    }
    Ok(s)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let c = reqwest::Client::new();
    match a.scenario.as_deref() {
        Some("prefix-cache") => return scenarios::prefix_cache(&c, &a.url, &a.model).await,
        Some("prefill-interference") => {
            return scenarios::prefill_interference(&c, &a.url, &a.model).await
        }
        Some(other) => bail!("unknown scenario {other:?}"),
        None => {}
    }
    // Warm-up, excluded from the figures.
    one_request(&c, &a, 0).await?;
    println!(
        "{:>11} {:>9} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "concurrency",
        "requests",
        "failed",
        "out tok/s",
        "ttft p50 ms",
        "ttft p90 ms",
        "itl p50 ms"
    );
    let mut base = None;
    for &conc in &a.concurrency {
        let per = a.requests.div_ceil(conc);
        let start = Instant::now();
        let workers = (0..conc).map(|w| {
            let (c, a) = (&c, &a);
            async move {
                let mut out = vec![];
                for j in 0..per {
                    out.push(one_request(c, a, 1 + w * per + j).await);
                }
                out
            }
        });
        let results: Vec<_> = futures::future::join_all(workers)
            .await
            .into_iter()
            .flatten()
            .collect();
        let wall = start.elapsed().as_secs_f64();
        let ok: Vec<Sample> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let failed = results.len() - ok.len();
        let tokens: usize = ok.iter().map(|s| s.output_tokens).sum();
        let tps = tokens as f64 / wall;
        let mut ttft: Vec<f64> = ok.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
        let mut itl: Vec<f64> = ok
            .iter()
            .flat_map(|s| s.itls.iter().map(|d| d.as_secs_f64() * 1e3))
            .collect();
        let ratio = match base {
            None => {
                base = Some(tps);
                String::new()
            }
            Some(b) => format!("  ({:.2}x level {})", tps / b, a.concurrency[0]),
        };
        println!(
            "{:>11} {:>9} {:>10} {:>12.1} {:>12.1} {:>12.1} {:>12.1}{}",
            conc,
            results.len(),
            failed,
            tps,
            pct(&mut ttft, 0.5),
            pct(&mut ttft, 0.9),
            pct(&mut itl, 0.5),
            ratio
        );
    }
    Ok(())
}
