//! The token-budget scheduler: pure and synchronous (no tensors, no I/O).
//!
//! Every sequence has `num_computed` tokens in the KV cache chasing `tokens.len()`. A step
//! packs running sequences first (decodes and unfinished prompt chunks), then admits waiting
//! ones, up to `max_num_batched_tokens` and `max_num_seqs`. A request that arrives while
//! others decode joins the very next step. When blocks run out, the most recently admitted
//! sequence is preempted: its blocks are freed and it is recomputed later, output kept.

use std::collections::{HashMap, HashSet, VecDeque};

use super::kv::{KvManager, PrefixCacheStats};

pub type SeqId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
}

/// A sequence's token and cache state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqState {
    /// Prompt followed by every generated token.
    pub tokens: Vec<u32>,
    pub num_prompt: usize,
    /// Tokens whose K/V are in the cache.
    pub num_computed: usize,
    /// Prompt tokens found in the prefix cache at first admission.
    pub num_cached_prompt: usize,
    /// Not admitted before this sequence's prompt is computed (siblings of `n > 1` share it).
    pub after: Option<SeqId>,
}

/// One sequence's share of a step: compute `tokens[start..start + len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub id: SeqId,
    pub start: usize,
    pub len: usize,
    /// After this step every known token is computed: sample the next one.
    pub sample: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub scheduled: Vec<Scheduled>,
    /// Sequences that lost their blocks this step (they wait to be recomputed).
    pub preempted: Vec<SeqId>,
    /// Sequences that entered the running set for the first time this step.
    pub admitted: Vec<SeqId>,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvManager,
    seqs: HashMap<SeqId, SeqState>,
    waiting: VecDeque<SeqId>,
    /// In admission order: the last one is the first to be preempted.
    running: Vec<SeqId>,
    ever_admitted: HashSet<SeqId>,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            kv: KvManager::new(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching),
            cfg,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            ever_admitted: HashSet::new(),
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Queues a new sequence.
    pub fn add(&mut self, id: SeqId, prompt: Vec<u32>) {
        self.add_after(id, prompt, None);
    }

    /// Queues a new sequence that waits until `after`'s prompt is in the cache.
    pub fn add_after(&mut self, id: SeqId, prompt: Vec<u32>, after: Option<SeqId>) {
        let num_prompt = prompt.len();
        self.seqs.insert(
            id,
            SeqState {
                tokens: prompt,
                num_prompt,
                num_computed: 0,
                num_cached_prompt: 0,
                after,
            },
        );
        self.waiting.push_back(id);
    }

    pub fn seq(&self, id: SeqId) -> Option<&SeqState> {
        self.seqs.get(&id)
    }

    /// The physical KV blocks of a sequence.
    pub fn blocks(&self, id: SeqId) -> &[u32] {
        self.kv.blocks(id)
    }

    pub fn kv(&self) -> &KvManager {
        &self.kv
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn kv_usage(&self) -> f64 {
        self.kv.usage()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.kv.num_free_blocks()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.kv.prefix_stats()
    }

    /// All sequence ids the scheduler knows (waiting or running).
    pub fn ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    /// Plans one step.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let n = self.remaining(id).min(budget);
            if n == 0 {
                i += 1;
                continue;
            }
            if !self.grow_or_preempt(id, n, &mut plan) {
                // `id` itself was preempted (it was the newest); it is no longer at `i`.
                continue;
            }
            let seq = &self.seqs[&id];
            plan.scheduled.push(Scheduled {
                id,
                start: seq.num_computed,
                len: n,
                sample: seq.num_computed + n == seq.tokens.len(),
            });
            budget -= n;
            i += 1;
        }
        if plan.preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut plan);
        }
        plan
    }

    fn remaining(&self, id: SeqId) -> usize {
        let s = &self.seqs[&id];
        s.tokens.len() - s.num_computed
    }

    /// Ensures `id` has blocks for `n` more tokens, preempting the newest running sequences
    /// if needed. Returns false if `id` itself had to be preempted.
    fn grow_or_preempt(&mut self, id: SeqId, n: usize, plan: &mut StepPlan) -> bool {
        let total = self.seqs[&id].num_computed + n;
        loop {
            if self.kv.grow(id, total) {
                return true;
            }
            let victim = self.running.pop().expect("running is not empty");
            self.preempt(victim);
            plan.preempted.push(victim);
            if victim == id {
                return false;
            }
        }
    }

    fn preempt(&mut self, id: SeqId) {
        self.kv.free(id);
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.num_computed = 0;
        }
        self.waiting.push_front(id);
        self.num_preemptions += 1;
    }

    /// A waiting sequence whose `after` sibling has not computed its prompt yet must wait.
    fn blocked(&self, id: SeqId) -> bool {
        let Some(parent) = self.seqs[&id].after else {
            return false;
        };
        self.seqs
            .get(&parent)
            .is_some_and(|p| p.num_computed < p.num_prompt)
    }

    fn admit_waiting(&mut self, budget: &mut usize, plan: &mut StepPlan) {
        let mut w = 0;
        while w < self.waiting.len() {
            if self.running.len() >= self.cfg.max_num_seqs || *budget == 0 {
                break;
            }
            let id = self.waiting[w];
            if self.blocked(id) {
                w += 1;
                continue;
            }
            let seq = self.seqs.get_mut(&id).expect("waiting seq exists");
            if seq.num_computed == 0 {
                seq.num_computed = self.kv.match_prefix(id, &seq.tokens);
                if !self.ever_admitted.contains(&id) {
                    seq.num_cached_prompt = seq.num_computed.min(seq.num_prompt);
                }
            }
            let n = (seq.tokens.len() - seq.num_computed).min(*budget);
            if !self.kv.grow(id, seq.num_computed + n) {
                self.kv.free(id);
                seq.num_computed = 0;
                break;
            }
            self.waiting.remove(w);
            plan.scheduled.push(Scheduled {
                id,
                start: seq.num_computed,
                len: n,
                sample: seq.num_computed + n == seq.tokens.len(),
            });
            if self.ever_admitted.insert(id) {
                plan.admitted.push(id);
            }
            self.running.push(id);
            *budget -= n;
        }
    }

    /// Marks the planned tokens as computed (call after the forward pass succeeded) and
    /// offers every newly full block to the prefix cache.
    pub fn complete_step(&mut self, plan: &StepPlan) {
        for s in &plan.scheduled {
            if let Some(seq) = self.seqs.get_mut(&s.id) {
                seq.num_computed = s.start + s.len;
                self.kv
                    .register_computed(s.id, &seq.tokens, seq.num_computed);
            }
        }
    }

    /// Appends a sampled token to a sequence.
    pub fn append_token(&mut self, id: SeqId, token: u32) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.tokens.push(token);
        }
    }

    /// Removes a sequence (finished or aborted) and frees its blocks.
    pub fn finish(&mut self, id: SeqId) -> Option<SeqState> {
        let seq = self.seqs.remove(&id)?;
        self.kv.free(id);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        self.ever_admitted.remove(&id);
        Some(seq)
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
