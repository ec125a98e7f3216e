//! One request flow for every generation endpoint.
//!
//! An [`Endpoint`] holds only what is its own: how its wire request becomes backend
//! prompts (with the checks of fields only it has) and how its choices and stream chunks
//! look. [`create`] does the rest the same way for all of them: refuse while draining,
//! check and validate, pick the backend, admit every choice before the first byte (so
//! refusals are HTTP statuses), then answer with a whole response or an SSE stream.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::deadline::Deadline;
use super::error::ApiError;
use super::generation::{admit, collect_all, response_usage, unix_now, Completed};
use super::held;
use super::json::ApiJson;
use super::params::GenerationOptions;
use super::request_id::RequestId;
use super::stream::{sse_response, ChunkFormat, ChunkMeta};
use super::types::{Completion, SamplingFields};
use super::{AppState, BACKEND_HEADER};
use crate::backend::{
    served_by_kind, Backend, GenerateRequest, Generation, Prompt, ToolChoice, ToolSpec,
    SERVED_BY_LOCAL,
};

/// One generation endpoint: its wire request and the shape of its answers. A value of it
/// is the format of one response: streams are written through the [`ChunkFormat`]
/// supertrait, whole responses are a [`Completion`] of [`Endpoint::Choice`]s.
pub(crate) trait Endpoint: ChunkFormat + Sync + Sized {
    type Request: DeserializeOwned + Send + 'static;
    /// One choice of a whole response.
    type Choice: Serialize;
    /// The prefix of response ids (`<prefix>-<uuid>`).
    const ID_PREFIX: &'static str;
    /// The `object` of a whole response.
    const OBJECT: &'static str;

    /// The request's model id and the fields every endpoint shares.
    fn common(request: &Self::Request) -> (&str, &SamplingFields);
    /// Rejects the unsupported fields of this endpoint, maps its input to prompts and
    /// validates the parameters, in this order (the first error is the answer).
    fn prepare(request: &Self::Request) -> Result<Prepared, ApiError>;
    /// The format of one response.
    fn new(meta: ChunkMeta) -> Self;
    /// Choice `index` of a whole response.
    fn choice(&self, index: usize, completed: Completed) -> Self::Choice;
}

/// A checked request: what the backend generates from.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// One generation per prompt, `options.n` samples each.
    pub prompts: Vec<Prompt>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub options: GenerationOptions,
}

impl Prepared {
    /// One backend request per prompt. With several prompts each gets its own id
    /// (`<request id>-<prompt index>`) in the backend's logs.
    fn into_requests(
        self,
        request_id: String,
        model: &str,
        deadline: Option<Duration>,
    ) -> Vec<GenerateRequest> {
        let several = self.prompts.len() > 1;
        let options = self.options;
        self.prompts
            .into_iter()
            .enumerate()
            .map(|(i, prompt)| GenerateRequest {
                request_id: if several {
                    format!("{request_id}-{i}")
                } else {
                    request_id.clone()
                },
                model: model.to_owned(),
                prompt,
                sampling: options.sampling.clone(),
                max_tokens_explicit: options.max_tokens_explicit,
                stop: options.stop.clone(),
                deadline,
                tools: self.tools.clone(),
                tool_choice: self.tool_choice.clone(),
                set_by_client: options.set_by_client,
                stream: options.stream,
            })
            .collect()
    }
}

/// The `POST` handler of every generation endpoint.
pub(crate) async fn create<E: Endpoint>(
    State(state): State<AppState>,
    request_id: RequestId,
    Deadline(deadline): Deadline,
    ApiJson(body): ApiJson<E::Request>,
) -> Result<Response, ApiError> {
    state.ensure_accepting()?;
    let (model, fields) = E::common(&body);
    super::record_request_fields(model, fields.user.as_deref());
    let prepared = E::prepare(&body)?;
    let backend = state.backend(model)?;
    let options = &prepared.options;
    let stream = options.stream;
    let meta = ChunkMeta {
        id: format!("{}-{}", E::ID_PREFIX, uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: model.to_owned(),
        include_usage: options.include_usage,
        logprobs: options.sampling.logprobs.is_some(),
        n: options.n,
    };
    let requests = prepared.into_requests(request_id.0, model, deadline);
    respond(&state, backend, requests, stream, E::new(meta)).await
}

/// Admits the requests (`n` samples each), then answers: an SSE stream when the client
/// asked for one, else the whole response once every choice finished. Refusals become
/// the HTTP status, unless the response streams, the backend may hold requests (the
/// gateway, see [`held`]) and admission outlasts its keep-alive interval.
async fn respond<E: Endpoint>(
    state: &AppState,
    backend: Arc<dyn Backend>,
    requests: Vec<GenerateRequest>,
    stream: bool,
    format: E,
) -> Result<Response, ApiError> {
    let n = format.meta().n;
    let keepalive = backend.admission_keepalive().filter(|_| stream);
    let mut admission: BoxFuture<'static, _> =
        Box::pin(async move { admit(backend.as_ref(), requests, n).await });
    let generations = match keepalive {
        None => admission.await?,
        Some(interval) => tokio::select! {
            result = &mut admission => result?,
            _ = tokio::time::sleep(interval) => {
                return Ok(held::held_response(state.clone(), format, admission, interval));
            }
        },
    };
    let served = served_by(state, &format.meta().model, &generations);
    if stream {
        return Ok((served, sse_response(format, generations)).into_response());
    }
    let completed = collect_all(generations).await?;
    let usages: Vec<_> = completed.iter().map(|c| c.usage).collect();
    let usage = response_usage(&usages, n);
    let choices = completed
        .into_iter()
        .enumerate()
        .map(|(index, c)| format.choice(index, c))
        .collect();
    let meta = format.meta();
    let body = Completion {
        id: &meta.id,
        object: E::OBJECT,
        created: meta.created,
        model: &meta.model,
        choices,
        usage: usage.into(),
    };
    Ok((served, Json(body)).into_response())
}

/// Which backend serves admitted generations; counts the request for that backend kind.
pub(crate) fn count_served(state: &AppState, model: &str, generations: &[Generation]) -> String {
    let served = generations
        .first()
        .map_or(SERVED_BY_LOCAL, |g| g.served_by.as_str())
        .to_owned();
    state
        .metrics
        .inc_backend_request(model, served_by_kind(&served));
    served
}

/// `x-inferd-backend` for admitted generations (and the per-backend request count).
fn served_by(
    state: &AppState,
    model: &str,
    generations: &[Generation],
) -> [(HeaderName, HeaderValue); 1] {
    let served = count_served(state, model, generations);
    let value = HeaderValue::from_str(&served).unwrap_or(HeaderValue::from_static("unknown"));
    [(BACKEND_HEADER, value)]
}
