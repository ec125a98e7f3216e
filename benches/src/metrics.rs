//! Per-level figures with the definitions of vLLM's `benchmarks/serve.py`
//! (`calculate_metrics`), so that numbers compare with published vLLM results:
//!
//! - completed / failed requests; duration = level start → last request done;
//! - request throughput = completed / duration; output throughput = Σ output tokens /
//!   duration; total token throughput = Σ (input + output) tokens / duration;
//! - TTFT per completed request; TPOT = (e2e − TTFT) / (output tokens − 1) for requests with
//!   more than one output token; ITL = every gap between streamed chunks of every request;
//!   E2E per completed request;
//! - mean, std, p50, p90, p99 (numpy's linear interpolation), min and max;
//! - goodput = completed requests meeting every given SLO (TTFT, TPOT, E2E) / duration,
//!   with TPOT taken as 0 for requests of one output token, as vLLM does.
//!
//! Values are rounded to a microsecond (3 decimals of ms) and throughputs to 3 decimals, so
//! they print short and survive a JSON round trip bit for bit.

use serde::{Deserialize, Serialize};

use crate::cli::Slo;
use crate::client::RequestRecord;

/// Distribution of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The figures of one level on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from the server's prefix cache (`usage.prompt_tokens_details`).
    pub cached_tokens: u64,
    /// Completed requests meeting the SLOs, per second (None without --slo).
    pub goodput: Option<f64>,
    pub good_requests: Option<usize>,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    pub itl_ms: Option<Stats>,
    pub e2e_ms: Option<Stats>,
    /// The most frequent error messages of failed requests, with their counts.
    pub errors: Vec<(String, usize)>,
}

/// Rounds to 3 decimals.
pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

/// numpy.percentile (linear interpolation) of sorted values, p in [0, 100].
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = p / 100.0 * (n - 1) as f64;
            let (lo, frac) = (rank.floor() as usize, rank - rank.floor());
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

impl Stats {
    /// None for no values.
    pub fn of(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n; // numpy: ddof=0
        Some(Stats {
            mean: round3(mean),
            std: round3(var.sqrt()),
            min: round3(v[0]),
            p50: round3(percentile(&v, 50.0)),
            p90: round3(percentile(&v, 90.0)),
            p99: round3(percentile(&v, 99.0)),
            max: round3(v[v.len() - 1]),
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// TPOT of a request in ms: (e2e − TTFT) / (output tokens − 1), None for ≤ 1 token.
pub fn tpot_ms(r: &RequestRecord) -> Option<f64> {
    let out = r.output_tokens();
    let ttft = r.ttft_us?;
    (out > 1).then(|| ms(r.e2e_us.saturating_sub(ttft)) / (out - 1) as f64)
}

/// Whether a completed request meets every SLO given.
pub fn meets(r: &RequestRecord, slo: &Slo) -> bool {
    let ttft = r.ttft_us.map_or(f64::INFINITY, ms);
    let tpot = tpot_ms(r).unwrap_or(0.0);
    slo.ttft_ms.is_none_or(|s| ttft <= s)
        && slo.tpot_ms.is_none_or(|s| tpot <= s)
        && slo.e2e_ms.is_none_or(|s| ms(r.e2e_us) <= s)
}

/// The figures of one level from its records and its duration.
pub fn summarize(records: &[RequestRecord], duration_s: f64, slo: Option<&Slo>) -> Summary {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok).collect();
    let input: u64 = ok.iter().map(|r| r.input_tokens()).sum();
    let output: u64 = ok.iter().map(|r| r.output_tokens()).sum();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            round3(x / duration_s)
        } else {
            0.0
        }
    };
    let good = slo.map(|s| ok.iter().filter(|r| meets(r, s)).count());
    let mut errors: Vec<(String, usize)> = vec![];
    for e in records.iter().filter_map(|r| r.error.as_deref()) {
        match errors.iter_mut().find(|(m, _)| m == e) {
            Some((_, n)) => *n += 1,
            None => errors.push((e.to_owned(), 1)),
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    errors.truncate(5);
    Summary {
        completed: ok.len(),
        failed: records.len() - ok.len(),
        duration_s: round3(duration_s),
        request_throughput: per_s(ok.len() as f64),
        output_throughput: per_s(output as f64),
        total_token_throughput: per_s((input + output) as f64),
        input_tokens: input,
        output_tokens: output,
        cached_tokens: ok.iter().filter_map(|r| r.cached_tokens).sum(),
        goodput: good.map(|g| per_s(g as f64)),
        good_requests: good,
        ttft_ms: Stats::of(ok.iter().filter_map(|r| r.ttft_us.map(ms)).collect()),
        tpot_ms: Stats::of(ok.iter().filter_map(|r| tpot_ms(r)).collect()),
        itl_ms: Stats::of(
            ok.iter()
                .flat_map(|r| r.itl_us.iter().map(|&u| ms(u)))
                .collect(),
        ),
        e2e_ms: Stats::of(ok.iter().map(|r| ms(r.e2e_us)).collect()),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ttft: u64, e2e: u64, out: u64, itl: Vec<u64>) -> RequestRecord {
        RequestRecord {
            ok: true,
            ttft_us: Some(ttft),
            e2e_us: e2e,
            completion_tokens: Some(out),
            prompt_tokens: Some(10),
            chunks: itl.len() as u64 + 1,
            itl_us: itl,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn percentiles_match_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert!((percentile(&v, 90.0) - 7.6).abs() < 1e-12); // np.percentile(v, 90)
        assert!((percentile(&v, 99.0) - 9.76).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
        let s = Stats::of(v.to_vec()).unwrap();
        assert_eq!((s.mean, s.min, s.max), (4.0, 1.0, 10.0));
        assert_eq!(s.std, round3(10.0f64.sqrt())); // np.std(v) = sqrt(10)
    }

    #[test]
    fn vllm_definitions() {
        // TTFT 50 ms, 10 tokens, 20 ms apart: e2e 230 ms, TPOT 20 ms.
        let a = rec(50_000, 230_000, 10, vec![20_000; 9]);
        // One output token: no TPOT, counted as 0 for goodput.
        let b = rec(600_000, 600_000, 1, vec![]);
        let mut failed = RequestRecord {
            error: Some("HTTP 500: boom".into()),
            ..RequestRecord::default()
        };
        failed.completion_tokens = Some(99);
        let slo = Slo {
            ttft_ms: Some(500.0),
            tpot_ms: Some(100.0),
            e2e_ms: None,
        };
        let s = summarize(&[a, b, failed], 2.0, Some(&slo));
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!((s.input_tokens, s.output_tokens), (20, 11));
        assert_eq!(
            (
                s.request_throughput,
                s.output_throughput,
                s.total_token_throughput
            ),
            (1.0, 5.5, 15.5)
        );
        assert_eq!(s.tpot_ms.unwrap().mean, 20.0);
        assert_eq!(s.itl_ms.unwrap().p99, 20.0);
        assert_eq!(s.ttft_ms.unwrap().max, 600.0);
        assert_eq!((s.good_requests, s.goodput), (Some(1), Some(0.5)));
        assert_eq!(s.errors, vec![("HTTP 500: boom".to_string(), 1)]);
        let none = summarize(&[], 0.0, None);
        assert!(none.ttft_ms.is_none() && none.goodput.is_none());
    }
}
