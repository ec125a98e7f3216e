//! Server-sent events for `stream: true`.
//!
//! One driver turns the admitted generations of a request into SSE events; endpoints
//! differ only in how a chunk looks ([`ChunkFormat`]). Order of events:
//! each choice's opening chunk (chat: the role delta), one chunk per backend delta (its
//! text and, when asked for, its tokens' logprobs), one chunk per choice with its
//! `finish_reason`, the usage chunk when asked for, then `data: [DONE]`. Choices
//! interleave as their tokens arrive. A backend error after the response started (e.g. a
//! passed deadline) becomes one `data: {"error":{…}}` event followed by `data: [DONE]`.
//!
//! The driver owns the generations' streams and spawns nothing: when the client goes
//! away axum drops the body, which drops the streams, which tells the backend to stop.
//! The body re-enters the request's span on every poll, so its log lines carry the
//! request id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tracing::Span;

use super::error::ApiError;
use super::generation::response_usage;
use super::logprobs::TextOffsets;
use super::types::{Chunk, UsageOut};
use crate::backend::{
    BackendError, FinishReason, GenEvent, Generation, TokenLogprob, ToolCallDelta, Usage,
};

/// The fields every chunk of one response shares.
#[derive(Clone, Debug)]
pub(crate) struct ChunkMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    /// Whether the client asked for logprobs (then every delta chunk carries them).
    pub logprobs: bool,
    /// Choices per prompt: choices `p * n .. (p + 1) * n` share prompt `p` (for usage).
    pub n: usize,
}

impl ChunkMeta {
    /// A chunk of this response with `object`, `choices` and `usage`.
    pub(crate) fn chunk<C: Serialize>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Option<UsageOut>>,
    ) -> Event {
        json_event(&Chunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            choices,
            usage,
        })
    }

    /// A chunk for one choice, with `"usage": null` when the client asked for usage (and
    /// no `usage` otherwise).
    pub(crate) fn choice_chunk<C: Serialize>(&self, object: &'static str, choice: C) -> Event {
        self.chunk(object, vec![choice], self.include_usage.then_some(None))
    }
}

/// One backend delta of one choice, as a chunk shows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeltaRef<'a> {
    /// May be empty when `logprobs` is not (a token whose text is held back).
    pub text: &'a str,
    /// Empty unless logprobs were asked for.
    pub logprobs: &'a [TokenLogprob],
    /// Where each token of `logprobs` starts in the choice's text.
    pub text_offset: &'a [usize],
}

/// How one kind of response writes its chunks.
pub(crate) trait ChunkFormat: Send + 'static {
    /// The `object` of every chunk.
    const CHUNK_OBJECT: &'static str;
    fn meta(&self) -> &ChunkMeta;
    /// Sent for each choice before any text, if anything.
    fn opening(&self, index: usize) -> Option<Event>;
    fn delta(&self, index: usize, delta: DeltaRef<'_>) -> Event;
    fn finish(&self, index: usize, reason: FinishReason) -> Event;
    /// A fragment of a tool call; `None`: this kind of response has no tool calls (the
    /// fragment is dropped with a warning).
    fn tool_call(&self, _index: usize, _call: &ToolCallDelta) -> Option<Event> {
        None
    }
    /// The final `"choices": []` chunk with the usage of all choices.
    fn usage(&self, usage: Usage) -> Event {
        let no_choices: Vec<()> = Vec::new();
        self.meta()
            .chunk(Self::CHUNK_OBJECT, no_choices, Some(Some(usage.into())))
    }
}

/// Serializes a chunk into an event.
pub(crate) fn json_event(value: &impl Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(data) => Event::default().data(data),
        Err(error) => error_event(&ApiError::Internal(format!(
            "serializing a stream chunk: {error}"
        ))),
    }
}

/// The OpenAI error body as an event.
pub(crate) fn error_event(error: &ApiError) -> Event {
    let data = serde_json::to_string(&error.envelope()).unwrap_or_else(|_| {
        r#"{"error":{"message":"internal server error","type":"internal_error","param":null,"code":null}}"#
            .to_owned()
    });
    Event::default().data(data)
}

/// The SSE response for admitted generations (choice `i` is `generations[i]`).
pub(crate) fn sse_response<F: ChunkFormat>(format: F, generations: Vec<Generation>) -> Response {
    sse_body(sse_events(format, generations))
}

/// The events of a response for admitted generations, each polled in the request's span.
pub(crate) fn sse_events<F: ChunkFormat>(
    format: F,
    generations: Vec<Generation>,
) -> BoxStream<'static, Event> {
    let span = Span::current();
    let driver = Driver::new(format, generations, span.clone());
    let mut events = Box::pin(stream::unfold(driver, Driver::next));
    stream::poll_fn(move |cx| {
        let _entered = span.enter();
        events.as_mut().poll_next(cx)
    })
    .boxed()
}

/// An SSE response around `events`.
pub(crate) fn sse_body(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let mut response = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response();
    // Ask nginx-style proxies not to buffer the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

/// Each choice's events, tagged with its index; `None` marks the end of its stream.
type Tagged = (usize, Option<Result<GenEvent, BackendError>>);

struct Driver<F> {
    format: F,
    events: SelectAll<BoxStream<'static, Tagged>>,
    queue: VecDeque<Event>,
    finished: Vec<Option<Usage>>,
    offsets: Vec<TextOffsets>,
    done: bool,
    started: Instant,
    span: Span,
}

impl<F: ChunkFormat> Driver<F> {
    fn new(format: F, generations: Vec<Generation>, span: Span) -> Self {
        let choices = generations.len();
        let queue = (0..choices).filter_map(|i| format.opening(i)).collect();
        let events = stream::select_all(generations.into_iter().enumerate().map(|(i, g)| {
            g.events
                .map(move |event| (i, Some(event)))
                .chain(stream::once(async move { (i, None) }))
                .boxed()
        }));
        Driver {
            format,
            events,
            queue,
            finished: vec![None; choices],
            offsets: vec![TextOffsets::default(); choices],
            done: false,
            started: Instant::now(),
            span,
        }
    }

    async fn next(mut self) -> Option<(Event, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((event, self));
            }
            if self.done {
                return None;
            }
            let item = self.events.next().await;
            self.handle(item);
        }
    }

    fn handle(&mut self, item: Option<Tagged>) {
        let Some((index, event)) = item else {
            self.complete();
            return;
        };
        let already_finished = self.finished[index].is_some();
        match event {
            Some(Ok(GenEvent::Delta { text, logprobs })) if !already_finished => {
                let logprobs_shown = self.format.meta().logprobs && !logprobs.is_empty();
                if text.is_empty() && !logprobs_shown {
                    return;
                }
                let text_offset = self.offsets[index].advance(&text, &logprobs);
                let delta = DeltaRef {
                    text: &text,
                    logprobs: &logprobs,
                    text_offset: &text_offset,
                };
                self.queue.push_back(self.format.delta(index, delta));
            }
            Some(Ok(GenEvent::ToolCall(call))) if !already_finished => {
                match self.format.tool_call(index, &call) {
                    Some(event) => self.queue.push_back(event),
                    None => {
                        tracing::warn!(index, "tool call fragment dropped: not a chat response")
                    }
                }
            }
            Some(Ok(GenEvent::Finished { reason, usage })) if !already_finished => {
                self.finished[index] = Some(usage);
                self.queue.push_back(self.format.finish(index, reason));
            }
            Some(Ok(event)) => {
                tracing::warn!(index, ?event, "event after Finished ignored");
            }
            Some(Err(error)) => self.fail(ApiError::from(error)),
            None if !already_finished => self.fail(ApiError::Internal(format!(
                "generation stream of choice {index} ended without a Finished event"
            ))),
            None => {}
        }
    }

    /// Every choice ended.
    fn complete(&mut self) {
        let choices: Vec<Usage> = self.finished.iter().flatten().copied().collect();
        let usage = response_usage(&choices, self.format.meta().n);
        if self.format.meta().include_usage {
            self.queue.push_back(self.format.usage(usage));
        }
        self.queue.push_back(Event::default().data("[DONE]"));
        self.done = true;
        tracing::info!(
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cached_tokens = usage.cached_tokens,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "stream finished"
        );
    }

    /// The response already started: report in-band, then end the stream.
    fn fail(&mut self, error: ApiError) {
        tracing::warn!(error = %error, "stream failed");
        self.queue.push_back(error_event(&error));
        self.queue.push_back(Event::default().data("[DONE]"));
        self.done = true;
        // Release every other choice now rather than when the body is dropped.
        self.events = SelectAll::new();
    }
}

impl<F> Drop for Driver<F> {
    fn drop(&mut self) {
        if !self.done {
            let _entered = self.span.enter();
            tracing::info!(
                duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
                "client went away; generation cancelled"
            );
        }
    }
}
