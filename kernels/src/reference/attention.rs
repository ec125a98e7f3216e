//! The CUDA paged-attention algorithms (`kernels/cuda/paged_attention.cu`) in plain f32 Rust,
//! layout and semantics exactly those of [`crate::paged_attention`] (see the crate docs).
//!
//! * Decode ([`decode_split_k`], one query row per sequence): the context is cut into
//!   partitions of [`PARTITION_SIZE`] tokens (one CUDA thread block each). Partition `[t0, t1)`
//!   computes `s_t = (q · k_t) * scale`, `m = max s_t`, `e_t = exp(s_t - m)`, `l = Σ e_t`,
//!   `o = (Σ e_t v_t) * (1 / l)` ([`decode_partition`]). A context of one partition outputs
//!   `o`; a longer one is combined by [`reduce_partitions`]: `M = max_p m_p`,
//!   `w_p = exp(m_p - M) * l_p`, `L = Σ w_p`, `out = (Σ_p w_p o_p) * (1 / L)`. A context of 0
//!   (a padding row of a CUDA-graph bucket) outputs zeros.
//! * Prefill ([`prefill_tiled`], any query lengths): the query row at position `p` walks key
//!   tiles `[kt, kt + KEY_TILE)`, `kt = 0, KEY_TILE, ..` up to `p` (keys `t <= p` live) with an
//!   online softmax: `m' = max(m, max_t s_t)`, `c = exp(m - m')`, `p_t = exp(s_t - m')`,
//!   `l = l * c + Σ p_t`, `acc = acc * c + Σ p_t v_t`, `m = m'`; finally `acc * (1 / l)`.
//!
//! The GPU sums in other orders (warp trees) and with FMAs, so it agrees with these to a few
//! ulps of f32, not bitwise; its inputs are bf16/f16, its accumulation f32 as here.

use crate::{KernelError, Result};

const OP: &str = "reference::attention";

/// Tokens per decode partition (`PARTITION` in `paged_attention.cu`).
pub const PARTITION_SIZE: usize = 512;

/// Keys per prefill tile (`TK` in `paged_attention.cu`).
pub const KEY_TILE: usize = 32;

/// Head geometry and cache block size of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

/// The paged KV cache of one layer and the batch's block tables and context lengths.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    /// `[num_blocks, block_size, num_kv_heads, head_dim]`.
    pub key_cache: &'a [f32],
    /// Same shape as `key_cache`.
    pub value_cache: &'a [f32],
    /// `[num_seqs, max_blocks_per_seq]`; entries past a context are never read.
    pub block_tables: &'a [u32],
    pub max_blocks_per_seq: usize,
    /// `[num_seqs]`, cached tokens after this step's writes.
    pub context_lens: &'a [u32],
}

/// What one decode partition leaves in the GPU's scratch: its max logit, its sum of
/// exponentials and its normalized partial output (`head_dim` floats).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub max_logit: f32,
    pub exp_sum: f32,
    pub out: Vec<f32>,
}

fn invalid(reason: String) -> KernelError {
    KernelError::Invalid { op: OP, reason }
}

impl Geometry {
    fn check(&self) -> Result<()> {
        let g = self;
        if g.head_dim == 0 || g.block_size == 0 || g.num_kv_heads == 0 {
            return Err(invalid(format!("degenerate geometry {g:?}")));
        }
        if !g.num_heads.is_multiple_of(g.num_kv_heads) {
            return Err(invalid(format!(
                "num_heads ({}) must be a multiple of num_kv_heads ({})",
                g.num_heads, g.num_kv_heads
            )));
        }
        Ok(())
    }

    /// Elements of one token's K (or V) row in the cache.
    fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

impl PagedKv<'_> {
    fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// Checks the cache and tables against `g` (every block a context uses exists).
    fn check(&self, g: &Geometry) -> Result<()> {
        let block = g.block_size * g.kv_width();
        let len = self.key_cache.len();
        if !len.is_multiple_of(block) || self.value_cache.len() != len {
            return Err(invalid(format!(
                "caches hold {len} and {} elements, not equal whole blocks of {block}",
                self.value_cache.len()
            )));
        }
        let num_blocks = len / block;
        let mb = self.max_blocks_per_seq;
        if self.block_tables.len() != self.num_seqs() * mb {
            return Err(invalid(format!(
                "block_tables holds {} entries, not {} x {mb}",
                self.block_tables.len(),
                self.num_seqs()
            )));
        }
        for (s, &ctx) in self.context_lens.iter().enumerate() {
            let ctx = ctx as usize;
            if ctx > mb * g.block_size {
                return Err(KernelError::OutOfRange {
                    op: OP,
                    name: "context_lens",
                    index: s,
                    value: ctx as u64,
                    limit: (mb * g.block_size + 1) as u64,
                });
            }
            for i in 0..ctx.div_ceil(g.block_size) {
                let blk = self.block_tables[s * mb + i];
                if blk as usize >= num_blocks {
                    return Err(KernelError::OutOfRange {
                        op: OP,
                        name: "block_tables",
                        index: s * mb + i,
                        value: blk as u64,
                        limit: num_blocks as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// The K and V rows (`head_dim` floats each) of position `t` of sequence `s`, kv head `x`.
    fn rows(&self, g: &Geometry, s: usize, t: usize, x: usize) -> (&[f32], &[f32]) {
        let blk = self.block_tables[s * self.max_blocks_per_seq + t / g.block_size] as usize;
        let slot = blk * g.block_size + t % g.block_size;
        let at = slot * g.kv_width() + x * g.head_dim;
        let span = at..at + g.head_dim;
        (&self.key_cache[span.clone()], &self.value_cache[span])
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| x.mul_add(*y, acc))
}

/// One decode partition: keys `t0..t1` (non-empty) of sequence `s` for query head `h` with
/// query row `q` (see the module docs). `kv` and `g` must have passed the checks of
/// [`decode_split_k`].
pub fn decode_partition(
    g: &Geometry,
    kv: &PagedKv<'_>,
    q: &[f32],
    s: usize,
    h: usize,
    (t0, t1): (usize, usize),
    scale: f32,
) -> Partial {
    let x = h / (g.num_heads / g.num_kv_heads);
    let logits: Vec<f32> = (t0..t1)
        .map(|t| dot(q, kv.rows(g, s, t, x).0) * scale)
        .collect();
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = logits.iter().map(|&z| (z - m).exp()).collect();
    let l: f32 = e.iter().sum();
    let mut acc = vec![0f32; g.head_dim];
    for (t, &p) in (t0..t1).zip(&e) {
        for (a, v) in acc.iter_mut().zip(kv.rows(g, s, t, x).1) {
            *a = p.mul_add(*v, *a);
        }
    }
    let inv = 1.0 / l;
    Partial {
        max_logit: m,
        exp_sum: l,
        out: acc.iter().map(|a| a * inv).collect(),
    }
}

/// The split-K reduce over a context's partitions, in order (see the module docs).
pub fn reduce_partitions(parts: &[Partial], head_dim: usize) -> Vec<f32> {
    let m = parts
        .iter()
        .fold(f32::NEG_INFINITY, |a, p| a.max(p.max_logit));
    let w: Vec<f32> = parts
        .iter()
        .map(|p| (p.max_logit - m).exp() * p.exp_sum)
        .collect();
    let l: f32 = w.iter().sum();
    let inv = 1.0 / l;
    (0..head_dim)
        .map(|d| {
            let a = parts
                .iter()
                .zip(&w)
                .fold(0f32, |a, (p, &w)| w.mul_add(p.out[d], a));
            a * inv
        })
        .collect()
}

/// Split-K decode: `q` is `[num_seqs, num_heads, head_dim]` (row `s` is sequence `s`'s one
/// query, at position `context_len - 1`); returns the output of the same shape. Partitions
/// of `partition_size` tokens (the GPU's is [`PARTITION_SIZE`]).
pub fn decode_split_k(
    g: &Geometry,
    kv: &PagedKv<'_>,
    q: &[f32],
    scale: f32,
    partition_size: usize,
) -> Result<Vec<f32>> {
    g.check()?;
    kv.check(g)?;
    if partition_size == 0 {
        return Err(invalid("partition_size must be positive".into()));
    }
    let (h, d) = (g.num_heads, g.head_dim);
    let want = kv.num_seqs() * h * d;
    if q.len() != want {
        return Err(invalid(format!(
            "query holds {} elements, [num_seqs, num_heads, head_dim] needs {want}",
            q.len()
        )));
    }
    let mut out = vec![0f32; want];
    for (s, &ctx) in kv.context_lens.iter().enumerate() {
        let ctx = ctx as usize;
        for head in 0..h {
            let row = (s * h + head) * d;
            let qr = &q[row..row + d];
            let parts: Vec<Partial> = (0..ctx)
                .step_by(partition_size)
                .map(|t0| {
                    let t1 = ctx.min(t0 + partition_size);
                    decode_partition(g, kv, qr, s, head, (t0, t1), scale)
                })
                .collect();
            let o = match parts.as_slice() {
                [] => continue,
                [one] => one.out.clone(),
                many => reduce_partitions(many, d),
            };
            out[row..row + d].copy_from_slice(&o);
        }
    }
    Ok(out)
}

/// Tiled varlen causal prefill: `q` is `[num_tokens, num_heads, head_dim]` with sequence `s`
/// owning rows `query_start_loc[s]..query_start_loc[s + 1]` (any lengths, decode rows
/// included); returns the output of the same shape.
pub fn prefill_tiled(
    g: &Geometry,
    kv: &PagedKv<'_>,
    q: &[f32],
    query_start_loc: &[u32],
    scale: f32,
) -> Result<Vec<f32>> {
    g.check()?;
    kv.check(g)?;
    let qsl = query_start_loc;
    let n = kv.num_seqs();
    if qsl.len() != n + 1 || qsl[0] != 0 {
        return Err(invalid(format!(
            "query_start_loc must hold {} offsets from 0, got {qsl:?}",
            n + 1
        )));
    }
    let (h, d) = (g.num_heads, g.head_dim);
    let want = qsl[n] as usize * h * d;
    if q.len() != want {
        return Err(invalid(format!(
            "query holds {} elements, query_start_loc says {want}",
            q.len()
        )));
    }
    let mut out = vec![0f32; want];
    for s in 0..n {
        let ctx = kv.context_lens[s] as usize;
        if qsl[s + 1] < qsl[s] || (qsl[s + 1] - qsl[s]) as usize > ctx {
            return Err(invalid(format!(
                "sequence {s}: query_start_loc {qsl:?} is decreasing or longer than context {ctx}"
            )));
        }
        let (q0, q_len) = (qsl[s] as usize, (qsl[s + 1] - qsl[s]) as usize);
        for j in 0..q_len {
            let pos = ctx - q_len + j;
            for head in 0..h {
                let row = ((q0 + j) * h + head) * d;
                let o = prefill_row(g, kv, &q[row..row + d], s, head, pos, scale);
                out[row..row + d].copy_from_slice(&o);
            }
        }
    }
    Ok(out)
}

/// One prefill row: query `q` of head `h` at position `pos` of sequence `s`.
fn prefill_row(
    g: &Geometry,
    kv: &PagedKv<'_>,
    q: &[f32],
    s: usize,
    h: usize,
    pos: usize,
    scale: f32,
) -> Vec<f32> {
    let x = h / (g.num_heads / g.num_kv_heads);
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    let mut acc = vec![0f32; g.head_dim];
    for kt in (0..=pos).step_by(KEY_TILE) {
        let keys = kt..(pos + 1).min(kt + KEY_TILE);
        let sc: Vec<f32> = keys
            .clone()
            .map(|t| dot(q, kv.rows(g, s, t, x).0) * scale)
            .collect();
        let m_new = sc.iter().fold(m, |a, &b| a.max(b));
        let c = (m - m_new).exp();
        let p: Vec<f32> = sc.iter().map(|&z| (z - m_new).exp()).collect();
        l = l * c + p.iter().sum::<f32>();
        for a in acc.iter_mut() {
            *a *= c;
        }
        for (t, &pt) in keys.zip(&p) {
            for (a, v) in acc.iter_mut().zip(kv.rows(g, s, t, x).1) {
                *a = pt.mul_add(*v, *a);
            }
        }
        m = m_new;
    }
    let inv = 1.0 / l;
    acc.iter().map(|a| a * inv).collect()
}

#[cfg(test)]
mod tests;
