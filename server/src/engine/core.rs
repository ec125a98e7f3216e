//! The engine thread's loop: intake, cancellation, schedule, forward, sample, emit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::sampler::Sampler;
use super::scheduler::{Scheduler, SchedulerConfig, SeqId, StepPlan};
use super::{EngineConfig, EngineStats, FinishReason, GenerationRequest, TokenEvent};
use crate::model::{CausalLm, ForwardBatch, KvCache};

/// Per-request state the scheduler doesn't need.
struct Active {
    request_id: String,
    events: Sender<TokenEvent>,
    sampler: Sampler,
    max_tokens: usize,
    ignore_eos: bool,
    generated: usize,
    /// Still counted in `pending` (not yet admitted to the running set).
    pending: bool,
}

pub(super) struct EngineCore {
    model: Box<dyn CausalLm>,
    cache: KvCache,
    cfg: EngineConfig,
    sched: Scheduler,
    active: HashMap<SeqId, Active>,
    rx: Receiver<GenerationRequest>,
    pending: Arc<AtomicUsize>,
    stats: Arc<EngineStats>,
    next_id: SeqId,
}

impl EngineCore {
    pub(super) fn new(
        model: Box<dyn CausalLm>,
        cache: KvCache,
        cfg: EngineConfig,
        rx: Receiver<GenerationRequest>,
        pending: Arc<AtomicUsize>,
        stats: Arc<EngineStats>,
    ) -> Self {
        let sched = Scheduler::new(SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_num_batched_tokens: cfg.max_num_batched_tokens,
            block_size: cfg.block_size,
            num_blocks: cfg.num_blocks,
            enable_prefix_caching: cfg.enable_prefix_caching,
        });
        Self {
            model,
            cache,
            cfg,
            sched,
            active: HashMap::new(),
            rx,
            pending,
            stats,
            next_id: 0,
        }
    }

    pub(super) fn run(mut self) {
        tracing::info!(
            num_blocks = self.cfg.num_blocks,
            block_size = self.cfg.block_size,
            max_num_seqs = self.cfg.max_num_seqs,
            "engine started"
        );
        loop {
            if !self.sched.has_work() {
                match self.rx.recv() {
                    Ok(req) => self.add(req),
                    Err(_) => break,
                }
            }
            while let Ok(req) = self.rx.try_recv() {
                self.add(req);
            }
            self.reap_cancelled();
            if self.sched.has_work() {
                self.step();
            }
            self.publish_stats();
        }
        self.stats.alive.store(false, Ordering::Release);
        tracing::info!("engine stopped");
    }

    fn add(&mut self, req: GenerationRequest) {
        let id = self.next_id;
        self.next_id += 1;
        let fallback_seed = rand::random::<u64>();
        let sampler = Sampler::new(&req.sampling, &req.prompt_tokens, fallback_seed);
        tracing::debug!(request_id = %req.request_id, prompt_tokens = req.prompt_tokens.len(), "queued");
        self.active.insert(
            id,
            Active {
                request_id: req.request_id,
                events: req.events,
                sampler,
                max_tokens: req.sampling.max_tokens,
                ignore_eos: req.sampling.ignore_eos,
                generated: 0,
                pending: true,
            },
        );
        self.sched.add(id, req.prompt_tokens);
    }

    /// Drops sequences whose client went away.
    fn reap_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(a) = self.active.get(&id) {
                tracing::info!(request_id = %a.request_id, "client gone; sequence aborted");
            }
            self.end(id);
        }
    }

    fn end(&mut self, id: SeqId) {
        self.sched.finish(id);
        if let Some(a) = self.active.remove(&id) {
            if a.pending {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn step(&mut self) {
        let plan = self.sched.schedule();
        for id in &plan.admitted {
            if let Some(a) = self.active.get_mut(id) {
                if a.pending {
                    a.pending = false;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if plan.scheduled.is_empty() {
            return;
        }
        let batch = self.build_batch(&plan);
        let mut logits = match self.model.forward(&batch, &self.cache) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed; failing the step's requests");
                for s in &plan.scheduled {
                    if let Some(a) = self.active.get(&s.id) {
                        let _ = a.events.try_send(TokenEvent::Error(e.to_string()));
                    }
                    self.end(s.id);
                }
                return;
            }
        };
        self.sched.complete_step(&plan);
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let mut row = 0;
        for s in plan.scheduled.iter().filter(|s| s.sample) {
            let token = match self.active.get_mut(&s.id) {
                Some(a) => a.sampler.sample(logits.row_mut(row)),
                None => {
                    row += 1;
                    continue;
                }
            };
            row += 1;
            self.sched.append_token(s.id, token);
            self.emit(s.id, token);
        }
    }

    fn build_batch(&self, plan: &StepPlan) -> ForwardBatch {
        let mut batch = ForwardBatch::default();
        for s in &plan.scheduled {
            let seq = self.sched.seq(s.id).expect("scheduled seq exists");
            batch.push_seq(
                &seq.tokens[s.start..s.start + s.len],
                s.start,
                self.sched.blocks(s.id),
                self.cfg.block_size,
                s.sample,
            );
        }
        batch
    }

    /// Sends a sampled token and ends the sequence if it is done.
    fn emit(&mut self, id: SeqId, token: u32) {
        let total_len = self.sched.seq(id).map_or(0, |s| s.tokens.len());
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        a.generated += 1;
        let is_eos = !a.ignore_eos && self.cfg.eos_token_ids.contains(&token);
        let finish = if is_eos {
            Some(FinishReason::Stop)
        } else if a.generated >= a.max_tokens || total_len >= self.cfg.max_model_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        let mut alive = !matches!(
            a.events.try_send(TokenEvent::Token(token)),
            Err(TrySendError::Closed(_))
        );
        if let Some(reason) = finish {
            let _ = a.events.try_send(TokenEvent::Finished {
                reason,
                completion_tokens: a.generated,
            });
            alive = false;
        }
        if !alive {
            self.end(id);
        }
    }

    fn publish_stats(&self) {
        self.stats
            .running
            .store(self.sched.num_running(), Ordering::Relaxed);
        self.stats
            .waiting
            .store(self.sched.num_waiting(), Ordering::Relaxed);
        self.stats
            .kv_usage_ppm
            .store((self.sched.kv_usage() * 1e6) as usize, Ordering::Relaxed);
    }
}
