//! The gateway's side of the internal protocol (see `backend::wire`): one call admits `n`
//! samples on a replica, then one task splits the NDJSON lines into the samples' streams.
//!
//! The task owns the HTTP response and nothing owns the task but its channels: when the
//! caller drops every sample's stream the task drops the response, the replica sees the
//! disconnect and cancels in its engine.

use std::error::Error;
use std::time::Duration;

use axum::body::Bytes;
use futures::future::join_all;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::pool::Lease;
use crate::backend::wire::{
    WireFrame, WireRefusal, GENERATE_PATH, PROTOCOL_HEADER, PROTOCOL_VERSION,
};
use crate::backend::{BackendError, GenEvent, GenStream};

/// Longest NDJSON line accepted from a replica (a frame is one event: small).
const MAX_LINE: usize = 16 << 20;
/// Most of a refusal's body read (it is one small JSON object).
const MAX_REFUSAL: usize = 64 << 10;
/// Events buffered per sample before the reader waits for the caller.
const SAMPLE_BUFFER: usize = 64;
/// How long the reader waits for the end of the body once every sample finished (so
/// the connection can be reused).
const TAIL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a replica did not admit a request.
#[derive(Debug)]
pub(crate) enum AdmitError {
    /// The replica failed (connect error, no answer in time, 5xx, a broken or unreadable
    /// response): count it against the replica and try another. `draining`: it answered
    /// 503, take it out of traffic until a probe says otherwise.
    Replica { reason: String, draining: bool },
    /// The replica is full (429): try another; not the replica's fault.
    Overloaded { retry_after_secs: u64 },
    /// The request's own fault (a 4xx): return it to the caller as it is.
    Refused(BackendError),
}

/// An admitted call whose frames after `Admitted` are still to be read.
pub(crate) struct Admitted {
    pub prompt_tokens: Vec<usize>,
    lines: Lines<BoxStream<'static, reqwest::Result<Bytes>>>,
}

/// Sends `body` (a serialized `WireRequest` for `n` samples) to the replica at `addr`;
/// resolves when its response starts and its `Admitted` frame arrived, or fails after
/// `head_timeout`.
pub(crate) async fn admit(
    client: &reqwest::Client,
    addr: &str,
    request_id: &str,
    body: Bytes,
    n: usize,
    head_timeout: Duration,
) -> Result<Admitted, AdmitError> {
    let exchange = async {
        let response = client
            .post(format!("http://{addr}{GENERATE_PATH}"))
            .header(CONTENT_TYPE, "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .header("x-request-id", request_id)
            .body(body)
            .send()
            .await
            .map_err(|error| replica_failure(describe(&error)))?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let mut lines = Lines::new(response.bytes_stream().boxed());
        let first = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(replica_failure("the response ended before admission")),
            Err(reason) => return Err(replica_failure(reason)),
        };
        match serde_json::from_slice::<WireFrame>(&first) {
            Ok(WireFrame::Admitted { prompt_tokens }) if prompt_tokens.len() == n => Ok(Admitted {
                prompt_tokens,
                lines,
            }),
            Ok(_) => Err(replica_failure(format!(
                "the first frame was not the admission of {n} samples"
            ))),
            Err(error) => Err(replica_failure(format!("an unreadable frame: {error}"))),
        }
    };
    match tokio::time::timeout(head_timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(replica_failure(format!(
            "no admission within {head_timeout:?}"
        ))),
    }
}

fn replica_failure(reason: impl Into<String>) -> AdmitError {
    AdmitError::Replica {
        reason: reason.into(),
        draining: false,
    }
}

/// Classifies a non-2xx answer by its status and `backend_error` body.
async fn refusal(response: reqwest::Response) -> AdmitError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = read_capped(response, MAX_REFUSAL).await;
    let error = serde_json::from_slice::<WireRefusal>(&body)
        .ok()
        .map(|r| r.backend_error);
    let text = || String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    match (status, error) {
        (StatusCode::TOO_MANY_REQUESTS, error) => AdmitError::Overloaded {
            retry_after_secs: match error {
                Some(BackendError::Overloaded { retry_after_secs }) => retry_after_secs,
                _ => retry_after.unwrap_or(1),
            },
        },
        (StatusCode::SERVICE_UNAVAILABLE, error) => AdmitError::Replica {
            reason: match error {
                Some(error) => format!("503: {error}"),
                None => format!("503: {}", text()),
            },
            draining: true,
        },
        // The request's own deadline passed: another replica cannot help.
        (_, Some(error @ BackendError::DeadlineExceeded(_))) => AdmitError::Refused(error),
        // A replica of another protocol version (mid rolling upgrade): another may match.
        (_, Some(BackendError::InvalidRequest { message, param }))
            if param.as_deref() == Some(PROTOCOL_HEADER) =>
        {
            replica_failure(message)
        }
        (status, Some(error)) if status.is_client_error() => AdmitError::Refused(error),
        (status, None) if status.is_client_error() => AdmitError::Refused(BackendError::Upstream(
            format!("the replica refused the request with {status}: {}", text()),
        )),
        (status, error) => replica_failure(match error {
            Some(error) => format!("{status}: {error}"),
            None => format!("{status}: {}", text()),
        }),
    }
}

/// At most `cap` bytes of a body (what arrived before an error, if one occurs).
async fn read_capped(response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        let room = cap - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// An error and its causes, `a: b: c` (reqwest's own message hides the cause).
pub(crate) fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Splits an admitted response into its samples' streams, in sample order. `guard` lives
/// as long as the response is read (the caller's in-flight count).
pub(crate) fn demux<G: Send + 'static>(
    admitted: Admitted,
    lease: Lease,
    guard: G,
) -> Vec<GenStream> {
    let n = admitted.prompt_tokens.len();
    let mut senders = Vec::with_capacity(n);
    let mut streams: Vec<GenStream> = Vec::with_capacity(n);
    for _ in 0..n {
        let (sender, mut receiver) = mpsc::channel(SAMPLE_BUFFER);
        senders.push(Sample::Open(sender));
        streams.push(Box::pin(stream::poll_fn(move |cx| receiver.poll_recv(cx))));
    }
    let reader = Reader {
        lines: admitted.lines,
        samples: senders,
        lease,
    };
    tokio::spawn(
        async move {
            reader.run().await;
            drop(guard);
        }
        .in_current_span(),
    );
    streams
}

type Item = Result<GenEvent, BackendError>;

enum Sample {
    /// Frames go to the caller.
    Open(mpsc::Sender<Item>),
    /// Its `Finished` event or its error arrived.
    Finished,
    /// The caller dropped its stream.
    Dropped,
}

struct Reader {
    lines: Lines<BoxStream<'static, reqwest::Result<Bytes>>>,
    samples: Vec<Sample>,
    lease: Lease,
}

impl Reader {
    async fn run(mut self) {
        loop {
            if !self.samples.iter().any(|s| matches!(s, Sample::Open(_))) {
                if self.samples.iter().any(|s| matches!(s, Sample::Dropped)) {
                    // Dropping the response tells the replica to stop the rest.
                    return;
                }
                // Read the end of the body so the connection goes back to the pool.
                let tail = async { while let Ok(Some(_)) = self.lines.next_line().await {} };
                let _ = tokio::time::timeout(TAIL_TIMEOUT, tail).await;
                return;
            }
            let line = tokio::select! {
                line = self.lines.next_line() => line,
                () = all_dropped(&self.samples) => {
                    for sample in &mut self.samples {
                        if matches!(sample, Sample::Open(_)) {
                            *sample = Sample::Dropped;
                        }
                    }
                    continue;
                }
            };
            let broken = match line {
                Ok(Some(line)) => match serde_json::from_slice::<WireFrame>(&line) {
                    Ok(WireFrame::Event { index, event }) => {
                        let last = matches!(event, GenEvent::Finished { .. });
                        self.deliver(index, Ok(event), last).await
                    }
                    Ok(WireFrame::Error { index, error }) => {
                        self.deliver(index, Err(error), true).await
                    }
                    Ok(WireFrame::Admitted { .. }) => Err("a second admission frame".to_owned()),
                    Err(error) => Err(format!("an unreadable frame: {error}")),
                },
                Ok(None) => Err("the response ended before every sample finished".to_owned()),
                Err(reason) => Err(reason),
            };
            if let Err(reason) = broken {
                self.break_off(reason).await;
                return;
            }
        }
    }

    /// Passes one item to sample `index`; `last` ends the sample.
    async fn deliver(&mut self, index: usize, item: Item, last: bool) -> Result<(), String> {
        let sample = self
            .samples
            .get_mut(index)
            .ok_or_else(|| format!("a frame for sample {index}, which was not asked for"))?;
        // Frames after a sample's end, or for a stream the caller dropped, are ignored.
        if let Sample::Open(sender) = sample {
            *sample = if sender.send(item).await.is_err() {
                Sample::Dropped
            } else if last {
                Sample::Finished
            } else {
                return Ok(());
            };
        }
        Ok(())
    }

    /// The response broke: every unfinished sample ends with an `Upstream` error.
    async fn break_off(&mut self, reason: String) {
        let addr = self.lease.addr().to_owned();
        tracing::warn!(replica = %addr, %reason, "replica broke the stream");
        self.lease.failed(false, &reason);
        let message = format!("replica {addr} broke the stream: {reason}");
        for sample in &mut self.samples {
            if let Sample::Open(sender) = std::mem::replace(sample, Sample::Finished) {
                let _ = sender
                    .send(Err(BackendError::Upstream(message.clone())))
                    .await;
            }
        }
    }
}

/// Resolves once the caller dropped the stream of every open sample.
async fn all_dropped(samples: &[Sample]) {
    let open = samples.iter().filter_map(|s| match s {
        Sample::Open(sender) => Some(sender.closed()),
        _ => None,
    });
    join_all(open).await;
}

/// Newline-delimited lines of a byte stream, each at most [`MAX_LINE`] bytes. Cancel-safe:
/// dropping a pending `next_line` loses nothing.
pub(crate) struct Lines<S> {
    body: S,
    buffer: Vec<u8>,
    /// `buffer[..scanned]` holds no newline.
    scanned: usize,
}

impl<S, E> Lines<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Error + 'static,
{
    pub(crate) fn new(body: S) -> Self {
        Lines {
            body,
            buffer: Vec::new(),
            scanned: 0,
        }
    }

    /// The next non-blank line without its newline; `None` at the end of a body that ends
    /// with one; an error if the body fails, ends mid-line, or a line is too long.
    pub(crate) async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(at) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + at;
                let line: Vec<u8> = self.buffer.drain(..=end).take(end).collect();
                self.scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = self.buffer.len();
            if self.buffer.len() > MAX_LINE {
                return Err(format!("a frame longer than {MAX_LINE} bytes"));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => return Err(describe(&error)),
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => return Err("the response ended in the middle of a frame".to_owned()),
            }
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
