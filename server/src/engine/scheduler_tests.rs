//! Scheduler tests with a fake model: the "model" computes the next token from the token
//! history only, so any preemption/recompute bug shows up as a different output.

use super::*;

fn cfg(max_seqs: usize, budget: usize, block_size: usize, blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: budget,
        block_size,
        num_blocks: blocks,
        enable_prefix_caching: false,
    }
}

/// Deterministic stand-in for a forward pass + greedy sampling.
fn fake_next(tokens: &[u32]) -> u32 {
    tokens.iter().enumerate().fold(7u32, |h, (i, &t)| {
        h.wrapping_mul(31).wrapping_add(t ^ i as u32)
    }) % 1000
}

/// Drives the scheduler until every sequence has `max_new` tokens; returns outputs.
fn run(s: &mut Scheduler, ids: &[SeqId], max_new: usize) -> HashMap<SeqId, Vec<u32>> {
    let mut out: HashMap<SeqId, Vec<u32>> = HashMap::new();
    for _ in 0..10_000 {
        if !s.has_work() {
            break;
        }
        let plan = s.schedule();
        assert!(
            plan.scheduled.iter().map(|x| x.len).sum::<usize>()
                <= s.config().max_num_batched_tokens
        );
        assert!(s.num_running() <= s.config().max_num_seqs);
        s.complete_step(&plan);
        for sch in plan.scheduled.iter().filter(|x| x.sample) {
            let seq = s.seq(sch.id).unwrap();
            assert_eq!(seq.num_computed, seq.tokens.len());
            let t = fake_next(&seq.tokens);
            s.append_token(sch.id, t);
            let o = out.entry(sch.id).or_default();
            o.push(t);
            if o.len() == max_new {
                s.finish(sch.id);
            }
        }
    }
    assert!(ids.iter().all(|id| out[id].len() == max_new));
    out
}

#[test]
fn a_request_arriving_mid_decode_joins_the_next_step() {
    let mut s = Scheduler::new(cfg(8, 64, 4, 64));
    s.add(1, vec![1, 2, 3]);
    let p = s.schedule();
    assert_eq!(p.scheduled.len(), 1);
    s.complete_step(&p);
    s.append_token(1, 9);
    s.add(2, vec![4, 5, 6, 7, 8]);
    let p = s.schedule();
    let ids: Vec<_> = p.scheduled.iter().map(|x| (x.id, x.len)).collect();
    assert_eq!(
        ids,
        vec![(1, 1), (2, 5)],
        "decode first, then the new prompt"
    );
    assert_eq!(p.admitted, vec![2]);
}

#[test]
fn long_prompt_is_chunked_by_the_token_budget_without_starving_decodes() {
    let mut s = Scheduler::new(cfg(8, 8, 4, 64));
    s.add(1, vec![1, 2]);
    let p = s.schedule();
    s.complete_step(&p);
    s.append_token(1, 3);
    s.add(2, (0..20).collect());
    let mut chunks = vec![];
    for _ in 0..3 {
        let p = s.schedule();
        assert_eq!(p.scheduled[0].id, 1, "the running decode goes first");
        assert_eq!(p.scheduled[0].len, 1);
        chunks.push(p.scheduled[1].len);
        assert_eq!(p.scheduled[1].sample, chunks.iter().sum::<usize>() == 20);
        s.complete_step(&p);
        s.append_token(1, 3);
    }
    assert_eq!(chunks, vec![7, 7, 6]);
}

#[test]
fn max_num_seqs_bounds_the_running_set() {
    let mut s = Scheduler::new(cfg(2, 64, 4, 64));
    for id in 0..5 {
        s.add(id, vec![1, 2, 3]);
    }
    let p = s.schedule();
    assert_eq!(p.scheduled.len(), 2);
    assert_eq!(s.num_waiting(), 3);
}

#[test]
fn preemption_frees_blocks_and_recomputation_gives_identical_output() {
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| (0..6).map(|t| t * 10 + i).collect())
        .collect();
    let mut alone = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut s = Scheduler::new(cfg(8, 64, 4, 64));
        s.add(i as u64, p.clone());
        alone.extend(run(&mut s, &[i as u64], 12));
    }
    // 4 sequences of up to 18 tokens need 5 blocks each; 10 blocks force preemption.
    let mut s = Scheduler::new(cfg(8, 64, 4, 10));
    let ids: Vec<u64> = (0..4).collect();
    for (i, p) in prompts.iter().enumerate() {
        s.add(i as u64, p.clone());
    }
    let together = run(&mut s, &ids, 12);
    assert!(
        s.num_preemptions() > 0,
        "the pool was sized to force preemption"
    );
    assert_eq!(together, alone);
    assert_eq!(s.num_free_blocks(), 10, "every block is back in the pool");
}

#[test]
fn finish_releases_blocks_of_waiting_and_running_sequences() {
    let mut s = Scheduler::new(cfg(1, 64, 4, 8));
    s.add(1, vec![1; 9]);
    s.add(2, vec![1; 3]);
    let p = s.schedule();
    assert_eq!(p.scheduled.len(), 1);
    assert_eq!(s.num_free_blocks(), 5);
    s.finish(2);
    s.finish(1);
    assert_eq!(s.num_free_blocks(), 8);
    assert!(!s.has_work());
}

fn cached_cfg(blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        enable_prefix_caching: true,
        ..cfg(8, 64, 4, blocks)
    }
}

#[test]
fn a_shared_prefix_is_computed_once_and_gives_identical_output() {
    let prefix: Vec<u32> = (100..120).collect();
    let mut p1 = prefix.clone();
    p1.extend([1, 2, 3]);
    let mut p2 = prefix.clone();
    p2.extend([7, 8]);
    let mut plain = Scheduler::new(cfg(8, 64, 4, 64));
    plain.add(2, p2.clone());
    let want = run(&mut plain, &[2], 6);

    let mut s = Scheduler::new(cached_cfg(64));
    s.add(1, p1);
    run(&mut s, &[1], 6);
    s.add(2, p2.clone());
    let p = s.schedule();
    assert_eq!(
        p.scheduled[0].start, 20,
        "the 20-token prefix (5 blocks) is reused"
    );
    assert_eq!(p.scheduled[0].len, 2);
    assert_eq!(s.seq(2).unwrap().num_cached_prompt, 20);
    s.complete_step(&p);
    let first = fake_next(&s.seq(2).unwrap().tokens);
    s.append_token(2, first);
    let mut got = HashMap::new();
    got.insert(2u64, vec![first]);
    let rest = run(&mut s, &[2], 5);
    got.get_mut(&2).unwrap().extend(&rest[&2]);
    assert_eq!(got, want);
    assert_eq!(s.num_free_blocks(), 64, "cached blocks are free blocks");
    let stats = s.prefix_stats();
    assert_eq!(stats.hits, 20);
}

#[test]
fn cached_blocks_are_evicted_least_recently_freed_first() {
    // 6 blocks of 4 tokens. A (8 tokens, 2 blocks) then B (8 tokens, 2 blocks) finish; C
    // needs 4 fresh blocks, so it takes the 2 never-used blocks and then A's (older) ones.
    let mut s = Scheduler::new(cached_cfg(6));
    let a: Vec<u32> = (0..8).collect();
    let b: Vec<u32> = (50..58).collect();
    s.add(1, a.clone());
    run(&mut s, &[1], 1);
    s.add(2, b.clone());
    run(&mut s, &[2], 1);
    s.add(3, (200..216).collect());
    run(&mut s, &[3], 1);
    s.add(4, b.iter().copied().chain([9]).collect());
    let p = s.schedule();
    assert_eq!(p.scheduled[0].start, 8, "B's blocks survived");
    s.finish(4);
    s.add(5, a.iter().copied().chain([9]).collect());
    let p = s.schedule();
    assert_eq!(p.scheduled[0].start, 0, "A's blocks were evicted first");
}

#[test]
fn n_siblings_wait_for_the_shared_prompt_and_then_reuse_it() {
    let mut s = Scheduler::new(cached_cfg(64));
    let prompt: Vec<u32> = (0..18).collect();
    s.add(1, prompt.clone());
    s.add_after(2, prompt.clone(), Some(1));
    s.add_after(3, prompt, Some(1));
    let p = s.schedule();
    assert_eq!(p.scheduled.len(), 1, "siblings wait for the first prompt");
    s.complete_step(&p);
    s.append_token(1, 5);
    let p = s.schedule();
    let starts: Vec<_> = p.scheduled.iter().map(|x| (x.id, x.start, x.len)).collect();
    assert_eq!(starts, vec![(1, 18, 1), (2, 16, 2), (3, 16, 2)]);
}

#[test]
fn reference_counts_stay_consistent_through_preemption_with_sharing() {
    let mut s = Scheduler::new(SchedulerConfig {
        enable_prefix_caching: true,
        ..cfg(8, 64, 4, 12)
    });
    let shared: Vec<u32> = (0..8).collect();
    let ids: Vec<u64> = (0..4).collect();
    for &i in &ids {
        let mut p = shared.clone();
        p.push(100 + i as u32);
        s.add(i, p);
    }
    let out = run(&mut s, &ids, 10);
    assert_eq!(out.len(), 4);
    assert!(s.num_preemptions() > 0);
    assert_eq!(s.num_free_blocks(), 12);
    for b in 0..12 {
        assert_eq!(s.kv().pool().ref_count(b), 0);
    }
}
