//! Prometheus metrics, served at `GET /metrics` (see `crate::api::metrics`).
//!
//! Every family has the meaning, the type and (for histograms) the bucket boundaries of
//! its vLLM v1 counterpart (`vllm/v1/metrics/loggers.py`), with the `inferd:` prefix in
//! place of `vllm:` and the same `model_name` label, so dashboards, KEDA triggers and the
//! Gateway API Inference Extension endpoint picker work with a name mapping only. The
//! README's "Metrics" section lists them all with their vLLM names.
//!
//! The exposition is the Prometheus text format 0.0.4 (what vLLM serves): counters are
//! exposed with a `_total` suffix, e.g. `inferd:prompt_tokens_total`, and their
//! `# HELP`/`# TYPE` lines name the suffixed series, as in vLLM's output.
//!
//! Hot path: [`Metrics::model`] resolves every label set of one model once and keeps the
//! handles; the [`ModelMetrics`] setters are then a relaxed atomic store or add (gauges,
//! counters) or one uncontended `parking_lot` mutex around a bucket search (histograms:
//! prometheus-client's `Histogram` is not lock-free). None of them allocates.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Registered family names. Counters are exposed with `_total` appended.
pub mod names {
    pub const NUM_REQUESTS_RUNNING: &str = "inferd:num_requests_running";
    pub const NUM_REQUESTS_WAITING: &str = "inferd:num_requests_waiting";
    pub const KV_CACHE_USAGE_PERC: &str = "inferd:kv_cache_usage_perc";
    pub const CACHE_CONFIG_INFO: &str = "inferd:cache_config_info";
    pub const NUM_PREEMPTIONS: &str = "inferd:num_preemptions";
    pub const PROMPT_TOKENS: &str = "inferd:prompt_tokens";
    pub const GENERATION_TOKENS: &str = "inferd:generation_tokens";
    pub const PREFIX_CACHE_QUERIES: &str = "inferd:prefix_cache_queries";
    pub const PREFIX_CACHE_HITS: &str = "inferd:prefix_cache_hits";
    pub const REQUEST_SUCCESS: &str = "inferd:request_success";
    pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "inferd:time_to_first_token_seconds";
    pub const INTER_TOKEN_LATENCY_SECONDS: &str = "inferd:inter_token_latency_seconds";
    pub const E2E_REQUEST_LATENCY_SECONDS: &str = "inferd:e2e_request_latency_seconds";
    pub const REQUEST_QUEUE_TIME_SECONDS: &str = "inferd:request_queue_time_seconds";
    pub const REQUEST_PROMPT_TOKENS: &str = "inferd:request_prompt_tokens";
    pub const REQUEST_GENERATION_TOKENS: &str = "inferd:request_generation_tokens";
    pub const BACKEND_REQUESTS: &str = "inferd:backend_requests";
}

/// `vllm:time_to_first_token_seconds` buckets.
pub const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// `vllm:inter_token_latency_seconds` buckets.
pub const INTER_TOKEN_LATENCY_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// vLLM's `request_latency_buckets`, used for `vllm:e2e_request_latency_seconds` and
/// `vllm:request_queue_time_seconds`.
pub const REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Upper end of the token-count buckets. vLLM uses `build_1_2_5_buckets(max_model_len)`;
/// this API has no per-model length, so the series runs to 10^6 tokens, a superset of
/// vLLM's for any `max_model_len` up to that (the extra buckets above a model's context
/// length simply stay equal to `_count`).
pub const TOKEN_BUCKETS_MAX: u64 = 1_000_000;

/// vLLM's `build_1_2_5_buckets(max)`: 1, 2, 5, 10, 20, 50, … while `<= max`.
pub fn build_1_2_5_buckets(max: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1, 2, 5] {
            match scale.checked_mul(m) {
                Some(v) if v <= max => out.push(v as f64),
                _ => return out,
            }
        }
        match scale.checked_mul(10) {
            Some(s) => scale = s,
            None => return out,
        }
    }
}

/// `finished_reason` values with pre-resolved series (vLLM's `FinishReason` strings).
pub const FINISH_REASONS: [&str; 4] = ["stop", "length", "abort", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    model_name: String,
    finished_reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheConfigLabels {
    model_name: String,
    block_size: usize,
    num_gpu_blocks: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    model_name: String,
    backend: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// The registry and every family in it. One per process, shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    running: Family<ModelLabel, Gauge>,
    waiting: Family<ModelLabel, Gauge>,
    kv_usage: Family<ModelLabel, FloatGauge>,
    cache_config: Family<CacheConfigLabels, Gauge>,
    preemptions: Family<ModelLabel, Counter>,
    prompt_tokens: Family<ModelLabel, Counter>,
    generation_tokens: Family<ModelLabel, Counter>,
    prefix_queries: Family<ModelLabel, Counter>,
    prefix_hits: Family<ModelLabel, Counter>,
    request_success: Family<ReasonLabels, Counter>,
    ttft: HistogramFamily,
    inter_token: HistogramFamily,
    e2e: HistogramFamily,
    queue_time: HistogramFamily,
    prompt_hist: HistogramFamily,
    generation_hist: HistogramFamily,
    backend_requests: Family<BackendLabels, Counter>,
    gateway: super::gateway_metrics::GatewayMetrics,
    /// `model()` hands out the same handles for the same name.
    models: Mutex<HashMap<String, ModelMetrics>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}
fn inter_token_histogram() -> Histogram {
    Histogram::new(INTER_TOKEN_LATENCY_BUCKETS)
}
fn request_latency_histogram() -> Histogram {
    Histogram::new(REQUEST_LATENCY_BUCKETS)
}
fn token_histogram() -> Histogram {
    Histogram::new(build_1_2_5_buckets(TOKEN_BUCKETS_MAX))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        // prometheus-client appends the final "." to every help text.
        macro_rules! family {
            ($name:expr, $help:expr) => {{
                let f = Family::default();
                registry.register($name, $help, f.clone());
                f
            }};
        }
        macro_rules! histograms {
            ($name:expr, $help:expr, $ctor:expr) => {{
                let f: HistogramFamily = Family::new_with_constructor($ctor);
                registry.register($name, $help, f.clone());
                f
            }};
        }
        use names::*;
        let metrics = Metrics {
            running: family!(
                NUM_REQUESTS_RUNNING,
                "Number of requests in model execution batches"
            ),
            waiting: family!(
                NUM_REQUESTS_WAITING,
                "Number of requests waiting to be processed"
            ),
            kv_usage: family!(
                KV_CACHE_USAGE_PERC,
                "KV-cache usage. 1 means 100 percent usage"
            ),
            cache_config: family!(
                CACHE_CONFIG_INFO,
                "Information of the engine's cache config (always 1)"
            ),
            preemptions: family!(
                NUM_PREEMPTIONS,
                "Cumulative number of preemption from the engine"
            ),
            prompt_tokens: family!(PROMPT_TOKENS, "Number of prefill tokens processed"),
            generation_tokens: family!(GENERATION_TOKENS, "Number of generation tokens processed"),
            prefix_queries: family!(
                PREFIX_CACHE_QUERIES,
                "Prefix cache queries, in terms of number of queried tokens"
            ),
            prefix_hits: family!(
                PREFIX_CACHE_HITS,
                "Prefix cache hits, in terms of number of cached tokens"
            ),
            request_success: family!(REQUEST_SUCCESS, "Count of successfully processed requests"),
            ttft: histograms!(
                TIME_TO_FIRST_TOKEN_SECONDS,
                "Histogram of time to first token in seconds",
                ttft_histogram
            ),
            inter_token: histograms!(
                INTER_TOKEN_LATENCY_SECONDS,
                "Histogram of inter-token latency in seconds",
                inter_token_histogram
            ),
            e2e: histograms!(
                E2E_REQUEST_LATENCY_SECONDS,
                "Histogram of e2e request latency in seconds",
                request_latency_histogram
            ),
            queue_time: histograms!(
                REQUEST_QUEUE_TIME_SECONDS,
                "Histogram of time spent in WAITING phase for request",
                request_latency_histogram
            ),
            prompt_hist: histograms!(
                REQUEST_PROMPT_TOKENS,
                "Number of prefill tokens processed",
                token_histogram
            ),
            generation_hist: histograms!(
                REQUEST_GENERATION_TOKENS,
                "Number of generation tokens processed",
                token_histogram
            ),
            backend_requests: family!(
                BACKEND_REQUESTS,
                "Requests served, by backend kind (local, replica, bedrock)"
            ),
            gateway: super::gateway_metrics::GatewayMetrics::register(&mut registry),
            models: Mutex::new(HashMap::new()),
            registry,
        };
        Arc::new(metrics)
    }

    /// Prometheus text exposition (what GET /metrics returns), format 0.0.4; see
    /// [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail and every label value here is a string or an
            // integer, so this is unreachable; serve what was written rather than panic.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Handles bound to one model's label (`model_name`), cheap to clone, Send + Sync.
    /// Creates every per-model series (at zero) on first call; later calls for the same
    /// name return the same handles.
    pub fn model(&self, model: &str) -> ModelMetrics {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = models.get(model) {
            return m.clone();
        }
        let label = ModelLabel {
            model_name: model.to_owned(),
        };
        let reason = |r: &str| {
            self.request_success.get_or_create_owned(&ReasonLabels {
                model_name: model.to_owned(),
                finished_reason: r.to_owned(),
            })
        };
        let handles = ModelHandles {
            running: self.running.get_or_create_owned(&label),
            waiting: self.waiting.get_or_create_owned(&label),
            kv_usage: self.kv_usage.get_or_create_owned(&label),
            preemptions: self.preemptions.get_or_create_owned(&label),
            prompt_tokens: self.prompt_tokens.get_or_create_owned(&label),
            generation_tokens: self.generation_tokens.get_or_create_owned(&label),
            prefix_queries: self.prefix_queries.get_or_create_owned(&label),
            prefix_hits: self.prefix_hits.get_or_create_owned(&label),
            success: FINISH_REASONS.map(reason),
            ttft: self.ttft.get_or_create_owned(&label),
            inter_token: self.inter_token.get_or_create_owned(&label),
            e2e: self.e2e.get_or_create_owned(&label),
            queue_time: self.queue_time.get_or_create_owned(&label),
            prompt_hist: self.prompt_hist.get_or_create_owned(&label),
            generation_hist: self.generation_hist.get_or_create_owned(&label),
            model: model.to_owned(),
            request_success: self.request_success.clone(),
            cache_config: self.cache_config.clone(),
            cache_config_current: Mutex::new(None),
        };
        let m = ModelMetrics {
            inner: Arc::new(handles),
        };
        models.insert(model.to_owned(), m.clone());
        m
    }

    /// The gateway's families (demand, held, fallbacks, replicas, dropped params).
    pub fn gateway(&self) -> &super::gateway_metrics::GatewayMetrics {
        &self.gateway
    }

    /// Count a request served by a backend kind (`local`, `replica`, `bedrock`).
    /// Per request, not per step: it builds the label set (two small allocations) and
    /// takes the family's read lock.
    pub fn inc_backend_request(&self, model: &str, backend: &str) {
        self.backend_requests
            .get_or_create(&BackendLabels {
                model_name: model.to_owned(),
                backend: backend.to_owned(),
            })
            .inc();
    }
}

/// Handles bound to one model's label. Clone is one `Arc` increment.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    inner: Arc<ModelHandles>,
}

#[derive(Debug)]
struct ModelHandles {
    running: Gauge,
    waiting: Gauge,
    kv_usage: FloatGauge,
    preemptions: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    prefix_queries: Counter,
    prefix_hits: Counter,
    /// In [`FINISH_REASONS`] order.
    success: [Counter; 4],
    ttft: Histogram,
    inter_token: Histogram,
    e2e: Histogram,
    queue_time: Histogram,
    prompt_hist: Histogram,
    generation_hist: Histogram,
    // Cold paths.
    model: String,
    request_success: Family<ReasonLabels, Counter>,
    cache_config: Family<CacheConfigLabels, Gauge>,
    cache_config_current: Mutex<Option<CacheConfigLabels>>,
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ModelMetrics {
    /// `inferd:num_requests_running`: requests in the running batch.
    pub fn set_running(&self, n: usize) {
        self.inner.running.set(to_i64(n));
    }

    /// `inferd:num_requests_waiting`: requests admitted but not yet scheduled.
    pub fn set_waiting(&self, n: usize) {
        self.inner.waiting.set(to_i64(n));
    }

    /// `inferd:kv_cache_usage_perc`: fraction of KV blocks in use, 0..=1 (clamped).
    pub fn set_kv_usage(&self, fraction: f64) {
        self.inner.kv_usage.set(fraction.clamp(0.0, 1.0));
    }

    /// `inferd:cache_config_info{block_size,num_gpu_blocks} 1`. Calling it again with
    /// other values replaces the series (cold path: locks and allocates).
    pub fn set_cache_config(&self, block_size: usize, num_blocks: usize) {
        let labels = CacheConfigLabels {
            model_name: self.inner.model.clone(),
            block_size,
            num_gpu_blocks: num_blocks,
        };
        let mut current = self
            .inner
            .cache_config_current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.take() {
            if old != labels {
                self.inner.cache_config.remove(&old);
            }
        }
        self.inner.cache_config.get_or_create(&labels).set(1);
        *current = Some(labels);
    }

    /// `inferd:num_preemptions_total`.
    pub fn inc_preemptions(&self, n: u64) {
        self.inner.preemptions.inc_by(n);
    }

    /// `inferd:prompt_tokens_total`: prefill tokens processed.
    pub fn add_prompt_tokens(&self, n: u64) {
        self.inner.prompt_tokens.inc_by(n);
    }

    /// `inferd:generation_tokens_total`: tokens generated.
    pub fn add_generation_tokens(&self, n: u64) {
        self.inner.generation_tokens.inc_by(n);
    }

    /// `inferd:prefix_cache_queries_total`, in tokens looked up.
    pub fn add_prefix_cache_queries(&self, tokens: u64) {
        self.inner.prefix_queries.inc_by(tokens);
    }

    /// `inferd:prefix_cache_hits_total`, in tokens found cached.
    pub fn add_prefix_cache_hits(&self, tokens: u64) {
        self.inner.prefix_hits.inc_by(tokens);
    }

    /// `inferd:request_success_total{finished_reason}`; `stop`, `length`, `abort` and
    /// `error` are pre-resolved. Any other value gets its own series (cold path).
    pub fn inc_request_success(&self, finish_reason: &str) {
        match FINISH_REASONS.iter().position(|r| *r == finish_reason) {
            Some(i) => {
                self.inner.success[i].inc();
            }
            None => self.inc_other_reason(finish_reason),
        }
    }

    #[cold]
    fn inc_other_reason(&self, finish_reason: &str) {
        self.inner
            .request_success
            .get_or_create(&ReasonLabels {
                model_name: self.inner.model.clone(),
                finished_reason: finish_reason.to_owned(),
            })
            .inc();
    }

    /// `inferd:time_to_first_token_seconds`: arrival to first token.
    pub fn observe_ttft(&self, secs: f64) {
        self.inner.ttft.observe(secs);
    }

    /// `inferd:inter_token_latency_seconds`: time between consecutive output tokens.
    pub fn observe_inter_token_latency(&self, secs: f64) {
        self.inner.inter_token.observe(secs);
    }

    /// `inferd:e2e_request_latency_seconds`: arrival to finish.
    pub fn observe_e2e_latency(&self, secs: f64) {
        self.inner.e2e.observe(secs);
    }

    /// `inferd:request_queue_time_seconds`: time spent waiting before first scheduled.
    pub fn observe_queue_time(&self, secs: f64) {
        self.inner.queue_time.observe(secs);
    }

    /// `inferd:request_prompt_tokens`: prompt length of a finished request.
    pub fn observe_prompt_tokens(&self, n: usize) {
        self.inner.prompt_hist.observe(n as f64);
    }

    /// `inferd:request_generation_tokens`: tokens generated by a finished request.
    pub fn observe_generation_tokens(&self, n: usize) {
        self.inner.generation_hist.observe(n as f64);
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
