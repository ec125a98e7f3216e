//! Upstream `inferd serve` replicas as a `Backend`, for `inferd gateway`.
//!
//! Each admission is one call of the internal protocol (`backend::wire`) to the replica
//! with the fewest outstanding requests; all `n` samples go in that one call so the replica
//! shares the prompt's KV between them. Until a replica admits the request, failures are
//! retried on other replicas (up to `max_attempts`); once the generations are returned,
//! a failure is an error item in their streams.

mod client;
mod discovery;
mod pool;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::future::BoxFuture;

use super::wire::WireRequest;
use super::{served_by_replica, Backend, BackendError, GenerateRequest, Generation, ModelCard};
use crate::config::gateway::ReplicaSpec;
use client::AdmitError;

pub use pool::{BreakerState, ReplicaPool, ReplicaStatus};

/// How long a replica may take to admit a request once connected. Admission on a
/// replica is immediate (a full queue is a 429, not a wait), so this only bounds a stuck
/// replica; the generation itself has no time limit here.
const ADMISSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One model served by a pool of replicas.
pub struct UpstreamBackend {
    card: ModelCard,
    pool: Arc<ReplicaPool>,
    max_attempts: usize,
    head_timeout: Duration,
    in_flight: Arc<AtomicUsize>,
}

impl UpstreamBackend {
    pub fn new(card: ModelCard, pool: Arc<ReplicaPool>, spec: &ReplicaSpec) -> Self {
        UpstreamBackend {
            card,
            pool,
            max_attempts: spec.max_attempts.max(1) as usize,
            head_timeout: spec.connect_timeout + ADMISSION_TIMEOUT,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn pool(&self) -> &Arc<ReplicaPool> {
        &self.pool
    }

    async fn admit(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> Result<Vec<Generation>, BackendError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let request_id = request.request_id.clone();
        let model = request.model.clone();
        let body = serde_json::to_vec(&WireRequest { request, n })
            .map(Bytes::from)
            .map_err(|e| BackendError::Internal(format!("serializing a replica request: {e}")))?;
        let mut tried: Vec<String> = Vec::new();
        let mut overloaded: Option<u64> = None;
        let mut last_failure: Option<String> = None;
        while tried.len() < self.max_attempts {
            let Some(mut lease) = self.pool.pick(&tried) else {
                break;
            };
            let addr = lease.addr().to_owned();
            tried.push(addr.clone());
            let client = self.pool.client();
            match client::admit(
                client,
                &addr,
                &request_id,
                body.clone(),
                n,
                self.head_timeout,
            )
            .await
            {
                Ok(admitted) => {
                    lease.succeeded();
                    let prompt_tokens = admitted.prompt_tokens.clone();
                    let guard = InFlight::new(self.in_flight.clone());
                    let streams = client::demux(admitted, lease, guard);
                    let served_by = served_by_replica(&addr);
                    return Ok(streams
                        .into_iter()
                        .zip(prompt_tokens)
                        .map(|(events, prompt_tokens)| Generation {
                            prompt_tokens,
                            events,
                            served_by: served_by.clone(),
                        })
                        .collect());
                }
                Err(AdmitError::Refused(error)) => {
                    lease.succeeded();
                    return Err(error);
                }
                Err(AdmitError::Overloaded { retry_after_secs }) => {
                    lease.succeeded();
                    tracing::debug!(replica = %addr, retry_after_secs, "replica overloaded; trying another");
                    overloaded =
                        Some(overloaded.map_or(retry_after_secs, |s| s.min(retry_after_secs)));
                }
                Err(AdmitError::Replica { reason, draining }) => {
                    tracing::warn!(replica = %addr, %reason, attempt = tried.len(), "replica failed before admission");
                    lease.failed(draining, &reason);
                    last_failure = Some(format!("replica {addr}: {reason}"));
                }
            }
        }
        Err(match (overloaded, last_failure) {
            // Worth retrying later: some replica is up but full.
            (Some(retry_after_secs), _) => BackendError::Overloaded { retry_after_secs },
            (None, Some(failure)) => BackendError::Upstream(format!(
                "no replica admitted the request ({} tried); last failure: {failure}",
                tried.len()
            )),
            (None, None) => {
                BackendError::Unavailable(format!("no ready replica for model {model}"))
            }
        })
    }
}

impl Backend for UpstreamBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    /// One upstream call for all `n` samples, so the replica shares the prompt's KV.
    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        Box::pin(self.admit(request, n))
    }

    fn is_ready(&self) -> bool {
        self.pool.ready_count() > 0
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts an admitted call as in flight until its response is fully read or dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
