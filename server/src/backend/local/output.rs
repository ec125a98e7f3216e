//! Turns one choice's engine token events into text events: incremental detokenization,
//! stop strings and logprobs, in the request's own task (off the engine thread).
//!
//! The contract of the events (see `GenEvent`): text is never half a character and never
//! part of a stop string; a token's logprobs travel with the event that carries its text,
//! so logprobs of text held back by a possible stop string wait for it; a stream ends with
//! exactly one `Finished` or one error.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;

use super::detokenizer::IncrementalDetokenizer;
use super::stop::{StopMatcher, StopOutcome};
use super::token_text::TokenText;
use crate::backend::{BackendError, FinishReason, GenEvent, GenStream, TokenLogprob, Usage};
use crate::engine::{self, EngineError, SampledToken, TokenEvent};

pub(super) type Item = Result<GenEvent, BackendError>;

pub(super) struct Output {
    rx: mpsc::Receiver<TokenEvent>,
    detok: IncrementalDetokenizer,
    stop: StopMatcher,
    token_text: Option<Arc<TokenText>>,
    prompt_tokens: usize,
    /// Tokens received so far.
    received: usize,
    cached_tokens: usize,
    done: bool,
    /// Logprobs of tokens whose text is still held back.
    pending_logprobs: Vec<TokenLogprob>,
}

impl Output {
    pub fn new(
        rx: mpsc::Receiver<TokenEvent>,
        detok: IncrementalDetokenizer,
        stop: StopMatcher,
        token_text: Option<Arc<TokenText>>,
        prompt_tokens: usize,
    ) -> Self {
        Self {
            rx,
            detok,
            stop,
            token_text,
            prompt_tokens,
            received: 0,
            cached_tokens: 0,
            done: false,
            pending_logprobs: Vec::new(),
        }
    }

    /// The choice's events as a stream, ending after `Finished` or an error.
    pub fn into_stream(self) -> GenStream {
        stream::unfold(self, |mut out| async move {
            if out.done {
                return None;
            }
            let batch = out.next_events().await;
            Some((stream::iter(batch), out))
        })
        .flatten()
        .boxed()
    }

    /// The next events of this choice (at least one unless the stream is over).
    pub async fn next_events(&mut self) -> Vec<Item> {
        loop {
            let Some(event) = self.rx.recv().await else {
                return self.fail(BackendError::Internal(
                    "the engine dropped the request".into(),
                ));
            };
            if let Some(items) = self.on_event(event) {
                return items;
            }
        }
    }

    /// Handles one engine event: `None` while there is nothing to emit yet.
    pub fn on_event(&mut self, event: TokenEvent) -> Option<Vec<Item>> {
        match event {
            TokenEvent::Admitted { cached_tokens } => {
                self.cached_tokens = cached_tokens;
                None
            }
            TokenEvent::Token(token) => self.on_token(token),
            TokenEvent::Finished {
                reason,
                completion_tokens,
            } => Some(self.on_finished(reason, completion_tokens)),
            TokenEvent::Error(error) => Some(self.fail(engine_error(error))),
        }
    }

    fn on_token(&mut self, token: SampledToken) -> Option<Vec<Item>> {
        self.received += 1;
        if let Some(lp) = self.token_text.as_ref().and_then(|tt| tt.logprob(&token)) {
            self.pending_logprobs.push(lp);
        }
        let text = match self.detok.push(token.id) {
            Ok(text) => text,
            Err(e) => return Some(self.fail(BackendError::Internal(format!("detokenizer: {e}")))),
        };
        match self.stop.push(&text) {
            // Nothing decoded yet (half a character) and no logprobs: nothing to say.
            StopOutcome::Continue(emit) if emit.is_empty() && self.pending_logprobs.is_empty() => {
                None
            }
            // Held back by a possible stop string: the logprobs wait with their text.
            StopOutcome::Continue(emit) if emit.is_empty() && !text.is_empty() => None,
            StopOutcome::Continue(emit) => Some(vec![self.delta(emit)]),
            StopOutcome::Stopped(emit) => {
                // Closing the receiver aborts the sequence in the engine.
                self.rx.close();
                Some(self.last(emit, FinishReason::Stop, self.received))
            }
        }
    }

    fn on_finished(&mut self, reason: engine::FinishReason, completion_tokens: usize) -> Vec<Item> {
        let tail = match self.detok.finish() {
            Ok(text) => text,
            Err(e) => return self.fail(BackendError::Internal(format!("detokenizer: {e}"))),
        };
        let (text, reason) = match self.stop.push(&tail) {
            StopOutcome::Stopped(emit) => (emit, FinishReason::Stop),
            StopOutcome::Continue(mut emit) => {
                emit.push_str(&self.stop.finish());
                (emit, finish_reason(reason))
            }
        };
        self.last(text, reason, completion_tokens)
    }

    /// The final text (with any logprobs still pending) and `Finished`.
    fn last(&mut self, text: String, reason: FinishReason, completion_tokens: usize) -> Vec<Item> {
        let mut out = Vec::with_capacity(2);
        if !text.is_empty() || !self.pending_logprobs.is_empty() {
            out.push(self.delta(text));
        }
        self.done = true;
        out.push(Ok(GenEvent::Finished {
            reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens,
                cached_tokens: self.cached_tokens,
            },
        }));
        out
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
}

fn finish_reason(reason: engine::FinishReason) -> FinishReason {
    match reason {
        engine::FinishReason::Stop => FinishReason::Stop,
        engine::FinishReason::Length => FinishReason::Length,
    }
}

fn engine_error(error: EngineError) -> BackendError {
    match error {
        EngineError::DeadlineExceeded(d) => BackendError::DeadlineExceeded(format!(
            "The request did not finish within its deadline of {} ms.",
            d.as_millis()
        )),
        EngineError::Internal(message) => BackendError::Internal(message),
    }
}
