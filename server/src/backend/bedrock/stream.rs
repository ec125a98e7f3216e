//! ConverseStream events → `GenEvent`s.
//!
//! Bedrock numbers content blocks (`contentBlockIndex`) across text and tool use alike;
//! OpenAI numbers tool calls only. The assembler keeps a block index → call ordinal map:
//! `contentBlockStart.toolUse` opens call `k` (its first fragment carries id and name),
//! `contentBlockDelta.toolUse.input` fragments append to it, interleaved or not. Exactly
//! one `Finished` follows once both `messageStop` (the stop reason) and `metadata` (the
//! usage) have arrived; a stream that ends before `messageStop` is an error, never a
//! silent `Finished`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ContentBlockStart, ConverseStreamOutput, StopReason,
};
use futures::stream::{self, BoxStream, StreamExt};

use super::response::{finish_reason, usage};
use crate::backend::{BackendError, GenEvent, GenStream, ToolCallDelta, Usage};

/// One tool call of the answer.
#[derive(Debug)]
struct OpenCall {
    ordinal: usize,
    /// Whether any non-empty arguments fragment was sent.
    has_arguments: bool,
}

/// Reassembles one ConverseStream answer.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    calls: HashMap<i32, OpenCall>,
    next_ordinal: usize,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    finished: bool,
}

fn protocol(message: String) -> BackendError {
    BackendError::Upstream(format!("Bedrock stream: {message}"))
}

impl Assembler {
    /// The events one Bedrock event yields (often none).
    pub(crate) fn push(
        &mut self,
        event: ConverseStreamOutput,
    ) -> Result<Vec<GenEvent>, BackendError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        match event {
            ConverseStreamOutput::ContentBlockStart(start) => {
                if let Some(ContentBlockStart::ToolUse(tool)) = start.start {
                    let index = start.content_block_index;
                    if self.calls.contains_key(&index) {
                        return Err(protocol(format!("content block {index} started twice")));
                    }
                    let ordinal = self.next_ordinal;
                    self.next_ordinal += 1;
                    self.calls.insert(
                        index,
                        OpenCall {
                            ordinal,
                            has_arguments: false,
                        },
                    );
                    out.push(GenEvent::ToolCall(ToolCallDelta {
                        index: ordinal,
                        id: Some(tool.tool_use_id),
                        name: Some(tool.name),
                        arguments: String::new(),
                    }));
                }
            }
            ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                Some(ContentBlockDelta::Text(text)) if !text.is_empty() => {
                    out.push(GenEvent::Delta {
                        text,
                        logprobs: Vec::new(),
                    })
                }
                Some(ContentBlockDelta::ToolUse(tool)) => {
                    let index = delta.content_block_index;
                    let call = self.calls.get_mut(&index).ok_or_else(|| {
                        protocol(format!(
                            "tool input for content block {index}, which never started"
                        ))
                    })?;
                    if !tool.input.is_empty() {
                        call.has_arguments = true;
                        out.push(GenEvent::ToolCall(ToolCallDelta {
                            index: call.ordinal,
                            id: None,
                            name: None,
                            arguments: tool.input,
                        }));
                    }
                }
                // Reasoning, citations and the like have no place in a chat completion.
                _ => {}
            },
            ConverseStreamOutput::ContentBlockStop(stop) => {
                // A call without arguments still needs valid JSON arguments.
                if let Some(call) = self.calls.get_mut(&stop.content_block_index) {
                    if !call.has_arguments {
                        call.has_arguments = true;
                        out.push(GenEvent::ToolCall(ToolCallDelta {
                            index: call.ordinal,
                            id: None,
                            name: None,
                            arguments: "{}".into(),
                        }));
                    }
                }
            }
            ConverseStreamOutput::MessageStop(stop) => self.stop = Some(stop.stop_reason),
            ConverseStreamOutput::Metadata(meta) => self.usage = Some(usage(meta.usage.as_ref())),
            _ => {}
        }
        if let (Some(stop), Some(usage)) = (&self.stop, self.usage) {
            self.finished = true;
            out.push(GenEvent::Finished {
                reason: finish_reason(stop),
                usage,
            });
        }
        Ok(out)
    }

    /// Whether `Finished` was produced.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The stop reason, once `messageStop` arrived.
    pub(crate) fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// The usage, once `metadata` arrived.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Bedrock's stream ended: the last event, if one is still due, or the error of an
    /// incomplete answer.
    pub(crate) fn end(&mut self) -> Result<Option<GenEvent>, BackendError> {
        if self.finished {
            return Ok(None);
        }
        match &self.stop {
            Some(stop) => {
                // The answer is complete; only its usage is missing.
                tracing::warn!(
                    "Bedrock stream ended without its metadata event; usage reported as 0"
                );
                self.finished = true;
                Ok(Some(GenEvent::Finished {
                    reason: finish_reason(stop),
                    usage: Usage::default(),
                }))
            }
            None => Err(protocol(
                "the stream ended before the answer was complete (no messageStop)".into(),
            )),
        }
    }
}

/// Told once how a stream ended (the per-call log line): the assembler's final state and
/// the error that ended it, if any.
pub(crate) type OnEnd = Box<dyn FnOnce(&Assembler, Option<&BackendError>) + Send>;

/// Bedrock's events, its errors already mapped.
pub(crate) type SourceStream = BoxStream<'static, Result<ConverseStreamOutput, BackendError>>;

struct State {
    source: SourceStream,
    assembler: Assembler,
    pending: std::collections::VecDeque<Result<GenEvent, BackendError>>,
    done: bool,
    limits: Limits,
    on_end: Option<OnEnd>,
}

/// Time limits of a running stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// Longest wait for the next event: a stalled connection ends the stream with
    /// `Upstream` (the SDK's own stalled-stream protection is off: models may pause).
    pub idle: Option<Duration>,
    /// The request's deadline (instant, whole budget): past it, `DeadlineExceeded`.
    pub deadline: Option<(Instant, Duration)>,
}

impl Limits {
    /// The next event, or the error of the limit that ran out first.
    async fn next(
        &self,
        source: &mut SourceStream,
    ) -> Option<Result<ConverseStreamOutput, BackendError>> {
        let now = Instant::now();
        let idle_at = self.idle.map(|d| now + d);
        let deadline_at = self.deadline.map(|(at, _)| at);
        let at = match (idle_at, deadline_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(at) => at,
                None => return source.next().await,
            },
        };
        match tokio::time::timeout_at(at.into(), source.next()).await {
            Ok(next) => next,
            Err(_) => Some(Err(match self.deadline {
                Some((deadline, budget)) if deadline <= at => {
                    BackendError::DeadlineExceeded(format!(
                        "The request did not finish within its deadline of {} ms.",
                        budget.as_millis()
                    ))
                }
                _ => BackendError::Upstream(format!(
                    "Bedrock stream stalled: no event for {} ms",
                    self.idle.unwrap_or_default().as_millis()
                )),
            })),
        }
    }
}

impl State {
    fn finish(&mut self, error: Option<&BackendError>) {
        self.done = true;
        if let Some(on_end) = self.on_end.take() {
            on_end(&self.assembler, error);
        }
    }
}

/// The `GenEvent` stream of one answer. `source` yields Bedrock's events (its errors are
/// already `BackendError`s); after `Finished` or the first error nothing more is read.
/// `limits` bound the waits; `on_end` runs when the stream ends or is dropped.
pub(crate) fn gen_stream(source: SourceStream, limits: Limits, on_end: OnEnd) -> GenStream {
    let state = DropGuard(State {
        source,
        assembler: Assembler::default(),
        pending: Default::default(),
        done: false,
        limits,
        on_end: Some(on_end),
    });
    Box::pin(stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.0.pending.pop_front() {
                return Some((item, st));
            }
            if st.0.done {
                return None;
            }
            let limits = st.0.limits;
            let next = limits.next(&mut st.0.source).await;
            let st_ = &mut st.0;
            match next {
                Some(Ok(event)) => match st_.assembler.push(event) {
                    Ok(events) => {
                        st_.pending.extend(events.into_iter().map(Ok));
                        if st_.assembler.is_finished() {
                            st_.finish(None);
                        }
                    }
                    Err(e) => {
                        st_.finish(Some(&e));
                        st_.pending.push_back(Err(e));
                    }
                },
                Some(Err(e)) => {
                    st_.finish(Some(&e));
                    st_.pending.push_back(Err(e));
                }
                None => match st_.assembler.end() {
                    Ok(last) => {
                        st_.pending.extend(last.map(Ok));
                        st_.finish(None);
                    }
                    Err(e) => {
                        st_.finish(Some(&e));
                        st_.pending.push_back(Err(e));
                    }
                },
            }
        }
    }))
}

/// Runs `on_end` when a client drops the stream before its end.
struct DropGuard(State);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.0.on_end.is_some() {
            let cancelled = BackendError::Upstream("the client went away".into());
            self.0.finish(Some(&cancelled));
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
