//! Validation of the generation parameters every endpoint shares ([`SamplingFields`] plus
//! the two the endpoints spell differently): range checks and the mapping to the
//! backend's `SamplingParams`, `n`, logprobs, stop strings and streaming options.

use serde_json::{Number, Value};

use super::error::ApiError;
use super::types::SamplingFields;
use crate::backend::{SamplingParams, SetByClient};

/// Most stop strings one request may carry.
pub(crate) const MAX_STOP_SEQUENCES: usize = 16;

/// Most choices (`n`) per prompt.
pub(crate) const MAX_N: usize = 16;

/// Most alternatives per position: chat `top_logprobs` (OpenAI's limit) and completions
/// `logprobs` (OpenAI allows 5, vLLM 20; we follow vLLM).
pub(crate) const MAX_TOP_LOGPROBS: usize = 20;

/// `max_tokens` when the client sets none. The backend clamps it to what the context
/// leaves (`max_tokens_explicit` is false); it stays far from `usize::MAX` so that
/// `max_tokens + 1` can never overflow anywhere downstream.
pub(crate) const UNSET_MAX_TOKENS: usize = u32::MAX as usize;

/// How the request asks for logprobs: the two endpoints spell it differently.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LogprobsParams<'a> {
    /// Chat: `logprobs: true` plus `top_logprobs: 0..=20` alternatives.
    Chat {
        logprobs: Option<bool>,
        top_logprobs: Option<&'a Value>,
    },
    /// Completions: `logprobs: k`, the number of alternatives (`null`: none).
    Completion(Option<&'a Value>),
}

/// What the parameters become once validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GenerationOptions {
    pub sampling: SamplingParams,
    /// Choices per prompt, `1..=MAX_N`.
    pub n: usize,
    pub max_tokens_explicit: bool,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Which sampling fields the request set (for backends that can't honour some).
    pub set_by_client: SetByClient,
}

impl SamplingFields {
    /// Validates the request's parameters. `max_completion_tokens` (chat only; `None` for
    /// other endpoints) wins over `max_tokens`, which is then not checked.
    pub(crate) fn validate(
        &self,
        max_completion_tokens: Option<i64>,
        logprobs: LogprobsParams<'_>,
    ) -> Result<GenerationOptions, ApiError> {
        let n = check_n(self.n)?;
        let logprobs = logprobs.validate()?;
        if let Some(bias) = &self.logit_bias {
            let empty = bias.is_null() || bias.as_object().is_some_and(|map| map.is_empty());
            if !empty {
                return Err(ApiError::unsupported("logit_bias", ""));
            }
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        let include_usage = self
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);

        let max_tokens = match (max_completion_tokens, self.max_tokens) {
            (Some(value), _) => Some(("max_completion_tokens", value)),
            (None, value) => value.map(|value| ("max_tokens", value)),
        };
        let (max_tokens, max_tokens_explicit) = match max_tokens {
            None => (UNSET_MAX_TOKENS, false),
            Some((param, value)) if value < 1 => {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} must be at least 1, got {value}"),
                ))
            }
            Some((_, value)) => (usize::try_from(value).unwrap_or(usize::MAX), true),
        };

        let defaults = SamplingParams::default();
        let sampling = SamplingParams {
            temperature: closed("temperature", self.temperature, 0.0, 2.0)?
                .unwrap_or(defaults.temperature),
            top_k: top_k(self.top_k)?,
            top_p: above_zero("top_p", self.top_p, 1.0)?.unwrap_or(1.0),
            min_p: closed("min_p", self.min_p, 0.0, 1.0)?.unwrap_or(0.0),
            seed: self.seed.as_ref().map(seed).transpose()?,
            presence_penalty: closed("presence_penalty", self.presence_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            frequency_penalty: closed("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            repetition_penalty: above_zero("repetition_penalty", self.repetition_penalty, 2.0)?
                .unwrap_or(1.0),
            max_tokens,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs,
        };
        Ok(GenerationOptions {
            sampling,
            n,
            max_tokens_explicit,
            stop: stop_strings(self.stop.as_ref())?,
            stream,
            include_usage,
            set_by_client: SetByClient {
                temperature: self.temperature.is_some(),
                top_p: self.top_p.is_some(),
                top_k: self.top_k.is_some(),
                min_p: self.min_p.is_some(),
                seed: self.seed.is_some(),
                presence_penalty: self.presence_penalty.is_some(),
                frequency_penalty: self.frequency_penalty.is_some(),
                repetition_penalty: self.repetition_penalty.is_some(),
                ignore_eos: self.ignore_eos.is_some(),
            },
        })
    }
}

fn check_n(n: Option<i64>) -> Result<usize, ApiError> {
    match n {
        None => Ok(1),
        Some(n) if n < 1 => Err(ApiError::invalid(
            "n",
            format!("n must be at least 1, got {n}"),
        )),
        Some(n) => match usize::try_from(n) {
            Ok(n) if n <= MAX_N => Ok(n),
            _ => Err(ApiError::invalid(
                "n",
                format!("n must be at most {MAX_N}, got {n}"),
            )),
        },
    }
}

impl LogprobsParams<'_> {
    /// `SamplingParams::logprobs`: `None`, or the number of alternatives per position.
    fn validate(&self) -> Result<Option<usize>, ApiError> {
        match *self {
            LogprobsParams::Chat {
                logprobs,
                top_logprobs,
            } => {
                let top = top_count("top_logprobs", top_logprobs)?;
                match (logprobs.unwrap_or(false), top) {
                    (true, top) => Ok(Some(top.unwrap_or(0))),
                    // As vLLM: `top_logprobs: 0` alone asks for nothing and is accepted.
                    (false, None | Some(0)) => Ok(None),
                    (false, Some(_)) => Err(ApiError::invalid(
                        "top_logprobs",
                        "top_logprobs requires logprobs to be true",
                    )),
                }
            }
            LogprobsParams::Completion(value) => top_count("logprobs", value),
        }
    }
}

/// `null` or an integer in `0..=MAX_TOP_LOGPROBS`.
fn top_count(param: &str, value: Option<&Value>) -> Result<Option<usize>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let out_of_range = || {
        ApiError::invalid(
            param,
            format!("{param} must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {value}"),
        )
    };
    let count = value.as_u64().ok_or_else(out_of_range)?;
    match usize::try_from(count) {
        Ok(count) if count <= MAX_TOP_LOGPROBS => Ok(Some(count)),
        _ => Err(out_of_range()),
    }
}

/// `lo <= value <= hi`.
fn closed(param: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(
            param,
            format!("{param} must be between {lo} and {hi}, got {v}"),
        )),
        other => Ok(other.map(|v| v as f32)),
    }
}

/// `0 < value <= hi`.
fn above_zero(param: &str, value: Option<f64>, hi: f64) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(v > 0.0 && v <= hi) => Err(ApiError::invalid(
            param,
            format!("{param} must be greater than 0 and at most {hi}, got {v}"),
        )),
        other => Ok(other.map(|v| v as f32)),
    }
}

/// `-1` and `0` disable top-k (vLLM and OpenAI-style clients use both).
fn top_k(value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        None | Some(-1) | Some(0) => Ok(None),
        Some(k) if k > 0 => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        Some(k) => Err(ApiError::invalid(
            "top_k",
            format!("top_k must be -1 or 0 (disabled) or a positive integer, got {k}"),
        )),
    }
}

/// Any 64-bit integer, signed or not; negative seeds keep their bit pattern.
fn seed(value: &Number) -> Result<u64, ApiError> {
    value
        .as_u64()
        .or_else(|| value.as_i64().map(|v| v as u64))
        .ok_or_else(|| {
            ApiError::invalid(
                "seed",
                format!("seed must be a 64-bit integer, got {value}"),
            )
        })
}

/// `null`, a string, or an array of at most `MAX_STOP_SEQUENCES` strings; none empty.
fn stop_strings(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let empty = || ApiError::invalid("stop", "stop strings must not be empty");
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Err(empty()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_SEQUENCES {
                return Err(ApiError::invalid(
                    "stop",
                    format!(
                        "stop must have at most {MAX_STOP_SEQUENCES} strings, got {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if s.is_empty() => Err(empty()),
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::invalid(
                        "stop",
                        format!("stop[{i}] must be a string"),
                    )),
                })
                .collect()
        }
        Some(_) => Err(ApiError::invalid(
            "stop",
            "stop must be a string or an array of strings",
        )),
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
