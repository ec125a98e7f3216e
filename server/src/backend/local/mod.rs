//! The local engine as a `Backend`: chat template, tokenization and admission checks on the
//! way in; incremental detokenization, stop strings and logprobs on the way out (in the
//! request's own task, off the engine thread).

pub mod detokenizer;
mod output;
#[cfg(test)]
mod output_tests;
pub mod stop;
mod token_text;

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::SamplingParams;
use super::{
    Backend, BackendError, GenerateRequest, Generation, ModelCard, Prompt, SERVED_BY_LOCAL,
};
use crate::engine::kv::blocks_for;
use crate::engine::{self, EngineHandle, GenerationRequest, SubmitError};
use crate::model::chat_template::{ChatTemplate, TemplateError};
use crate::model::tokenizer::ModelTokenizer;
use detokenizer::IncrementalDetokenizer;
use output::Output;
use stop::StopMatcher;
use token_text::TokenText;

/// Serves one model from the in-process engine.
pub struct LocalBackend {
    card: ModelCard,
    engine: EngineHandle,
    tokenizer: Arc<ModelTokenizer>,
    /// Token text and bytes for logprobs (over the same tokenizer).
    token_text: Arc<TokenText>,
    template: Option<Arc<ChatTemplate>>,
    /// Deadline of requests that bring none.
    default_deadline: Option<std::time::Duration>,
}

impl LocalBackend {
    pub fn new(
        card: ModelCard,
        engine: EngineHandle,
        tokenizer: ModelTokenizer,
        template: Option<ChatTemplate>,
    ) -> Self {
        Self {
            card,
            engine,
            token_text: Arc::new(TokenText::new(tokenizer.tokenizer.clone())),
            tokenizer: Arc::new(tokenizer),
            template: template.map(Arc::new),
            default_deadline: None,
        }
    }

    /// Requests without their own deadline get this one.
    pub fn with_default_deadline(mut self, deadline: Option<std::time::Duration>) -> Self {
        self.default_deadline = deadline;
        self
    }

    fn invalid(message: String, param: &str) -> BackendError {
        BackendError::InvalidRequest {
            message,
            param: Some(param.to_string()),
        }
    }

    fn tokenize(&self, prompt: &Prompt) -> Result<(Vec<u32>, &'static str), BackendError> {
        let internal =
            |e: &dyn std::fmt::Display| BackendError::Internal(format!("tokenizer: {e}"));
        match prompt {
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    Self::invalid(
                        format!(
                            "The model `{}` has no chat template; use /v1/completions.",
                            self.card.id
                        ),
                        "messages",
                    )
                })?;
                let text = template.render(messages, true).map_err(|e| match e {
                    TemplateError::Raised(msg) => Self::invalid(msg, "messages"),
                    other => Self::invalid(
                        format!("The messages could not be rendered with the model's chat template: {other}"),
                        "messages",
                    ),
                })?;
                let ids = self.tokenizer.encode(&text).map_err(|e| internal(&e))?;
                Ok((ids, "messages"))
            }
            Prompt::Text(text) => {
                let ids = self.tokenizer.encode(text).map_err(|e| internal(&e))?;
                Ok((ids, "prompt"))
            }
            Prompt::Tokens(ids) => {
                let vocab = self.tokenizer.vocab_size() as u32;
                if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
                    return Err(Self::invalid(
                        format!(
                            "Token id {bad} is out of range: the vocabulary has {vocab} tokens."
                        ),
                        "prompt",
                    ));
                }
                Ok((ids.clone(), "prompt"))
            }
        }
    }

    /// Tool calling needs a tool-call parser for the model's output format, which the
    /// local engine does not have yet: refuse loudly rather than ignore the tools.
    fn reject_tools(req: &GenerateRequest) -> Result<(), BackendError> {
        if !req.tools.is_empty() && req.tool_choice != super::ToolChoice::None {
            return Err(Self::invalid(
                "Tool calling is not supported by the local engine yet; send `tools` to a \
                 gateway with a Bedrock backend, or set tool_choice to \"none\"."
                    .into(),
                "tools",
            ));
        }
        if let Prompt::Chat(messages) = &req.prompt {
            if let Some(i) = messages.iter().position(|m| !m.tool_calls.is_empty()) {
                return Err(Self::invalid(
                    "Assistant tool calls in the conversation are not supported by the local \
                     engine yet."
                        .into(),
                    &format!("messages[{i}].tool_calls"),
                ));
            }
        }
        Ok(())
    }

    /// Admits `n` samples of one request; they share the prompt's KV blocks.
    fn admit(&self, req: GenerateRequest, n: usize) -> Result<Vec<Generation>, BackendError> {
        Self::reject_tools(&req)?;
        let cfg = self.engine.config();
        let (prompt, param) = self.tokenize(&req.prompt)?;
        let max_len = cfg.max_model_len;
        if prompt.is_empty() {
            return Err(Self::invalid("The prompt is empty.".into(), param));
        }
        if prompt.len() >= max_len {
            return Err(Self::invalid(
                format!(
                    "This model's maximum context length is {max_len} tokens. However, your {param} resulted in {} tokens, which leaves no room for the completion.",
                    prompt.len()
                ),
                param,
            ));
        }
        let room = max_len - prompt.len();
        let mut sampling = engine_sampling(&req.sampling);
        if req.max_tokens_explicit && sampling.max_tokens > room {
            return Err(Self::invalid(
                format!(
                    "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({} in the {param}, {} in the completion). Please reduce the length of the {param} or the completion.",
                    prompt.len() + sampling.max_tokens,
                    prompt.len(),
                    sampling.max_tokens
                ),
                "max_tokens",
            ));
        }
        sampling.max_tokens = sampling.max_tokens.min(room);
        let pool_tokens = cfg.num_blocks() * cfg.block_size();
        if blocks_for(prompt.len() + sampling.max_tokens, cfg.block_size()) > cfg.num_blocks() {
            return Err(Self::invalid(
                format!(
                    "The request needs up to {} tokens of KV cache but the cache holds {pool_tokens}; reduce max_tokens or the prompt.",
                    prompt.len() + sampling.max_tokens
                ),
                "max_tokens",
            ));
        }
        let prompt_tokens = prompt.len();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| mpsc::channel(sampling.max_tokens + 2))
            .unzip();
        let logprobs = sampling.logprobs.is_some();
        let arrival = Instant::now();
        self.engine
            .submit(GenerationRequest {
                request_id: req.request_id.clone(),
                prompt_tokens: prompt,
                sampling,
                events: senders,
                arrival,
                deadline: req.deadline.or(self.default_deadline).map(|d| arrival + d),
            })
            .map_err(|e| match e {
                SubmitError::Overloaded(_) => BackendError::Overloaded {
                    retry_after_secs: 1,
                },
                SubmitError::Stopped => BackendError::Unavailable("The engine has stopped.".into()),
            })?;
        Ok(receivers
            .into_iter()
            .map(|rx| {
                let out = Output::new(
                    rx,
                    IncrementalDetokenizer::new(self.tokenizer.tokenizer.clone(), true),
                    StopMatcher::new(req.stop.clone()),
                    logprobs.then(|| self.token_text.clone()),
                    prompt_tokens,
                );
                Generation {
                    prompt_tokens,
                    events: out.into_stream(),
                    served_by: SERVED_BY_LOCAL.to_owned(),
                }
            })
            .collect())
    }
}

impl Backend for LocalBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        Box::pin(async move { self.admit(request, n.max(1)) })
    }

    fn is_ready(&self) -> bool {
        self.engine.is_alive()
    }

    fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }
}

/// The engine's sampling parameters for a request's (validated) protocol ones.
fn engine_sampling(p: &SamplingParams) -> engine::SamplingParams {
    engine::SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        seed: p.seed,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        repetition_penalty: p.repetition_penalty,
        max_tokens: p.max_tokens,
        ignore_eos: p.ignore_eos,
        logprobs: p.logprobs,
    }
}
