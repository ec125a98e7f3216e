//! `silu_mul` (separate gate and up, and a fused gate|up product) against
//! `reference::activation`: within 2 ulp of the dtype.

use inferd_kernels::cuda::ops::activation::ActivationKernels;
use inferd_kernels::reference::activation::{silu_mul, silu_mul_fused};

use crate::common::Rng;
use crate::harness::*;

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

#[test]
fn silu_mul_matches_the_spec() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = ActivationKernels::new(gpu, dtype).unwrap();
        for (rows, inter) in [(1, 1536), (5, 8192), (33, 1537), (2, 14336)] {
            let mut rng = Rng::new((rows + inter) as u64);
            let gate = round(dtype, &rand_vec(&mut rng, rows * inter, 6.0));
            let up = round(dtype, &rand_vec(&mut rng, rows * inter, 2.0));
            let mut want = vec![0f32; rows * inter];
            silu_mul(&gate, &up, &mut want);
            let (gg, gu) = (upload_f(dtype, &gate), upload_f(dtype, &up));
            let mut out = upload_f(dtype, &vec![0.0; rows * inter]);
            kernels
                .silu_mul(
                    gpu,
                    rows,
                    inter,
                    &gg.as_view(),
                    &gu.as_view(),
                    &mut out.as_view_mut(),
                )
                .unwrap();
            let what = format!("{dtype:?} silu_mul [{rows}, {inter}]");
            assert_close_slice(&what, &download_f(dtype, &out), &want, 2.0 * eps(dtype));

            // The same values as one fused [rows, 2 * inter] product.
            let fused: Vec<f32> = gate
                .chunks(inter)
                .zip(up.chunks(inter))
                .flat_map(|(g, u)| g.iter().chain(u).copied())
                .collect();
            let mut want_fused = vec![0f32; rows * inter];
            silu_mul_fused(&fused, inter, &mut want_fused);
            assert_eq!(want_fused, want);
            let gf = upload_f(dtype, &fused);
            let mut out2 = upload_f(dtype, &vec![0.0; rows * inter]);
            kernels
                .silu_mul_fused(gpu, rows, inter, &gf.as_view(), &mut out2.as_view_mut())
                .unwrap();
            assert_eq!(
                download_f(dtype, &out2),
                download_f(dtype, &out),
                "{what} fused"
            );
        }
    }
}
