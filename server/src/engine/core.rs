//! The engine thread's loop: intake, cancellation and deadlines, schedule, forward, sample,
//! emit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::pick::pick;
use super::sampler::Sampler;
use super::scheduler::{Scheduler, SeqId, StepPlan};
use super::types::{EngineError, SampledToken};
use super::{EngineConfig, EngineStats, FinishReason, GenerationRequest, TokenEvent};
use crate::model::{CausalLm, ForwardBatch, KvCache, RowNeed};
use crate::telemetry::metrics::ModelMetrics;

/// Per-sequence state the scheduler doesn't need.
struct Active {
    request_id: String,
    events: Sender<TokenEvent>,
    sampler: Sampler,
    max_tokens: usize,
    ignore_eos: bool,
    logprobs: Option<usize>,
    generated: usize,
    /// Still counted in `pending` (not yet admitted to the running set).
    pending: bool,
    arrival: Instant,
    deadline: Option<Instant>,
    last_token_at: Option<Instant>,
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
    metrics: ModelMetrics,
    next_id: SeqId,
    /// Counters already published to `metrics` (the scheduler's are cumulative).
    published_preemptions: u64,
    published_prefix: (u64, u64),
}

impl EngineCore {
    pub(super) fn new(
        model: Box<dyn CausalLm>,
        cache: KvCache,
        cfg: EngineConfig,
        rx: Receiver<GenerationRequest>,
        pending: Arc<AtomicUsize>,
        stats: Arc<EngineStats>,
        metrics: ModelMetrics,
    ) -> Self {
        let sched = Scheduler::new(cfg.scheduler.clone());
        metrics.set_cache_config(cfg.block_size(), cfg.num_blocks());
        Self {
            model,
            cache,
            cfg,
            sched,
            active: HashMap::new(),
            rx,
            pending,
            stats,
            metrics,
            next_id: 0,
            published_preemptions: 0,
            published_prefix: (0, 0),
        }
    }

    pub(super) fn run(mut self) {
        tracing::info!(
            num_blocks = self.cfg.num_blocks(),
            block_size = self.cfg.block_size(),
            max_num_seqs = self.cfg.scheduler.max_num_seqs,
            "engine started"
        );
        loop {
            if !self.sched.has_work() {
                match self.rx.recv() {
                    Ok(req) => self.add(req),
                    Err(_) => break,
                }
            }
            self.intake();
            self.tick();
        }
        self.stats
            .alive
            .store(false, std::sync::atomic::Ordering::Release);
        tracing::info!("engine stopped");
    }

    /// Takes every request that has arrived, without blocking.
    fn intake(&mut self) {
        while let Ok(req) = self.rx.try_recv() {
            self.add(req);
        }
    }

    /// One turn of the loop: drop the gone and the late, run a step if there is work,
    /// publish the gauges.
    fn tick(&mut self) {
        self.reap();
        if self.sched.has_work() {
            self.step();
        }
        self.publish_stats();
    }

    fn add(&mut self, req: GenerationRequest) {
        tracing::debug!(request_id = %req.request_id, prompt_tokens = req.prompt_tokens.len(), n = req.events.len(), "queued");
        let mut parent = None;
        for (i, events) in req.events.into_iter().enumerate() {
            let id = self.next_id;
            self.next_id += 1;
            let mut params = req.sampling.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
            let sampler = Sampler::new(&params, &req.prompt_tokens, rand::random::<u64>());
            self.active.insert(
                id,
                Active {
                    request_id: req.request_id.clone(),
                    events,
                    sampler,
                    max_tokens: params.max_tokens,
                    ignore_eos: params.ignore_eos,
                    logprobs: params.logprobs,
                    generated: 0,
                    pending: i == 0,
                    arrival: req.arrival,
                    deadline: req.deadline,
                    last_token_at: None,
                },
            );
            self.sched.add_after(id, req.prompt_tokens.clone(), parent);
            parent.get_or_insert(id);
        }
    }

    /// Drops sequences whose client went away or whose deadline passed.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (&id, a) in &self.active {
            if a.events.is_closed() {
                tracing::info!(request_id = %a.request_id, "client gone; sequence aborted");
                gone.push((id, "abort"));
            } else if let Some(d) = a.deadline.filter(|&d| now >= d) {
                tracing::info!(request_id = %a.request_id, "deadline passed; sequence aborted");
                let _ = a
                    .events
                    .try_send(TokenEvent::Error(EngineError::DeadlineExceeded(
                        d.saturating_duration_since(a.arrival),
                    )));
                gone.push((id, "abort"));
            }
        }
        for (id, why) in gone {
            self.end(id, why);
        }
    }

    fn end(&mut self, id: SeqId, finish_reason: &str) {
        self.sched.finish(id);
        if let Some(a) = self.active.remove(&id) {
            if a.pending {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
            self.metrics.inc_request_success(finish_reason);
            self.metrics
                .observe_e2e_latency(a.arrival.elapsed().as_secs_f64());
            self.metrics.observe_generation_tokens(a.generated);
        }
    }

    fn step(&mut self) {
        let plan = self.sched.schedule();
        let now = Instant::now();
        for id in &plan.admitted {
            if let Some(a) = self.active.get_mut(id) {
                self.metrics
                    .observe_queue_time(now.duration_since(a.arrival).as_secs_f64());
                if a.pending {
                    a.pending = false;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
            if let Some(s) = self.sched.seq(*id) {
                self.metrics.add_prompt_tokens(s.num_prompt as u64);
                self.metrics.observe_prompt_tokens(s.num_prompt);
                if let Some(a) = self.active.get(id) {
                    let _ = a.events.try_send(TokenEvent::Admitted {
                        cached_tokens: s.num_cached_prompt,
                    });
                }
            }
        }
        if plan.scheduled.is_empty() {
            return;
        }
        let mut batch = self.build_batch(&plan);
        let vocab = self.model.shape().vocab_size;
        batch.needs = plan
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .map(|s| {
                self.active
                    .get(&s.id)
                    .map_or(RowNeed::Full, |a| a.sampler.need(a.logprobs, vocab))
            })
            .collect();
        let mut logits = match self.model.forward(&batch, &self.cache) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed; failing the step's requests");
                for s in &plan.scheduled {
                    if let Some(a) = self.active.get(&s.id) {
                        let err = EngineError::Internal(e.to_string());
                        let _ = a.events.try_send(TokenEvent::Error(err));
                    }
                    self.end(s.id, "error");
                }
                return;
            }
        };
        self.sched.complete_step(&plan);
        for (r, s) in plan.scheduled.iter().filter(|s| s.sample).enumerate() {
            let Some(a) = self.active.get_mut(&s.id) else {
                continue;
            };
            let token = pick(&mut a.sampler, a.logprobs, logits.answer(r), vocab);
            self.sched.append_token(s.id, token.id);
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
                self.cfg.block_size(),
                s.sample,
            );
        }
        batch
    }

    /// Sends a sampled token and ends the sequence if it is done.
    fn emit(&mut self, id: SeqId, token: SampledToken) {
        let total_len = self.sched.seq(id).map_or(0, |s| s.tokens.len());
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        match a.last_token_at {
            None => self
                .metrics
                .observe_ttft(now.duration_since(a.arrival).as_secs_f64()),
            Some(prev) => self
                .metrics
                .observe_inter_token_latency(now.duration_since(prev).as_secs_f64()),
        }
        a.last_token_at = Some(now);
        a.generated += 1;
        self.metrics.add_generation_tokens(1);
        let is_eos = !a.ignore_eos && self.cfg.eos_token_ids.contains(&token.id);
        let finish = if is_eos {
            Some(FinishReason::Stop)
        } else if a.generated >= a.max_tokens || total_len >= self.cfg.max_model_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        let alive = !matches!(
            a.events.try_send(TokenEvent::Token(token)),
            Err(TrySendError::Closed(_))
        );
        if let Some(reason) = finish {
            let _ = a.events.try_send(TokenEvent::Finished {
                reason,
                completion_tokens: a.generated,
            });
            self.end(id, reason.as_str());
        } else if !alive {
            self.end(id, "abort");
        }
    }

    fn publish_stats(&mut self) {
        let running = self.sched.num_running();
        let waiting = self.sched.num_waiting();
        let usage = self.sched.kv_usage();
        self.stats
            .active
            .store(self.active.len(), Ordering::Release);
        self.metrics.set_running(running);
        self.metrics.set_waiting(waiting);
        self.metrics.set_kv_usage(usage);
        let p = self.sched.num_preemptions();
        self.metrics.inc_preemptions(p - self.published_preemptions);
        self.published_preemptions = p;
        let ps = self.sched.prefix_stats();
        self.metrics
            .add_prefix_cache_queries(ps.queries - self.published_prefix.0);
        self.metrics
            .add_prefix_cache_hits(ps.hits - self.published_prefix.1);
        self.published_prefix = (ps.queries, ps.hits);
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
