//! cuBLASLt `linear` (bf16/f16 in and out, f32 accumulation) against the CPU kernel
//! `inferd_kernels::linear` on the same rounded inputs, for the shapes a Llama step has:
//! decode batches of 1..64 rows and prefill chunks, through square and MLP-sized weights.

use candle_core::{Device, Tensor};
use inferd_kernels::cuda::Blas;

use crate::common::Rng;
use crate::harness::*;

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

/// The CPU kernel's `x [m, k] · w [n, k]ᵀ`, flat.
fn cpu_linear(x: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    inferd_kernels::linear(
        &Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap(),
        &Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap(),
    )
    .unwrap()
    .flatten_all()
    .unwrap()
    .to_vec1::<f32>()
    .unwrap()
}

#[test]
fn linear_matches_the_cpu_kernel() {
    let gpu = gpu();
    let blas = Blas::new(gpu).expect("cuBLASLt");
    for dtype in DTYPES {
        for (m, n, k) in [
            (1, 2048, 2048),
            (3, 512, 2048),
            (16, 16384, 2048),
            (64, 2048, 8192),
            (257, 1024, 4096),
        ] {
            let mut rng = Rng::new((m * n + k) as u64);
            // Scaled so every output is O(1): the tolerance is then relative to 1.
            let x = round(dtype, &rand_vec(&mut rng, m * k, 1.0));
            let w = round(dtype, &rand_vec(&mut rng, n * k, 1.0 / (k as f32).sqrt()));
            let want = cpu_linear(&x, &w, (m, n, k));
            let (gx, gw) = (upload_f(dtype, &x), upload_f(dtype, &w));
            let mut gy = upload_f(dtype, &vec![0.0; m * n]);
            blas.linear(gpu, dtype, (m, n, k), &gx, &gw, &mut gy, false)
                .unwrap();
            let got = download_f(dtype, &gy);
            // f32 accumulation, one rounding of the output: within a couple of ulps.
            assert_close_slice(
                &format!("{dtype:?} linear m={m} n={n} k={k}"),
                &got,
                &want,
                2.0 * eps(dtype),
            );
            // Accumulating into y adds the product again.
            blas.linear(gpu, dtype, (m, n, k), &gx, &gw, &mut gy, true)
                .unwrap();
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_close_slice(
                &format!("{dtype:?} linear += m={m} n={n} k={k}"),
                &download_f(dtype, &gy),
                &twice,
                4.0 * eps(dtype),
            );
        }
    }
}

/// The output projection: f32 logits straight from the GEMM (no rounding to the dtype), so
/// the tolerance is the accumulation's, far below one ulp of the dtype.
#[test]
fn linear_f32_matches_the_cpu_kernel_unrounded() {
    let gpu = gpu();
    let blas = Blas::new(gpu).expect("cuBLASLt");
    for dtype in DTYPES {
        for (m, n, k) in [(1, 49152, 576), (7, 32000, 2048), (16, 128256, 1024)] {
            let mut rng = Rng::new((m + n * k) as u64);
            let x = round(dtype, &rand_vec(&mut rng, m * k, 1.0));
            let w = round(dtype, &rand_vec(&mut rng, n * k, 1.0 / (k as f32).sqrt()));
            let want = cpu_linear(&x, &w, (m, n, k));
            let (gx, gw) = (upload_f(dtype, &x), upload_f(dtype, &w));
            let mut gy = upload(&vec![0f32; m * n]);
            blas.linear_f32(gpu, dtype, (m, n, k), &gx, &gw, &mut gy)
                .unwrap();
            // Both sum k exact products of dtype values in f32, in different orders.
            assert_close_slice(
                &format!("{dtype:?} linear_f32 m={m} n={n} k={k}"),
                &download(&gy),
                &want,
                1e-4,
            );
        }
    }
}

#[test]
fn linear_checks_its_operands() {
    let gpu = gpu();
    let blas = Blas::new(gpu).expect("cuBLASLt");
    let dtype = DTYPES[0];
    let x = upload_f(dtype, &[0.0; 8]);
    let w = upload_f(dtype, &[0.0; 12]);
    let mut y = upload_f(dtype, &[0.0; 6]);
    // w must be exactly [n, k] = [3, 4]; [2, 4] of x gives [2, 3] of y.
    blas.linear(gpu, dtype, (2, 3, 4), &x, &w, &mut y, false)
        .unwrap();
    let err = blas
        .linear(gpu, dtype, (2, 4, 4), &x, &w, &mut y, false)
        .unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
    let err = blas
        .linear(gpu, dtype, (3, 3, 4), &x, &w, &mut y, false)
        .unwrap_err();
    assert!(err.to_string().contains("`x`"), "{err}");
}
