//! Paged attention over a block-table-addressed KV cache, for ragged batches
//! mixing prefill, chunked prefill and decode: the public entry points, their
//! checks ([`meta`]) and the composed reference. The CPU body is
//! `cpu::attention`.
//!
//! # Algorithm and determinism
//!
//! Flash-attention style: the query row at position `p` walks the key blocks
//! `0, 1, ..., p / block_size` of its sequence in order (blocks of the cache's
//! `block_size`; the last one cut at key `p`) with an online softmax: per
//! block, scores `q·k * scale`, block max, `m' = max(m, block max)`,
//! `c = exp(m - m')`, `p_t = exp(s_t - m')`, `l = l * c + Σ p_t`,
//! `acc = acc * c + Σ p_t v_t` (keys in order), and finally `acc * (1 / l)`.
//! That sequence of floating point operations depends only on the sequence's
//! data, the position and the head, so a row is bitwise identical in a full
//! prefill, a chunked prefill, a decode step, any batch and any thread count.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

use crate::cpu::{self, f32_slice, Isa};
use crate::Result;
use meta::{validate, Meta};

pub(crate) mod meta;

pub(crate) const OP: &str = "paged_attention";

/// The candle op: validated geometry, softmax scale and the CPU instruction
/// set; each device's `*_fwd` hands the checked operands to that device's
/// body.
pub(crate) struct PagedAttention {
    pub(crate) meta: Meta,
    pub(crate) scale: f32,
    pub(crate) isa: Isa,
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        kc: &CpuStorage,
        kl: &Layout,
        vc: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = &self.meta;
        let (q, kc, vc) = (f32_slice(q, ql)?, f32_slice(kc, kl)?, f32_slice(vc, vl)?);
        let out = cpu::attention::forward(self, q, kc, vc)?;
        let shape = Shape::from((m.num_tokens, m.num_heads, m.head_dim));
        Ok((CpuStorage::F32(out), shape))
    }
}

/// Paged attention (see the crate docs for the layout conventions).
///
/// * `query`: `[num_tokens, num_heads, head_dim]` f32
/// * `key_cache`, `value_cache`: `[num_blocks, block_size, num_kv_heads, head_dim]` f32
/// * `block_tables`: `[num_seqs, max_blocks_per_seq]` u32
/// * `context_lens`: `[num_seqs]` u32, cached tokens after this step's writes
/// * `query_start_loc`: `[num_seqs + 1]` u32, cumulative query offsets
///
/// Returns `[num_tokens, num_heads, head_dim]` f32. Every input must be a
/// contiguous CPU tensor. The output row of a query is bitwise identical
/// whatever else is in the batch, whether its sequence's rows come in one
/// prefill step, in chunks or one decode step at a time, and whatever the
/// thread count (see the module docs).
pub fn paged_attention(
    query: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    block_tables: &Tensor,
    context_lens: &Tensor,
    query_start_loc: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let meta = validate(
        query,
        key_cache,
        value_cache,
        block_tables,
        context_lens,
        query_start_loc,
    )?;
    let op = PagedAttention {
        meta,
        scale,
        isa: Isa::detect(),
    };
    Ok(query.apply_op3_no_bwd(key_cache, value_cache, &op)?)
}

/// Composed reference for [`paged_attention`]: per sequence, gathers K/V with
/// `index_select`, repeats kv heads, and computes
/// `softmax(q k^T * scale + causal_mask) v` with matmuls.
pub fn paged_attention_slow(
    query: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    block_tables: &Tensor,
    context_lens: &Tensor,
    query_start_loc: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let m = validate(
        query,
        key_cache,
        value_cache,
        block_tables,
        context_lens,
        query_start_loc,
    )?;
    let (h, kv, d, bs) = (m.num_heads, m.num_kv_heads, m.head_dim, m.block_size);
    let dev = query.device();
    let slots = key_cache.dim(0)? * bs;
    let kflat = key_cache.reshape((slots, kv, d))?;
    let vflat = value_cache.reshape((slots, kv, d))?;
    let mut outs = Vec::new();
    for s in 0..m.context_lens.len() {
        let (q0, q1) = (
            m.query_start_loc[s] as usize,
            m.query_start_loc[s + 1] as usize,
        );
        let (q_len, ctx) = (q1 - q0, m.context_lens[s] as usize);
        if q_len == 0 {
            continue;
        }
        let idx: Vec<u32> = (0..ctx)
            .map(|t| m.block_tables[s * m.max_blocks + t / bs] * bs as u32 + (t % bs) as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), dev)?;
        let gather = |c: &Tensor| -> Result<Tensor> {
            Ok(c.index_select(&idx, 0)? // [ctx, kv, d]
                .unsqueeze(2)?
                .broadcast_as((ctx, kv, h / kv, d))?
                .reshape((ctx, h, d))?
                .transpose(0, 1)?
                .contiguous()?) // [h, ctx, d]
        };
        let (k, v) = (gather(&kflat)?, gather(&vflat)?);
        let q = query.narrow(0, q0, q_len)?.transpose(0, 1)?.contiguous()?; // [h, q_len, d]
        let scores = (q.matmul(&k.t()?)? * scale as f64)?; // [h, q_len, ctx]
        let key_pos = Tensor::arange(0u32, ctx as u32, dev)?.reshape((1, ctx))?;
        let query_pos =
            Tensor::arange((ctx - q_len) as u32, ctx as u32, dev)?.reshape((q_len, 1))?;
        let masked = key_pos
            .broadcast_gt(&query_pos)?
            .broadcast_as((h, q_len, ctx))?;
        let neg_inf = Tensor::full(f32::NEG_INFINITY, (h, q_len, ctx), dev)?;
        let scores = masked.where_cond(&neg_inf, &scores)?;
        let e = scores.broadcast_sub(&scores.max_keepdim(2)?)?.exp()?;
        let probs = e.broadcast_div(&e.sum_keepdim(2)?)?;
        outs.push(probs.matmul(&v)?.transpose(0, 1)?); // [q_len, h, d]
    }
    if outs.is_empty() {
        return Ok(Tensor::zeros((m.num_tokens, h, d), DType::F32, dev)?);
    }
    Ok(Tensor::cat(&outs, 0)?.contiguous()?)
}
