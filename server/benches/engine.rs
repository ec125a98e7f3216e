//! Micro-benchmarks of the engine's pure parts: the block pool, the KV manager's prefix
//! lookup and one scheduler step (no model, no tensors). Run with
//! `cargo bench -p inferd --bench engine` (`-- --quick` for a fast pass).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use inferd::engine::kv::{BlockPool, KvManager};
use inferd::engine::scheduler::{Scheduler, SchedulerConfig, StepPlan};

const BLOCK_SIZE: usize = 16;

/// Steps timed on one scheduler before a fresh one is built (untimed), so that sequences
/// never outgrow the cache however many iterations criterion asks for.
const STEPS_PER_SCHEDULER: u64 = 2048;

fn block_pool(c: &mut Criterion) {
    let mut pool = BlockPool::new(4096);
    c.bench_function("block_pool/alloc_free", |b| {
        b.iter(|| {
            let blocks = pool.allocate(black_box(16)).expect("the pool has room");
            pool.release(blocks.into_iter().rev());
        })
    });
    assert_eq!(pool.num_free(), 4096);
}

fn kv_manager(c: &mut Criterion) {
    let prompt: Vec<u32> = (0..1024u32).map(|i| i * 7919 % 49152).collect();
    let mut kv = KvManager::new(4096, BLOCK_SIZE, true);
    // Seed the cache: sequence 1 computes the prompt, its 64 full blocks are registered,
    // and it finishes (the blocks stay cached on the free list).
    assert_eq!(kv.match_prefix(1, &prompt), 0);
    assert!(kv.grow(1, prompt.len()));
    kv.register_computed(1, &prompt, prompt.len());
    kv.free(1);
    // The last token is always recomputed, so 63 of the 64 blocks are shared.
    let hit = kv.match_prefix(2, &prompt);
    assert_eq!(hit, 63 * BLOCK_SIZE);
    kv.free(2);
    c.bench_function("kv_manager/match_prefix_hit", |b| {
        b.iter(|| {
            let hit = kv.match_prefix(2, black_box(&prompt));
            kv.free(2);
            hit
        })
    });
}

/// A scheduler driven like the engine drives it, with a fake "model" that emits a
/// deterministic token for every sequence that samples.
struct Driver {
    sched: Scheduler,
    next_id: u64,
    /// The sequence whose prompt is being prefilled (`step_mixed` only).
    prefill: Option<u64>,
    prefill_len: usize,
}

impl Driver {
    /// `decodes` sequences with 64-token prompts, prefilled and sampled once, so that each
    /// following step is one decode token per sequence; room for `steps` more tokens each
    /// plus a `prefill_len`-token prompt in flight.
    fn new(decodes: usize, prefill_len: usize, budget: usize, steps: u64) -> Driver {
        let prompt_len = 64;
        let per_seq = (prompt_len + steps as usize).div_ceil(BLOCK_SIZE) + 1;
        let num_blocks = decodes * per_seq + 2 * prefill_len.div_ceil(BLOCK_SIZE) + 16;
        let mut d = Driver {
            sched: Scheduler::new(SchedulerConfig {
                max_num_seqs: decodes + 1,
                max_num_batched_tokens: budget,
                block_size: BLOCK_SIZE,
                num_blocks,
                enable_prefix_caching: true,
            }),
            next_id: 0,
            prefill: None,
            prefill_len,
        };
        for _ in 0..decodes {
            let id = d.fresh_id();
            let prompt = (0..prompt_len).map(|i| token(id, i)).collect();
            d.sched.add(id, prompt);
        }
        while prefilling(&d.sched) {
            d.step();
        }
        if prefill_len > 0 {
            d.add_prefill();
        }
        d
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn add_prefill(&mut self) {
        let id = self.fresh_id();
        // Distinct tokens per prompt: every prefill misses the prefix cache.
        let prompt = (0..self.prefill_len).map(|i| token(id, i)).collect();
        self.sched.add(id, prompt);
        self.prefill = Some(id);
    }

    /// One engine step: plan, "forward", sample. A prefill that completes is finished
    /// (a one-token request) and replaced by a new one.
    fn step(&mut self) -> StepPlan {
        let plan = self.sched.schedule();
        self.sched.complete_step(&plan);
        for s in plan.scheduled.iter().filter(|s| s.sample) {
            if Some(s.id) == self.prefill {
                self.sched.finish(s.id);
                self.add_prefill();
            } else {
                let len = self.sched.seq(s.id).map_or(0, |q| q.tokens.len());
                self.sched.append_token(s.id, token(s.id, len));
            }
        }
        plan
    }
}

/// Whether any sequence still waits or has prompt tokens left to compute.
fn prefilling(s: &Scheduler) -> bool {
    s.num_waiting() > 0
        || s.ids()
            .filter_map(|id| s.seq(id))
            .any(|q| q.num_computed < q.num_prompt)
}

fn token(id: u64, i: usize) -> u32 {
    ((id as usize * 1009 + i * 31) % 49152) as u32
}

/// Times `iters` steps, on as many fresh drivers as needed (built untimed).
fn time_steps(iters: u64, build: impl Fn(u64) -> Driver) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(STEPS_PER_SCHEDULER);
        let mut d = build(n);
        let start = Instant::now();
        for _ in 0..n {
            black_box(d.step());
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn scheduler(c: &mut Criterion) {
    // Check once that the workloads are what their names say.
    let mut d = Driver::new(32, 0, 2048, 8);
    let plan = d.step();
    assert_eq!(plan.scheduled.len(), 32);
    assert!(plan.scheduled.iter().all(|s| s.len == 1 && s.sample));
    assert!(plan.preempted.is_empty());

    let mut d = Driver::new(16, 2000, 16 + 512, 8);
    let plan = d.step();
    let lens: Vec<usize> = plan.scheduled.iter().map(|s| s.len).collect();
    assert_eq!(lens.len(), 17, "{lens:?}");
    assert!(lens[..16].iter().all(|&l| l == 1), "{lens:?}");
    assert_eq!(lens[16], 512, "the prompt is chunked at 512: {lens:?}");

    c.bench_function("scheduler/step_32_decodes", |b| {
        b.iter_custom(|iters| time_steps(iters, |n| Driver::new(32, 0, 2048, n)))
    });
    // 16 decodes plus a 2,000-token prompt prefilled 512 tokens per step (512, 512, 512,
    // 464, then a new prompt): one iteration is one step.
    c.bench_function("scheduler/step_mixed", |b| {
        b.iter_custom(|iters| time_steps(iters, |n| Driver::new(16, 2000, 16 + 512, n)))
    });
}

criterion_group!(benches, block_pool, kv_manager, scheduler);
criterion_main!(benches);
