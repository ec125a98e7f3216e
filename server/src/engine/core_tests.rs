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
use inferd_kernels::reference::sampling;

use crate::model::{Candidates, Logits, ModelError, ModelShape, RowAnswer};
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
    /// Answer as a GPU decoder does (what each row's need asks), not with full rows.
    device: bool,
    /// Every row's need, in order.
    needs: Vec<RowNeed>,
    /// Rows answered so: argmax ids, candidates, full rows.
    answered: [usize; 3],
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
            // The next token at 10, the others spread over [0, 3] (logprobs worth checking).
            let mut row: Vec<f32> = (0..VOCAB).map(|i| (i % 7) as f32 * 0.5).collect();
            row[next_token(&context) as usize] = 10.0;
            data.extend(row);
        }
        script.needs.extend_from_slice(&batch.needs);
        if !script.device {
            script.answered[2] += data.len() / VOCAB;
            return Ok(Logits::full(data, VOCAB));
        }
        // Answer as a GPU decoder does, from the kernels' CPU spec.
        let (mut full, mut answers) = (vec![], vec![]);
        for (r, row) in data.chunks(VOCAB).enumerate() {
            let need = batch.need(r);
            let answer = match need {
                RowNeed::Argmax => RowAnswer::Argmax(sampling::argmax(row)),
                RowNeed::Top { k, temperature, .. } => {
                    let c = Candidates::from(sampling::top_k_lse(row, k, temperature));
                    if c.answer(need) {
                        RowAnswer::Top(c)
                    } else {
                        RowAnswer::Full(full.len() / VOCAB)
                    }
                }
                RowNeed::Full => RowAnswer::Full(full.len() / VOCAB),
            };
            match answer {
                RowAnswer::Argmax(_) => script.answered[0] += 1,
                RowAnswer::Top(_) => script.answered[1] += 1,
                RowAnswer::Full(_) => {
                    script.answered[2] += 1;
                    full.extend_from_slice(row);
                }
            }
            answers.push(answer);
        }
        Ok(Logits::answered(full, VOCAB, answers))
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

/// Every token event of one choice, until its end.
fn tokens(rx: &mut Events) -> Vec<SampledToken> {
    let mut out = vec![];
    while let Ok(ev) = rx.try_recv() {
        if let TokenEvent::Token(t) = ev {
            out.push(t);
        }
    }
    out
}

/// Requests of every sampling kind, run at once; returns what each received and the
/// fake's script.
fn mixed_run(device: bool) -> (Vec<Vec<SampledToken>>, Script) {
    let mut h = harness(config(8, 64, 64, false));
    h.script.lock().unwrap().device = device;
    let sp = |f: fn(&mut SamplingParams)| {
        let mut p = SamplingParams {
            temperature: 0.0,
            max_tokens: 5,
            seed: Some(11),
            ..Default::default()
        };
        f(&mut p);
        p
    };
    let kinds = [
        sp(|_| ()),                                                         // argmax
        sp(|p| p.logprobs = Some(3)), // top 3 (greedy + logprobs)
        sp(|p| (p.temperature, p.top_k) = (0.7, Some(5))), // top 5
        sp(|p| (p.temperature, p.top_p, p.logprobs) = (1.0, 0.9, Some(2))), // nucleus
        sp(|p| p.temperature = 1.0),  // a draw over the whole row
        sp(|p| p.presence_penalty = 0.5), // a penalty
    ];
    let mut rxs: Vec<Events> = kinds
        .iter()
        .enumerate()
        .map(|(i, p)| h.submit_sampling(&[1 + i as u32, 2, 3], p.clone()))
        .collect();
    h.run_idle();
    h.assert_clean();
    let got = rxs.iter_mut().map(tokens).collect();
    let script = std::mem::take(&mut *h.script.lock().unwrap());
    (got, script)
}

#[test]
fn each_row_says_what_it_needs_and_device_answers_sample_as_full_rows() {
    let (host, host_script) = mixed_run(false);
    let (dev, script) = mixed_run(true);
    // Six requests of five tokens: the needs the engine asked for, per kind.
    let first_step = &script.needs[..6];
    let top = |k, temperature, mass| RowNeed::Top {
        k,
        temperature,
        mass,
    };
    assert_eq!(
        first_step,
        [
            RowNeed::Argmax,
            top(3, 0.0, 0.0),
            top(5, 0.7, 0.0),
            top(VOCAB, 1.0, 0.9),
            RowNeed::Full,
            RowNeed::Full,
        ]
    );
    assert_eq!(
        host_script.needs, script.needs,
        "the needs do not depend on the answers"
    );
    assert_eq!(
        host_script.answered,
        [0, 0, 30],
        "a host decoder answers full rows"
    );
    assert_eq!(
        script.answered,
        [5, 15, 10],
        "only penalties and untruncated draws cross"
    );
    // The same tokens and logprobs from either: the candidates hold every drawable token.
    for (i, (h, d)) in host.iter().zip(&dev).enumerate() {
        assert_eq!(h.len(), 5, "request {i}");
        let ids = |t: &[SampledToken]| t.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(h), ids(d), "request {i}");
        for (a, b) in h.iter().zip(d) {
            assert_eq!(a.logprob.is_some(), b.logprob.is_some(), "request {i}");
            let close = |x: f32, y: f32| (x - y).abs() < 1e-5;
            assert!(close(a.logprob.unwrap_or(0.0), b.logprob.unwrap_or(0.0)));
            assert_eq!(a.top.len(), b.top.len());
            for (x, y) in a.top.iter().zip(&b.top) {
                assert!(x.0 == y.0 && close(x.1, y.1), "request {i}: {x:?} vs {y:?}");
            }
        }
    }
    assert_eq!(dev[1][0].top.len(), 3);
    // ln(e^10 / (e^10 + 7 * sum(e^(0.5 * j), j < 7))) = -0.0156
    let lp = dev[1][0].logprob.unwrap();
    assert!((lp + 0.0156).abs() < 1e-3, "{:?}", dev[1][0]);
}
