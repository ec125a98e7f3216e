//! The GPU's attention algorithms against the CPU kernel [`crate::paged_attention`] on
//! ragged batches: block sizes 1..=256, head dims 64 and 128, GQA 1 and 4, decode contexts over
//! several partitions, prefill and chunked prefill with a cached prefix. Plus checks that the
//! comparison can fail (a wrong reduce or a wrong block table is caught).

use candle_core::{Device, Tensor};

use super::*;

/// Agreement of two f32 computations of the same attention (different sum orders, the CPU
/// kernel's polynomial `exp`): `|a - b| <= TOL * max(1, |b|)`.
const TOL: f32 = 2e-5;

/// Deterministic uniform `[-1, 1)` data.
fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A ragged batch over one shared, shuffled cache.
#[derive(Clone)]
struct Batch {
    g: Geometry,
    kc: Vec<f32>,
    vc: Vec<f32>,
    tables: Vec<u32>,
    max_blocks: usize,
    ctx: Vec<u32>,
    qsl: Vec<u32>,
    q: Vec<f32>,
    scale: f32,
}

impl Batch {
    /// Sequences given as `(q_len, context_len)`.
    fn new(g: Geometry, seqs: &[(usize, usize)], seed: u64) -> Batch {
        let bs = g.block_size;
        let need: Vec<usize> = seqs.iter().map(|&(_, c)| c.div_ceil(bs)).collect();
        let num_blocks = need.iter().sum::<usize>() + 3;
        let max_blocks = need.iter().max().copied().unwrap_or(0) + 1;
        // Physical blocks: a permutation of the pool (coprime stride), so sequences interleave.
        let stride = (1..).map(|k| 7 + 2 * k).find(|s| gcd(*s, num_blocks) == 1);
        let stride = stride.unwrap_or(1);
        let mut next = (0..num_blocks).map(|i| ((i * stride + 5) % num_blocks) as u32);
        // Entries past a context may hold anything: u32::MAX makes a stray read panic.
        let mut tables = vec![u32::MAX; seqs.len() * max_blocks];
        for (s, &n) in need.iter().enumerate() {
            for i in 0..n {
                tables[s * max_blocks + i] = next.next().unwrap_or(0);
            }
        }
        let mut qsl = vec![0u32];
        for &(q_len, _) in seqs {
            qsl.push(qsl[qsl.len() - 1] + q_len as u32);
        }
        let width = g.num_heads * g.head_dim;
        let cache = num_blocks * bs * g.num_kv_heads * g.head_dim;
        Batch {
            g,
            kc: data(seed, cache),
            vc: data(seed + 1, cache),
            tables,
            max_blocks,
            ctx: seqs.iter().map(|&(_, c)| c as u32).collect(),
            // Larger queries than keys: peakier softmaxes, so partition maxima matter.
            q: data(seed + 2, qsl[seqs.len()] as usize * width)
                .iter()
                .map(|x| 3.0 * x)
                .collect(),
            qsl,
            scale: 1.0 / (g.head_dim as f32).sqrt(),
        }
    }

    fn kv(&self) -> PagedKv<'_> {
        PagedKv {
            key_cache: &self.kc,
            value_cache: &self.vc,
            block_tables: &self.tables,
            max_blocks_per_seq: self.max_blocks,
            context_lens: &self.ctx,
        }
    }

    /// The CPU kernel's answer.
    fn cpu(&self) -> Vec<f32> {
        let g = &self.g;
        let cpu = &Device::Cpu;
        let cache = (
            self.kc.len() / (g.block_size * g.num_kv_heads * g.head_dim),
            g.block_size,
            g.num_kv_heads,
            g.head_dim,
        );
        let tokens = *self.qsl.last().unwrap_or(&0) as usize;
        let t = |v: &[f32], shape| Tensor::from_slice(v, shape, cpu).unwrap();
        let q = Tensor::from_slice(&self.q, (tokens, g.num_heads, g.head_dim), cpu).unwrap();
        let (kc, vc) = (t(&self.kc, cache), t(&self.vc, cache));
        let seqs = self.ctx.len();
        let bt = Tensor::from_slice(&self.tables, (seqs, self.max_blocks), cpu).unwrap();
        let cl = Tensor::from_slice(&self.ctx, seqs, cpu).unwrap();
        let qsl = Tensor::from_slice(&self.qsl, seqs + 1, cpu).unwrap();
        let out = crate::paged_attention(&q, &kc, &vc, &bt, &cl, &qsl, self.scale).unwrap();
        out.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn decode(&self, partition: usize) -> Vec<f32> {
        decode_split_k(&self.g, &self.kv(), &self.q, self.scale, partition).unwrap()
    }

    fn prefill(&self) -> Vec<f32> {
        prefill_tiled(&self.g, &self.kv(), &self.q, &self.qsl, self.scale).unwrap()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The worst `|a - b| / max(1, |b|)` (NaN counts as infinite).
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let e = (x - y).abs() / y.abs().max(1.0);
            if e.is_nan() {
                f32::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f32::max)
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    let w = worst(a, b);
    assert!(w <= TOL, "{what}: worst relative error {w} > {TOL}");
    // The outputs are not trivially small: the tolerance means something.
    let mean = b.iter().map(|x| x.abs()).sum::<f32>() / b.len().max(1) as f32;
    assert!(mean > 100.0 * TOL, "{what}: outputs too small ({mean})");
}

const BLOCK_SIZES: [usize; 5] = [1, 8, 16, 32, 256];

/// (head_dim, num_heads, num_kv_heads): GQA ratios 1 and 4.
const HEADS: [(usize, usize, usize); 4] = [(64, 4, 4), (64, 8, 2), (128, 2, 2), (128, 4, 1)];

fn geometry(
    block_size: usize,
    (head_dim, num_heads, num_kv_heads): (usize, usize, usize),
) -> Geometry {
    Geometry {
        num_heads,
        num_kv_heads,
        head_dim,
        block_size,
    }
}

/// Decode contexts around and across partition boundaries, up to 4 partitions.
const DECODE_CONTEXTS: [usize; 8] = [1, 7, 511, 512, 513, 1100, 1537, 2048];

#[test]
fn split_k_decode_matches_the_cpu_kernel() {
    for bs in BLOCK_SIZES {
        for heads in HEADS {
            let g = geometry(bs, heads);
            let seqs: Vec<_> = DECODE_CONTEXTS.iter().map(|&c| (1, c)).collect();
            let b = Batch::new(g, &seqs, bs as u64 * 31 + heads.0 as u64);
            let cpu = b.cpu();
            assert_close(&format!("decode {g:?}"), &b.decode(PARTITION_SIZE), &cpu);
            // The algorithm does not depend on the partition size (only the GPU fixes it).
            if bs == 16 {
                assert_close(&format!("decode {g:?} partition 100"), &b.decode(100), &cpu);
            }
        }
    }
}

#[test]
fn tiled_prefill_matches_the_cpu_kernel() {
    // (q_len, context): full prefills, chunked prefills over a cached prefix, decode rows, a
    // sequence with no rows this step, tiles cut inside blocks and across key tiles.
    let seqs = [
        (37, 37),
        (16, 300),
        (1, 513),
        (0, 40),
        (100, 700),
        (33, 33),
        (1, 1),
    ];
    for bs in BLOCK_SIZES {
        for heads in HEADS {
            let g = geometry(bs, heads);
            let b = Batch::new(g, &seqs, bs as u64 * 17 + heads.1 as u64);
            assert_close(&format!("prefill {g:?}"), &b.prefill(), &b.cpu());
        }
    }
}

#[test]
fn chunked_prefill_equals_one_prefill() {
    // The same sequence, 300 tokens, as one prefill and as chunks over its cached prefix.
    let g = geometry(16, (64, 8, 2));
    let full = Batch::new(g, &[(300, 300)], 5);
    let want = full.prefill();
    let row = g.num_heads * g.head_dim;
    for (a, c) in [(0, 100), (100, 164), (164, 165), (165, 300)] {
        let mut chunk = full.clone();
        chunk.ctx = vec![c as u32];
        chunk.qsl = vec![0, (c - a) as u32];
        chunk.q = full.q[a * row..c * row].to_vec();
        let got = chunk.prefill();
        assert_close("chunk vs full", &got, &want[a * row..c * row]);
        assert_close("chunk vs cpu", &got, &chunk.cpu());
    }
}

#[test]
fn decode_equals_the_prefill_row() {
    let g = geometry(8, (128, 4, 1));
    let b = Batch::new(g, &[(1, 1500), (1, 3), (1, 600)], 9);
    assert_close("decode vs prefill", &b.decode(PARTITION_SIZE), &b.prefill());
}

#[test]
fn an_empty_context_decodes_to_zeros() {
    let g = geometry(16, (64, 4, 2));
    let b = Batch::new(g, &[(1, 0), (1, 20)], 3);
    let out = b.decode(PARTITION_SIZE);
    let row = g.num_heads * g.head_dim;
    assert!(out[..row].iter().all(|&x| x == 0.0));
    assert!(out[row..].iter().any(|&x| x != 0.0));
}

/// The data is sensitive to the split-K combination: leaving out the `exp(m_p - M)` rescale
/// of the reduce is caught by far.
#[test]
fn a_reduce_without_the_max_rescale_is_caught() {
    let g = geometry(16, (64, 4, 4));
    let b = Batch::new(g, &[(1, 2000)], 11);
    let cpu = b.cpu();
    let (kv, d) = (b.kv(), g.head_dim);
    let mut wrong = Vec::new();
    for h in 0..g.num_heads {
        let q = &b.q[h * d..(h + 1) * d];
        let parts: Vec<Partial> = (0..2000)
            .step_by(PARTITION_SIZE)
            .map(|t0| {
                decode_partition(
                    &g,
                    &kv,
                    q,
                    0,
                    h,
                    (t0, 2000.min(t0 + PARTITION_SIZE)),
                    b.scale,
                )
            })
            .collect();
        let right = reduce_partitions(&parts, d);
        assert!(worst(&right, &cpu[h * d..(h + 1) * d]) <= TOL);
        let l: f32 = parts.iter().map(|p| p.exp_sum).sum();
        wrong.extend((0..d).map(|i| parts.iter().map(|p| p.exp_sum * p.out[i]).sum::<f32>() / l));
    }
    let w = worst(&wrong, &cpu);
    assert!(w > 100.0 * TOL, "a wrong reduce is only {w} off");
}

/// Pointing one entry of a sequence's table at another block (a spare one) changes the answer
/// well beyond the tolerance. (Swapping two of its blocks would not change a decode row, which
/// attends to every key; it does change prefill rows.)
#[test]
fn a_wrong_block_table_is_caught() {
    for (g, seqs) in [
        (geometry(32, (128, 4, 1)), vec![(1, 1000)]),
        (geometry(8, (64, 8, 2)), vec![(40, 200)]),
    ] {
        let mut b = Batch::new(g, &seqs, 13);
        let cpu = b.cpu();
        let num_blocks = b.kc.len() / (g.block_size * g.num_kv_heads * g.head_dim);
        let used = &b.tables[..b.max_blocks];
        let spare = (0..num_blocks as u32).find(|x| !used.contains(x));
        b.tables[1] = spare.unwrap_or(0);
        let got = if seqs[0].0 == 1 {
            b.decode(PARTITION_SIZE)
        } else {
            b.prefill()
        };
        let w = worst(&got, &cpu);
        assert!(w > 100.0 * TOL, "{g:?}: a wrong table is only {w} off");
    }
}

#[test]
fn inconsistent_operands_are_refused() {
    let g = geometry(16, (64, 4, 2));
    let b = Batch::new(g, &[(2, 20)], 1);
    let kv = b.kv();
    let bad_gqa = Geometry { num_heads: 3, ..g };
    assert!(decode_split_k(&bad_gqa, &kv, &b.q, 1.0, 512).is_err());
    assert!(
        decode_split_k(&g, &kv, &b.q, 1.0, 512).is_err(),
        "2 rows for 1 sequence"
    );
    assert!(decode_split_k(&g, &kv, &b.q[..256], 1.0, 0).is_err());
    assert!(prefill_tiled(&g, &kv, &b.q, &[0, 3], 1.0).is_err());
    assert!(prefill_tiled(&g, &kv, &b.q, &[1, 2], 1.0).is_err());
    let over = PagedKv {
        context_lens: &[100],
        ..kv
    };
    assert!(prefill_tiled(&g, &over, &b.q, &b.qsl, 1.0).is_err());
    let mut tables = b.tables.clone();
    tables[1] = u32::MAX;
    let stray = PagedKv {
        block_tables: &tables,
        ..kv
    };
    assert!(prefill_tiled(&g, &stray, &b.q, &b.qsl, 1.0).is_err());
    let narrow = PagedKv {
        block_tables: &b.tables[1..],
        ..kv
    };
    assert!(prefill_tiled(&g, &narrow, &b.q, &b.qsl, 1.0).is_err());
    assert!(prefill_tiled(&g, &kv, &b.q, &b.qsl, 1.0).is_ok());
    let short = PagedKv {
        value_cache: &b.vc[1..],
        ..kv
    };
    assert!(prefill_tiled(&g, &short, &b.q, &b.qsl, 1.0).is_err());
}
