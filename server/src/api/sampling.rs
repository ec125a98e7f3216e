//! The request fields chat and completions share: range checks and the mapping to the
//! backend's `SamplingParams`, stop strings and streaming options.

use serde_json::{Number, Value};

use super::error::ApiError;
use super::types::StreamOptions;
use crate::backend::SamplingParams;

/// Most stop strings one request may carry.
pub(crate) const MAX_STOP_SEQUENCES: usize = 16;

/// `max_tokens` when the client sets none. The backend clamps it to what the context
/// leaves (`max_tokens_explicit` is false); it stays far from `usize::MAX` so that
/// `max_tokens + 1` can never overflow anywhere downstream.
pub(crate) const UNSET_MAX_TOKENS: usize = u32::MAX as usize;

/// The shared fields of one request, borrowed from the wire type.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CommonParams<'a> {
    /// The field that set the limit (`max_completion_tokens` or `max_tokens`) and its value.
    pub max_tokens: Option<(&'static str, i64)>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<&'a Number>,
    pub stop: Option<&'a Value>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub ignore_eos: Option<bool>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logit_bias: Option<&'a Value>,
}

/// What the shared fields become once validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GenerationOptions {
    pub sampling: SamplingParams,
    pub max_tokens_explicit: bool,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl CommonParams<'_> {
    pub(crate) fn validate(&self) -> Result<GenerationOptions, ApiError> {
        check_n(self.n)?;
        if let Some(bias) = self.logit_bias {
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

        let (max_tokens, max_tokens_explicit) = match self.max_tokens {
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
            seed: self.seed.map(seed).transpose()?,
            presence_penalty: closed("presence_penalty", self.presence_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            frequency_penalty: closed("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            repetition_penalty: above_zero("repetition_penalty", self.repetition_penalty, 2.0)?
                .unwrap_or(1.0),
            max_tokens,
            ignore_eos: self.ignore_eos.unwrap_or(false),
        };
        Ok(GenerationOptions {
            sampling,
            max_tokens_explicit,
            stop: stop_strings(self.stop)?,
            stream,
            include_usage,
        })
    }
}

fn check_n(n: Option<i64>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) if n < 1 => Err(ApiError::invalid(
            "n",
            format!("n must be at least 1, got {n}"),
        )),
        Some(n) => Err(ApiError::invalid(
            "n",
            format!(
                "n must be at most 1 (up to 1 choice per request is supported for now), got {n}"
            ),
        )),
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
mod tests {
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::testing::{post_json, TestServer};

    fn validate(fields: Value) -> Result<GenerationOptions, ApiError> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
            body.extend(fields.clone());
        }
        let request: crate::api::types::ChatCompletionRequest =
            serde_json::from_value(body).unwrap();
        crate::api::chat::common_params(&request).validate()
    }

    #[test]
    fn defaults() {
        let options = validate(json!({})).unwrap();
        assert_eq!(
            options,
            GenerationOptions {
                sampling: SamplingParams {
                    temperature: 1.0,
                    top_k: None,
                    top_p: 1.0,
                    min_p: 0.0,
                    seed: None,
                    presence_penalty: 0.0,
                    frequency_penalty: 0.0,
                    repetition_penalty: 1.0,
                    max_tokens: UNSET_MAX_TOKENS,
                    ignore_eos: false,
                },
                max_tokens_explicit: false,
                stop: vec![],
                stream: false,
                include_usage: false,
            }
        );
    }

    #[test]
    fn every_field_maps() {
        let options = validate(json!({
            "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
            "seed": 42, "stop": ["\n\n", "END"], "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "repetition_penalty": 1.1, "ignore_eos": true,
            "n": 1, "stream": true, "stream_options": {"include_usage": true},
            "user": "alice", "logit_bias": {}
        }))
        .unwrap();
        assert_eq!(
            options,
            GenerationOptions {
                sampling: SamplingParams {
                    temperature: 0.5,
                    top_k: Some(40),
                    top_p: 0.9,
                    min_p: 0.05,
                    seed: Some(42),
                    presence_penalty: 0.5,
                    frequency_penalty: -0.5,
                    repetition_penalty: 1.1,
                    max_tokens: 7,
                    ignore_eos: true,
                },
                max_tokens_explicit: true,
                stop: vec!["\n\n".to_owned(), "END".to_owned()],
                stream: true,
                include_usage: true,
            }
        );
    }

    #[test]
    fn edge_values_map() {
        let o = validate(json!({"max_completion_tokens": 3, "max_tokens": 100})).unwrap();
        assert_eq!(o.sampling.max_tokens, 3, "max_completion_tokens wins");
        let o = validate(json!({"max_completion_tokens": 3, "max_tokens": 0})).unwrap();
        assert_eq!(
            o.sampling.max_tokens, 3,
            "the ignored max_tokens is not validated"
        );
        assert_eq!(validate(json!({"top_k": -1})).unwrap().sampling.top_k, None);
        assert_eq!(validate(json!({"top_k": 0})).unwrap().sampling.top_k, None);
        assert_eq!(
            validate(json!({"seed": -1})).unwrap().sampling.seed,
            Some(u64::MAX)
        );
        let big = json!({"seed": 18_446_744_073_709_551_615_u64});
        assert_eq!(validate(big).unwrap().sampling.seed, Some(u64::MAX));
        assert_eq!(validate(json!({"stop": "###"})).unwrap().stop, vec!["###"]);
        assert!(validate(json!({"stop": null})).unwrap().stop.is_empty());
        assert_eq!(
            validate(json!({"temperature": 0}))
                .unwrap()
                .sampling
                .temperature,
            0.0
        );
        assert_eq!(
            validate(json!({"temperature": 2}))
                .unwrap()
                .sampling
                .temperature,
            2.0
        );
        assert_eq!(validate(json!({"top_p": 1})).unwrap().sampling.top_p, 1.0);
        assert_eq!(validate(json!({"min_p": 1})).unwrap().sampling.min_p, 1.0);
        assert_eq!(
            validate(json!({"repetition_penalty": 2}))
                .unwrap()
                .sampling
                .repetition_penalty,
            2.0
        );
        let o = validate(json!({"stream": true, "stream_options": {}})).unwrap();
        assert!(o.stream && !o.include_usage);
        let sixteen: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
        assert_eq!(validate(json!({"stop": sixteen})).unwrap().stop.len(), 16);
    }

    /// (extra fields, param, a substring the message must contain)
    fn range_cases() -> Vec<(Value, &'static str, &'static str)> {
        let seventeen: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
        vec![
            (
                json!({"temperature": 3.5}),
                "temperature",
                "between 0 and 2, got 3.5",
            ),
            (
                json!({"temperature": -0.1}),
                "temperature",
                "between 0 and 2, got -0.1",
            ),
            (
                json!({"top_p": 0}),
                "top_p",
                "greater than 0 and at most 1, got 0",
            ),
            (
                json!({"top_p": 1.5}),
                "top_p",
                "greater than 0 and at most 1, got 1.5",
            ),
            (json!({"top_k": -2}), "top_k", "positive integer, got -2"),
            (json!({"min_p": 1.5}), "min_p", "between 0 and 1, got 1.5"),
            (json!({"min_p": -0.5}), "min_p", "between 0 and 1, got -0.5"),
            (
                json!({"presence_penalty": 2.5}),
                "presence_penalty",
                "between -2 and 2, got 2.5",
            ),
            (
                json!({"presence_penalty": -3}),
                "presence_penalty",
                "between -2 and 2, got -3",
            ),
            (
                json!({"frequency_penalty": 2.1}),
                "frequency_penalty",
                "between -2 and 2, got 2.1",
            ),
            (
                json!({"frequency_penalty": -2.1}),
                "frequency_penalty",
                "between -2 and 2, got -2.1",
            ),
            (
                json!({"repetition_penalty": 0}),
                "repetition_penalty",
                "greater than 0 and at most 2, got 0",
            ),
            (
                json!({"repetition_penalty": 2.5}),
                "repetition_penalty",
                "greater than 0 and at most 2, got 2.5",
            ),
            (json!({"max_tokens": 0}), "max_tokens", "at least 1, got 0"),
            (
                json!({"max_tokens": -5}),
                "max_tokens",
                "at least 1, got -5",
            ),
            (
                json!({"max_completion_tokens": 0}),
                "max_completion_tokens",
                "at least 1, got 0",
            ),
            (json!({"n": 2}), "n", "up to 1"),
            (json!({"n": 0}), "n", "at least 1, got 0"),
            (json!({"seed": 1.5}), "seed", "integer, got 1.5"),
            (json!({"stop": ""}), "stop", "must not be empty"),
            (json!({"stop": ["a", ""]}), "stop", "must not be empty"),
            (
                json!({"stop": ["a", 3]}),
                "stop",
                "stop[1] must be a string",
            ),
            (json!({"stop": 3}), "stop", "string or an array of strings"),
            (
                json!({"stop": seventeen}),
                "stop",
                "at most 16 strings, got 17",
            ),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
                "only allowed when stream is true",
            ),
            (
                json!({"logit_bias": {"50256": -100}}),
                "logit_bias",
                "not supported yet",
            ),
        ]
    }

    async fn expect_400(path: &str, base: Value, cases: &[(Value, &str, &str)]) {
        let server = TestServer::new();
        for (fields, param, needle) in cases {
            let mut body = base.clone();
            if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
                body.extend(fields.clone());
            }
            let reply = post_json(&server.router(), path, body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {fields}");
            let error = &reply.json["error"];
            assert_eq!(error["type"], "invalid_request_error", "{fields}");
            assert_eq!(error["param"], *param, "{fields}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains(param), "{fields}: {message}");
            assert!(message.contains(needle), "{fields}: {message}");
        }
        assert!(
            server.backend.requests().is_empty(),
            "nothing reached the backend"
        );
    }

    #[tokio::test]
    async fn range_errors_are_400_naming_the_field_and_limit_for_chat() {
        let base = json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]});
        expect_400("/v1/chat/completions", base, &range_cases()).await;
    }

    #[tokio::test]
    async fn range_errors_are_400_naming_the_field_and_limit_for_completions() {
        let base = json!({"model": "test-model", "prompt": "hi"});
        let cases: Vec<_> = range_cases()
            .into_iter()
            .filter(|(_, param, _)| *param != "max_completion_tokens")
            .collect();
        expect_400("/v1/completions", base, &cases).await;
    }
}
