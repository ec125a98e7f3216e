//! `embedding` (`kernels/cuda/embedding.cu`): rows of a `[vocab, hidden]` table gathered by
//! token id; an id `>= vocab` yields a zero row. CPU spec: [`crate::reference::embedding`].

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_nonzero, grid, int, THREADS};
use crate::cuda::{CudaError, Dtype, Gpu};

/// The embedding gather of one dtype.
pub struct EmbeddingKernels {
    embedding: CudaFunction,
}

impl EmbeddingKernels {
    pub fn new(gpu: &Gpu, dtype: Dtype) -> Result<Self, CudaError> {
        Ok(Self {
            embedding: gpu.function(&format!("embedding_{}", dtype.suffix()))?,
        })
    }

    /// `out[t] = table[ids[t]]` for `t < num_tokens`; `table [vocab, hidden]`,
    /// `out [num_tokens, hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding(
        &self,
        gpu: &Gpu,
        vocab: usize,
        hidden: usize,
        num_tokens: usize,
        table: &CudaView<'_, u16>,
        ids: &CudaView<'_, u32>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "embedding";
        check_nonzero(OP, "hidden", hidden)?;
        let hidden_i = int(OP, "hidden", hidden)?;
        let vocab_u = u32::try_from(vocab).map_err(|_| CudaError::Unsupported {
            op: OP,
            reason: format!("vocabulary of {vocab}"),
        })?;
        check_at_least(OP, "table", table.len(), vocab * hidden)?;
        check_at_least(OP, "ids", ids.len(), num_tokens)?;
        check_at_least(OP, "out", out.len(), num_tokens * hidden)?;
        if num_tokens == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: (grid(OP, num_tokens)?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.embedding);
        b.arg(table).arg(ids).arg(out).arg(&hidden_i).arg(&vocab_u);
        // SAFETY: lengths checked above; the kernel reads `num_tokens` ids, only table rows
        // `< vocab` (others give zeros), and writes `num_tokens` rows of `out`.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
