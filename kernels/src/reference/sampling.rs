//! Sampling reductions over f32 logit rows (`kernels/cuda/sampling.cu`): `argmax`,
//! `top_k_lse` (the `k` best `(id, logit)` pairs and the row's log-sum-exp at temperature 1
//! and at the row's temperature: what `RowNeed::Top` rows bring back from the GPU instead of
//! the full row) and `log_softmax`.
//!
//! # Order and non-finite values
//!
//! Candidates rank by [`rank_key`]: by value, `-0.0 == +0.0`, NaN below everything (below
//! `-inf`); equal keys rank the lower id first. So [`argmax`] is the engine sampler's greedy
//! pick (the first maximum of the non-NaN values, 0 when every value is NaN), and
//! `top_k_lse(row, 1, _)` picks the same token. A NaN that still makes the top `k` (fewer
//! than `k` non-NaN values) is reported with logit `-inf`. (`engine::logprobs::top_k` ties
//! NaN with `-inf`; the two only differ in which `-inf`-or-NaN tokens fill a list whose
//! logprobs are all at the floor.)
//!
//! Log-sum-exps skip NaN (as `engine::logprobs::log_sum_exp`): with `m` the largest non-NaN
//! value and `s = 1 / temperature`, `lse_t = m * s + ln(sum(exp((v - m) * s)))`; when `m` is
//! not finite (every value NaN or `-inf`, or a `+inf`) it is `m` itself. A temperature whose
//! inverse is not positive and finite (greedy's 0 included) counts as 1.

/// An order-preserving `u32` key of a logit: `a < b` as floats iff `key(a) < key(b)`, except
/// that `-0.0` and `+0.0` share a key and NaN maps to 0, below every other value.
pub fn rank_key(v: f32) -> u32 {
    if v.is_nan() {
        return 0;
    }
    let b = if v == 0.0 { 0 } else { v.to_bits() };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The id of the largest logit (lowest id among equals); 0 for an empty row.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = (0u32, 0usize);
    for (i, &v) in row.iter().enumerate() {
        let k = rank_key(v);
        if k > best.0 || i == 0 {
            best = (k, i);
        }
    }
    best.1 as u32
}

/// `1 / temperature`, or 1 where that is not positive and finite.
pub fn inv_temperature(temperature: f32) -> f32 {
    let s = 1.0 / temperature;
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1.0
    }
}

/// The row's log-sum-exp at `temperature` (see the module doc), summed in f64.
pub fn log_sum_exp(row: &[f32], temperature: f32) -> f32 {
    let s = inv_temperature(temperature);
    let m = row
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return m;
    }
    let sum: f64 = row
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| f64::from((v - m) * s).exp())
        .sum();
    m * s + sum.ln() as f32
}

/// The `k` best candidates of a row and its log-sum-exps.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Best first (see the module doc for the order).
    pub ids: Vec<u32>,
    /// `row[id]`, NaN reported as `-inf`.
    pub logits: Vec<f32>,
    /// Log-sum-exp at temperature 1.
    pub lse: f32,
    /// Log-sum-exp at the given temperature.
    pub lse_t: f32,
}

/// The `min(k, row.len())` best `(id, logit)` pairs of `row` and its log-sum-exps at
/// temperature 1 and at `temperature`. (The kernel refuses `k > vocab`.)
pub fn top_k_lse(row: &[f32], k: usize, temperature: f32) -> TopK {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        let (ka, kb) = (rank_key(row[*a as usize]), rank_key(row[*b as usize]));
        kb.cmp(&ka).then(a.cmp(b))
    };
    let k = k.min(row.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    let logits = idx
        .iter()
        .map(|&i| match row[i as usize] {
            v if v.is_nan() => f32::NEG_INFINITY,
            v => v,
        })
        .collect();
    TopK {
        ids: idx,
        logits,
        lse: log_sum_exp(row, 1.0),
        lse_t: log_sum_exp(row, temperature),
    }
}

/// `out[i] = row[i] - log_sum_exp(row, 1)` (NaN stays NaN).
///
/// # Panics
/// If `out.len() != row.len()`.
pub fn log_softmax(row: &[f32], out: &mut [f32]) {
    assert_eq!(out.len(), row.len(), "log_softmax: out");
    let lse = log_sum_exp(row, 1.0);
    for (o, &v) in out.iter_mut().zip(row) {
        *o = v - lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f32 = f32::NAN;
    const INF: f32 = f32::INFINITY;

    #[test]
    fn rank_key_orders_like_the_floats() {
        let vals = [-INF, -3.5, -1e-40, -0.0, 0.0, 1e-40, 2.0, 3.0e38, INF];
        for w in vals.windows(2) {
            let (a, b) = (rank_key(w[0]), rank_key(w[1]));
            assert!(a < b || (w[0] == w[1] && a == b), "{w:?}");
        }
        assert_eq!(rank_key(-0.0), rank_key(0.0));
        assert_eq!(rank_key(NAN), 0);
        assert_eq!(rank_key(-NAN), 0);
        assert!(rank_key(-INF) > 0);
    }

    #[test]
    fn argmax_is_the_samplers_greedy_pick() {
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 2.9]), 1);
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
        assert_eq!(argmax(&[-0.0, 0.0]), 0);
        assert_eq!(argmax(&[0.0, -0.0]), 0);
        assert_eq!(argmax(&[NAN, 1.0, NAN, 0.5]), 1);
        assert_eq!(argmax(&[NAN, -INF, -INF]), 1);
        assert_eq!(argmax(&[NAN, NAN]), 0);
        assert_eq!(argmax(&[0.0, INF, 1.0, INF]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn top_k_sorts_descending_with_ties_to_the_lower_id() {
        let row = [1.0f32, 3.0, 2.0, 3.0, NAN, -INF, 2.0];
        let t = top_k_lse(&row, 5, 1.0);
        assert_eq!(t.ids, [1, 3, 2, 6, 0]);
        assert_eq!(t.logits, [3.0, 3.0, 2.0, 2.0, 1.0]);
        let all = top_k_lse(&row, 10, 1.0);
        assert_eq!(all.ids, [1, 3, 2, 6, 0, 5, 4]);
        assert_eq!(all.logits[5..], [-INF, -INF]);
        for k in 1..=row.len() {
            let t = top_k_lse(&row, k, 1.0);
            assert_eq!(t.ids, all.ids[..k]);
            assert_eq!(t.ids[0], argmax(&row));
        }
        assert!(top_k_lse(&row, 0, 1.0).ids.is_empty());
    }

    #[test]
    fn lse_matches_a_direct_computation() {
        let row: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let direct = |s: f64| {
            row.iter()
                .map(|&v| (f64::from(v) * s).exp())
                .sum::<f64>()
                .ln()
        };
        for (t, s) in [(1.0f32, 1.0f64), (0.5, 2.0), (2.0, 0.5), (0.7, 1.0 / 0.7)] {
            let got = top_k_lse(&row, 5, t);
            assert!((f64::from(got.lse) - direct(1.0)).abs() < 1e-5, "{t}");
            assert!(
                (f64::from(got.lse_t) - direct(s)).abs() < 1e-4,
                "{t}: {}",
                got.lse_t
            );
        }
        // Temperature 0 (greedy), negative or infinite: as temperature 1.
        for t in [0.0, -1.0, INF, NAN] {
            let got = top_k_lse(&row, 1, t);
            assert_eq!(got.lse_t, got.lse, "{t}");
        }
        // NaN is skipped; non-finite maxima are the lse.
        assert_eq!(log_sum_exp(&[0.0, NAN, 0.0], 1.0), 2f32.ln());
        assert_eq!(log_sum_exp(&[NAN, -INF], 1.0), -INF);
        assert_eq!(log_sum_exp(&[1.0, INF], 0.5), INF);
        assert_eq!(log_sum_exp(&[-INF, 0.0], 1.0), 0.0);
    }

    #[test]
    fn log_softmax_is_normalized() {
        let row = [1.0f32, 2.0, 0.5, -3.0];
        let mut out = [0f32; 4];
        log_softmax(&row, &mut out);
        let total: f32 = out.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(out[1] - out[0], 1.0);
    }

    /// The kernel's algorithm, sequentially: a radix select of the k-th best key over four
    /// 8-bit digits, then the keys above it and the lowest-id ones equal to it, sorted.
    fn radix_top_k(row: &[f32], k: usize) -> Vec<u32> {
        let (mut prefix, mut mask, mut remaining) = (0u32, 0u32, k as u32);
        for shift in [24, 16, 8, 0] {
            let mut hist = [0u32; 256];
            for &v in row {
                let key = rank_key(v);
                if key & mask == prefix {
                    hist[((key >> shift) & 255) as usize] += 1;
                }
            }
            for b in (0..255).rev() {
                hist[b] += hist[b + 1]; // suffix sums
            }
            let bin = (0..256)
                .find(|&b| {
                    let above = if b < 255 { hist[b + 1] } else { 0 };
                    above < remaining && hist[b] >= remaining
                })
                .expect("exactly one bin holds the remaining-th key");
            let above = if bin < 255 { hist[bin + 1] } else { 0 };
            prefix |= (bin as u32) << shift;
            mask |= 255 << shift;
            remaining -= above;
        }
        let mut cand: Vec<u64> = Vec::new();
        let mut eq = 0;
        for (i, &v) in row.iter().enumerate() {
            let key = rank_key(v);
            let packed = (u64::from(key) << 32) | u64::from(!(i as u32));
            if key > prefix || (key == prefix && eq < remaining) {
                eq += u32::from(key == prefix);
                cand.push(packed);
            }
        }
        assert_eq!(cand.len(), k);
        cand.sort_unstable_by(|a, b| b.cmp(a));
        cand.iter().map(|&p| !(p as u32)).collect()
    }

    #[test]
    fn the_kernels_radix_select_is_top_k() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for vocab in [1usize, 7, 300, 5000] {
            for trial in 0..6 {
                let row: Vec<f32> = (0..vocab)
                    .map(|_| match (next() % 16, trial) {
                        (0, 1..) => NAN,
                        (1, 2..) => -INF,
                        (2, 3..) => -0.0,
                        (3, 4..) => INF,
                        // Few distinct values at trial 5: long runs of ties.
                        (_, 5) => (next() % 4) as f32,
                        _ => (next() % 20_000) as f32 / 1000.0 - 10.0,
                    })
                    .collect();
                for k in [1, 2, 5, 40, 256].into_iter().filter(|&k| k <= vocab) {
                    let want = top_k_lse(&row, k, 1.0).ids;
                    assert_eq!(
                        radix_top_k(&row, k),
                        want,
                        "vocab {vocab} trial {trial} k {k}"
                    );
                }
            }
        }
    }
}
