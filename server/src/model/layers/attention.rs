//! Multi-head (grouped-query) self-attention over the paged KV cache.

use candle_core::{Device, Tensor};

use super::{Linear, Rope, RopeAt};
use crate::model::{ForwardBatch, ModelError};

/// The KV addressing of one step, shared by every layer.
pub struct PagedBatch {
    /// `[tokens]` u32: where each new token's K/V goes.
    slots: Tensor,
    /// `[seqs, width]` u32, each row a sequence's block table padded with zeros.
    block_tables: Tensor,
    /// `[seqs]` u32: cached tokens per sequence after this step.
    context_lens: Tensor,
    /// `[seqs + 1]` u32: cumulative query offsets.
    query_start_loc: Tensor,
}

impl PagedBatch {
    pub fn new(batch: &ForwardBatch, device: &Device) -> Result<Self, ModelError> {
        let n = batch.seqs.len();
        let width = batch.table_width();
        let mut tables = vec![0u32; n * width];
        let mut ctx = Vec::with_capacity(n);
        let mut qsl = Vec::with_capacity(n + 1);
        qsl.push(0u32);
        for (i, s) in batch.seqs.iter().enumerate() {
            tables[i * width..i * width + s.block_table.len()].copy_from_slice(&s.block_table);
            ctx.push(s.context_len as u32);
            qsl.push(qsl[i] + s.query_len as u32);
        }
        let t = batch.num_tokens();
        Ok(Self {
            slots: Tensor::from_slice(&batch.slot_mapping, t, device)?,
            block_tables: Tensor::from_vec(tables, (n, width), device)?,
            context_lens: Tensor::from_vec(ctx, n, device)?,
            query_start_loc: Tensor::from_vec(qsl, n + 1, device)?,
        })
    }
}

/// Projections and head layout of one attention block (no biases).
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    pub fn new(
        [q, k, v, o]: [Linear; 4],
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            q,
            k,
            v,
            o,
            num_heads,
            num_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }

    /// `h: [tokens, hidden]` (normalized) → the output projection `[tokens, hidden]`.
    /// Writes the new tokens' K/V into `kv` (this layer's cache) before attending.
    pub fn forward(
        &self,
        h: &Tensor,
        rope: &Rope,
        at: &RopeAt,
        paged: &PagedBatch,
        (k_cache, v_cache): (&Tensor, &Tensor),
    ) -> Result<Tensor, ModelError> {
        let t = h.dim(0)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = rope.apply(&self.q.forward(h)?.reshape((t, nh, hd))?, at)?;
        let k = rope.apply(&self.k.forward(h)?.reshape((t, nkv, hd))?, at)?;
        let v = self.v.forward(h)?.reshape((t, nkv, hd))?;
        inferd_kernels::reshape_and_cache(&k, &v.contiguous()?, k_cache, v_cache, &paged.slots)?;
        let attn = inferd_kernels::paged_attention(
            &q,
            k_cache,
            v_cache,
            &paged.block_tables,
            &paged.context_lens,
            &paged.query_start_loc,
            self.scale,
        )?
        .reshape((t, nh * hd))?;
        self.o.forward(&attn)
    }
}
