//! The local engine as a `Backend`: chat template, tokenization and admission checks on the
//! way in; incremental detokenization and stop strings on the way out (in the request's own
//! task, off the engine thread).

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;

use super::{
    Backend, BackendError, FinishReason, GenEvent, GenerateRequest, Generation, ModelCard, Prompt,
    Usage,
};
use crate::engine::detokenizer::{IncrementalDetokenizer, StopMatcher, StopOutcome};
use crate::engine::kv::blocks_for;
use crate::engine::{EngineHandle, GenerationRequest, SubmitError, TokenEvent};
use crate::model::chat_template::{ChatTemplate, TemplateError};
use crate::model::tokenizer::ModelTokenizer;

/// Serves one model from the in-process engine.
pub struct LocalBackend {
    card: ModelCard,
    engine: EngineHandle,
    tokenizer: Arc<ModelTokenizer>,
    detok_tokenizer: Arc<tokenizers::Tokenizer>,
    template: Option<Arc<ChatTemplate>>,
}

impl LocalBackend {
    pub fn new(
        card: ModelCard,
        engine: EngineHandle,
        tokenizer: ModelTokenizer,
        template: Option<ChatTemplate>,
    ) -> Self {
        let detok_tokenizer = Arc::new(tokenizer.tokenizer.clone());
        Self {
            card,
            engine,
            tokenizer: Arc::new(tokenizer),
            detok_tokenizer,
            template: template.map(Arc::new),
        }
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

    fn admit(&self, req: GenerateRequest) -> Result<Generation, BackendError> {
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
        let mut sampling = req.sampling.clone();
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
        let pool_tokens = cfg.num_blocks * cfg.block_size;
        if blocks_for(prompt.len() + sampling.max_tokens, cfg.block_size) > cfg.num_blocks {
            return Err(Self::invalid(
                format!(
                    "The request needs up to {} tokens of KV cache but the cache holds {pool_tokens}; reduce max_tokens or the prompt.",
                    prompt.len() + sampling.max_tokens
                ),
                "max_tokens",
            ));
        }
        let prompt_tokens = prompt.len();
        let (tx, rx) = mpsc::channel(sampling.max_tokens + 2);
        self.engine
            .submit(GenerationRequest {
                request_id: req.request_id.clone(),
                prompt_tokens: prompt,
                sampling,
                events: tx,
                arrival: Instant::now(),
            })
            .map_err(|e| match e {
                SubmitError::Overloaded(_) => BackendError::Overloaded {
                    retry_after_secs: 1,
                },
                SubmitError::Stopped => BackendError::Unavailable("The engine has stopped.".into()),
            })?;
        let out = Output {
            rx,
            detok: IncrementalDetokenizer::new(self.detok_tokenizer.clone(), true),
            stop: StopMatcher::new(req.stop),
            prompt_tokens,
            received: 0,
            done: false,
        };
        let events = stream::unfold(out, |mut out| async move {
            if out.done {
                return None;
            }
            let batch = out.next_events().await;
            Some((stream::iter(batch), out))
        })
        .flatten()
        .boxed();
        Ok(Generation {
            prompt_tokens,
            events,
        })
    }
}

/// Turns engine token events into text events for one generation.
struct Output {
    rx: mpsc::Receiver<TokenEvent>,
    detok: IncrementalDetokenizer,
    stop: StopMatcher,
    prompt_tokens: usize,
    received: usize,
    done: bool,
}

type Item = Result<GenEvent, BackendError>;

impl Output {
    fn finished(&mut self, reason: FinishReason, completion_tokens: usize) -> Item {
        self.done = true;
        Ok(GenEvent::Finished {
            reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens,
            },
        })
    }

    fn fail(&mut self, message: String) -> Vec<Item> {
        self.done = true;
        vec![Err(BackendError::Internal(message))]
    }

    async fn next_events(&mut self) -> Vec<Item> {
        loop {
            let Some(ev) = self.rx.recv().await else {
                return self.fail("the engine dropped the request".into());
            };
            match ev {
                TokenEvent::Token(id) => {
                    self.received += 1;
                    let text = match self.detok.push(id) {
                        Ok(t) => t,
                        Err(e) => return self.fail(format!("detokenizer: {e}")),
                    };
                    if text.is_empty() {
                        continue;
                    }
                    match self.stop.push(&text) {
                        StopOutcome::Continue(emit) if emit.is_empty() => continue,
                        StopOutcome::Continue(emit) => return vec![Ok(GenEvent::Delta(emit))],
                        StopOutcome::Stopped(emit) => {
                            // Dropping the receiver (with `self`) aborts the sequence.
                            self.rx.close();
                            let mut out = Vec::with_capacity(2);
                            if !emit.is_empty() {
                                out.push(Ok(GenEvent::Delta(emit)));
                            }
                            out.push(self.finished(FinishReason::Stop, self.received));
                            return out;
                        }
                    }
                }
                TokenEvent::Finished {
                    reason,
                    completion_tokens,
                } => {
                    let tail = match self.detok.finish() {
                        Ok(t) => t,
                        Err(e) => return self.fail(format!("detokenizer: {e}")),
                    };
                    let (mut text, stopped) = match self.stop.push(&tail) {
                        StopOutcome::Continue(emit) => (emit, false),
                        StopOutcome::Stopped(emit) => (emit, true),
                    };
                    let reason = if stopped {
                        FinishReason::Stop
                    } else {
                        text.push_str(&self.stop.finish());
                        reason
                    };
                    let mut out = Vec::with_capacity(2);
                    if !text.is_empty() {
                        out.push(Ok(GenEvent::Delta(text)));
                    }
                    out.push(self.finished(reason, completion_tokens));
                    return out;
                }
                TokenEvent::Error(message) => return self.fail(message),
            }
        }
    }
}

impl Backend for LocalBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<Generation, BackendError>> {
        Box::pin(async move { self.admit(request) })
    }

    fn is_ready(&self) -> bool {
        self.engine.is_alive()
    }
}
