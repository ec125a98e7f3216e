//! `reshape_and_cache` and `copy_blocks` against the CPU kernel: bitwise (they only move
//! values).

use candle_core::{Device, Tensor};
use inferd_kernels::cuda::ops::cache::{CacheKernels, CacheShape};
use inferd_kernels::cuda::Dtype;
use inferd_kernels::reshape_and_cache;

use crate::common::Rng;
use crate::harness::*;

fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit()).collect()
}

#[test]
fn reshape_and_cache_matches_the_cpu_kernel() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = CacheKernels::new(gpu, dtype).unwrap();
        for (num_blocks, block_size, kv, d, tokens) in [
            (8, 16, 2, 64, 37),
            (5, 1, 8, 128, 5),
            (3, 256, 1, 64, 300),
            (4, 32, 4, 128, 1),
        ] {
            let mut rng = Rng::new(tokens as u64);
            let shape = CacheShape {
                num_blocks,
                block_size,
                num_kv_heads: kv,
                head_dim: d,
            };
            let mut slots: Vec<u32> = (0..(num_blocks * block_size) as u32).collect();
            rng.shuffle(&mut slots);
            slots.truncate(tokens);
            let cache0 = round(dtype, &rand_vec(&mut rng, shape.elements()));
            let k = round(dtype, &rand_vec(&mut rng, tokens * kv * d));
            let v = round(dtype, &rand_vec(&mut rng, tokens * kv * d));
            // CPU.
            let dims = [num_blocks, block_size, kv, d];
            let kc = Tensor::from_slice(&cache0, &dims[..], &Device::Cpu).unwrap();
            let vc = kc.copy().unwrap();
            let kt = Tensor::from_slice(&k, (tokens, kv, d), &Device::Cpu).unwrap();
            let vt = Tensor::from_slice(&v, (tokens, kv, d), &Device::Cpu).unwrap();
            let st = Tensor::new(slots.as_slice(), &Device::Cpu).unwrap();
            reshape_and_cache(&kt, &vt, &kc, &vc, &st).unwrap();
            // GPU.
            let (gk, gv) = (upload_f(dtype, &k), upload_f(dtype, &v));
            let mut gkc = upload_f(dtype, &cache0);
            let mut gvc = upload_f(dtype, &cache0);
            let gs = upload(&slots);
            kernels
                .reshape_and_cache(
                    gpu,
                    shape,
                    tokens,
                    &gk.as_view(),
                    &gv.as_view(),
                    &mut gkc,
                    &mut gvc,
                    &gs.as_view(),
                )
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(download_f(dtype, &gkc), flat(&kc), "{dtype:?} K {dims:?}");
            assert_eq!(download_f(dtype, &gvc), flat(&vc), "{dtype:?} V {dims:?}");
        }
    }
}

#[test]
fn a_skipped_slot_writes_nothing() {
    let gpu = gpu();
    let dtype = Dtype::Bf16;
    let kernels = CacheKernels::new(gpu, dtype).unwrap();
    let shape = CacheShape {
        num_blocks: 2,
        block_size: 4,
        num_kv_heads: 1,
        head_dim: 64,
    };
    let zeros = vec![0f32; shape.elements()];
    let k = vec![1f32; 2 * 64];
    let (mut kc, mut vc) = (upload_f(dtype, &zeros), upload_f(dtype, &zeros));
    let slots = upload(&[u32::MAX, 5]);
    let (gk, gv) = (upload_f(dtype, &k), upload_f(dtype, &k));
    kernels
        .reshape_and_cache(
            gpu,
            shape,
            2,
            &gk.as_view(),
            &gv.as_view(),
            &mut kc,
            &mut vc,
            &slots.as_view(),
        )
        .unwrap();
    let got = download_f(dtype, &kc);
    for (slot, row) in got.chunks(64).enumerate() {
        let want = if slot == 5 { 1.0 } else { 0.0 };
        assert!(row.iter().all(|&x| x == want), "slot {slot}: {row:?}");
    }
}

#[test]
fn copy_blocks_copies_k_and_v() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = CacheKernels::new(gpu, dtype).unwrap();
        let shape = CacheShape {
            num_blocks: 6,
            block_size: 16,
            num_kv_heads: 2,
            head_dim: 128,
        };
        let mut rng = Rng::new(7);
        let k0 = round(dtype, &rand_vec(&mut rng, shape.elements()));
        let v0 = round(dtype, &rand_vec(&mut rng, shape.elements()));
        let (mut kc, mut vc) = (upload_f(dtype, &k0), upload_f(dtype, &v0));
        let pairs = [0u32, 3, 5, 1];
        kernels
            .copy_blocks(gpu, shape, &mut kc, &mut vc, &upload(&pairs).as_view())
            .unwrap();
        let bw = shape.block_size * shape.kv_width();
        let (mut kw, mut vw) = (k0.clone(), v0.clone());
        for p in pairs.chunks(2) {
            let (s, d) = (p[0] as usize * bw, p[1] as usize * bw);
            kw.copy_within(s..s + bw, d);
            vw.copy_within(s..s + bw, d);
        }
        assert_eq!(download_f(dtype, &kc), kw);
        assert_eq!(download_f(dtype, &vc), vw);
    }
}
