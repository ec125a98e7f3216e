//! The engine loop with a scripted fake model, step by step on the test's thread: deadlines,
//! client cancellation (mid-prefill and mid-decode), a failing forward pass, preemption
//! with `n > 1`, and the bookkeeping every one of them must leave clean (blocks freed,
//! nothing left pending, every choice ended by exactly one final event).
//!
//! The fake model keeps its own "KV cache": the token written to each slot. Its next token
//! is a hash of the whole context read back through the block table, so a sequence whose
//! context was assembled wrongly (a bad recompute after preemption, a wrong slot mapping)
//! produces a different output.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use tokio::sync::mpsc;

use super::*;
use crate::engine::scheduler::SchedulerConfig;
use crate::engine::SamplingParams;
use crate::model::{Logits, ModelError, ModelShape};
use crate::telemetry::metrics::Metrics;

const VOCAB: usize = 50;
const EOS: u32 = 0;

/// The next token after `context`: never EOS.
fn next_token(context: &[u32]) -> u32 {
    let h = context.iter().enumerate().fold(7u64, |h, (i, &t)| {
        h.wrapping_mul(31).wrapping_add(u64::from(t) ^ i as u64)
    });
    1 + (h % (VOCAB as u64 - 1)) as u32
}

/// The greedy output the engine must produce for `prompt`.
fn expected(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    for _ in 0..max_tokens {
        tokens.push(next_token(&tokens));
    }
    tokens.split_off(prompt.len())
}

#[derive(Default)]
struct Script {
    /// Slot → token written there.
    slots: std::collections::HashMap<u32, u32>,
    /// Forward calls so far.
    calls: usize,
    /// Fail the forward call with this index (0-based).
    fail_at: Option<usize>,
    /// Tokens computed per call.
    batch_tokens: Vec<usize>,
    /// Calls answered with argmax ids only (`ForwardBatch::argmax_only`).
    argmax_steps: usize,
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

struct FakeModel {
    shape: ModelShape,
    block_size: usize,
    script: Arc<Mutex<Script>>,
}

impl CausalLm for FakeModel {
    fn shape(&self) -> &ModelShape {
        &self.shape
    }

    fn forward(&self, batch: &ForwardBatch, _cache: &KvCache) -> Result<Logits, ModelError> {
        let mut script = self.script.lock().unwrap();
        let call = script.calls;
        script.calls += 1;
        if script.fail_at == Some(call) {
            return Err(ModelError::Batch("scripted failure".into()));
        }
        script.batch_tokens.push(batch.num_tokens());
        for (&slot, &token) in batch.slot_mapping.iter().zip(&batch.token_ids) {
            script.slots.insert(slot, token);
        }
        let bs = self.block_size;
        let mut data = Vec::new();
        for s in batch.seqs.iter().filter(|s| s.wants_logits) {
            let context: Vec<u32> = (0..s.context_len)
                .map(|p| script.slots[&(s.block_table[p / bs] * bs as u32 + (p % bs) as u32)])
                .collect();
            let mut row = vec![0.0f32; VOCAB];
            row[next_token(&context) as usize] = 10.0;
            data.extend(row);
        }
        if batch.argmax_only {
            // Answer as a GPU decoder does: the argmax of each row, no rows.
            script.argmax_steps += 1;
            let ids = data.chunks(VOCAB).map(argmax).collect();
            return Ok(Logits {
                data: vec![],
                vocab: VOCAB,
                argmax: Some(ids),
            });
        }
        Ok(Logits::full(data, VOCAB))
    }
}

struct Harness {
    core: EngineCore,
    tx: SyncSender<GenerationRequest>,
    script: Arc<Mutex<Script>>,
}

fn config(max_num_seqs: usize, budget: usize, num_blocks: usize, prefix: bool) -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs,
            max_num_batched_tokens: budget,
            block_size: 4,
            num_blocks,
            enable_prefix_caching: prefix,
        },
        max_model_len: 256,
        max_waiting: 16,
        eos_token_ids: vec![EOS],
    }
}

fn harness(cfg: EngineConfig) -> Harness {
    let shape = ModelShape {
        num_layers: 1,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 1,
        hidden_size: 1,
        vocab_size: VOCAB,
        max_position_embeddings: 256,
    };
    let script = Arc::new(Mutex::new(Script::default()));
    let model = FakeModel {
        shape: shape.clone(),
        block_size: cfg.block_size(),
        script: script.clone(),
    };
    let cache = KvCache::new(
        &shape,
        cfg.num_blocks(),
        cfg.block_size(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let (tx, rx) = sync_channel(16);
    let core = EngineCore::new(
        Box::new(model),
        cache,
        cfg,
        rx,
        Arc::new(AtomicUsize::new(0)),
        Arc::new(EngineStats::default()),
        Metrics::new().model("fake"),
    );
    Harness { core, tx, script }
}

type Events = mpsc::Receiver<TokenEvent>;

impl Harness {
    /// Submits a greedy request for `n` choices, as `EngineHandle::submit` does.
    fn submit(&mut self, prompt: &[u32], max_tokens: usize, n: usize) -> Vec<Events> {
        self.submit_with(prompt, max_tokens, n, None)
    }

    fn submit_with(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        n: usize,
        deadline: Option<Instant>,
    ) -> Vec<Events> {
        let (senders, receivers) = (0..n).map(|_| mpsc::channel(max_tokens + 2)).unzip();
        self.core.pending.fetch_add(1, Ordering::AcqRel);
        let request = GenerationRequest {
            request_id: format!("r{}", self.core.next_id),
            prompt_tokens: prompt.to_vec(),
            sampling: SamplingParams {
                temperature: 0.0,
                max_tokens,
                ..Default::default()
            },
            events: senders,
            arrival: Instant::now(),
            deadline,
        };
        self.tx.try_send(request).unwrap();
        self.core.intake();
        receivers
    }

    /// Submits one choice with `sampling`.
    fn submit_sampling(&mut self, prompt: &[u32], sampling: SamplingParams) -> Events {
        let (tx, rx) = mpsc::channel(sampling.max_tokens + 2);
        self.core.pending.fetch_add(1, Ordering::AcqRel);
        let request = GenerationRequest {
            request_id: format!("r{}", self.core.next_id),
            prompt_tokens: prompt.to_vec(),
            sampling,
            events: vec![tx],
            arrival: Instant::now(),
            deadline: None,
        };
        self.tx.try_send(request).unwrap();
        self.core.intake();
        rx
    }

    fn tick(&mut self) {
        self.core.tick();
    }

    /// Ticks until the engine holds nothing (bounded).
    fn run_idle(&mut self) {
        for _ in 0..1000 {
            if !self.core.sched.has_work() {
                return;
            }
            self.tick();
        }
        panic!("the engine did not become idle");
    }

    /// The engine holds nothing: no sequence, no pending count, every block free.
    fn assert_clean(&self) {
        assert!(self.core.active.is_empty(), "sequences left");
        assert!(!self.core.sched.has_work());
        assert_eq!(self.core.pending.load(Ordering::Acquire), 0, "pending left");
        assert_eq!(self.core.sched.kv_usage(), 0.0, "blocks left in use");
        assert_eq!(self.core.stats.active.load(Ordering::Acquire), 0);
    }
}

/// What one choice received: cached tokens of its `Admitted`, its tokens, and how it ended.
#[derive(Debug, PartialEq)]
struct Received {
    admitted: Vec<usize>,
    tokens: Vec<u32>,
    end: Option<End>,
}

#[derive(Debug, PartialEq)]
enum End {
    Finished(FinishReason, usize),
    Error(EngineError),
}

fn received(rx: &mut Events) -> Received {
    let mut r = Received {
        admitted: vec![],
        tokens: vec![],
        end: None,
    };
    while let Ok(ev) = rx.try_recv() {
        assert!(r.end.is_none(), "an event after the final one: {ev:?}");
        match ev {
            TokenEvent::Admitted { cached_tokens } => r.admitted.push(cached_tokens),
            TokenEvent::Token(t) => r.tokens.push(t.id),
            TokenEvent::Finished {
                reason,
                completion_tokens,
            } => r.end = Some(End::Finished(reason, completion_tokens)),
            TokenEvent::Error(e) => r.end = Some(End::Error(e)),
        }
    }
    r
}

const PROMPT: [u32; 10] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];

#[test]
fn a_request_runs_to_length_with_the_models_tokens() {
    let mut h = harness(config(4, 64, 32, false));
    let mut rx = h.submit(&PROMPT, 6, 1);
    h.run_idle();
    let r = received(&mut rx[0]);
    assert_eq!(r.admitted, vec![0]);
    assert_eq!(r.tokens, expected(&PROMPT, 6));
    assert_eq!(r.end, Some(End::Finished(FinishReason::Length, 6)));
    h.assert_clean();
}

#[test]
fn a_passed_deadline_ends_a_waiting_request_before_any_work() {
    let mut h = harness(config(4, 64, 32, false));
    let past = Instant::now();
    let mut rx = h.submit_with(&PROMPT, 6, 1, Some(past));
    h.tick();
    let r = received(&mut rx[0]);
    assert!(r.admitted.is_empty() && r.tokens.is_empty());
    assert!(matches!(
        r.end,
        Some(End::Error(EngineError::DeadlineExceeded(_)))
    ));
    assert_eq!(h.script.lock().unwrap().calls, 0, "no forward pass for it");
    h.assert_clean();
}

#[test]
fn a_deadline_passing_mid_decode_ends_the_request_and_frees_its_blocks() {
    let mut h = harness(config(4, 64, 32, false));
    let far = Instant::now() + Duration::from_secs(3600);
    let mut rx = h.submit_with(&PROMPT, 50, 1, Some(far));
    let mut other = h.submit(&PROMPT[..5], 8, 1);
    for _ in 0..3 {
        h.tick();
    }
    let late = h.core.active.keys().min().copied().unwrap();
    h.core.active.get_mut(&late).unwrap().deadline = Some(Instant::now());
    h.run_idle();
    let r = received(&mut rx[0]);
    assert_eq!(r.tokens, expected(&PROMPT, 50)[..3]);
    assert!(matches!(
        r.end,
        Some(End::Error(EngineError::DeadlineExceeded(_)))
    ));
    // The other request is untouched.
    let o = received(&mut other[0]);
    assert_eq!(o.tokens, expected(&PROMPT[..5], 8));
    assert_eq!(o.end, Some(End::Finished(FinishReason::Length, 8)));
    h.assert_clean();
}

#[test]
fn a_client_gone_mid_prefill_is_aborted_at_the_next_step() {
    // A 40-token prompt in chunks of 16: three steps of prefill.
    let prompt: Vec<u32> = (1..=40).collect();
    let mut h = harness(config(4, 16, 32, true));
    let rx = h.submit(&prompt, 4, 1);
    h.tick();
    assert_eq!(h.script.lock().unwrap().batch_tokens, vec![16]);
    drop(rx);
    h.tick();
    assert_eq!(
        h.script.lock().unwrap().batch_tokens,
        vec![16],
        "no more work for a gone client"
    );
    h.assert_clean();
}

#[test]
fn a_client_gone_mid_decode_is_aborted_and_others_go_on() {
    let mut h = harness(config(4, 64, 32, false));
    let mut gone = h.submit(&PROMPT, 40, 1);
    let mut stays = h.submit(&PROMPT[..7], 10, 1);
    for _ in 0..4 {
        h.tick();
    }
    let r = received(&mut gone[0]);
    assert_eq!(r.tokens, expected(&PROMPT, 40)[..4]);
    drop(gone);
    h.run_idle();
    let s = received(&mut stays[0]);
    assert_eq!(s.tokens, expected(&PROMPT[..7], 10));
    assert_eq!(s.end, Some(End::Finished(FinishReason::Length, 10)));
    h.assert_clean();
}

#[test]
fn a_failed_forward_fails_that_steps_requests_only_and_caches_nothing() {
    // One sequence per step: the first request's prefill fails, the second one waits.
    let mut h = harness(config(1, 64, 32, true));
    h.script.lock().unwrap().fail_at = Some(0);
    let mut failed = h.submit(&PROMPT, 4, 1);
    let mut next = h.submit(&PROMPT, 4, 1);
    h.run_idle();
    let f = received(&mut failed[0]);
    assert!(f.tokens.is_empty());
    assert_eq!(
        f.end,
        Some(End::Error(EngineError::Internal(
            "invalid batch: scripted failure".into()
        )))
    );
    // The same prompt found nothing in the prefix cache: blocks of a failed step are not
    // registered.
    let n = received(&mut next[0]);
    assert_eq!(n.admitted, vec![0]);
    assert_eq!(n.tokens, expected(&PROMPT, 4));
    assert_eq!(n.end, Some(End::Finished(FinishReason::Length, 4)));
    h.assert_clean();
}

#[test]
fn n_choices_share_the_prompt_and_survive_preemption() {
    // 10 blocks of 4 tokens: two choices of a 10-token prompt growing to 30 tokens each
    // cannot both fit, so the newest is preempted and recomputed.
    let mut h = harness(config(4, 64, 10, true));
    let mut rx = h.submit(&PROMPT, 20, 2);
    h.run_idle();
    assert!(h.core.sched.num_preemptions() > 0, "the test must preempt");
    let want = expected(&PROMPT, 20);
    let first = received(&mut rx[0]);
    let second = received(&mut rx[1]);
    // Each choice is admitted once; the second finds the first's full prompt blocks.
    assert_eq!(first.admitted, vec![0]);
    assert_eq!(second.admitted, vec![8]);
    for r in [first, second] {
        assert_eq!(r.tokens, want);
        assert_eq!(r.end, Some(End::Finished(FinishReason::Length, 20)));
    }
    h.assert_clean();
}

#[test]
fn an_eos_token_finishes_with_stop() {
    // The fake model never predicts token 0, so every token is declared an EOS here.
    let mut cfg = config(4, 64, 32, false);
    cfg.eos_token_ids = (0..VOCAB as u32).collect();
    let mut h = harness(cfg);
    let mut rx = h.submit(&PROMPT, 6, 1);
    h.run_idle();
    let r = received(&mut rx[0]);
    assert_eq!(r.tokens, expected(&PROMPT, 1));
    assert_eq!(r.end, Some(End::Finished(FinishReason::Stop, 1)));
    h.assert_clean();
}

#[test]
fn greedy_steps_ask_for_argmax_ids_only_and_logprobs_ask_for_rows() {
    let mut h = harness(config(4, 64, 32, false));
    let mut greedy = h.submit(&PROMPT, 5, 1);
    h.run_idle();
    let steps = h.script.lock().unwrap().argmax_steps;
    assert_eq!(steps, 5, "every greedy step reads argmax ids only");
    assert_eq!(received(&mut greedy[0]).tokens, expected(&PROMPT, 5));

    // One sequence that wants logprobs needs the rows: no step of it is argmax-only, and the
    // greedy sequence beside it gets the same tokens from the rows.
    let other = [2, 7, 1, 8];
    let mut g = h.submit(&other, 4, 1);
    let mut lp = h.submit_sampling(
        &PROMPT,
        SamplingParams {
            temperature: 0.0,
            max_tokens: 4,
            logprobs: Some(2),
            ..Default::default()
        },
    );
    h.run_idle();
    assert_eq!(h.script.lock().unwrap().argmax_steps, steps);
    assert_eq!(received(&mut g[0]).tokens, expected(&other, 4));
    assert_eq!(received(&mut lp).tokens, expected(&PROMPT, 4));
    h.assert_clean();
}
