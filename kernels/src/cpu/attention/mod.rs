//! CPU body of [`crate::paged_attention`].
//!
//! A work item (run by rayon, scratch reused per thread) takes up to [`TILE`]
//! consecutive query tokens of one sequence times all query heads (or those
//! of one kv head, when that is needed for enough parallelism), and walks the
//! key blocks once for all of them, so every K/V row read from the cache
//! serves each query head of its GQA group and every token of the tile; rows
//! short of a block skip it, rows that end inside it stop at their own
//! position. Tiles only group rows: no arithmetic crosses rows. Kernels:
//! AVX2 + FMA when the CPU has it (detected once at run time) and
//! `head_dim % 8 == 0`, else portable Rust; each is self-consistent, the two
//! differ in rounding. `exp` is a Cody-Waite + polynomial approximation
//! (relative error < 2e-7; results below `f32::MIN_POSITIVE` flush to 0).

use rayon::prelude::*;

use crate::attention::{meta::Meta, PagedAttention, OP};
use crate::cpu::{prefetch, Isa, OutPtr};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(test)]
mod tests;

/// Query tokens of one sequence processed together by one work item. Only
/// decides which rows share the K/V loads, never the arithmetic of a row.
const TILE: usize = 16;

/// Row lengths fixed for a whole call: a query or accumulator row holds `d`
/// floats (`head_dim`), a score row `kw` (`block_size` rounded up to 8).
#[derive(Clone, Copy)]
struct Widths {
    d: usize,
    kw: usize,
}

/// `n` consecutive K (or V) rows of one kv head inside a cache block: row
/// `t` is `data[t * stride..][..d]`.
#[derive(Clone, Copy)]
struct KvRows<'a> {
    data: &'a [f32],
    stride: usize,
    n: usize,
}

impl<'a> KvRows<'a> {
    /// Row `t` (`d` floats).
    #[inline]
    fn row(&self, t: usize, d: usize) -> &'a [f32] {
        &self.data[t * self.stride..t * self.stride + d]
    }

    /// The first `n` rows.
    fn take(self, n: usize) -> Self {
        KvRows { n, ..self }
    }
}

/// Per-ISA primitives. The driver ([`Call::item`]) fixes which keys each
/// query row sees and in which order; a kernel fixes how the arithmetic of
/// one row is carried out, and must do it identically for a row whatever
/// rows it is called with (rows never interact).
trait Kernel: Sync {
    /// `s[r * kw + t] = dot(q_r, k_t) * scale` for each row `q_r =
    /// q[r * d..][..d]` of `q` and each key `t < k.n`.
    fn scores(&self, w: Widths, q: &[f32], k: KvRows<'_>, scale: f32, s: &mut [f32]);

    /// Online-softmax step of each row `r` over one key block: scores
    /// `t < cnt[r]` of row `s[r * kw..][..kw]` are live. Sets
    /// `m' = max(m, max_t s_t)`, overwrites `s_t` with `p_t = exp(s_t - m')`,
    /// sets `c = exp(m - m')`, `l = l * c + Σ_t p_t` (`t` ascending) and
    /// `m = m'`. `tmp` is scratch of `8 * kw` floats.
    fn softmax(&self, kw: usize, rows: Rows<'_>, tmp: &mut [f32]);

    /// For each row `acc_r = acc[r * d..][..d]` of `acc`: `acc_r = acc_r * c[r]`,
    /// then `acc_r += p[r * kw + t] * v_t` for `t = 0..v.n` in order.
    fn pv(&self, w: Widths, acc: &mut [f32], p: &[f32], c: &[f32], v: KvRows<'_>);
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

/// One work item (a query block): query rows `j0..j1` (sequence-relative) of
/// sequence `seq`, for the query heads of kv heads `x0..x1`.
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

/// Paged attention of the validated `op` over the contiguous `q`
/// (`[num_tokens, num_heads, head_dim]`) and caches `kc`, `vc`
/// (`[num_blocks, block_size, num_kv_heads, head_dim]`); returns the output,
/// shaped like `q`.
pub(crate) fn forward(
    op: &PagedAttention,
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
) -> candle_core::Result<Vec<f32>> {
    let meta = &op.meta;
    let d = meta.head_dim;
    let mut out = vec![0f32; meta.num_tokens * meta.num_heads * d];
    if out.is_empty() {
        return Ok(out);
    }
    let call = Call {
        meta,
        scale: op.scale,
        q,
        kc,
        vc,
        out: OutPtr::new(&mut out),
    };
    match op.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma if d.is_multiple_of(8) => match avx2::Avx2::new() {
            Some(k) => call.run(&k),
            None => candle_core::bail!("{OP}: AVX2/FMA not supported by this CPU"),
        },
        _ => call.run(&scalar::Scalar),
    }
    Ok(out)
}

/// The operands of one call, shared by its work items: each item writes its
/// own (token, head) rows of `out`.
struct Call<'a> {
    meta: &'a Meta,
    scale: f32,
    q: &'a [f32],
    kc: &'a [f32],
    vc: &'a [f32],
    out: OutPtr,
}

impl Call<'_> {
    /// Runs one [`Item`]. Its rows are ordered (kv head, token, head in
    /// group). Each row walks the key blocks `0..=pos / block_size` in order
    /// (the last one cut at the row's own position) with the kernel's
    /// online-softmax update, then gets `acc * (1 / l)`. Rows that have not
    /// reached a block skip it entirely, so a row's arithmetic depends only on
    /// its sequence, position and head. A block's K/V rows (all kv heads, one
    /// contiguous stretch of the cache) are read once for the whole item.
    fn item<K: Kernel>(&self, kern: &K, it: Item, sc: &mut Scratch) {
        let (m, q, kc, vc) = (self.meta, self.q, self.kc, self.vc);
        let (d, bs, h, kv) = (m.head_dim, m.block_size, m.num_heads, m.num_kv_heads);
        let (g, kw, ks) = (h / kv, bs.next_multiple_of(8), kv * d);
        let w = Widths { d, kw };
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
                // The next block's K/V rows of this item's kv heads, so that
                // its loads do not stall.
                let next = table[b + 1] as usize * bs * ks + it.x0 * d;
                let n_next = bs.min(last + 1 - k0 - bs);
                let end = (next + (n_next - 1) * ks + (it.x1 - it.x0) * d).min(kc.len());
                let span = next.min(end)..end;
                prefetch(&kc[span.clone()]);
                prefetch(&vc[span]);
            }
            for (i, x) in (it.x0..it.x1).enumerate() {
                let off = blk + x * d;
                let span = off..off + (nk - 1) * ks + d;
                let kb = KvRows {
                    data: &kc[span.clone()],
                    stride: ks,
                    n: nk,
                };
                let vb = KvRows {
                    data: &vc[span],
                    ..kb
                };
                let (lo, hi) = (i * n + r0, (i + 1) * n);
                let s = &mut sc.s[lo * kw..];
                kern.scores(w, &sc.q[lo * d..hi * d], kb, self.scale, s);
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
                    kern.pv(w, acc, &sc.s[r * kw..], &sc.c[r..], vb.take(cnt));
                }
                if full < hi {
                    let (acc, p) = (&mut sc.acc[full * d..hi * d], &sc.s[full * kw..]);
                    kern.pv(w, acc, p, &sc.c[full..], vb.take(bs));
                }
            }
        }
        for (r, acc) in sc.acc.chunks_exact(d).enumerate() {
            let inv = 1.0 / sc.l[r];
            let (x, t, gi) = (it.x0 + r / n, r % n / g, r % g);
            let dst = ((q0 + it.j0 + t) * h + x * g + gi) * d;
            // SAFETY: row (token, head) belongs to this item alone and lies
            // inside the [num_tokens, num_heads, head_dim] output.
            let o = unsafe { self.out.slice_mut(dst, d) };
            for (o, a) in o.iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }

    /// Splits the batch into items (query tiles of [`TILE`] tokens with all
    /// kv heads, or one kv head each when that gives too few items to keep
    /// the threads busy) and runs them in parallel with `kern`.
    fn run<K: Kernel>(&self, kern: &K) {
        let m = self.meta;
        let tiles = |seq: usize| {
            let q_len = (m.query_start_loc[seq + 1] - m.query_start_loc[seq]) as usize;
            (0..q_len)
                .step_by(TILE)
                .map(move |j0| (j0, q_len.min(j0 + TILE)))
        };
        let seqs = 0..m.context_lens.len();
        let count: usize = seqs.clone().map(|s| tiles(s).count()).sum();
        let heads: Vec<(usize, usize)> = if count < 2 * rayon::current_num_threads() {
            (0..m.num_kv_heads).map(|x| (x, x + 1)).collect()
        } else {
            vec![(0, m.num_kv_heads)]
        };
        let mut items = Vec::new();
        for seq in seqs {
            for (j0, j1) in tiles(seq) {
                let item = |&(x0, x1): &(usize, usize)| Item {
                    seq,
                    j0,
                    j1,
                    x0,
                    x1,
                };
                items.extend(heads.iter().map(item));
            }
        }
        items.par_iter().with_max_len(1).for_each(|&it| {
            SCRATCH.with_borrow_mut(|sc| self.item(kern, it, sc));
        });
    }
}
