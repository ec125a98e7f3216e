//! Per-sequence sampling: penalties, temperature, top-k, top-p, min-p and a seeded draw. Runs
//! once per token per sequence on the engine thread, so it never sorts the whole vocabulary
//! nor allocates per call: greedy and temperature (+ min-p) are vectorized passes.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::types::SamplingParams;
use crate::model::{Candidates, RowNeed, MAX_CANDIDATES};

const CHUNK: usize = 64; // values per partial sum: draws scan the sums, then one chunk

/// Sampling state of one sequence: its seeded RNG, its parameters and the tokens seen so far.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Generated token -> count; only with presence/frequency penalties.
    counts: Option<HashMap<u32, u32>>,
    /// Prompt + generated tokens; only with a repetition penalty.
    seen: Option<HashSet<u32>>,
    /// Scratch reused by every call: chunk sums and `(weight, id)` candidates.
    sums: Vec<f32>,
    cands: Vec<(f32, u32)>,
}

impl Sampler {
    /// Creates the sampler of one sequence. The RNG is seeded with `params.seed`, or with
    /// `fallback_seed` when the request gave none.
    pub fn new(params: &SamplingParams, prompt_tokens: &[u32], fallback_seed: u64) -> Sampler {
        let (p, rp) = (params, params.repetition_penalty);
        let repeat = rp > 0.0 && rp.is_finite() && rp != 1.0;
        Sampler {
            params: p.clone(),
            rng: StdRng::seed_from_u64(p.seed.unwrap_or(fallback_seed)),
            counts: (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0).then(HashMap::new),
            seen: repeat.then(|| prompt_tokens.iter().copied().collect()),
            sums: Vec::new(),
            cands: Vec::new(),
        }
    }

    /// Whether [`Sampler::sample`] is the row's argmax (lowest id among equals) and records
    /// nothing: greedy (temperature 0 or `top_k = 1`) with no penalty. Such a row may be
    /// answered by a device argmax without copying it to the host.
    pub fn is_plain_greedy(&self) -> bool {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let greedy = !(inv_t > 0.0 && inv_t.is_finite()) || p.top_k == Some(1);
        greedy && self.counts.is_none() && self.seen.is_none()
    }

    /// Picks the next token from `logits` (indexed by token id; left with unspecified
    /// contents) and records it. NaN counts as `-inf`; with no finite logit or a `+inf` one
    /// this is the argmax; an empty row yields 0.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        self.apply_penalties(logits);
        let token = self.choose(logits);
        if let Some(counts) = &mut self.counts {
            *counts.entry(token).or_default() += 1;
        }
        self.seen.as_mut().map(|seen| seen.insert(token));
        token
    }

    /// Repetition penalty (HF/CTRL) first, then presence/frequency (OpenAI), as vLLM does.
    fn apply_penalties(&self, logits: &mut [f32]) {
        let (p, rp) = (&self.params, self.params.repetition_penalty);
        for &t in self.seen.iter().flatten() {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / rp } else { *l * rp };
            }
        }
        for (&t, &c) in self.counts.iter().flatten() {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * c as f32;
            }
        }
    }

    fn choose(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let top_k = p.top_k.filter(|&k| k > 0 && k < logits.len());
        let max = max_finite(logits);
        if !(inv_t > 0.0 && inv_t.is_finite() && max.is_finite()) || top_k == Some(1) {
            return first_max(logits, max);
        }
        let top_p = (p.top_p < 1.0).then_some(p.top_p.max(0.0));
        // Weights are `exp((logit - max) / t)`, 1 for the max token, which the clamp keeps.
        let min_p = if p.min_p > 0.0 { p.min_p.min(1.0) } else { 0.0 };
        let total = match top_k {
            None if top_p.is_none() => return self.draw_full(logits, [max, inv_t, min_p]),
            Some(k) => self.top_k(logits, k, max, inv_t),
            None => {
                let total = exp_row(logits, [max, inv_t, 0.0], &mut self.sums);
                // Tokens below `floor` weigh less than `(1 - top_p) * total` together, so the
                // ones at or above it hold the nucleus; a higher cut that gathers enough weight
                // does too, with fewer tokens to sort. A cut <= 1 keeps the max token.
                let rest = f64::from(1.0 - top_p.unwrap_or(1.0)) * total;
                let floor = ((rest / logits.len() as f64) as f32).clamp(f32::MIN_POSITIVE, 1.0);
                for cut in [256.0, 32.0, 8.0, 1.0].map(|m| (floor * m).min(1.0)) {
                    if gather_at_least(logits, cut, &mut self.cands) >= total - rest {
                        break;
                    }
                }
                total
            }
        };
        self.draw_candidates(total, top_p, min_p)
    }

    /// The nucleus of `cands` (weights out of `total`), min-p, and the draw among them.
    fn draw_candidates(&mut self, total: f64, top_p: Option<f32>, min_p: f32) -> u32 {
        if let Some(tp) = top_p {
            // The nucleus: the shortest prefix in rank order reaching `top_p` of the weight.
            self.cands.sort_unstable_by(by_rank);
            let mut need = f64::from(tp) * total;
            let end = self.cands.iter().position(|c| {
                need -= f64::from(c.0);
                need <= 0.0
            });
            self.cands.truncate(end.map_or(usize::MAX, |i| i + 1));
        }
        self.cands.retain(|c| c.0 >= min_p);
        let r = self.rng.random::<f64>() * self.cands.iter().map(|c| f64::from(c.0)).sum::<f64>();
        let hit = locate(self.cands.iter().map(|c| c.0), r);
        let hit = hit.or_else(|| self.cands.iter().rposition(|c| c.0 > 0.0)); // rounding
        hit.map_or(0, |i| self.cands[i].1)
    }

    /// What the engine needs of this sequence's logit row (with `logprobs` top logprobs
    /// requested, or none) for a `vocab`-wide model: [`Sampler::sample_top`] of the
    /// candidates a device answers draws from the distribution [`Sampler::sample`] draws
    /// from the full row. Penalties and untruncated draws need the full row.
    pub fn need(&self, logprobs: Option<usize>, vocab: usize) -> RowNeed {
        if self.counts.is_some() || self.seen.is_some() {
            return RowNeed::Full;
        }
        let p = &self.params;
        let top = |k: usize, mass: f32| {
            let k = k.max(logprobs.unwrap_or(0)).clamp(1, vocab.max(1));
            if k > MAX_CANDIDATES {
                return RowNeed::Full;
            }
            let temperature = p.temperature;
            RowNeed::Top {
                k,
                temperature,
                mass,
            }
        };
        if self.is_plain_greedy() {
            return match logprobs {
                None => RowNeed::Argmax,
                Some(_) => top(1, 0.0),
            };
        }
        match p.top_k.filter(|&k| k > 0 && k < vocab) {
            Some(k) => top(k, 0.0),
            None if p.top_p < 1.0 => top(MAX_CANDIDATES, p.top_p.max(0.0)),
            None => RowNeed::Full,
        }
    }

    /// [`Sampler::sample`] of a `vocab`-wide row that a device answered with its best
    /// candidates, which must answer [`Sampler::need`] (else the draw is among them only).
    pub fn sample_top(&mut self, c: &Candidates, vocab: usize) -> u32 {
        let token = self.choose_top(c, vocab);
        self.seen.as_mut().map(|seen| seen.insert(token));
        if let Some(counts) = &mut self.counts {
            *counts.entry(token).or_default() += 1;
        }
        token
    }

    fn choose_top(&mut self, c: &Candidates, vocab: usize) -> u32 {
        let (Some(&best), Some(&max)) = (c.ids.first(), c.logits.first()) else {
            return 0;
        };
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let top_k = p.top_k.filter(|&k| k > 0 && k < vocab);
        if !(inv_t > 0.0 && inv_t.is_finite() && max.is_finite()) || top_k == Some(1) {
            return best;
        }
        let top_p = (p.top_p < 1.0).then_some(p.top_p.max(0.0));
        let min_p = if p.min_p > 0.0 { p.min_p.min(1.0) } else { 0.0 };
        let n = top_k.unwrap_or(c.ids.len()).min(c.ids.len());
        let weigh = |(&l, &id): (&f32, &u32)| (exp_nonpos((l - max) * inv_t), id);
        self.cands.clear();
        self.cands
            .extend(c.logits.iter().zip(&c.ids).take(n).map(weigh));
        let total = match top_k {
            Some(_) => self.cands.iter().map(|c| f64::from(c.0)).sum(),
            // The whole row's weight, from its log-sum-exp at this temperature.
            None => f64::from(c.lse_t - max * inv_t).exp(),
        };
        self.draw_candidates(total, top_p, min_p)
    }

    /// Temperature (+ min-p) over the whole row, which gets the weights.
    fn draw_full(&mut self, logits: &mut [f32], max_invt_minp: [f32; 3]) -> u32 {
        let r = self.rng.random::<f64>() * exp_row(logits, max_invt_minp, &mut self.sums);
        let hit = locate(self.sums.iter().copied(), r).and_then(|c| {
            let before: f64 = self.sums[..c].iter().map(|&s| f64::from(s)).sum();
            let chunk = logits[c * CHUNK..].iter().take(CHUNK).copied();
            locate(chunk, r - before).map(|i| c * CHUNK + i)
        });
        hit.map_or_else(|| first_max(logits, 1.0), |i| i as u32) // rounding: the max token
    }

    /// Fills `cands` with the top `k` tokens (ties to the lowest ids, never NaN) weighted
    /// `exp((logit - max) * inv_t)`, and returns their total weight.
    fn top_k(&mut self, logits: &[f32], k: usize, max: f32, inv_t: f32) -> f64 {
        // The k-th largest of a strided sample (>= k values) is a lower bound for the k-th
        // largest: only values at or above it are ranked. (`max` turns NaN into -inf.)
        let stride = (logits.len() / (16 * k).max(4096)).max(1);
        let sane = |&l: &f32| (l.max(f32::NEG_INFINITY), 0);
        self.cands.clear();
        self.cands.extend(logits.iter().step_by(stride).map(sane));
        let bound = self.cands.select_nth_unstable_by(k - 1, by_rank).1 .0;
        gather_at_least(logits, bound, &mut self.cands);
        if let Some(last) = k.min(self.cands.len()).checked_sub(1) {
            self.cands.select_nth_unstable_by(last, by_rank); // fewer only through NaNs
        }
        self.cands.truncate(k);
        let weigh = |c: &mut (f32, u32)| c.0 = exp_nonpos((c.0 - max) * inv_t);
        self.cands.iter_mut().for_each(weigh);
        self.cands.iter().map(|c| f64::from(c.0)).sum()
    }
}

/// Rank order of candidates: higher weight first, then lower id.
fn by_rank(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Index of the weight at which the running sum first exceeds `r` (never a zero weight).
fn locate(mut weights: impl Iterator<Item = f32>, mut r: f64) -> Option<usize> {
    weights.position(|w| {
        r -= f64::from(w);
        r < 0.0 && w > 0.0
    })
}

/// Sets `out` to `(value, index)` for every value `>= cut` (never NaN), in index order,
/// skipping blocks whose (vectorized) maximum is below `cut`. Returns the values' sum.
fn gather_at_least(values: &[f32], cut: f32, out: &mut Vec<(f32, u32)>) -> f64 {
    out.clear();
    for (bi, block) in values.chunks(CHUNK).enumerate() {
        if max_finite(block) >= cut {
            let hits = block.iter().enumerate().filter(|&(_, &v)| v >= cut);
            out.extend(hits.map(|(i, &v)| (v, (bi * CHUNK + i) as u32)));
        }
    }
    out.iter().map(|c| f64::from(c.0)).sum()
}

/// Index of the first `max` (the maximum of `values`), found block by block; 0 if absent.
fn first_max(values: &[f32], max: f32) -> u32 {
    let mut blocks = values.chunks(256);
    let b = blocks.position(|b| max_finite(b) == max).unwrap_or(0);
    let i = values[b * 256..].iter().position(|&v| v == max);
    (b * 256 + i.unwrap_or(0)) as u32
}

/// Folds with 8 independent lanes so that the loop vectorizes.
#[inline(always)]
fn fold8(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    acc.iter().fold(rest, |a, &v| f(a, v))
}

/// Largest non-NaN value (`-inf` when there is none).
fn max_finite(values: &[f32]) -> f32 {
    fold8(values, f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

/// Overwrites `row` with `exp((v - max) * inv_t)`, zeroing results below `min_p`; pushes the
/// sum of every `CHUNK` into `sums` (cleared first) and returns the total. Uses AVX2 where
/// the CPU has it: the same IEEE operations (no FMA contraction), so the same results.
fn exp_row(row: &mut [f32], max_invt_minp: [f32; 3], sums: &mut Vec<f32>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(row: &mut [f32], args: [f32; 3], sums: &mut Vec<f32>) -> f64 {
            exp_row_portable(row, args, sums)
        }
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2(row, max_invt_minp, sums) };
    }
    exp_row_portable(row, max_invt_minp, sums)
}

#[inline(always)]
fn exp_row_portable(row: &mut [f32], [max, inv_t, min_p]: [f32; 3], sums: &mut Vec<f32>) -> f64 {
    sums.clear();
    for chunk in row.chunks_mut(CHUNK) {
        for v in chunk.iter_mut() {
            let e = exp_nonpos((*v - max) * inv_t);
            *v = if e < min_p { 0.0 } else { e };
        }
        sums.push(fold8(chunk, 0.0, |a, v| a + v));
    }
    sums.iter().map(|&s| f64::from(s)).sum()
}

/// `e^x` for `x <= 0` (Cephes polynomial, ~1 ulp); exactly 1 at 0 and exactly 0 below -87
/// or for NaN. Branch-free so the callers' loops vectorize.
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let keep = 0u32.wrapping_sub(u32::from(x >= -87.0)); // all ones, or 0 (also for NaN)
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let (n, ni) = (t - MAGIC, t.to_bits() as i32 - MAGIC.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r;
    let p = ((p + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    f32::from_bits(((p * r * r + r + 1.0) * scale).to_bits() & keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(t: f32, f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        (p.temperature, p.seed) = (t, Some(7));
        f(&mut p);
        p
    }

    fn run(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p, &[], 0);
        (0..n).map(|_| s.sample(&mut logits.to_vec())).collect()
    }

    fn row(n: usize, salt: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(salt);
        (0..n).map(|_| rng.random::<f32>() * 12.0 - 6.0).collect()
    }

    /// A row the engine lets a device answer with its argmax must sample to that argmax, and
    /// anything with a penalty or a draw must not be answered so.
    #[test]
    fn plain_greedy_is_exactly_the_argmax_and_nothing_else() {
        for p in [sp(0.0, |_| ()), sp(0.8, |p| p.top_k = Some(1))] {
            assert!(Sampler::new(&p, &[1, 2], 0).is_plain_greedy(), "{p:?}");
            for salt in 0..20 {
                let logits = row(300, salt);
                let first_max =
                    (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
                assert_eq!(run(&p, &logits, 1), [first_max as u32]);
            }
        }
        for p in [
            sp(0.8, |_| ()),
            sp(1.0, |p| p.top_k = Some(2)),
            sp(0.0, |p| p.presence_penalty = 0.5),
            sp(0.0, |p| p.frequency_penalty = 0.5),
            sp(0.0, |p| p.repetition_penalty = 1.2),
        ] {
            assert!(!Sampler::new(&p, &[1, 2], 0).is_plain_greedy(), "{p:?}");
        }
    }

    #[test]
    fn greedy_and_one_token_truncations_pick_the_argmax() {
        assert_eq!(run(&sp(0.0, |_| ()), &[0.1, 3.0, -1.0, 2.9], 3), [1; 3]);
        assert_eq!(run(&sp(0.0, |_| ()), &[1.0, 5.0, 5.0], 1), [1]); // ties: lowest id
        let cases = [
            sp(0.0, |_| ()),
            sp(1.0, |p| p.top_k = Some(1)),
            sp(1.0, |p| p.top_p = 1e-6),
            sp(1.0, |p| p.top_p = 0.0),
            sp(1.0, |p| p.min_p = 1.0),
            sp(1.0, |p| (p.top_k, p.top_p) = (Some(40), 1e-6)),
        ];
        for (salt, p) in (0..20).flat_map(|salt| cases.iter().map(move |p| (salt, p))) {
            let mut logits = row(5000, salt);
            logits[4321] = 7.0;
            assert_eq!(run(p, &logits, 9), [4321; 9], "{p:?}");
        }
    }

    /// Chi-square of 20k draws against softmax(`want` / t): 3 degrees of freedom, so
    /// P(chi2 > 30) ~ 1e-6. A `-inf` in `want` marks a token that must never be drawn.
    fn assert_matches(p: &SamplingParams, logits: &[f32], want: [f32; 4]) {
        assert_histogram(p, &run(p, logits, 20_000), want);
    }

    fn assert_histogram(p: &SamplingParams, draws: &[u32], want: [f32; 4]) {
        let e = want.map(|l| f64::from(l / p.temperature).exp());
        let n = draws.len() as f64;
        let expect = e.map(|w| (w / e.iter().sum::<f64>() * n).max(1e-9));
        let (mut hist, mut chi2) = ([0.0; 4], 0.0);
        draws.iter().for_each(|&t| hist[t as usize] += 1.0);
        (0..4).for_each(|i| chi2 += (hist[i] - expect[i]).powi(2) / expect[i]);
        assert!(chi2 < 30.0, "{p:?}: chi2 {chi2}: {hist:?} vs {expect:?}");
    }

    #[test]
    fn seeded_draws_repeat_and_match_softmax() {
        let logits = row(1000, 1);
        let a = run(&sp(1.5, |_| ()), &logits, 100);
        assert_eq!(a, run(&sp(1.5, |_| ()), &logits, 100));
        assert_ne!(a, run(&sp(1.5, |p| p.seed = Some(8)), &logits, 100));
        let mut s = Sampler::new(&sp(1.5, |p| p.seed = None), &[], 7); // fallback seed 7
        assert!(a.iter().all(|&t| t == s.sample(&mut logits.clone())));
        let logits = [1.0, 2.0, 0.5, 1.5];
        for t in [0.7, 1.0, 2.0] {
            assert_matches(&sp(t, |_| ()), &logits, logits);
        }
        // Each of these keeps tokens 1 and 3 only (min-p 0.5: e^-0.5 stays, e^-1 goes).
        let two = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY, 1.5];
        assert_matches(&sp(1.0, |p| p.top_k = Some(2)), &logits, two);
        assert_matches(&sp(1.0, |p| p.top_p = 0.6), &logits, two);
        assert_matches(&sp(1.0, |p| p.min_p = 0.5), &logits, two);
        let p = sp(1.0, |p| (p.top_k, p.top_p) = (Some(3), 0.6));
        assert_matches(&p, &logits, two);
    }

    fn top(row: &[f32], k: usize, t: f32) -> Candidates {
        inferd_kernels::reference::sampling::top_k_lse(row, k, t).into()
    }

    /// What each kind of request asks of a device: the least that samples exactly.
    #[test]
    fn needs_ask_for_the_least_that_samples_exactly() {
        let need = |p: SamplingParams, logprobs| Sampler::new(&p, &[1], 0).need(logprobs, 1000);
        let top = |k, temperature, mass| RowNeed::Top {
            k,
            temperature,
            mass,
        };
        assert_eq!(need(sp(0.0, |_| ()), None), RowNeed::Argmax);
        assert_eq!(need(sp(0.9, |p| p.top_k = Some(1)), None), RowNeed::Argmax);
        assert_eq!(need(sp(0.0, |_| ()), Some(0)), top(1, 0.0, 0.0));
        assert_eq!(need(sp(0.0, |_| ()), Some(5)), top(5, 0.0, 0.0));
        assert_eq!(
            need(sp(0.8, |p| p.top_k = Some(40)), None),
            top(40, 0.8, 0.0)
        );
        assert_eq!(
            need(sp(0.8, |p| p.top_k = Some(2)), Some(5)),
            top(5, 0.8, 0.0)
        );
        let nucleus = sp(0.8, |p| (p.top_p, p.min_p) = (0.9, 0.05));
        assert_eq!(need(nucleus, None), top(MAX_CANDIDATES, 0.8, 0.9));
        // A nucleus inside a top-k is inside the top-k's candidates.
        let both = sp(0.8, |p| (p.top_k, p.top_p) = (Some(50), 0.9));
        assert_eq!(need(both, None), top(50, 0.8, 0.0));
        for p in [
            sp(0.8, |_| ()),                       // a draw over the whole row
            sp(0.8, |p| p.min_p = 0.1),            // min-p alone reaches anywhere
            sp(0.8, |p| p.top_k = Some(1000)),     // not a truncation of 1000 tokens
            sp(0.8, |p| p.top_k = Some(300)),      // more than the device returns
            sp(0.0, |p| p.presence_penalty = 0.5), // penalties change the row
            sp(0.0, |p| p.repetition_penalty = 1.1),
        ] {
            assert_eq!(need(p.clone(), None), RowNeed::Full, "{p:?}");
        }
        // A small vocabulary: the candidates are the whole row.
        let p = sp(0.8, |p| p.top_p = 0.5);
        assert_eq!(
            Sampler::new(&p, &[], 0).need(Some(3), 40),
            top(40, 0.8, 0.5)
        );
    }

    /// Draws from candidates follow the same distribution as draws from the full row.
    #[test]
    fn candidate_draws_match_the_full_rows_distribution() {
        let logits = [1.0, 2.0, 0.5, 1.5];
        let two = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY, 1.5];
        let cases = [
            (sp(1.0, |p| p.top_k = Some(2)), two),
            (
                sp(0.7, |p| p.top_k = Some(3)),
                [1.0, 2.0, f32::NEG_INFINITY, 1.5],
            ),
            (sp(1.0, |p| p.top_p = 0.6), two),
            (sp(1.0, |p| (p.top_k, p.top_p) = (Some(3), 0.6)), two),
            (sp(1.0, |p| (p.top_p, p.min_p) = (0.99, 0.5)), two),
            (sp(2.0, |p| p.top_p = 0.999), logits),
        ];
        for (p, want) in cases {
            let mut s = Sampler::new(&p, &[], 0);
            let RowNeed::Top { k, temperature, .. } = s.need(None, 4) else {
                panic!("{p:?} needs candidates");
            };
            let c = top(&logits, k, temperature);
            let draws: Vec<u32> = (0..20_000).map(|_| s.sample_top(&c, 4)).collect();
            assert_histogram(&p, &draws, want);
        }
    }

    #[test]
    fn candidates_of_a_wide_row_hold_its_greedy_and_nucleus_picks() {
        for salt in 0..10 {
            let mut logits = row(5000, salt);
            logits[4321] = 9.0;
            for p in [
                sp(0.0, |_| ()),
                sp(1.0, |p| p.top_p = 1e-6),
                sp(1.0, |p| (p.top_k, p.top_p) = (Some(40), 1e-6)),
            ] {
                let mut s = Sampler::new(&p, &[], 0);
                let c = top(&logits, MAX_CANDIDATES, p.temperature);
                assert_eq!(s.sample_top(&c, 5000), 4321, "{p:?}");
            }
            // A 0.7 nucleus: here the spike holds ~5 % and the rest is flat (the 256 best
            // hold ~50 %), so the nucleus reaches past the candidates: the row must cross
            // in full.
            let wide_p = sp(1.0, |p| p.top_p = 0.7);
            let need = Sampler::new(&wide_p, &[], 0).need(None, 5000);
            let wide = top(&logits, MAX_CANDIDATES, 1.0);
            assert!(!wide.answer(need), "salt {salt}: mass {}", wide.mass(1.0));
            // Flatter below the spike (~47 %): the nucleus is a few dozen tokens, and every
            // draw is in it (computed here directly).
            logits.iter_mut().for_each(|l| *l /= 3.0);
            logits[4321] = 9.0;
            let p = sp(1.0, |p| p.top_p = 0.5);
            let c = top(&logits, MAX_CANDIDATES, 1.0);
            assert!(c.answer(Sampler::new(&p, &[], 0).need(None, 5000)));
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let total: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
            let mut acc = 0.0;
            let nucleus: Vec<u32> = order
                .iter()
                .take_while(|&&i| {
                    let inside = acc < 0.5 * total;
                    acc += f64::from(logits[i]).exp();
                    inside
                })
                .map(|&i| i as u32)
                .collect();
            assert!(nucleus.len() > 1, "a nucleus worth sampling");
            let mut s = Sampler::new(&p, &[], 0);
            let dev: Vec<u32> = (0..300).map(|_| s.sample_top(&c, 5000)).collect();
            assert!(
                dev.iter().all(|t| nucleus.contains(t)),
                "{dev:?} vs {nucleus:?}"
            );
            assert!(run(&p, &logits, 300).iter().all(|t| nucleus.contains(t)));
            assert!(dev.contains(&4321));
        }
    }

    #[test]
    fn penalties() {
        // Presence 1.0: once token 0 was generated, token 1 wins, and so on.
        let p = sp(0.0, |p| p.presence_penalty = 1.0);
        assert_eq!(run(&p, &[2.0, 1.5, 0.0], 3), [0, 1, 0]);
        // Frequency 1.0: a margin of 2.5 is overcome after 3 generations of token 0.
        let p = sp(0.0, |p| p.frequency_penalty = 1.0);
        assert_eq!(run(&p, &[2.5, 0.0, -10.0], 5), [0, 0, 0, 1, 0]);
        // Prompt tokens do not count for presence/frequency.
        let mut s = Sampler::new(&sp(0.0, |p| p.presence_penalty = 5.0), &[0], 0);
        assert_eq!(s.sample(&mut [2.0, 1.0]), 0);
        // Repetition 2.0 over prompt + generated tokens: positive / 2, negative * 2.
        let p = sp(0.0, |p| p.repetition_penalty = 2.0);
        let mut logits = [4.0, 3.0, -1.0, -1.5];
        Sampler::new(&p, &[0, 2, 99], 0).apply_penalties(&mut logits);
        assert_eq!(logits, [2.0, 3.0, -2.0, -1.5]);
        let mut s = Sampler::new(&p, &[0, 2], 0);
        assert_eq!(s.sample(&mut [4.0, 3.0, -1.0]), 1);
        assert_eq!(s.sample(&mut [4.0, 3.0, -1.0]), 0); // token 1 is seen now
    }

    #[test]
    fn non_finite_logits_do_not_panic() {
        let (nan, inf, ninf) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
        let ps = [
            sp(0.0, |_| ()),
            sp(1.0, |p| p.repetition_penalty = 1.3),
            sp(1.0, |p| (p.top_k, p.top_p, p.min_p) = (Some(2), 0.9, 0.1)),
            sp(1.0, |p| (p.top_p, p.min_p) = (0.9, 0.1)),
        ];
        for p in &ps {
            for row in [[nan, 1.0, nan, 0.5], [ninf, 0.0, ninf, 0.0]] {
                assert!(run(p, &row, 50).iter().all(|&t| t == 1 || t == 3));
            }
            assert_eq!(run(p, &[0.0, inf, 1.0, inf], 5), [1; 5]);
            assert!(run(p, &[nan; 4], 5).iter().all(|&t| t < 4));
            assert_eq!(Sampler::new(p, &[], 0).sample(&mut []), 0);
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        assert_eq!([0.0, -100.0, f32::NAN].map(exp_nonpos), [1.0, 0.0, 0.0]);
        for x in (0..=87_000).map(|i| -(i as f32) / 1000.0) {
            let (got, want) = (exp_nonpos(x), x.exp());
            assert!((got - want).abs() <= want * 4e-7, "{x}: {got} vs {want}");
        }
    }

    #[test]
    #[ignore = "micro-benchmark: cargo test --release -- --ignored --nocapture"]
    fn bench_sample_49152() {
        // "flat": uniform in [-6, 6); "peaked": the same / 2 plus 20 spikes at +12.
        let flat = row(49_152, 3);
        let mut peaked: Vec<f32> = flat.iter().map(|l| l / 2.0).collect();
        (0..20).for_each(|i| peaked[i * 2011] += 12.0);
        let cases = [
            ("greedy", sp(0.0, |_| ())),
            ("temperature 0.8", sp(0.8, |_| ())),
            ("top_p 0.9", sp(1.0, |p| p.top_p = 0.9)),
            ("top_k 50", sp(1.0, |p| p.top_k = Some(50))),
        ];
        let rows = [("flat", &flat), ("peaked", &peaked)];
        for ((case, p), (row, logits)) in cases.iter().flat_map(|c| [c, c].into_iter().zip(rows)) {
            let (mut s, mut buf) = (Sampler::new(p, &[], 0), logits.clone());
            let start = std::time::Instant::now();
            for _ in 0..2000 {
                buf.copy_from_slice(logits); // ~3.5 us of the figure
                std::hint::black_box(s.sample(&mut buf));
            }
            let per = start.elapsed() / 2000;
            println!("{case:>15} {row:>6}: {per:?} per sample()");
        }
    }
}
