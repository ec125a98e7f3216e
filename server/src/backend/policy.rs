//! The gateway's routing policy for one model: an ordered list of backends (GPU replicas
//! first, then Bedrock), tried in order **before the first byte** of the response.
//!
//! - Replicas ready: the upstream backend picks one (least outstanding requests) and
//!   retries on another replica if one fails before answering.
//! - No replica ready: `when_none_ready = "hold"` waits up to `max_wait` (never past the
//!   request's own deadline) for one to become ready — the pool is scaling up from zero —
//!   with at most `max_held` requests held at once; then, or with `"next"`, the next
//!   backend serves. The last backend's refusal is the answer.
//! - Every replica failed before answering (connect errors, 5xx): the next backend.
//!   Requests the replicas refused on their merits (400, 404, 429) are not re-sent
//!   elsewhere: the same request would fail there too, or should back off.
//!
//! Demand (`inferd:gateway_demand`: held plus in flight, whichever backend serves) is
//! exported so that KEDA can scale the GPU pool from zero while Bedrock answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;

use super::upstream::UpstreamBackend;
use super::{served_by_kind, Backend, BackendError, GenerateRequest, Generation, ModelCard};
use crate::config::gateway::{ReplicaSpec, WhenNoneReady};
use crate::telemetry::metrics::Metrics;

/// One backend of a model's list.
pub enum Route {
    /// Upstream `inferd serve` replicas, with the hold policy of their table.
    Replicas {
        upstream: Arc<UpstreamBackend>,
        spec: ReplicaSpec,
    },
    /// Any backend that answers or refuses at once (Bedrock).
    Direct(Arc<dyn Backend>),
}

/// Serves one model through its routes.
pub struct PolicyBackend {
    card: ModelCard,
    routes: Vec<Route>,
    metrics: Arc<Metrics>,
    /// Requests held now (bounded by each replicas route's `max_held`).
    held: Arc<AtomicUsize>,
    held_gauge: Gauge,
    /// Requests in flight through this model, held or admitted (drain waits for 0).
    in_flight: Arc<AtomicUsize>,
    demand_gauge: Gauge,
}

/// Decrements a count and its gauge when dropped: held requests (on admission, or when
/// the client goes away while held) and in-flight requests (when the last of the
/// request's streams ends).
struct Counted {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Counted {
    fn new(count: &Arc<AtomicUsize>, gauge: &Gauge) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        Counted {
            count: count.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

impl PolicyBackend {
    pub fn new(card: ModelCard, routes: Vec<Route>, metrics: Arc<Metrics>) -> Self {
        let gateway = metrics.gateway();
        let held_gauge = gateway.held(&card.id);
        let demand_gauge = gateway.demand(&card.id);
        PolicyBackend {
            card,
            routes,
            metrics,
            held: Arc::new(AtomicUsize::new(0)),
            held_gauge,
            in_flight: Arc::new(AtomicUsize::new(0)),
            demand_gauge,
        }
    }

    /// Replicas ready across this model's replica routes (for the metrics gauge).
    pub fn replicas_ready(&self) -> usize {
        self.routes
            .iter()
            .map(|route| match route {
                Route::Replicas { upstream, .. } => upstream.pool().ready_count(),
                Route::Direct(_) => 0,
            })
            .sum()
    }

    /// Waits for a ready replica within the hold budget. `Err(reason)` when the request
    /// should move on to the next backend.
    async fn hold(
        &self,
        upstream: &UpstreamBackend,
        spec: &ReplicaSpec,
        deadline: Option<Duration>,
    ) -> Result<(), &'static str> {
        if upstream.pool().ready_count() > 0 {
            return Ok(());
        }
        if spec.when_none_ready == WhenNoneReady::Next || spec.max_wait.is_zero() {
            return Err("no_ready_replica");
        }
        if self.held.load(Ordering::SeqCst) >= spec.max_held {
            return Err("hold_full");
        }
        let budget = deadline.map_or(spec.max_wait, |d| d.min(spec.max_wait));
        let _held = Counted::new(&self.held, &self.held_gauge);
        tracing::info!(
            model = %self.card.id,
            budget_ms = budget.as_millis() as u64,
            "no ready replica: holding the request"
        );
        if upstream.pool().wait_ready(budget).await {
            Ok(())
        } else {
            Err("hold_timeout")
        }
    }

    async fn route(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> Result<Vec<Generation>, BackendError> {
        let last = self.routes.len().saturating_sub(1);
        let mut reason: Option<&'static str> = None;
        for (i, route) in self.routes.iter().enumerate() {
            let result = match route {
                Route::Replicas { upstream, spec } => {
                    if let Err(why) = self.hold(upstream, spec, request.deadline).await {
                        reason = Some(why);
                        if i < last {
                            continue;
                        }
                        return Err(BackendError::Unavailable(format!(
                            "no replica of model `{}` is ready ({})",
                            self.card.id,
                            why.replace('_', " ")
                        )));
                    }
                    let mut forwarded = request.clone();
                    if let Some(model) = &spec.model {
                        forwarded.model = model.clone();
                    }
                    upstream.generate_n(forwarded, n).await
                }
                Route::Direct(backend) => backend.generate_n(request.clone(), n).await,
            };
            match result {
                Ok(generations) => {
                    if let (Some(why), Some(first)) = (reason, generations.first()) {
                        let to = served_by_kind(&first.served_by);
                        self.metrics.gateway().inc_fallback(&self.card.id, to, why);
                        tracing::info!(model = %self.card.id, to, reason = why, "fell back");
                    }
                    return Ok(generations);
                }
                Err(BackendError::Unavailable(_) | BackendError::Upstream(_)) if i < last => {
                    tracing::warn!(model = %self.card.id, route = i, "backend failed before answering; trying the next");
                    reason = Some("backend_failed");
                }
                Err(error) => return Err(error),
            }
        }
        Err(BackendError::Unavailable(format!(
            "no backend is configured for model `{}`",
            self.card.id
        )))
    }
}

impl Backend for PolicyBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![self.card.clone()]
    }

    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        Box::pin(async move {
            // Counted from arrival (held included) until the last choice's stream ends.
            let demand = Arc::new(Counted::new(&self.in_flight, &self.demand_gauge));
            let generations = self.route(request, n).await?;
            Ok(generations
                .into_iter()
                .map(|generation| {
                    let demand = demand.clone();
                    Generation {
                        events: generation
                            .events
                            .map(move |event| {
                                let _in_flight = &demand;
                                event
                            })
                            .boxed(),
                        ..generation
                    }
                })
                .collect())
        })
    }

    fn is_ready(&self) -> bool {
        // Always able to answer: it holds, falls back, or says 503 itself.
        true
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn admission_keepalive(&self) -> Option<Duration> {
        self.routes
            .iter()
            .filter_map(|route| match route {
                Route::Replicas { spec, .. } if spec.when_none_ready == WhenNoneReady::Hold => {
                    Some(spec.keepalive)
                }
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
