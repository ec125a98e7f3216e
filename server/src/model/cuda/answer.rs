//! The logit rows' answers of a GPU step (the f32 rows stay in device memory): argmax ids
//! for plain greedy rows, the best candidates and log-sum-exps (`top_k_lse`) for top-k and
//! top-p rows whose candidates hold their nucleus, full rows for the rest. What crosses to
//! the host is what each [`RowNeed`] reads.

use inferd_kernels::cuda::ops::sampling::{SamplingKernels, MAX_TOP_K};
use inferd_kernels::cuda::{CudaError, Gpu};

use super::scratch::Scratch;
use crate::model::{Candidates, ForwardBatch, Logits, ModelError, RowAnswer, RowNeed};

const _: () = assert!(MAX_TOP_K == crate::model::MAX_CANDIDATES);

/// Answers the `rows` logit rows of `sc.logits` as `batch.needs` asks; `temps_at` is where
/// the step's [`crate::model::step_meta::Section::Temperatures`] lies in `sc.meta`.
pub(super) fn answer(
    gpu: &Gpu,
    sampling: &SamplingKernels,
    batch: &ForwardBatch,
    rows: usize,
    vocab: usize,
    temps_at: std::ops::Range<usize>,
    sc: &mut Scratch,
) -> Result<Logits, ModelError> {
    let stream = gpu.stream();
    let needs: Vec<RowNeed> = (0..rows).map(|r| batch.need(r)).collect();
    if needs.iter().all(|n| *n == RowNeed::Argmax) {
        sampling
            .argmax(
                gpu,
                rows,
                vocab,
                &sc.logits.slice(..),
                &mut sc.ids.slice_mut(..),
            )
            .map_err(ModelError::Cuda)?;
        let ids = stream
            .clone_dtoh(&sc.ids.slice(..rows))
            .map_err(CudaError::from)?;
        return Ok(Logits::answered(
            vec![],
            vocab,
            ids.into_iter().map(RowAnswer::Argmax).collect(),
        ));
    }
    if needs.iter().all(|n| *n == RowNeed::Full) {
        let data = stream
            .clone_dtoh(&sc.logits.slice(..rows * vocab))
            .map_err(CudaError::from)?;
        return Ok(Logits::full(data, vocab));
    }
    // Candidates for every row, as many as the widest need (an argmax is the first).
    let k = needs
        .iter()
        .map(|n| match n {
            RowNeed::Top { k, .. } => *k,
            _ => 1,
        })
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_TOP_K.min(vocab));
    let temps = sc.meta.slice(temps_at);
    // SAFETY: the section holds the bits of `rows` f32s (StepMeta::pack), and u32 and f32
    // share size and alignment.
    let temps = unsafe { temps.transmute::<f32>(rows) }.ok_or_else(|| {
        ModelError::Batch("the step's temperatures are shorter than its rows".into())
    })?;
    sampling
        .top_k_lse(
            gpu,
            rows,
            vocab,
            k,
            &sc.logits.slice(..),
            &temps,
            &mut sc.cand_ids.slice_mut(..),
            &mut sc.cand_logits.slice_mut(..),
            &mut sc.lse.slice_mut(..),
            &mut sc.lse_t.slice_mut(..),
        )
        .map_err(ModelError::Cuda)?;
    let dtoh = |e| ModelError::Cuda(CudaError::from(e));
    let ids = stream
        .clone_dtoh(&sc.cand_ids.slice(..rows * k))
        .map_err(dtoh)?;
    let logits = stream
        .clone_dtoh(&sc.cand_logits.slice(..rows * k))
        .map_err(dtoh)?;
    let lse = stream.clone_dtoh(&sc.lse.slice(..rows)).map_err(dtoh)?;
    let lse_t = stream.clone_dtoh(&sc.lse_t.slice(..rows)).map_err(dtoh)?;
    let (mut data, mut answers) = (Vec::new(), Vec::with_capacity(rows));
    for (r, &need) in needs.iter().enumerate() {
        let row = r * k..(r + 1) * k;
        let answer = match need {
            RowNeed::Argmax => Some(RowAnswer::Argmax(ids[r * k])),
            RowNeed::Top { k: want, .. } => {
                let n = want.min(k);
                let c = Candidates {
                    ids: ids[row.start..row.start + n].to_vec(),
                    logits: logits[row.start..row.start + n].to_vec(),
                    lse: lse[r],
                    lse_t: lse_t[r],
                };
                c.answer(need).then_some(RowAnswer::Top(c))
            }
            RowNeed::Full => None,
        };
        answers.push(match answer {
            Some(a) => a,
            None => {
                // A full row (a penalty, or a nucleus past the candidates).
                let full = sc.logits.slice(r * vocab..(r + 1) * vocab);
                data.extend(stream.clone_dtoh(&full).map_err(dtoh)?);
                RowAnswer::Full(data.len() / vocab - 1)
            }
        });
    }
    Ok(Logits::answered(data, vocab, answers))
}
