mod common;

use candle_core::{Device, Tensor};
use common::{assert_bitwise, assert_close, randn, Rng};
use inferd_kernels::{paged_attention, paged_attention_slow, KernelError};

/// A ragged batch over a shared paged cache whose blocks are handed out in
/// shuffled order; unused block-table entries hold garbage.
struct Batch {
    query: Tensor,
    kc: Tensor,
    vc: Tensor,
    block_tables: Vec<Vec<u32>>,
    seqs: Vec<(usize, usize)>, // (context_len, q_len)
    scale: f32,
}

fn build(
    rng: &mut Rng,
    h: usize,
    kv: usize,
    d: usize,
    bs: usize,
    seqs: &[(usize, usize)],
) -> Batch {
    let needed: Vec<usize> = seqs.iter().map(|&(ctx, _)| ctx.div_ceil(bs)).collect();
    let max_blocks = needed.iter().copied().max().unwrap_or(0) + 1;
    let num_blocks = needed.iter().sum::<usize>() + 3;
    let mut pool: Vec<u32> = (0..num_blocks as u32).collect();
    rng.shuffle(&mut pool);
    let mut next = 0;
    let block_tables = needed
        .iter()
        .map(|&n| {
            let mut row: Vec<u32> = pool[next..next + n].to_vec();
            next += n;
            row.resize_with(max_blocks, || rng.next_u64() as u32);
            row
        })
        .collect();
    let tokens: usize = seqs.iter().map(|s| s.1).sum();
    Batch {
        query: randn(rng, &[tokens, h, d]),
        kc: randn(rng, &[num_blocks, bs, kv, d]),
        vc: randn(rng, &[num_blocks, bs, kv, d]),
        block_tables,
        seqs: seqs.to_vec(),
        scale: 1.0 / (d as f32).sqrt(),
    }
}

type Meta = (Tensor, Tensor, Tensor);

fn meta(block_tables: &[Vec<u32>], seqs: &[(usize, usize)]) -> Meta {
    let dev = &Device::Cpu;
    let width = block_tables.first().map_or(1, |r| r.len());
    let flat: Vec<u32> = block_tables.concat();
    let bt = Tensor::from_vec(flat, (block_tables.len(), width), dev).unwrap();
    let cl: Vec<u32> = seqs.iter().map(|s| s.0 as u32).collect();
    let mut qsl = vec![0u32];
    for s in seqs {
        qsl.push(qsl.last().unwrap() + s.1 as u32);
    }
    let cl = Tensor::new(cl.as_slice(), dev).unwrap();
    (bt, cl, Tensor::new(qsl.as_slice(), dev).unwrap())
}

fn run(b: &Batch) -> (Tensor, Tensor) {
    let (bt, cl, qsl) = meta(&b.block_tables, &b.seqs);
    let fast = paged_attention(&b.query, &b.kc, &b.vc, &bt, &cl, &qsl, b.scale).unwrap();
    let slow = paged_attention_slow(&b.query, &b.kc, &b.vc, &bt, &cl, &qsl, b.scale).unwrap();
    (fast, slow)
}

fn check_case(seed: u64, h: usize, kv: usize, d: usize, bs: usize, seqs: &[(usize, usize)]) {
    let b = build(&mut Rng::new(seed), h, kv, d, bs, seqs);
    let (fast, slow) = run(&b);
    assert_eq!(fast.dims(), b.query.dims());
    assert_close(&fast, &slow, 1e-5);
}

#[test]
fn gqa_block16_mixed_prefill_chunked_decode() {
    // full prefill, decode, chunked prefill, q_len = 0, exact block multiple
    check_case(
        1,
        6,
        2,
        64,
        16,
        &[(37, 37), (50, 1), (70, 20), (5, 0), (16, 16)],
    );
}

#[test]
fn mha_block4() {
    check_case(2, 4, 4, 32, 4, &[(1, 1), (9, 3), (13, 1), (4, 4)]);
}

#[test]
fn odd_head_dim_and_single_kv_head() {
    check_case(3, 3, 1, 5, 4, &[(7, 7), (3, 1), (11, 2)]);
    check_case(4, 9, 3, 16, 16, &[(100, 1), (33, 33)]);
}

#[test]
fn smollm2_geometry_long_contexts() {
    check_case(9, 9, 3, 64, 16, &[(517, 517), (400, 130), (333, 1)]);
}

#[test]
fn empty_batches() {
    check_case(5, 6, 2, 8, 4, &[(5, 0), (0, 0)]);
    check_case(6, 6, 2, 8, 4, &[]);
}

#[test]
fn random_shapes() {
    let mut rng = Rng::new(77);
    for seed in 0..8 {
        let kv = 1 + rng.below(3);
        let h = kv * [1, 3, 2][rng.below(3)];
        let d = [8, 16, 64, 12][rng.below(4)];
        let bs = [4, 16][rng.below(2)];
        let seqs: Vec<(usize, usize)> = (0..1 + rng.below(5))
            .map(|_| {
                let ctx = 1 + rng.below(60);
                let q_len = match rng.below(3) {
                    0 => 1,
                    1 => ctx,
                    _ => rng.below(ctx + 1),
                };
                (ctx, q_len)
            })
            .collect();
        check_case(100 + seed, h, kv, d, bs, &seqs);
    }
}

#[test]
fn batch_invariance_bitwise() {
    for (h, kv, bs) in [(6, 2, 16), (4, 4, 4), (9, 3, 16)] {
        let seqs = [(37, 37), (50, 1), (70, 20), (9, 0), (23, 5)];
        let b = build(&mut Rng::new(42), h, kv, 64, bs, &seqs);
        let (batched, _) = run(&b);
        let mut q0 = 0;
        for (s, &(ctx, q_len)) in seqs.iter().enumerate() {
            let alone = Batch {
                query: b.query.narrow(0, q0, q_len).unwrap(),
                kc: b.kc.clone(),
                vc: b.vc.clone(),
                block_tables: vec![b.block_tables[s].clone()],
                seqs: vec![(ctx, q_len)],
                scale: b.scale,
            };
            let (out, _) = run(&alone);
            assert_bitwise(&out, &batched.narrow(0, q0, q_len).unwrap());
            q0 += q_len;
        }
    }
}

/// Copies of the caches where every slot of sequence 0 at position >= `ctx`
/// holds NaN: a kernel that touched them would poison its output.
fn poisoned(b: &Batch, ctx: usize) -> (Tensor, Tensor) {
    let dims = b.kc.dims().to_vec();
    let (bs, row) = (dims[1], dims[2] * dims[3]);
    let poison = |t: &Tensor| {
        let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let blocks = b.seqs[0].0.div_ceil(bs);
        for pos in ctx..blocks * bs {
            let slot = b.block_tables[0][pos / bs] as usize * bs + pos % bs;
            v[slot * row..(slot + 1) * row].fill(f32::NAN);
        }
        Tensor::from_vec(v, dims.as_slice(), &Device::Cpu).unwrap()
    };
    (poison(&b.kc), poison(&b.vc))
}

/// Rows `a..c` of sequence 0 of `b` run as one step with context `c` (cache
/// slots past `c` poisoned with NaN).
fn step(b: &Batch, a: usize, c: usize) -> Tensor {
    let (kc, vc) = poisoned(b, c);
    let part = Batch {
        query: b.query.narrow(0, a, c - a).unwrap(),
        kc,
        vc,
        block_tables: vec![b.block_tables[0].clone()],
        seqs: vec![(c, c - a)],
        scale: b.scale,
    };
    run(&part).0
}

/// The SmolLM2-135M geometry: 9 query heads on 3 kv heads, head_dim 64,
/// block 16. A row is bitwise the same in a one-step prefill, in chunked
/// prefills (chunks of 7 and 100) and as a single decode query.
#[test]
fn prefill_chunked_decode_are_bitwise_equal() {
    let n = 300;
    let b = build(&mut Rng::new(11), 9, 3, 64, 16, &[(n, n)]);
    let (full, slow) = run(&b);
    assert_close(&full, &slow, 1e-5);
    for chunk in [7, 100] {
        for a in (0..n).step_by(chunk) {
            let c = n.min(a + chunk);
            assert_bitwise(&step(&b, a, c), &full.narrow(0, a, c - a).unwrap());
        }
    }
    for p in 0..n {
        assert_bitwise(&step(&b, p, p + 1), &full.narrow(0, p, 1).unwrap());
    }
}

/// A sequence's rows do not change when other sequences (prefill, chunk,
/// decode) share the step, whatever its place in the batch.
#[test]
fn sequence_rows_do_not_depend_on_the_batch() {
    let n = 200;
    let seqs = [(n, n), (90, 1), (150, 33), (17, 17), (64, 1)];
    let b = build(&mut Rng::new(12), 9, 3, 64, 16, &seqs);
    let alone = step(&b, 0, n);
    let (batched, slow) = run(&b);
    assert_close(&batched, &slow, 1e-5);
    assert_bitwise(&batched.narrow(0, 0, n).unwrap(), &alone);
    // Its last row as a decode query before and after a prefill of another
    // sequence.
    let last = alone.narrow(0, n - 1, 1).unwrap();
    let decode = b.query.narrow(0, n - 1, 1).unwrap();
    let other = b.query.narrow(0, n + 1 + 33, 17).unwrap();
    for first in [true, false] {
        let (query, tables, seqs, at) = if first {
            let q = Tensor::cat(&[&decode, &other], 0).unwrap();
            (q, [0, 3], vec![(n, 1), (17, 17)], 0)
        } else {
            let q = Tensor::cat(&[&other, &decode], 0).unwrap();
            (q, [3, 0], vec![(17, 17), (n, 1)], 17)
        };
        let mixed = Batch {
            query,
            kc: b.kc.clone(),
            vc: b.vc.clone(),
            block_tables: tables.map(|s| b.block_tables[s].clone()).to_vec(),
            seqs,
            scale: b.scale,
        };
        let (out, slow) = run(&mixed);
        assert_close(&out, &slow, 1e-5);
        assert_bitwise(&out.narrow(0, at, 1).unwrap(), &last);
    }
}

/// The result does not depend on the number of threads.
#[test]
fn thread_count_does_not_change_results() {
    let seqs = [(300, 300), (90, 1), (150, 33), (64, 1)];
    let b = build(&mut Rng::new(13), 9, 3, 64, 16, &seqs);
    let (reference, _) = run(&b);
    for threads in [1, 2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (out, _) = pool.install(|| run(&b));
        assert_bitwise(&out, &reference);
    }
}

#[test]
fn invalid_arguments_are_typed_errors() {
    let b = build(&mut Rng::new(8), 6, 2, 8, 4, &[(6, 2), (3, 1)]);
    let call = |bt: &[Vec<u32>], seqs: &[(usize, usize)], q: &Tensor| {
        let (bt, cl, qsl) = meta(bt, seqs);
        paged_attention(q, &b.kc, &b.vc, &bt, &cl, &qsl, 1.0)
    };
    let mut bad = b.block_tables.clone();
    bad[1][0] = 1000;
    let e = call(&bad, &b.seqs, &b.query);
    assert!(
        matches!(
            e,
            Err(KernelError::OutOfRange {
                name: "block_tables",
                ..
            })
        ),
        "{e:?}"
    );
    let e = call(&b.block_tables, &[(6, 2), (0, 1)], &b.query);
    assert!(matches!(e, Err(KernelError::Invalid { .. })), "{e:?}");
    let e = call(&b.block_tables, &[(6, 2), (100, 1)], &b.query);
    assert!(
        matches!(
            e,
            Err(KernelError::OutOfRange {
                name: "context_lens",
                ..
            })
        ),
        "{e:?}"
    );
    let e = call(&b.block_tables, &[(6, 1), (3, 1)], &b.query);
    assert!(matches!(e, Err(KernelError::Invalid { .. })), "{e:?}");
    let q5 = b.query.narrow(1, 0, 5).unwrap().contiguous().unwrap();
    let e = call(&b.block_tables, &b.seqs, &q5);
    assert!(matches!(e, Err(KernelError::Invalid { .. })), "{e:?}");
    let qt = b.query.narrow(1, 0, 4).unwrap();
    let e = call(&b.block_tables, &b.seqs, &qt);
    assert!(
        matches!(e, Err(KernelError::NotContiguous { name: "query", .. })),
        "{e:?}"
    );
}
