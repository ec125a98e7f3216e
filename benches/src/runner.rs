//! Drives the load: closed loop (N clients, each sends its next request when the previous
//! one is done) or open loop (conversations arrive at a rate, inter-arrival times from a
//! gamma distribution: shape = burstiness, mean = 1/rate, so burstiness 1 is Poisson; the
//! same definition as vLLM's `--burstiness`). The turns of one conversation always run one
//! after another, each with the replies to the earlier ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{RunArgs, TargetSpec};
use crate::client::{Client, RequestRecord};
use crate::machine::{Memory, MemorySampler};
use crate::workload::{Conversation, RequestOpts};

/// A server being measured, with what it said about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub model: String,
    pub pid: Option<u32>,
    /// The answer of `GET /models` (its versions, as far as the API tells them).
    pub models: Value,
}

/// How hard one level pushes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Level {
    /// Closed loop: this many requests in flight.
    Closed { concurrency: usize },
    /// Open loop: arrivals per second (None: all at once), gamma shape, in-flight cap.
    Open {
        rate: Option<f64>,
        burstiness: f64,
        max_concurrency: Option<usize>,
    },
}

impl Level {
    /// The sweep of `args`: its request rates if any, else its concurrency levels.
    pub fn sweep(args: &RunArgs) -> Vec<Level> {
        if args.request_rate.is_empty() {
            return args
                .concurrency
                .iter()
                .map(|&c| Level::Closed { concurrency: c })
                .collect();
        }
        let open = |r: &f64| Level::Open {
            rate: r.is_finite().then_some(*r),
            burstiness: args.burstiness,
            max_concurrency: args.max_concurrency,
        };
        args.request_rate.iter().map(open).collect()
    }

    /// Value on a chart's x axis (an unbounded rate sits at +inf).
    pub fn x(&self) -> f64 {
        match *self {
            Level::Closed { concurrency } => concurrency as f64,
            Level::Open { rate, .. } => rate.unwrap_or(f64::INFINITY),
        }
    }

    pub fn label(&self) -> String {
        match *self {
            Level::Closed { concurrency } => format!("c={concurrency}"),
            Level::Open { rate: Some(r), .. } => format!("{r}/s"),
            Level::Open { rate: None, .. } => "inf/s".into(),
        }
    }
}

/// Offsets from the level's start, in seconds, at which `n` conversations arrive: the first
/// at 0, then gamma(shape = burstiness, scale = 1 / (rate · burstiness)) gaps (all at 0 for
/// an unbounded rate). Deterministic in `seed`.
pub fn arrival_offsets(n: usize, rate: Option<f64>, burstiness: f64, seed: u64) -> Vec<f64> {
    let Some(rate) = rate else {
        return vec![0.0; n];
    };
    let gamma =
        Gamma::new(burstiness, 1.0 / (rate * burstiness)).expect("positive rate and burstiness");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += gamma.sample(&mut rng);
            }
            t
        })
        .collect()
}

/// What one level on one target produced.
#[derive(Debug, Clone)]
pub struct LevelRun {
    pub records: Vec<RequestRecord>,
    pub duration_s: f64,
    /// Server memory over the level (with a PID).
    pub memory: Option<Memory>,
}

struct Ctx {
    client: Client,
    url: String,
    opts: RequestOpts,
    convs: Vec<Conversation>,
    start: Instant,
    records: Mutex<Vec<RequestRecord>>,
    failed: AtomicUsize,
    bar: ProgressBar,
}

impl Ctx {
    /// Runs every turn of conversation `i`.
    async fn conversation(&self, i: usize) {
        let conv = &self.convs[i];
        let mut replies = Vec::with_capacity(conv.num_turns());
        for turn in 0..conv.num_turns() {
            let req = conv.request(turn, &replies, &self.opts);
            let sent = Instant::now();
            let (mut rec, text) = self.client.send(&self.url, &req).await;
            rec.conversation = i;
            rec.turn = turn;
            rec.start_us = (sent - self.start).as_micros() as u64;
            if !rec.ok {
                let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                self.bar.set_message(format!("{n} failed"));
            }
            self.records.lock().expect("records").push(rec);
            self.bar.inc(1);
            replies.push(text);
        }
    }
}

/// Runs `convs` against `target` at `level`; the progress bar counts requests.
pub async fn run_level(
    client: &Client,
    target: &Target,
    level: &Level,
    convs: Vec<Conversation>,
    opts: RequestOpts,
    seed: u64,
    bar: ProgressBar,
) -> LevelRun {
    let sampler = target.pid.map(MemorySampler::start);
    let n = convs.len();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        url: target.url.clone(),
        opts,
        convs,
        start: Instant::now(),
        records: Mutex::new(vec![]),
        failed: AtomicUsize::new(0),
        bar,
    });
    let mut tasks = JoinSet::new();
    match *level {
        Level::Closed { concurrency } => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..concurrency.min(n) {
                let (ctx, next) = (ctx.clone(), next.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= ctx.convs.len() {
                            break;
                        }
                        ctx.conversation(i).await;
                    }
                });
            }
        }
        Level::Open {
            rate,
            burstiness,
            max_concurrency,
        } => {
            let cap = max_concurrency.map(|m| Arc::new(Semaphore::new(m.max(1))));
            for (i, at) in arrival_offsets(n, rate, burstiness, seed)
                .into_iter()
                .enumerate()
            {
                tokio::time::sleep_until((ctx.start + Duration::from_secs_f64(at)).into()).await;
                let permit = match &cap {
                    Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore")),
                    None => None,
                };
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    ctx.conversation(i).await;
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let duration_s = ctx.start.elapsed().as_secs_f64();
    let memory = match sampler {
        Some(s) => s.finish().await,
        None => None,
    };
    ctx.bar.finish_and_clear();
    let mut records = std::mem::take(&mut *ctx.records.lock().expect("records"));
    records.sort_by_key(|r| (r.conversation, r.turn));
    LevelRun {
        records,
        duration_s,
        memory,
    }
}

/// Resolves each target's model (the first id of `GET /models` when none is named) and
/// records what `/models` says.
pub async fn resolve_targets(
    client: &Client,
    specs: Vec<TargetSpec>,
) -> anyhow::Result<Vec<Target>> {
    let mut out = vec![];
    for s in specs {
        let models = client.get_json(&s.url, "models").await;
        let model = match (&s.model, &models) {
            (Some(m), _) => m.clone(),
            (None, Ok(v)) => v["data"][0]["id"]
                .as_str()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: GET {}/models lists no model; pass model=",
                        s.name,
                        s.url
                    )
                })?
                .to_owned(),
            (None, Err(e)) => anyhow::bail!(
                "{}: GET {}/models failed ({e}); is the server up?",
                s.name,
                s.url
            ),
        };
        if let Err(e) = &models {
            eprintln!(
                "warning: {}: GET /models failed ({e}); versions not recorded",
                s.name
            );
        }
        out.push(Target {
            name: s.name,
            url: s.url,
            model,
            pid: s.pid,
            models: models.unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_follow_the_seed_and_the_rate() {
        let a = arrival_offsets(2000, Some(4.0), 1.0, 42);
        assert_eq!(a, arrival_offsets(2000, Some(4.0), 1.0, 42));
        assert_ne!(a, arrival_offsets(2000, Some(4.0), 1.0, 43));
        assert_eq!(a[0], 0.0);
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        let mean_gap = a[1999] / 1999.0;
        assert!((mean_gap - 0.25).abs() < 0.025, "{mean_gap}");
        // Burstier arrivals (shape < 1) have the same mean but a larger spread.
        let cv = |v: &[f64]| {
            let g: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
            let m = g.iter().sum::<f64>() / g.len() as f64;
            (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt() / m
        };
        let bursty = arrival_offsets(2000, Some(4.0), 0.25, 42);
        assert!(
            cv(&bursty) > 1.5 && (cv(&a) - 1.0).abs() < 0.15,
            "{} {}",
            cv(&bursty),
            cv(&a)
        );
        assert_eq!(arrival_offsets(3, None, 1.0, 0), [0.0; 3]);
    }
}
