//! Paged attention over a block-table-addressed KV cache, for ragged batches
//! mixing prefill, chunked prefill and decode.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::{check, f32_slice, shape_err, KernelError, Result};

const OP: &str = "paged_attention";

/// Validated dimensions and host copies of the (small) index tensors.
struct Meta {
    num_tokens: usize,
    num_heads: usize,
    head_dim: usize,
    num_kv_heads: usize,
    block_size: usize,
    max_blocks: usize,
    block_tables: Vec<u32>,
    context_lens: Vec<u32>,
    query_start_loc: Vec<u32>,
}

fn invalid(reason: String) -> KernelError {
    KernelError::Invalid { op: OP, reason }
}

fn validate(
    query: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    block_tables: &Tensor,
    context_lens: &Tensor,
    query_start_loc: &Tensor,
) -> Result<Meta> {
    let qd = check(OP, "query", query, DType::F32, 3, &|| {
        "[num_tokens, num_heads, head_dim]".into()
    })?;
    let (num_tokens, num_heads, head_dim) = (qd[0], qd[1], qd[2]);
    let expected_cache = || format!("[num_blocks, block_size, num_kv_heads, {head_dim}]");
    let cd = check(OP, "key_cache", key_cache, DType::F32, 4, &expected_cache)?;
    if cd[3] != head_dim || cd[1] == 0 {
        return Err(shape_err(OP, "key_cache", key_cache, expected_cache()));
    }
    check(OP, "value_cache", value_cache, DType::F32, 4, &|| {
        format!("{cd:?}")
    })?;
    if value_cache.dims() != cd {
        return Err(shape_err(
            OP,
            "value_cache",
            value_cache,
            format!("{cd:?} (same as key_cache)"),
        ));
    }
    let (num_blocks, block_size, num_kv_heads) = (cd[0], cd[1], cd[2]);
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(invalid(format!(
            "num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
        )));
    }
    let bd = check(OP, "block_tables", block_tables, DType::U32, 2, &|| {
        "[num_seqs, max_blocks_per_seq]".into()
    })?;
    let (num_seqs, max_blocks) = (bd[0], bd[1]);
    let cl = check(OP, "context_lens", context_lens, DType::U32, 1, &|| {
        format!("[{num_seqs}]")
    })?;
    if cl[0] != num_seqs {
        return Err(shape_err(
            OP,
            "context_lens",
            context_lens,
            format!("[{num_seqs}]"),
        ));
    }
    let expected_qsl = || format!("[{}]", num_seqs + 1);
    let ql = check(
        OP,
        "query_start_loc",
        query_start_loc,
        DType::U32,
        1,
        &expected_qsl,
    )?;
    if ql[0] != num_seqs + 1 {
        return Err(shape_err(
            OP,
            "query_start_loc",
            query_start_loc,
            expected_qsl(),
        ));
    }
    let meta = Meta {
        num_tokens,
        num_heads,
        head_dim,
        num_kv_heads,
        block_size,
        max_blocks,
        block_tables: block_tables.flatten_all()?.to_vec1::<u32>()?,
        context_lens: context_lens.to_vec1::<u32>()?,
        query_start_loc: query_start_loc.to_vec1::<u32>()?,
    };
    let qsl = &meta.query_start_loc;
    if qsl[0] != 0 || qsl[num_seqs] as usize != num_tokens {
        return Err(invalid(format!(
            "query_start_loc must start at 0 and end at num_tokens ({num_tokens}), got {qsl:?}"
        )));
    }
    for s in 0..num_seqs {
        let ctx = meta.context_lens[s] as usize;
        if qsl[s + 1] < qsl[s] {
            return Err(invalid(format!(
                "query_start_loc must be non-decreasing, got {qsl:?}"
            )));
        }
        let q_len = (qsl[s + 1] - qsl[s]) as usize;
        if q_len > ctx {
            return Err(invalid(format!(
                "sequence {s}: q_len ({q_len}) exceeds context_len ({ctx})"
            )));
        }
        if ctx > max_blocks * block_size {
            return Err(KernelError::OutOfRange {
                op: OP,
                name: "context_lens",
                index: s,
                value: ctx as u64,
                limit: (max_blocks * block_size + 1) as u64,
            });
        }
        for i in 0..ctx.div_ceil(block_size) {
            let blk = meta.block_tables[s * max_blocks + i];
            if blk as usize >= num_blocks {
                return Err(KernelError::OutOfRange {
                    op: OP,
                    name: "block_tables",
                    index: s * max_blocks + i,
                    value: blk as u64,
                    limit: num_blocks as u64,
                });
            }
        }
    }
    Ok(meta)
}

/// Dot product with a fixed operation order (8 strided partial sums, fixed
/// pairwise reduction, then the tail in order); auto-vectorizes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

struct PagedAttention {
    meta: Meta,
    scale: f32,
}

impl PagedAttention {
    /// One (token, head) work item: writes `out [head_dim]`. Its operation
    /// order depends only on the owning sequence's data.
    #[allow(clippy::too_many_arguments)]
    fn item(
        &self,
        token_seq: &[u32],
        item: usize,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let m = &self.meta;
        let (d, bs) = (m.head_dim, m.block_size);
        let (tok, h) = (item / m.num_heads, item % m.num_heads);
        let s = token_seq[tok] as usize;
        let (q0, q1) = (
            m.query_start_loc[s] as usize,
            m.query_start_loc[s + 1] as usize,
        );
        let ctx = m.context_lens[s] as usize;
        let pos = ctx - (q1 - q0) + (tok - q0);
        let n = pos + 1;
        let kvh = h / (m.num_heads / m.num_kv_heads);
        let q = &q[item * d..(item + 1) * d];
        let table = &m.block_tables[s * m.max_blocks..(s + 1) * m.max_blocks];
        let row = |t: usize| ((table[t / bs] as usize * bs + t % bs) * m.num_kv_heads + kvh) * d;
        let scores = &mut scores[..n];
        let mut max = f32::NEG_INFINITY;
        for (t, sc) in scores.iter_mut().enumerate() {
            let r = row(t);
            *sc = dot(q, &kc[r..r + d]) * self.scale;
            max = max.max(*sc);
        }
        let mut sum = 0f32;
        for sc in scores.iter_mut() {
            *sc = (*sc - max).exp();
            sum += *sc;
        }
        let inv = 1.0 / sum;
        out.fill(0.0);
        for (t, &p) in scores.iter().enumerate() {
            let r = row(t);
            let w = p * inv;
            for (o, v) in out.iter_mut().zip(&vc[r..r + d]) {
                *o += w * v;
            }
        }
    }
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
        let d = m.head_dim;
        let shape = Shape::from((m.num_tokens, m.num_heads, d));
        let items = m.num_tokens * m.num_heads;
        let mut out = vec![0f32; items * d];
        if items == 0 || d == 0 {
            return Ok((CpuStorage::F32(out), shape));
        }
        let qsl = &m.query_start_loc;
        let mut token_seq = Vec::with_capacity(m.num_tokens);
        for s in 0..m.context_lens.len() {
            token_seq.resize(qsl[s + 1] as usize, s as u32);
        }
        let max_ctx = m.context_lens.iter().copied().max().unwrap_or(0) as usize;
        // Chunking only decides which thread runs an item, never its arithmetic.
        let threads = rayon::current_num_threads().max(1);
        let per_chunk = items.div_ceil(threads * 8).max(1);
        out.par_chunks_mut(per_chunk * d)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut scores = vec![0f32; max_ctx];
                for (i, o) in chunk.chunks_exact_mut(d).enumerate() {
                    self.item(&token_seq, c * per_chunk + i, q, kc, vc, &mut scores, o);
                }
            });
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
/// contiguous CPU tensor. The result for one sequence is bitwise identical
/// whatever else is in the batch.
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
    let op = PagedAttention { meta, scale };
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
