//! Turns one choice's engine token events into text events: incremental detokenization,
//! stop strings and logprobs, in the request's own task (off the engine thread).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::token_text::TokenText;
use crate::backend::{BackendError, FinishReason, GenEvent, TokenLogprob, Usage};
use crate::engine::detokenizer::{IncrementalDetokenizer, StopMatcher, StopOutcome};
use crate::engine::{EngineError, TokenEvent};

pub(super) type Item = Result<GenEvent, BackendError>;

pub(super) struct Output {
    pub rx: mpsc::Receiver<TokenEvent>,
    pub detok: IncrementalDetokenizer,
    pub stop: StopMatcher,
    pub token_text: Option<Arc<TokenText>>,
    pub prompt_tokens: usize,
    pub received: usize,
    pub cached_tokens: usize,
    pub done: bool,
    /// Logprobs of tokens whose text is still held back.
    pub pending_logprobs: Vec<TokenLogprob>,
}

impl Output {
    fn finished(&mut self, reason: FinishReason, completion_tokens: usize) -> Item {
        self.done = true;
        Ok(GenEvent::Finished {
            reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens,
                cached_tokens: self.cached_tokens,
            },
        })
    }

    fn fail(&mut self, err: BackendError) -> Vec<Item> {
        self.done = true;
        vec![Err(err)]
    }

    fn delta(&mut self, text: String) -> Item {
        Ok(GenEvent::Delta {
            text,
            logprobs: std::mem::take(&mut self.pending_logprobs),
        })
    }

    /// The next events of this choice (at least one unless the stream is over).
    pub async fn next_events(&mut self) -> Vec<Item> {
        loop {
            let Some(ev) = self.rx.recv().await else {
                return self.fail(BackendError::Internal(
                    "the engine dropped the request".into(),
                ));
            };
            match ev {
                TokenEvent::Admitted { cached_tokens } => self.cached_tokens = cached_tokens,
                TokenEvent::Token(tok) => {
                    self.received += 1;
                    if let Some(tt) = &self.token_text {
                        if let Some(lp) = tt.logprob(&tok) {
                            self.pending_logprobs.push(lp);
                        }
                    }
                    let text = match self.detok.push(tok.id) {
                        Ok(t) => t,
                        Err(e) => {
                            return self.fail(BackendError::Internal(format!("detokenizer: {e}")))
                        }
                    };
                    match self.stop.push(&text) {
                        StopOutcome::Continue(emit) => {
                            if emit.is_empty() && self.pending_logprobs.is_empty() {
                                continue;
                            }
                            if emit.is_empty() && !text.is_empty() {
                                // Held back by a possible stop string: keep the logprobs
                                // with the text they belong to.
                                continue;
                            }
                            return vec![self.delta(emit)];
                        }
                        StopOutcome::Stopped(emit) => {
                            // Closing the receiver aborts the sequence in the engine.
                            self.rx.close();
                            let mut out = Vec::with_capacity(2);
                            if !emit.is_empty() || !self.pending_logprobs.is_empty() {
                                out.push(self.delta(emit));
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
                        Err(e) => {
                            return self.fail(BackendError::Internal(format!("detokenizer: {e}")))
                        }
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
                    if !text.is_empty() || !self.pending_logprobs.is_empty() {
                        out.push(self.delta(text));
                    }
                    out.push(self.finished(reason, completion_tokens));
                    return out;
                }
                TokenEvent::Error(EngineError::DeadlineExceeded(d)) => {
                    return self.fail(BackendError::DeadlineExceeded(format!(
                        "The request did not finish within its deadline of {} ms.",
                        d.as_millis()
                    )))
                }
                TokenEvent::Error(EngineError::Internal(message)) => {
                    return self.fail(BackendError::Internal(message))
                }
            }
        }
    }
}
