//! The GPU decoder's per-step buffers, sized for the largest step seen (or reserved at
//! start-up) and reused: a step allocates nothing once they are big enough.

use inferd_kernels::cuda::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use inferd_kernels::cuda::ops::sampling::MAX_TOP_K;
use inferd_kernels::cuda::{CudaError, Gpu};

/// Widths of one token's activations.
pub(super) struct Dims {
    pub hidden: usize,
    /// `num_heads * head_dim`.
    pub q: usize,
    /// `num_kv_heads * head_dim`.
    pub kv: usize,
    pub inter: usize,
    pub vocab: usize,
}

pub(super) struct Scratch {
    /// The residual stream `[tokens, hidden]`.
    pub x: CudaSlice<u16>,
    /// Normalized input of the next GEMM `[tokens, hidden]`; also the gathered logit rows.
    pub h: CudaSlice<u16>,
    pub q: CudaSlice<u16>,
    pub k: CudaSlice<u16>,
    pub v: CudaSlice<u16>,
    /// Attention output `[tokens, q]`.
    pub attn: CudaSlice<u16>,
    /// `[tokens, 2 * inter]`.
    pub gate_up: CudaSlice<u16>,
    /// `[tokens, inter]`.
    pub act: CudaSlice<u16>,
    /// The normalized logit rows `[rows, hidden]`.
    pub last: CudaSlice<u16>,
    /// f32 `[rows, vocab]`.
    pub logits: CudaSlice<f32>,
    /// The packed step (`StepMeta::data`).
    pub meta: CudaSlice<u32>,
    /// Split-K partials of decode attention.
    pub attn_scratch: CudaSlice<f32>,
    /// The argmax ids of the logit rows.
    pub ids: CudaSlice<u32>,
    /// `top_k_lse` out: `[rows, MAX_TOP_K]` ids and logits, `[rows]` log-sum-exps.
    pub cand_ids: CudaSlice<u32>,
    pub cand_logits: CudaSlice<f32>,
    pub lse: CudaSlice<f32>,
    pub lse_t: CudaSlice<f32>,
}

/// Replaces `slot` by a zeroed buffer of at least `len` elements when it is smaller
/// (rounded up to a power of two, so that growing steps reallocate rarely); sets `grew`.
fn grow<T: DeviceRepr + ValidAsZeroBits>(
    gpu: &Gpu,
    slot: &mut CudaSlice<T>,
    len: usize,
    grew: &mut bool,
) -> Result<(), CudaError> {
    if slot.len() < len {
        *slot = gpu.stream().alloc_zeros::<T>(len.next_power_of_two())?;
        *grew = true;
    }
    Ok(())
}

impl Scratch {
    pub fn new(gpu: &Gpu) -> Result<Self, CudaError> {
        let s = gpu.stream();
        Ok(Self {
            x: s.alloc_zeros(1)?,
            h: s.alloc_zeros(1)?,
            q: s.alloc_zeros(1)?,
            k: s.alloc_zeros(1)?,
            v: s.alloc_zeros(1)?,
            attn: s.alloc_zeros(1)?,
            gate_up: s.alloc_zeros(1)?,
            act: s.alloc_zeros(1)?,
            last: s.alloc_zeros(1)?,
            logits: s.alloc_zeros(1)?,
            meta: s.alloc_zeros(1)?,
            attn_scratch: s.alloc_zeros(1)?,
            ids: s.alloc_zeros(1)?,
            cand_ids: s.alloc_zeros(1)?,
            cand_logits: s.alloc_zeros(1)?,
            lse: s.alloc_zeros(1)?,
            lse_t: s.alloc_zeros(1)?,
        })
    }

    /// Makes every buffer big enough for `tokens` tokens, `rows` logit rows, a packed step
    /// of `meta` words and `attn_scratch` split-K floats. Answers whether a buffer moved
    /// (captured CUDA graphs read the old addresses).
    pub fn ensure(
        &mut self,
        gpu: &Gpu,
        d: &Dims,
        tokens: usize,
        rows: usize,
        meta: usize,
        attn_scratch: usize,
    ) -> Result<bool, CudaError> {
        let g = &mut false;
        grow(gpu, &mut self.x, tokens * d.hidden, g)?;
        grow(gpu, &mut self.h, tokens * d.hidden, g)?;
        grow(gpu, &mut self.q, tokens * d.q, g)?;
        grow(gpu, &mut self.k, tokens * d.kv, g)?;
        grow(gpu, &mut self.v, tokens * d.kv, g)?;
        grow(gpu, &mut self.attn, tokens * d.q, g)?;
        grow(gpu, &mut self.gate_up, tokens * 2 * d.inter, g)?;
        grow(gpu, &mut self.act, tokens * d.inter, g)?;
        grow(gpu, &mut self.last, rows * d.hidden, g)?;
        grow(gpu, &mut self.logits, rows * d.vocab, g)?;
        grow(gpu, &mut self.meta, meta, g)?;
        grow(gpu, &mut self.attn_scratch, attn_scratch.max(1), g)?;
        grow(gpu, &mut self.ids, rows, g)?;
        grow(gpu, &mut self.cand_ids, rows * MAX_TOP_K, g)?;
        grow(gpu, &mut self.cand_logits, rows * MAX_TOP_K, g)?;
        grow(gpu, &mut self.lse, rows, g)?;
        grow(gpu, &mut self.lse_t, rows, g)?;
        Ok(*g)
    }
}
