//! The engine: one dedicated OS thread owns the model, the paged KV cache and the scheduler
//! outright (no locks around them). Requests arrive on a bounded channel; each carries its
//! own bounded sender for `TokenEvent`s. A dropped receiver is seen at the next step and the
//! sequence's blocks are freed.

mod config;
mod core;
pub mod kv;
pub mod logprobs;
mod pick;
pub mod sampler;
pub mod scheduler;
pub mod types;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use crate::model::{CausalLm, KvCache};
use crate::telemetry::metrics::ModelMetrics;
pub use config::{
    kv_budget_from_gpu, EngineConfig, KvDefault, ModelFacts, SizingError, DEFAULT_KV_BYTES,
};
pub use types::{
    EngineError, FinishReason, GenerationRequest, SampledToken, SamplingParams, TokenEvent,
};

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the waiting queue is full ({0} requests)")]
    Overloaded(usize),
    #[error("the engine has stopped")]
    Stopped,
}

/// What the engine thread publishes to request tasks (drain and `/ready`); everything
/// else it reports goes to Prometheus (`ModelMetrics`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences the engine thread holds (waiting or running).
    pub active: AtomicUsize,
    /// False once the engine thread has stopped.
    pub alive: AtomicBool,
}

/// Cheap to clone; the engine thread stops when every handle is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<GenerationRequest>,
    pending: Arc<AtomicUsize>,
    config: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
}

impl EngineHandle {
    /// Hands a request to the engine without blocking.
    pub fn submit(&self, request: GenerationRequest) -> Result<(), SubmitError> {
        if !self.stats.alive.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let max = self.config.max_waiting;
        if self.pending.fetch_add(1, Ordering::AcqRel) >= max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Overloaded(max));
        }
        match self.tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::Overloaded(max)),
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn is_alive(&self) -> bool {
        self.stats.alive.load(Ordering::Acquire)
    }

    /// Requests submitted and not yet finished (an upper bound; 0 means idle).
    pub fn in_flight(&self) -> usize {
        self.pending.load(Ordering::Acquire) + self.stats.active.load(Ordering::Acquire)
    }
}

/// Starts the engine thread.
pub fn spawn(
    model: Box<dyn CausalLm>,
    cache: KvCache,
    config: EngineConfig,
    metrics: ModelMetrics,
) -> std::io::Result<EngineHandle> {
    let (tx, rx) = sync_channel(config.max_waiting.max(1));
    let pending = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(EngineStats::default());
    stats.alive.store(true, Ordering::Release);
    let config = Arc::new(config);
    let core = core::EngineCore::new(
        model,
        cache,
        (*config).clone(),
        rx,
        pending.clone(),
        stats.clone(),
        metrics,
    );
    std::thread::Builder::new()
        .name("inferd-engine".into())
        .spawn(move || core.run())?;
    Ok(EngineHandle {
        tx,
        pending,
        config,
        stats,
    })
}
