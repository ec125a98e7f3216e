//! The engine's own vocabulary. No wire or protocol types here: `backend::local` maps the
//! backend protocol to these, so the engine can change without changing what gateways and
//! replicas say to each other.

use std::time::Instant;

/// How to pick the next token. Validated before it reaches the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0.0 means greedy (argmax).
    pub temperature: f32,
    /// `None` or `Some(0)` disables top-k.
    pub top_k: Option<usize>,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// Same seed + same request => same output.
    pub seed: Option<u64>,
    /// OpenAI semantics: subtract `presence_penalty` once for every token already generated.
    pub presence_penalty: f32,
    /// OpenAI semantics: subtract `frequency_penalty * count` for every generated token.
    pub frequency_penalty: f32,
    /// HF/CTRL semantics over prompt + generated tokens; 1.0 disables.
    pub repetition_penalty: f32,
    /// Maximum number of tokens to generate.
    pub max_tokens: usize,
    /// Keep generating past EOS (benchmarks).
    pub ignore_eos: bool,
    /// Report the sampled token's log-probability and this many top alternatives
    /// (`None`: no logprobs). Computed from the model's raw distribution (before
    /// penalties, temperature and truncation), as OpenAI and vLLM do.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            max_tokens: 16,
            ignore_eos: false,
            logprobs: None,
        }
    }
}

/// Why a sequence stopped, as the engine sees it. Stop *strings* are matched after
/// detokenization, on the backend's output side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
}

impl FinishReason {
    /// The label of `inferd:request_success_total` (vLLM's finished_reason).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A sampled token with, when asked for, its log-probability and the top alternatives
/// (`(token, logprob)`, most likely first).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampledToken {
    pub id: u32,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

/// Why the engine ended a request early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request's deadline passed (waiting or running); its blocks are freed.
    #[error("the request's deadline of {0:?} passed")]
    DeadlineExceeded(std::time::Duration),
    #[error("{0}")]
    Internal(String),
}

/// What the engine sends back for one request, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenEvent {
    /// The sequence entered the running batch for the first time; `cached_tokens` prompt
    /// tokens were found in the prefix cache.
    Admitted { cached_tokens: usize },
    /// One newly sampled token.
    Token(SampledToken),
    /// The sequence ended; no more events follow. `completion_tokens` counts every
    /// `Token` event sent before it.
    Finished {
        reason: FinishReason,
        completion_tokens: usize,
    },
    /// The engine ended this request early; no more events follow.
    Error(EngineError),
}

/// One request as the engine receives it: already tokenized and validated.
#[derive(Debug)]
pub struct GenerationRequest {
    /// The `x-request-id` of the HTTP request (plus a choice suffix for n > 1).
    pub request_id: String,
    pub prompt_tokens: Vec<u32>,
    pub sampling: SamplingParams,
    /// One channel per choice (`n` = `events.len()`, at least 1): parallel samples of the
    /// same prompt, which share its KV blocks. Each is sized by the submitter to hold
    /// every event its choice can produce (`max_tokens + 2`: admitted, tokens, finished), so the engine's `try_send`
    /// never finds it full. A closed receiver means the client is gone: the engine aborts
    /// that choice.
    pub events: Vec<tokio::sync::mpsc::Sender<TokenEvent>>,
    pub arrival: Instant,
    /// When to give up (waiting or running): the request ends with
    /// `EngineError::DeadlineExceeded` and its blocks are freed.
    pub deadline: Option<Instant>,
}
