//! What `inferd gateway` does for one model: its backends, in order of preference, as the
//! `[[model.backend]]` tables of `models.toml` declare them.
//!
//! ```toml
//! [[model]]
//! id = "smollm2-135m-instruct"
//!
//! [[model.backend]]                 # first choice: the GPU replicas
//! type = "replicas"
//! dns = "inferd-engine.inferd.svc.cluster.local:8080"   # headless Service, or:
//! # urls = ["10.0.0.7:8080", "10.0.0.8:8080"]           # a static list
//! # model = "smollm2-135m-instruct"  # the replicas' id for it, when it differs
//! when_none_ready = "hold"          # or "next": go to the next backend at once
//! max_wait_ms = 5000                # hold budget before falling back
//! max_held = 256                    # held requests beyond this go to the next backend at once
//! keepalive_ms = 15000              # SSE comment keep-alives while a stream is held
//!
//! [[model.backend]]                 # then: AWS Bedrock
//! type = "bedrock"
//! model_id = "us.anthropic.claude-3-5-haiku-20241022-v1:0"   # model or inference-profile id
//! region = "us-east-1"              # default: the SDK's region chain (AWS_REGION, profile)
//! # endpoint_url = "https://bedrock-runtime.us-east-1.amazonaws.com"
//! unsupported_params = "reject"     # or "drop" (logged and counted, never silent)
//! ```

use std::time::Duration;

/// Default hold budget while no replica is ready.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);
/// Default bound of requests held at once per model.
pub const DEFAULT_MAX_HELD: usize = 256;
/// Default interval of SSE keep-alive comments while a stream is held. Above the default
/// hold budget on purpose: by default a held stream never starts before its backend is
/// chosen, so `x-inferd-backend` is always a header.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
/// Default period of DNS re-resolution of a headless Service.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(2);
/// Default period of active `/ready` probes of each replica.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Default consecutive failures that open a replica's circuit breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default time an open breaker waits before a trial request (half-open).
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(10);
/// Default connect timeout to a replica.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default attempts of one request across replicas (only before the first byte).
pub const DEFAULT_REPLICA_ATTEMPTS: u32 = 3;
/// Default attempts of one Bedrock call on timeouts and 5xx (only before the first byte).
pub const DEFAULT_BEDROCK_ATTEMPTS: u32 = 3;
/// Default time limit of one Bedrock call until its first event.
pub const DEFAULT_BEDROCK_TIMEOUT: Duration = Duration::from_secs(60);

/// One `[[model.backend]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    Replicas(ReplicaSpec),
    Bedrock(BedrockSpec),
}

/// Upstream `inferd serve` replicas of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    pub discovery: Discovery,
    /// The model id the replicas serve, when it differs from the id clients send to the
    /// gateway (`None`: the same id).
    pub model: Option<String>,
    /// What to do when no replica is ready.
    pub when_none_ready: WhenNoneReady,
    /// Hold budget (with `WhenNoneReady::Hold`).
    pub max_wait: Duration,
    /// Most requests held at once; beyond it a request goes to the next backend at once.
    pub max_held: usize,
    /// SSE keep-alive comment interval while a streaming request is held.
    pub keepalive: Duration,
    /// Period of active `/ready` probes of each replica.
    pub probe_interval: Duration,
    /// Consecutive request failures (connect errors, 5xx, broken streams) that open the
    /// breaker. A failed `/ready` probe takes the replica out at once without counting
    /// here, so a restarting replica is back as soon as its first probe passes.
    pub failure_threshold: u32,
    /// How long an open breaker keeps the replica out before a trial.
    pub open_for: Duration,
    pub connect_timeout: Duration,
    /// Attempts of one request across replicas, before the first byte only.
    pub max_attempts: u32,
}

/// Where replica addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `host:port` of a headless Service, resolved every `refresh`: each A/AAAA record is
    /// a ready pod.
    Dns {
        host: String,
        port: u16,
        refresh: Duration,
    },
    /// Fixed `host:port` addresses.
    Static(Vec<String>),
}

/// What the gateway does when no replica is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenNoneReady {
    /// Hold the request up to `max_wait` while the pool scales up, then go on.
    Hold,
    /// Go to the next backend at once.
    Next,
}

/// AWS Bedrock through the Converse API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockSpec {
    /// Bedrock model id or inference-profile id (or ARN).
    pub model_id: String,
    /// `None`: the SDK's region provider chain.
    pub region: Option<String>,
    /// `None`: the SDK's endpoint for the region.
    pub endpoint_url: Option<String>,
    pub unsupported_params: UnsupportedParams,
    /// Attempts on throttling-free transient failures (timeouts, 5xx) before the first byte.
    pub max_attempts: u32,
    /// Time limit of one call until its response (or first stream event) arrives.
    pub timeout: Duration,
}

/// What to do with request fields Bedrock cannot honour (`n` > 1, `logprobs`, `seed`,
/// penalties, `top_k`, `min_p`, `ignore_eos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsupportedParams {
    /// 400 naming the field.
    Reject,
    /// Drop the field, log a warning and count it (`inferd:bedrock_dropped_params_total`).
    Drop,
}
