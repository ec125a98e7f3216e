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
    for (h, kv, bs) in [(6, 2, 16), (4, 4, 4)] {
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
