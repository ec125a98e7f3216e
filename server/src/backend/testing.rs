//! Test-only: a `Backend` that replays scripted `GenEvent`s (for every sample of every
//! prompt), and builders of the events it replays. The API's tests drive it through the
//! real router (`api::testing`); the routing policy's tests put it behind a policy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};

use super::{
    Backend, BackendError, FinishReason, GenEvent, GenerateRequest, Generation, ModelCard, Prompt,
    TokenLogprob, TopLogprob, Usage,
};

/// The model id the scripted backend serves.
pub(crate) const TEST_MODEL: &str = "test-model";

/// What every `generate` call of the scripted backend does.
#[derive(Clone, Debug)]
pub(crate) enum Script {
    /// Replay these events, then end the stream.
    Events(Vec<Result<GenEvent, BackendError>>),
    /// Replay these events, then stay pending until the stream is dropped.
    Hang(Vec<Result<GenEvent, BackendError>>),
    /// `"echo:"`, `<prompt text>`, for `n > 1` also `"/<sample index>"`, then
    /// `Finished(Stop)` with the prompt's length in bytes as `prompt_tokens`,
    /// `2 + sample index` completion tokens, and for samples after the first the whole
    /// prompt as `cached_tokens` (they reuse the first sample's prompt).
    Echo,
    /// Refuse admission.
    Refuse(BackendError),
}

/// A text delta without logprobs.
pub(crate) fn delta(text: &str) -> GenEvent {
    GenEvent::Delta {
        text: text.into(),
        logprobs: Vec::new(),
    }
}

/// A delta with the logprobs of its tokens.
pub(crate) fn delta_with(text: &str, logprobs: Vec<TokenLogprob>) -> GenEvent {
    GenEvent::Delta {
        text: text.into(),
        logprobs,
    }
}

/// A token's logprob with its alternatives `(text, logprob)`; bytes are the UTF-8 text.
pub(crate) fn token_logprob(token: &str, logprob: f32, top: &[(&str, f32)]) -> TokenLogprob {
    TokenLogprob {
        token: token.into(),
        bytes: token.as_bytes().to_vec(),
        logprob,
        top: top
            .iter()
            .map(|(token, logprob)| TopLogprob {
                token: (*token).into(),
                bytes: token.as_bytes().to_vec(),
                logprob: *logprob,
            })
            .collect(),
    }
}

/// `Finished` with these counts.
pub(crate) fn finished(
    reason: FinishReason,
    prompt_tokens: usize,
    completion_tokens: usize,
    cached_tokens: usize,
) -> GenEvent {
    GenEvent::Finished {
        reason,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        },
    }
}

/// `"Hello", ", world"`, then `stop` with 3 prompt (none cached) and 2 completion tokens.
pub(crate) fn hello_world() -> Vec<Result<GenEvent, BackendError>> {
    vec![
        Ok(delta("Hello")),
        Ok(delta(", world")),
        Ok(finished(FinishReason::Stop, 3, 2, 0)),
    ]
}

pub(crate) struct ScriptedBackend {
    script: Mutex<Script>,
    /// Each admission call: the request and its number of samples.
    requests: Mutex<Vec<(GenerateRequest, usize)>>,
    ready: AtomicBool,
    /// Event streams handed out and not yet dropped.
    live_streams: Arc<AtomicUsize>,
}

/// Counts a stream as live until it is dropped.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        LiveGuard(counter)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ScriptedBackend {
    pub(crate) fn new(script: Script) -> Self {
        ScriptedBackend {
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            ready: AtomicBool::new(true),
            live_streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Every request `generate`/`generate_n` received, in order.
    pub(crate) fn requests(&self) -> Vec<GenerateRequest> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .map(|(request, _)| request.clone())
            .collect()
    }

    /// The number of samples asked for with each request (1 for `generate`), in order.
    pub(crate) fn samples(&self) -> Vec<usize> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|(_, n)| *n).collect()
    }

    /// One sample's generation: the script's events (or refusal) for sample `sample`.
    fn start(
        &self,
        script: Script,
        request: &GenerateRequest,
        sample: usize,
        n: usize,
    ) -> Result<Generation, BackendError> {
        let (events, hang) = match script {
            Script::Refuse(error) => return Err(error),
            Script::Events(events) => (events, false),
            Script::Hang(events) => (events, true),
            Script::Echo => (echo(&request.prompt, sample, n), false),
        };
        let guard = LiveGuard::new(self.live_streams.clone());
        let tail = if hang {
            stream::pending().boxed()
        } else {
            stream::empty().boxed()
        };
        let events = stream::iter(events).chain(tail).map(move |event| {
            let _alive = &guard;
            event
        });
        Ok(Generation {
            prompt_tokens: 3,
            events: Box::pin(events),
            served_by: crate::backend::SERVED_BY_LOCAL.to_owned(),
        })
    }

    /// What later `generate` calls do.
    pub(crate) fn set_script(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub(crate) fn live_streams(&self) -> usize {
        self.live_streams.load(Ordering::SeqCst)
    }
}

impl Backend for ScriptedBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![ModelCard {
            id: TEST_MODEL.into(),
            owned_by: "inferd".into(),
            created: 1_700_000_000,
            max_model_len: 2048,
        }]
    }

    /// One call for all samples, as the local backend does (they share the prompt).
    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        let script = self.script.lock().unwrap().clone();
        self.requests.lock().unwrap().push((request.clone(), n));
        let result = (0..n)
            .map(|sample| self.start(script.clone(), &request, sample, n))
            .collect();
        Box::pin(async move { result })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

fn echo(prompt: &Prompt, sample: usize, n: usize) -> Vec<Result<GenEvent, BackendError>> {
    let text = match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Tokens(ids) => format!("{ids:?}"),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| format!("{}={}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("|"),
    };
    let mut events = vec![Ok(delta("echo:")), Ok(delta(&text))];
    if n > 1 {
        events.push(Ok(delta(&format!("/{sample}"))));
    }
    let cached = if sample == 0 { 0 } else { text.len() };
    events.push(Ok(finished(
        FinishReason::Stop,
        text.len(),
        2 + sample,
        cached,
    )));
    events
}
