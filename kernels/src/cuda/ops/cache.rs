//! `reshape_and_cache` and `copy_blocks` (`kernels/cuda/cache.cu`). CPU spec:
//! [`crate::reshape_and_cache`] (and a plain block copy).

use cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_len, grid, THREADS};
use crate::cuda::{CudaError, Dtype, Gpu};

/// Shape of one layer's paged KV cache: K and V each `[num_blocks, block_size, num_kv_heads,
/// head_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheShape {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl CacheShape {
    /// Elements of one token's K (or V) row.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Elements of one layer's K (or V) cache.
    pub fn elements(&self) -> usize {
        self.num_blocks * self.block_size * self.kv_width()
    }
}

/// The cache kernels of one dtype.
pub struct CacheKernels {
    reshape_and_cache: CudaFunction,
    copy_blocks: CudaFunction,
}

impl CacheKernels {
    pub fn new(gpu: &Gpu, dtype: Dtype) -> Result<Self, CudaError> {
        let s = dtype.suffix();
        Ok(Self {
            reshape_and_cache: gpu.function(&format!("reshape_and_cache_{s}"))?,
            copy_blocks: gpu.function(&format!("copy_blocks_{s}"))?,
        })
    }

    /// Writes `k`/`v` (`[num_tokens, num_kv_heads, head_dim]`) into their cache slots;
    /// a slot of `u32::MAX` skips its token.
    #[allow(clippy::too_many_arguments)]
    pub fn reshape_and_cache(
        &self,
        gpu: &Gpu,
        shape: CacheShape,
        num_tokens: usize,
        k: &CudaView<'_, u16>,
        v: &CudaView<'_, u16>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        slot_mapping: &CudaView<'_, u32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "reshape_and_cache";
        let width = shape.kv_width();
        check_at_least(OP, "key", k.len(), num_tokens * width)?;
        check_at_least(OP, "value", v.len(), num_tokens * width)?;
        check_len(OP, "key_cache", k_cache.len(), shape.elements())?;
        check_len(OP, "value_cache", v_cache.len(), shape.elements())?;
        check_at_least(OP, "slot_mapping", slot_mapping.len(), num_tokens)?;
        if num_tokens == 0 {
            return Ok(());
        }
        let width = width as i32;
        let cfg = LaunchConfig {
            grid_dim: (grid(OP, num_tokens)?, 1, 1),
            block_dim: (THREADS.min(width as u32).max(32), 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.reshape_and_cache);
        b.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(slot_mapping)
            .arg(&width);
        // SAFETY: lengths checked above; the kernel reads `num_tokens` rows of `k`/`v` and
        // slots, and writes rows `< num_blocks * block_size` (slots come from the engine's
        // block tables, which only hold blocks of this cache).
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Copies whole blocks, `pairs = [src0, dst0, src1, dst1, ...]`, in K and V.
    pub fn copy_blocks(
        &self,
        gpu: &Gpu,
        shape: CacheShape,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        pairs: &CudaView<'_, u32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "copy_blocks";
        check_len(OP, "key_cache", k_cache.len(), shape.elements())?;
        check_len(OP, "value_cache", v_cache.len(), shape.elements())?;
        if pairs.len() % 2 != 0 {
            return Err(CudaError::Shape {
                op: OP,
                reason: format!(
                    "`pairs` holds {} elements, not (src, dst) pairs",
                    pairs.len()
                ),
            });
        }
        let n = pairs.len() / 2;
        if n == 0 {
            return Ok(());
        }
        let block_width = shape.block_size * shape.kv_width();
        let cfg = LaunchConfig {
            grid_dim: (grid(OP, n)?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.copy_blocks);
        b.arg(k_cache).arg(v_cache).arg(pairs).arg(&block_width);
        // SAFETY: lengths checked; block indices come from the engine's block pool.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
