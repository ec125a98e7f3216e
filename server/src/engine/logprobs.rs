//! Log-probabilities of the model's raw next-token distribution (before penalties,
//! temperature and truncation, as OpenAI and vLLM report them).

/// The log-sum-exp of a logit row (NaN counts as -inf); `None` if no logit is finite.
pub fn log_sum_exp(logits: &[f32]) -> Option<f32> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f64 = logits
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| ((v - max) as f64).exp())
        .sum();
    Some(max + sum.ln() as f32)
}

/// The floor of reported logprobs (vLLM's): a token the model rules out (a `-inf` or NaN
/// logit) reports this instead of `-inf`, which JSON cannot carry (serde_json would write
/// `null`, which neither OpenAI clients nor the gateway's wire protocol read as a number).
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// The logprob of token `t` given the row's log-sum-exp, never below [`LOGPROB_FLOOR`].
pub fn logprob(logits: &[f32], lse: f32, t: u32) -> f32 {
    match logits.get(t as usize) {
        Some(&v) if !v.is_nan() => (v - lse).max(LOGPROB_FLOOR),
        _ => LOGPROB_FLOOR,
    }
}

/// The `k` most likely tokens with their logprobs, most likely first (ties: lower id).
pub fn top_k(logits: &[f32], lse: f32, k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let key = |i: &u32| {
        let v = logits[*i as usize];
        if v.is_nan() {
            f32::NEG_INFINITY
        } else {
            v
        }
    };
    let cmp = |a: &u32, b: &u32| key(b).total_cmp(&key(a)).then(a.cmp(b));
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|i| (i, logprob(logits, lse, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_normalized_log_softmax_and_top_is_sorted() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, f32::NAN];
        let lse = log_sum_exp(&logits).unwrap();
        let total: f32 = (0..4).map(|t| logprob(&logits, lse, t).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(logprob(&logits, lse, 4), LOGPROB_FLOOR);
        let ruled_out = [0.0f32, f32::NEG_INFINITY];
        let lse = log_sum_exp(&ruled_out).unwrap();
        assert_eq!(logprob(&ruled_out, lse, 1), LOGPROB_FLOOR);
        assert!(serde_json::to_string(&logprob(&ruled_out, lse, 1))
            .unwrap()
            .starts_with("-9999"));
        let top = top_k(&logits, lse, 3);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!((top[0].1 - logprob(&logits, lse, 1)).abs() < 1e-7);
        assert!(log_sum_exp(&[f32::NAN]).is_none());
    }
}
