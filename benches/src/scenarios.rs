//! Focused scenarios for engine behaviour agents depend on. Figures are ratios measured in
//! the same run, so a noisy machine still gives a meaningful comparison.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

/// A deterministic prompt of roughly `words` tokens, different for every `nonce`
/// from its very first token (so nothing is shared in the prefix cache).
fn long_text(nonce: &str, words: usize) -> String {
    let mut s = format!("{nonce}. You are an agent with these tools:\n");
    for i in 0..words / 10 {
        s.push_str(&format!("tool_{i}: looks up record {i} and returns it.\n"));
    }
    s
}

/// Streams one chat; returns (time to first content, arrival times of content chunks).
async fn stream_chat(
    c: &reqwest::Client,
    url: &str,
    body: Value,
) -> anyhow::Result<(Duration, Vec<Instant>)> {
    let start = Instant::now();
    let resp = c
        .post(format!("{url}/chat/completions"))
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
    let mut times = vec![];
    let mut buf = String::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(data).context("chunk")?;
                if v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
                {
                    times.push(Instant::now());
                }
            }
        }
    }
    let ttft = times.first().map_or(Duration::ZERO, |t| *t - start);
    Ok((ttft, times))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// TTFT of a request whose ~1,000-token prefix is cached vs one whose prefix is cold.
pub async fn prefix_cache(c: &reqwest::Client, url: &str, model: &str) -> anyhow::Result<()> {
    let shared = long_text("Shared", 1000);
    let body = |system: &str, q: usize| {
        json!({"model": model, "stream": true, "max_tokens": 1, "temperature": 0,
               "messages": [{"role": "system", "content": system},
                            {"role": "user", "content": format!("Question {q}?")}]})
    };
    // Warm the shared prefix once.
    stream_chat(c, url, body(&shared, 0)).await?;
    let (mut cold, mut warm) = (vec![], vec![]);
    for i in 1..=6 {
        let (t, _) = stream_chat(c, url, body(&long_text(&format!("Cold {i}"), 1000), i)).await?;
        cold.push(t.as_secs_f64() * 1e3);
        let (t, _) = stream_chat(c, url, body(&shared, i)).await?;
        warm.push(t.as_secs_f64() * 1e3);
    }
    let (c50, w50) = (median(cold), median(warm));
    println!("prefix-cache: TTFT p50 cold {c50:.1} ms, cached {w50:.1} ms, cached/cold = {:.3} ({:.1}x faster)", w50 / c50, c50 / w50);
    Ok(())
}

/// Inter-token latency of 4 running streams while a ~2,000-token prompt is prefilled.
pub async fn prefill_interference(
    c: &reqwest::Client,
    url: &str,
    model: &str,
) -> anyhow::Result<()> {
    let decode = |i: usize| {
        json!({"model": model, "stream": true, "max_tokens": 160, "ignore_eos": true,
               "temperature": 0,
               "messages": [{"role": "user", "content": format!("Tell a story about robot {i}.")}]})
    };
    let streams: Vec<_> = (0..4).map(|i| stream_chat(c, url, decode(i))).collect();
    let long = async {
        // Let the decodes get going, then send the long prompt.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sent = Instant::now();
        let body = json!({"model": model, "stream": true, "max_tokens": 1, "temperature": 0,
                          "messages": [{"role": "user", "content": long_text(&format!("Long {:?}", Instant::now()), 2000)}]});
        let (ttft, _) = stream_chat(c, url, body).await?;
        anyhow::Ok((sent, sent + ttft))
    };
    let (decodes, window) = tokio::join!(futures::future::join_all(streams), long);
    let (from, to) = window?;
    let (mut during, mut outside) = (vec![], vec![]);
    for d in decodes {
        let (_, times) = d?;
        for w in times.windows(2) {
            let itl = (w[1] - w[0]).as_secs_f64() * 1e3;
            if w[1] >= from && w[0] <= to {
                during.push(itl);
            } else {
                outside.push(itl);
            }
        }
    }
    let max_during = during.iter().copied().fold(0.0, f64::max);
    let (d50, o50) = (median(during.clone()), median(outside));
    println!(
        "prefill-interference: long prompt prefilled in {:.0} ms; decode ITL p50 outside {o50:.1} ms, during {d50:.1} ms (max {max_during:.1} ms, {} gaps)",
        (to - from).as_secs_f64() * 1e3,
        during.len()
    );
    Ok(())
}
