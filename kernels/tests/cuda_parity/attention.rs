//! `paged_attention_{decode,reduce,prefill}` (`AttentionKernels`) against the CPU kernel
//! `inferd_kernels::paged_attention`, on the same bf16/f16-rounded query and caches, the
//! same (shuffled) block tables and the same contexts: decode batches with ragged contexts
//! of one partition and of many (split-K + reduce, up to 8192 tokens), mixed prefill /
//! chunked prefill (cached prefixes) / decode batches, then decode over the very tables a
//! prefill used; GQA and MHA, head dims 64 and 128, block sizes 1, 16, 32 and 256.
//!
//! Tolerance (`assert_attention_close`): `|gpu - cpu| <= 4 * eps * max(|cpu|, 1/8)`. Both
//! sides compute in f32 from the same rounded inputs; the GPU then rounds its output to the
//! dtype (round to nearest), which alone costs up to half an ulp, i.e. `eps / 2 * |x|`. The
//! two f32 computations differ only in summation order, FMAs and `exp` (the CPU's is a
//! polynomial with relative error < 2e-7): about 1e-5 absolute at the longest contexts here,
//! far below the floor's `eps / 2` (2e-3 for bf16, 5e-4 for f16). So the bound leaves 8x
//! over the output rounding, while a kernel that drops, repeats or mis-masks a key with any
//! weight (the query scale below makes attention peaky) misses it by far more.

use candle_core::{Device, Tensor};
use inferd_kernels::cuda::cudarc::driver::CudaSlice;
use inferd_kernels::cuda::ops::attention::{AttentionKernels, PagedKv};
use inferd_kernels::cuda::{CudaError, Dtype};
use inferd_kernels::paged_attention;

use crate::common::Rng;
use crate::harness::*;

/// Query entries are uniform in `[-Q_SCALE, Q_SCALE)`, keys and values in `[-1, 1)`: scores
/// `q·k / sqrt(d)` then have a standard deviation of `Q_SCALE / 3` = 2, so a few keys carry
/// most of the weight (a near-uniform softmax would average every output towards 0 and hide
/// a missing partition under the tolerance).
const Q_SCALE: f32 = 6.0;

/// Head geometry and cache block size of a case.
#[derive(Clone, Copy, Debug)]
struct Geom {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

impl Geom {
    const fn new(heads: usize, kv_heads: usize, head_dim: usize, block_size: usize) -> Self {
        Self {
            heads,
            kv_heads,
            head_dim,
            block_size,
        }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    fn kernels(&self, dtype: Dtype) -> AttentionKernels {
        AttentionKernels::new(
            gpu(),
            dtype,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.block_size,
        )
        .unwrap_or_else(|e| panic!("{dtype:?} {self:?}: {e}"))
    }
}

/// One layer's paged cache and a batch's tables, host side, values already rounded to the
/// GPU dtype. Blocks are handed out from a shuffled pool (so no table is contiguous) with a
/// few spare blocks; table entries past a context hold other valid block ids (read, they
/// would change the results; being valid, they cannot fault the GPU for the tests after).
struct Paged {
    num_blocks: usize,
    max_blocks: usize,
    /// `[num_seqs, max_blocks]`.
    tables: Vec<u32>,
    contexts: Vec<u32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

impl Paged {
    fn new(rng: &mut Rng, dtype: Dtype, g: Geom, contexts: &[usize]) -> Self {
        let bs = g.block_size;
        let needed: Vec<usize> = contexts.iter().map(|c| c.div_ceil(bs)).collect();
        let max_blocks = needed.iter().copied().max().unwrap_or(0) + 1;
        let num_blocks = needed.iter().sum::<usize>() + 3;
        let mut pool: Vec<u32> = (0..num_blocks as u32).collect();
        rng.shuffle(&mut pool);
        let mut tables = Vec::with_capacity(contexts.len() * max_blocks);
        let mut next = 0;
        for &n in &needed {
            tables.extend_from_slice(&pool[next..next + n]);
            next += n;
            for _ in n..max_blocks {
                tables.push(rng.below(num_blocks) as u32);
            }
        }
        let elements = num_blocks * bs * g.kv_heads * g.head_dim;
        Self {
            num_blocks,
            max_blocks,
            tables,
            contexts: contexts.iter().map(|&c| c as u32).collect(),
            k: round(dtype, &rand_vec(rng, elements, 1.0)),
            v: round(dtype, &rand_vec(rng, elements, 1.0)),
        }
    }

    fn num_seqs(&self) -> usize {
        self.contexts.len()
    }

    fn max_context(&self) -> usize {
        self.contexts.iter().map(|&c| c as usize).max().unwrap_or(0)
    }

    /// The CPU kernel over these tables: `q` is `[num_tokens, heads, head_dim]`, sequence `s`
    /// owning rows `qsl[s]..qsl[s + 1]`.
    fn cpu(&self, g: Geom, q: &[f32], qsl: &[u32]) -> Vec<f32> {
        let dev = &Device::Cpu;
        let (h, kv, d, bs) = (g.heads, g.kv_heads, g.head_dim, g.block_size);
        let tokens = *qsl.last().unwrap() as usize;
        let query = Tensor::from_slice(q, (tokens, h, d), dev).unwrap();
        let cache = [self.num_blocks, bs, kv, d];
        let kc = Tensor::from_slice(&self.k, &cache[..], dev).unwrap();
        let vc = Tensor::from_slice(&self.v, &cache[..], dev).unwrap();
        let bt = Tensor::from_slice(&self.tables, (self.num_seqs(), self.max_blocks), dev).unwrap();
        let cl = Tensor::new(self.contexts.as_slice(), dev).unwrap();
        let qsl = Tensor::new(qsl, dev).unwrap();
        paged_attention(&query, &kc, &vc, &bt, &cl, &qsl, g.scale())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }
}

/// The cache and tables of a [`Paged`] on the GPU.
struct GpuPaged {
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
    tables: CudaSlice<u32>,
    contexts: CudaSlice<u32>,
    num_blocks: usize,
    max_blocks: usize,
    num_seqs: usize,
}

impl GpuPaged {
    fn new(dtype: Dtype, p: &Paged) -> Self {
        Self {
            k: upload_f(dtype, &p.k),
            v: upload_f(dtype, &p.v),
            tables: upload(&p.tables),
            contexts: upload(&p.contexts),
            num_blocks: p.num_blocks,
            max_blocks: p.max_blocks,
            num_seqs: p.num_seqs(),
        }
    }

    fn kv(&self) -> PagedKv<'_> {
        PagedKv {
            k_cache: self.k.as_view(),
            v_cache: self.v.as_view(),
            num_blocks: self.num_blocks,
            block_tables: self.tables.as_view(),
            max_blocks_per_seq: self.max_blocks,
            context_lens: self.contexts.as_view(),
            num_seqs: self.num_seqs,
        }
    }
}

/// GPU decode: `q` is `[num_seqs, heads, head_dim]`, one row per sequence. The scratch and
/// the output start as NaN, so a partition or a row the kernels fail to write shows.
fn gpu_decode(
    kernels: &AttentionKernels,
    dtype: Dtype,
    g: Geom,
    kv: &GpuPaged,
    max_context: usize,
    q: &[f32],
) -> Vec<f32> {
    let gpu = gpu();
    let gq = upload_f(dtype, q);
    let scratch_len = kernels.decode_scratch_len(kv.num_seqs, max_context);
    let mut scratch = upload(&vec![f32::NAN; scratch_len.max(1)]);
    let mut out = upload_f(dtype, &vec![f32::NAN; q.len()]);
    kernels
        .decode(
            gpu,
            &kv.kv(),
            max_context,
            &gq.as_view(),
            g.scale(),
            &mut scratch.as_view_mut(),
            &mut out.as_view_mut(),
        )
        .unwrap_or_else(|e| panic!("decode {dtype:?} {g:?}: {e}"));
    download_f(dtype, &out)
}

/// GPU prefill over `qsl` (output starts as NaN, as in [`gpu_decode`]).
fn gpu_prefill(
    kernels: &AttentionKernels,
    dtype: Dtype,
    g: Geom,
    kv: &GpuPaged,
    q: &[f32],
    qsl: &[u32],
) -> Vec<f32> {
    let gpu = gpu();
    let tokens = *qsl.last().unwrap() as usize;
    let gq = upload_f(dtype, q);
    let gqsl = upload(qsl);
    let mut out = upload_f(dtype, &vec![f32::NAN; q.len()]);
    kernels
        .prefill(
            gpu,
            &kv.kv(),
            tokens,
            &gq.as_view(),
            &gqsl.as_view(),
            g.scale(),
            &mut out.as_view_mut(),
        )
        .unwrap_or_else(|e| panic!("prefill {dtype:?} {g:?}: {e}"));
    download_f(dtype, &out)
}

/// `|got - want| <= 4 * eps * max(|want|, 1/8)` element-wise (see the module docs); NaN
/// fails. The message names the worst element's (token, head, dim).
fn assert_attention_close(what: &str, dtype: Dtype, g: Geom, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = 4.0 * eps(dtype);
    let mut worst = (0usize, 0f32);
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        let err = (x - y).abs() / y.abs().max(0.125);
        if err.is_nan() || err > worst.1 {
            worst = (i, err);
            if err.is_nan() {
                break;
            }
        }
    }
    let (i, err) = worst;
    let (d, h) = (g.head_dim, g.heads);
    assert!(
        err <= tol,
        "{what}: token {} head {} dim {}: gpu {} vs cpu {} (error {err} > {tol})",
        i / (h * d),
        i / d % h,
        i % d,
        got[i],
        want[i],
    );
}

/// Cumulative offsets of the query lengths.
fn offsets(q_lens: &[usize]) -> Vec<u32> {
    let mut qsl = vec![0u32];
    for &n in q_lens {
        qsl.push(qsl.last().unwrap() + n as u32);
    }
    qsl
}

/// Decode cases: geometry, contexts (0 is a padding row), and the `max_context` the launch
/// is sized for beyond the largest context (0: exactly the largest; more: a CUDA-graph
/// bucket with partitions that no context reaches).
fn decode_cases() -> Vec<(Geom, Vec<usize>, usize)> {
    vec![
        // GQA 4:1, split-K at 512 | 513, up to 8192 (16 partitions), a padding row.
        (
            Geom::new(8, 2, 128, 16),
            vec![1, 17, 511, 512, 513, 1025, 3000, 8192, 0],
            0,
        ),
        // MHA, block size 1 (one table entry per token).
        (Geom::new(4, 4, 64, 1), vec![1, 3, 600, 1100], 0),
        // GQA, block size 256: a partition spans two blocks.
        (Geom::new(8, 2, 64, 256), vec![300, 5000, 8192, 1], 0),
        // MHA d128 block 32 in a 4096 bucket: every context below it, some of one partition.
        (Geom::new(4, 4, 128, 32), vec![33, 700, 2048, 0, 512], 4096),
    ]
}

#[test]
fn decode_matches_the_cpu_kernel() {
    for dtype in DTYPES {
        for (case, (g, contexts, bucket)) in decode_cases().into_iter().enumerate() {
            let mut rng = Rng::new(100 + case as u64);
            let paged = Paged::new(&mut rng, dtype, g, &contexts);
            let row = g.heads * g.head_dim;
            let q = round(dtype, &rand_vec(&mut rng, contexts.len() * row, Q_SCALE));
            // CPU: sequences of context 0 get no query row (the CPU kernel needs
            // q_len <= context); the GPU writes zeros for them.
            let live: Vec<usize> = (0..contexts.len()).filter(|&s| contexts[s] > 0).collect();
            let q_cpu: Vec<f32> = live
                .iter()
                .flat_map(|&s| q[s * row..(s + 1) * row].iter().copied())
                .collect();
            let q_lens: Vec<usize> = contexts.iter().map(|&c| usize::from(c > 0)).collect();
            let cpu = paged.cpu(g, &q_cpu, &offsets(&q_lens));
            let mut want = vec![0f32; q.len()];
            for (i, &s) in live.iter().enumerate() {
                want[s * row..(s + 1) * row].copy_from_slice(&cpu[i * row..(i + 1) * row]);
            }

            let kernels = g.kernels(dtype);
            let kv = GpuPaged::new(dtype, &paged);
            let max_context = paged.max_context().max(bucket);
            let got = gpu_decode(&kernels, dtype, g, &kv, max_context, &q);
            let what = format!("decode {dtype:?} {g:?} contexts {contexts:?} max {max_context}");
            assert_attention_close(&what, dtype, g, &got, &want);
        }
    }
}

/// Prefill cases: geometry and per sequence `(context, query length)`: full prefills
/// (`q_len == context`), chunks over a cached prefix (`q_len < context`), decode rows
/// (`q_len == 1`) and sequences without rows this step (`q_len == 0`), tiles of 16 rows cut
/// unevenly.
fn prefill_cases() -> Vec<(Geom, Vec<(usize, usize)>)> {
    vec![
        (
            Geom::new(8, 2, 128, 16),
            vec![
                (37, 37),
                (100, 17),
                (1, 1),
                (600, 1),
                (1300, 200),
                (9, 0),
                (16, 16),
                (33, 33),
            ],
        ),
        (Geom::new(4, 4, 64, 1), vec![(5, 5), (40, 3), (70, 70)]),
        (
            Geom::new(8, 2, 64, 256),
            vec![(300, 300), (1000, 129), (513, 1), (8192, 40)],
        ),
        (
            Geom::new(6, 3, 128, 32),
            vec![(64, 20), (2000, 48), (31, 31), (1, 1)],
        ),
    ]
}

#[test]
fn prefill_and_decode_over_its_tables_match_the_cpu_kernel() {
    for dtype in DTYPES {
        for (case, (g, seqs)) in prefill_cases().into_iter().enumerate() {
            let mut rng = Rng::new(200 + case as u64);
            let contexts: Vec<usize> = seqs.iter().map(|s| s.0).collect();
            let q_lens: Vec<usize> = seqs.iter().map(|s| s.1).collect();
            let qsl = offsets(&q_lens);
            let paged = Paged::new(&mut rng, dtype, g, &contexts);
            let row = g.heads * g.head_dim;
            let tokens = *qsl.last().unwrap() as usize;
            let q = round(dtype, &rand_vec(&mut rng, tokens * row, Q_SCALE));
            let want = paged.cpu(g, &q, &qsl);

            let kernels = g.kernels(dtype);
            let kv = GpuPaged::new(dtype, &paged);
            let got = gpu_prefill(&kernels, dtype, g, &kv, &q, &qsl);
            let what = format!("prefill {dtype:?} {g:?} (context, q_len) {seqs:?}");
            assert_attention_close(&what, dtype, g, &got, &want);

            // The next decode step's kernel over the same cache and tables, with each
            // sequence's last query row: the CPU row at that position is the same whether it
            // came in a prefill or a decode step, so the prefill's reference rows serve.
            // Sequences without rows this step decode at their context with a zero query.
            let mut q_dec = vec![0f32; seqs.len() * row];
            let mut want_dec = vec![0f32; seqs.len() * row];
            let no_rows: Vec<usize> = (0..seqs.len()).filter(|&s| q_lens[s] == 0).collect();
            for (s, &n) in q_lens.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let last = (qsl[s + 1] as usize - 1) * row;
                q_dec[s * row..(s + 1) * row].copy_from_slice(&q[last..last + row]);
                want_dec[s * row..(s + 1) * row].copy_from_slice(&want[last..last + row]);
            }
            if !no_rows.is_empty() {
                // Their reference: the CPU kernel with one (zero) row each at the context.
                let lens: Vec<usize> = q_lens.iter().map(|&n| usize::from(n == 0)).collect();
                let q_zero = vec![0f32; no_rows.len() * row];
                let cpu = paged.cpu(g, &q_zero, &offsets(&lens));
                for (i, &s) in no_rows.iter().enumerate() {
                    want_dec[s * row..(s + 1) * row].copy_from_slice(&cpu[i * row..(i + 1) * row]);
                }
            }
            let got = gpu_decode(&kernels, dtype, g, &kv, paged.max_context(), &q_dec);
            let what = format!("decode after prefill {dtype:?} {g:?} contexts {contexts:?}");
            assert_attention_close(&what, dtype, g, &got, &want_dec);
        }
    }
}

/// Contexts past the block table (or past 2^31, which an `int` would read as negative) and
/// query rows past the context get NaN rows, never a silent answer or a read past the table.
#[test]
fn out_of_range_contexts_give_nan_rows() {
    let dtype = Dtype::Bf16;
    let g = Geom::new(2, 1, 64, 16);
    let kernels = g.kernels(dtype);
    let mut rng = Rng::new(300);
    // Tables of 4 entries (64 tokens) per sequence; the contexts are then overwritten.
    let mut paged = Paged::new(&mut rng, dtype, g, &[48, 48, 48, 3]);
    assert_eq!(paged.max_blocks, 4);
    paged.contexts = vec![0x8000_0000, 65, 0, 3];
    let kv = GpuPaged::new(dtype, &paged);
    let row = g.heads * g.head_dim;
    let nan = |x: &[f32]| x.iter().all(|v| v.is_nan());

    let q = round(dtype, &rand_vec(&mut rng, 4 * row, Q_SCALE));
    let got = gpu_decode(&kernels, dtype, g, &kv, 1024, &q);
    assert!(nan(&got[..row]), "decode, context 2^31: {:?}", &got[..4]);
    assert!(nan(&got[row..2 * row]), "decode, context 65 > 64");
    assert!(
        got[2 * row..3 * row].iter().all(|&v| v == 0.0),
        "decode, context 0"
    );
    assert!(
        got[3 * row..].iter().all(|v| v.is_finite()),
        "decode, context 3"
    );

    // Prefill: (2^31, 1), (65, 2), (0, 0), (3, 4): the last asks for more rows than context.
    let qsl = offsets(&[1, 2, 0, 4]);
    let q = round(dtype, &rand_vec(&mut rng, 7 * row, Q_SCALE));
    let got = gpu_prefill(&kernels, dtype, g, &kv, &q, &qsl);
    assert!(nan(&got[..row]), "prefill, context 2^31: {:?}", &got[..4]);
    assert!(nan(&got[row..3 * row]), "prefill, context 65 > 64");
    assert!(nan(&got[3 * row..]), "prefill, q_len 4 > context 3");
}

#[test]
fn unsupported_geometries_are_refused() {
    let gpu = gpu();
    for dtype in DTYPES {
        for (h, kv, d, bs) in [(8, 2, 64, 1), (8, 2, 128, 256), (4, 4, 64, 32)] {
            AttentionKernels::new(gpu, dtype, h, kv, d, bs)
                .unwrap_or_else(|e| panic!("{dtype:?} ({h}, {kv}, {d}, {bs}): {e}"));
        }
        for (h, kv, d, bs, what) in [
            (8, 2, 80, 16, "head_dim"),
            (8, 2, 128, 3, "block_size"),
            (8, 2, 128, 512, "block_size"),
            (8, 2, 64, 0, "block_size"),
            (8, 3, 128, 16, "num_heads"),
            (6, 4, 64, 16, "num_heads"),
            (8, 0, 64, 16, "num_heads"),
        ] {
            match AttentionKernels::new(gpu, dtype, h, kv, d, bs) {
                Ok(_) => panic!("{dtype:?} heads {h} kv {kv} dim {d} block {bs}: accepted"),
                Err(e) => {
                    assert!(matches!(e, CudaError::Unsupported { .. }), "{e}");
                    assert!(e.to_string().contains(what), "{what}: {e}");
                }
            }
        }
    }
}
