//! `argmax`, `top_k_lse` and `log_softmax` over f32 logits `[rows, vocab]`
//! (`kernels/cuda/sampling.cu`). CPU spec, and the contract (order, ties, NaN, temperature):
//! [`crate::reference::sampling`].

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_nonzero, grid, int};
use crate::cuda::{CudaError, Gpu};

/// The largest `k` [`SamplingKernels::top_k_lse`] takes (`INFERD_MAX_TOP_K` in the kernel).
pub const MAX_TOP_K: usize = 256;

/// Threads per block of the sampling kernels (one block per row; `top_k_lse` needs a
/// multiple of 32, at least 256).
const SAMPLING_THREADS: u32 = 1024;

/// The sampling reductions (f32 logits: one set for every model dtype).
pub struct SamplingKernels {
    argmax: CudaFunction,
    top_k_lse: CudaFunction,
    log_softmax: CudaFunction,
}

impl SamplingKernels {
    pub fn new(gpu: &Gpu) -> Result<Self, CudaError> {
        Ok(Self {
            argmax: gpu.function("argmax_f32")?,
            top_k_lse: gpu.function("top_k_lse_f32")?,
            log_softmax: gpu.function("log_softmax_f32")?,
        })
    }

    /// `out[r]` = the id of row `r`'s largest logit (lowest id among equals).
    pub fn argmax(
        &self,
        gpu: &Gpu,
        rows: usize,
        vocab: usize,
        logits: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, u32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "argmax";
        let vocab_i = check(OP, rows, vocab, logits)?;
        check_at_least(OP, "out", out.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let mut b = gpu.stream().launch_builder(&self.argmax);
        b.arg(logits).arg(&vocab_i).arg(out);
        // SAFETY: lengths checked; the kernel reads `rows` rows of `vocab` and writes `rows`.
        unsafe { b.launch(config(OP, rows)?) }?;
        Ok(())
    }

    /// Per row `r`: the `k` best `(id, logit)` pairs, best first, into `ids`/`top_logits`
    /// `[rows, k]`, and the log-sum-exp at temperature 1 into `lse[r]` and at
    /// `temperatures[r]` into `lse_t[r]`. `1 <= k <= min(vocab, MAX_TOP_K)`.
    #[allow(clippy::too_many_arguments)]
    pub fn top_k_lse(
        &self,
        gpu: &Gpu,
        rows: usize,
        vocab: usize,
        k: usize,
        logits: &CudaView<'_, f32>,
        temperatures: &CudaView<'_, f32>,
        ids: &mut CudaViewMut<'_, u32>,
        top_logits: &mut CudaViewMut<'_, f32>,
        lse: &mut CudaViewMut<'_, f32>,
        lse_t: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "top_k_lse";
        let vocab_i = check(OP, rows, vocab, logits)?;
        if k == 0 || k > MAX_TOP_K.min(vocab) {
            return Err(CudaError::Unsupported {
                op: OP,
                reason: format!("k = {k} (must be 1..={} for {vocab} logits)", MAX_TOP_K),
            });
        }
        check_at_least(OP, "temperatures", temperatures.len(), rows)?;
        check_at_least(OP, "ids", ids.len(), rows * k)?;
        check_at_least(OP, "top_logits", top_logits.len(), rows * k)?;
        check_at_least(OP, "lse", lse.len(), rows)?;
        check_at_least(OP, "lse_t", lse_t.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let k_i = k as i32;
        let mut b = gpu.stream().launch_builder(&self.top_k_lse);
        b.arg(logits)
            .arg(&vocab_i)
            .arg(&k_i)
            .arg(temperatures)
            .arg(ids)
            .arg(top_logits)
            .arg(lse)
            .arg(lse_t);
        // SAFETY: lengths checked; `1 <= k <= min(vocab, MAX_TOP_K)` as the kernel needs
        // (its candidate buffer holds MAX_TOP_K); it reads `rows` rows of `vocab` and
        // `rows` temperatures, writes `rows * k` pairs and `rows` of each lse.
        unsafe { b.launch(config(OP, rows)?) }?;
        Ok(())
    }

    /// `out = logits - lse(row)` for every row, `[rows, vocab]`.
    pub fn log_softmax(
        &self,
        gpu: &Gpu,
        rows: usize,
        vocab: usize,
        logits: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "log_softmax";
        let vocab_i = check(OP, rows, vocab, logits)?;
        check_at_least(OP, "out", out.len(), rows * vocab)?;
        if rows == 0 {
            return Ok(());
        }
        let mut b = gpu.stream().launch_builder(&self.log_softmax);
        b.arg(logits).arg(out).arg(&vocab_i);
        // SAFETY: lengths checked; the kernel reads and writes `rows` rows of `vocab`.
        unsafe { b.launch(config(OP, rows)?) }?;
        Ok(())
    }
}

fn check(
    op: &'static str,
    rows: usize,
    vocab: usize,
    logits: &CudaView<'_, f32>,
) -> Result<i32, CudaError> {
    check_nonzero(op, "vocab", vocab)?;
    let vocab_i = int(op, "vocab", vocab)?;
    check_at_least(op, "logits", logits.len(), rows * vocab)?;
    Ok(vocab_i)
}

fn config(op: &'static str, rows: usize) -> Result<LaunchConfig, CudaError> {
    Ok(LaunchConfig {
        grid_dim: (grid(op, rows)?, 1, 1),
        block_dim: (SAMPLING_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}
