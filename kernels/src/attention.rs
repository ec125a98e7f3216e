//! Paged attention over a block-table-addressed KV cache, for ragged batches
//! mixing prefill, chunked prefill and decode.
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
//!
//! For speed, a work item (run by rayon, scratch reused per thread) takes up
//! to [`TILE`] consecutive query tokens of one sequence times all query heads
//! (or those of one kv head, when that is needed for enough parallelism), and
//! walks the key blocks once for all of them, so every K/V row read from the
//! cache serves each query head of its GQA group and every token of the tile;
//! rows short of a block skip it, rows that end inside it stop at their own
//! position. Tiles only group rows: no arithmetic crosses rows. Kernels:
//! AVX2 + FMA when the CPU has it (detected once at run time) and
//! `head_dim % 8 == 0`, else portable Rust; each is self-consistent, the two
//! differ in rounding. `exp` is a Cody-Waite + polynomial approximation
//! (relative error < 2e-7; results below `f32::MIN_POSITIVE` flush to 0).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::{f32_slice, Isa, Result};
use meta::{validate, Meta};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod meta;
mod scalar;
#[cfg(test)]
mod tests;

const OP: &str = "paged_attention";

/// Query tokens of one sequence processed together by one work item. Only
/// decides which rows share the K/V loads, never the arithmetic of a row.
const TILE: usize = 16;

/// Per-ISA primitives. The driver ([`PagedAttention::item`]) fixes which
/// keys each query row sees and in which order; a kernel fixes how the
/// arithmetic of one row is carried out, and must do it identically for a row
/// whatever `rows` it is called with (rows never interact).
trait Kernel: Sync {
    /// `s[r * kw + t] = dot(q_r, k_t) * scale` for `r < rows`, `t < nk`, where
    /// `q_r = q[r * d..][..d]` and `k_t = k[t * ks..][..d]`.
    #[allow(clippy::too_many_arguments)]
    fn scores(
        &self,
        q: &[f32],
        rows: usize,
        k: &[f32],
        ks: usize,
        nk: usize,
        scale: f32,
        s: &mut [f32],
        kw: usize,
    );

    /// Online-softmax step of each row `r` over one key block: scores
    /// `t < cnt[r]` of row `s[r * kw..][..kw]` are live. Sets
    /// `m' = max(m, max_t s_t)`, overwrites `s_t` with `p_t = exp(s_t - m')`,
    /// sets `c = exp(m - m')`, `l = l * c + Σ_t p_t` (`t` ascending) and
    /// `m = m'`. `tmp` is scratch of `8 * kw` floats.
    fn softmax(&self, kw: usize, rows: Rows<'_>, tmp: &mut [f32]);

    /// `acc_r = acc_r * c_r`, then `acc_r += p_r[t] * v_t` for `t = 0..cnt` in
    /// order, for `r < rows` (`acc_r = acc[r * d..][..d]`,
    /// `p_r = p[r * kw..]`, `v_t = v[t * vs..][..d]`).
    #[allow(clippy::too_many_arguments)]
    fn pv(
        &self,
        acc: &mut [f32],
        p: &[f32],
        kw: usize,
        c: &[f32],
        rows: usize,
        v: &[f32],
        vs: usize,
        cnt: usize,
    );
}

/// A run of rows in the middle of an online-softmax step (see
/// [`Kernel::softmax`]); all slices hold one entry per row (`s`: `kw`).
struct Rows<'a> {
    s: &'a mut [f32],
    cnt: &'a [u32],
    m: &'a mut [f32],
    l: &'a mut [f32],
    c: &'a mut [f32],
}

/// One work item: query rows `j0..j1` (sequence-relative) of sequence `seq`,
/// for the query heads of kv heads `x0..x1`.
#[derive(Clone, Copy)]
struct Item {
    seq: usize,
    j0: usize,
    j1: usize,
    x0: usize,
    x1: usize,
}

/// Reusable per-thread buffers (grown on demand, never shrunk).
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    acc: Vec<f32>,
    s: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    c: Vec<f32>,
    cnt: Vec<u32>,
    tmp: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The output buffer, shared by items that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every (token, head) row is written by exactly one item, and the
// buffer outlives the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Hints `len` floats of K and V from `off` into the cache, so that the next
/// key block's loads do not stall.
#[inline]
fn prefetch(kc: &[f32], vc: &[f32], off: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for at in (off..(off + len).min(kc.len())).step_by(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetching is only a hint, and the address is in bounds.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(kc.as_ptr().add(at).cast());
            _mm_prefetch::<_MM_HINT_T0>(vc.as_ptr().add(at).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (kc, vc, off, len);
}

struct PagedAttention {
    meta: Meta,
    scale: f32,
    isa: Isa,
}

impl PagedAttention {
    /// Runs one [`Item`]. Its rows are ordered (kv head, token, head in
    /// group). Each row walks the key blocks `0..=pos / block_size` in order
    /// (the last one cut at the row's own position) with the kernel's
    /// online-softmax update, then gets `acc * (1 / l)`. Rows that have not
    /// reached a block skip it entirely, so a row's arithmetic depends only on
    /// its sequence, position and head. A block's K/V rows (all kv heads, one
    /// contiguous stretch of the cache) are read once for the whole item.
    #[allow(clippy::too_many_arguments)]
    fn item<K: Kernel>(
        &self,
        kern: &K,
        it: Item,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        out: OutPtr,
        sc: &mut Scratch,
    ) {
        let m = &self.meta;
        let (d, bs, h, kv) = (m.head_dim, m.block_size, m.num_heads, m.num_kv_heads);
        let (g, kw, ks) = (h / kv, bs.next_multiple_of(8), kv * d);
        let q0 = m.query_start_loc[it.seq] as usize;
        let q_len = m.query_start_loc[it.seq + 1] as usize - q0;
        // Query row j of the sequence sits at `context_len - q_len + j`.
        let first = m.context_lens[it.seq] as usize - q_len + it.j0;
        let (toks, last) = (it.j1 - it.j0, first + it.j1 - it.j0 - 1);
        // Rows per kv head, and in all.
        let (n, rows) = (toks * g, (it.x1 - it.x0) * toks * g);
        for (buf, len) in [(&mut sc.q, rows * d), (&mut sc.acc, rows * d)] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        sc.s.resize(rows * kw, 0.0);
        sc.m.clear();
        sc.m.resize(rows, f32::NEG_INFINITY);
        sc.l.clear();
        sc.l.resize(rows, 0.0);
        sc.c.resize(rows, 0.0);
        sc.cnt.resize(rows, 0);
        sc.tmp.resize(8 * kw, 0.0);
        for (x, dst) in (it.x0..it.x1).zip(sc.q.chunks_exact_mut(n * d)) {
            for (t, dst) in dst.chunks_exact_mut(g * d).enumerate() {
                let src = ((q0 + it.j0 + t) * h + x * g) * d;
                dst.copy_from_slice(&q[src..src + g * d]);
            }
        }
        let table = &m.block_tables[it.seq * m.max_blocks..];
        for b in 0..=last / bs {
            let k0 = b * bs;
            // Per kv head, rows r0.. have reached this block; rows rf.. see
            // all of it.
            let r0 = k0.saturating_sub(first) * g;
            let rf = (k0 + bs - 1).saturating_sub(first).min(toks) * g;
            let nk = bs.min(last + 1 - k0);
            let blk = table[b] as usize * bs * ks;
            if b < last / bs {
                let next = table[b + 1] as usize * bs * ks;
                let n_next = bs.min(last + 1 - k0 - bs);
                prefetch(
                    kc,
                    vc,
                    next + it.x0 * d,
                    (n_next - 1) * ks + (it.x1 - it.x0) * d,
                );
            }
            for (i, x) in (it.x0..it.x1).enumerate() {
                let off = blk + x * d;
                let span = off..off + (nk - 1) * ks + d;
                let (kb, vb) = (&kc[span.clone()], &vc[span]);
                let (lo, hi) = (i * n + r0, (i + 1) * n);
                let s = &mut sc.s[lo * kw..];
                kern.scores(
                    &sc.q[lo * d..hi * d],
                    hi - lo,
                    kb,
                    ks,
                    nk,
                    self.scale,
                    s,
                    kw,
                );
                for r in lo..hi {
                    sc.cnt[r] = bs.min(first + (r - i * n) / g + 1 - k0) as u32;
                }
                let live = Rows {
                    s: &mut sc.s[lo * kw..hi * kw],
                    cnt: &sc.cnt[lo..hi],
                    m: &mut sc.m[lo..hi],
                    l: &mut sc.l[lo..hi],
                    c: &mut sc.c[lo..hi],
                };
                kern.softmax(kw, live, &mut sc.tmp);
                let full = i * n + rf;
                for r in lo..full {
                    let cnt = sc.cnt[r] as usize;
                    let acc = &mut sc.acc[r * d..(r + 1) * d];
                    kern.pv(acc, &sc.s[r * kw..], kw, &sc.c[r..], 1, vb, ks, cnt);
                }
                if full < hi {
                    let (acc, p) = (&mut sc.acc[full * d..hi * d], &sc.s[full * kw..]);
                    kern.pv(acc, p, kw, &sc.c[full..], hi - full, vb, ks, bs);
                }
            }
        }
        for (r, acc) in sc.acc.chunks_exact(d).enumerate() {
            let inv = 1.0 / sc.l[r];
            let (x, t, gi) = (it.x0 + r / n, r % n / g, r % g);
            let dst = ((q0 + it.j0 + t) * h + x * g + gi) * d;
            // SAFETY: row (token, head) belongs to this item alone and lies
            // inside the [num_tokens, num_heads, head_dim] output.
            let o = unsafe { std::slice::from_raw_parts_mut(out.0.add(dst), d) };
            for (o, a) in o.iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }

    /// Splits the batch into items (query tiles of [`TILE`] tokens with all
    /// kv heads, or one kv head each when that gives too few items to keep
    /// the threads busy) and runs them in parallel with `kern`.
    fn run<K: Kernel>(&self, kern: &K, q: &[f32], kc: &[f32], vc: &[f32], out: &mut [f32]) {
        let m = &self.meta;
        let tiles = |seq: usize| {
            let q_len = (m.query_start_loc[seq + 1] - m.query_start_loc[seq]) as usize;
            (0..q_len)
                .step_by(TILE)
                .map(move |j0| (j0, q_len.min(j0 + TILE)))
        };
        let seqs = 0..m.context_lens.len();
        let count: usize = seqs.clone().map(|s| tiles(s).count()).sum();
        let split = count < 2 * rayon::current_num_threads();
        let mut items = Vec::new();
        for seq in seqs {
            for (j0, j1) in tiles(seq) {
                if split {
                    items.extend((0..m.num_kv_heads).map(|x| Item {
                        seq,
                        j0,
                        j1,
                        x0: x,
                        x1: x + 1,
                    }));
                } else {
                    items.push(Item {
                        seq,
                        j0,
                        j1,
                        x0: 0,
                        x1: m.num_kv_heads,
                    });
                }
            }
        }
        let out = OutPtr(out.as_mut_ptr());
        items.par_iter().with_max_len(1).for_each(|&it| {
            SCRATCH.with_borrow_mut(|sc| self.item(kern, it, q, kc, vc, out, sc));
        });
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
        let mut out = vec![0f32; m.num_tokens * m.num_heads * d];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), shape));
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma if d.is_multiple_of(8) => match avx2::Avx2::new() {
                Some(k) => self.run(&k, q, kc, vc, &mut out),
                None => candle_core::bail!("{OP}: AVX2/FMA not supported by this CPU"),
            },
            _ => self.run(&scalar::Scalar, q, kc, vc, &mut out),
        }
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
