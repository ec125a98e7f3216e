//! One sampled token (with its logprobs when the request asked) from a logit row as the
//! decoder answered it: a full row, an argmax id, or the row's best candidates.

use super::logprobs::{log_sum_exp, logprob, top_k, LOGPROB_FLOOR};
use super::sampler::Sampler;
use super::types::SampledToken;
use crate::model::logits::Row;
use crate::model::Candidates;

/// Samples the row of a sequence whose `sampler` and `logprobs` (top count) made the need
/// the decoder answered.
pub fn pick(
    sampler: &mut Sampler,
    logprobs: Option<usize>,
    row: Row<'_>,
    vocab: usize,
) -> SampledToken {
    match row {
        // Only plain greedy rows without logprobs are answered so: nothing to record.
        Row::Argmax(id) => SampledToken {
            id,
            ..Default::default()
        },
        Row::Top(c) => {
            let id = sampler.sample_top(c, vocab);
            match logprobs {
                Some(k) if c.lse.is_finite() => from_candidates(c, id, k),
                _ => SampledToken {
                    id,
                    ..Default::default()
                },
            }
        }
        Row::Full(row) => match logprobs {
            None => SampledToken {
                id: sampler.sample(row),
                ..Default::default()
            },
            Some(k) => {
                // The sampler uses its row as scratch: keep the raw logits.
                let raw = row.to_vec();
                let id = sampler.sample(row);
                match log_sum_exp(&raw) {
                    Some(lse) => SampledToken {
                        id,
                        logprob: Some(logprob(&raw, lse, id)),
                        top: top_k(&raw, lse, k),
                    },
                    None => SampledToken {
                        id,
                        ..Default::default()
                    },
                }
            }
        },
    }
}

/// The logprob of `id` and the `k` most likely tokens, from candidates that hold them (the
/// candidates are in the order `logprobs::top_k` reports).
fn from_candidates(c: &Candidates, id: u32, k: usize) -> SampledToken {
    let lp = |l: f32| (l - c.lse).max(LOGPROB_FLOOR);
    let at = c.ids.iter().position(|&i| i == id);
    SampledToken {
        id,
        logprob: Some(at.map_or(LOGPROB_FLOOR, |i| lp(c.logits[i]))),
        top: c
            .ids
            .iter()
            .zip(&c.logits)
            .take(k)
            .map(|(&i, &l)| (i, lp(l)))
            .collect(),
    }
}
