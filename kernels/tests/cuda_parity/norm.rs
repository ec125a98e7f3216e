//! `rms_norm` and `add_rms_norm` against `reference::norm`: outputs within 2 ulp of the
//! dtype (one rounding of the f32 result), the written-back residual sum bitwise.

use inferd_kernels::cuda::ops::norm::NormKernels;
use inferd_kernels::reference::norm::{add_rms_norm, rms_norm};

use crate::common::Rng;
use crate::harness::*;

const EPS: f32 = 1e-5;

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * scale).collect()
}

#[test]
fn rms_norm_matches_the_spec() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = NormKernels::new(gpu, dtype).unwrap();
        for (rows, hidden) in [(1, 576), (7, 576), (3, 2048), (33, 4096), (2, 4097)] {
            let mut rng = Rng::new((rows * hidden) as u64);
            let x = round(dtype, &rand_vec(&mut rng, rows * hidden, 3.0));
            let w = round(dtype, &rand_vec(&mut rng, hidden, 1.5));
            let mut want = vec![0f32; rows * hidden];
            rms_norm(&x, &w, EPS, &mut want);
            let (gx, gw) = (upload_f(dtype, &x), upload_f(dtype, &w));
            let mut out = upload_f(dtype, &vec![0.0; rows * hidden]);
            kernels
                .rms_norm(
                    gpu,
                    rows,
                    hidden,
                    EPS,
                    &gx.as_view(),
                    &gw.as_view(),
                    &mut out.as_view_mut(),
                )
                .unwrap();
            let what = format!("{dtype:?} rms_norm [{rows}, {hidden}]");
            assert_close_slice(&what, &download_f(dtype, &out), &want, 2.0 * eps(dtype));
        }
    }
}

#[test]
fn add_rms_norm_writes_the_rounded_sum_back_and_normalizes_it() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = NormKernels::new(gpu, dtype).unwrap();
        for (rows, hidden) in [(1, 576), (5, 2048), (17, 4096), (3, 1000)] {
            let mut rng = Rng::new(hidden as u64 + 11);
            let residual = round(dtype, &rand_vec(&mut rng, rows * hidden, 4.0));
            let x = round(dtype, &rand_vec(&mut rng, rows * hidden, 2.0));
            let w = round(dtype, &rand_vec(&mut rng, hidden, 1.5));
            // The spec, then what the kernel stores: the sum rounded to the dtype, normalized.
            let mut sum = residual.clone();
            let mut unrounded = vec![0f32; rows * hidden];
            add_rms_norm(&mut sum, &x, &w, EPS, &mut unrounded);
            let sum = round(dtype, &sum);
            let mut want = vec![0f32; rows * hidden];
            rms_norm(&sum, &w, EPS, &mut want);
            let mut gr = upload_f(dtype, &residual);
            let (gx, gw) = (upload_f(dtype, &x), upload_f(dtype, &w));
            let mut out = upload_f(dtype, &vec![0.0; rows * hidden]);
            kernels
                .add_rms_norm(
                    gpu,
                    rows,
                    hidden,
                    EPS,
                    &mut gr.as_view_mut(),
                    &gx.as_view(),
                    &gw.as_view(),
                    &mut out.as_view_mut(),
                )
                .unwrap();
            let what = format!("{dtype:?} add_rms_norm [{rows}, {hidden}]");
            assert_eq!(download_f(dtype, &gr), sum, "{what}: residual");
            let got = download_f(dtype, &out);
            assert_close_slice(&what, &got, &want, 2.0 * eps(dtype));
            // The unrounded spec is within one more rounding.
            assert_close_slice(&what, &got, &unrounded, 4.0 * eps(dtype));
        }
    }
}

#[test]
fn shape_errors_are_typed_not_launched() {
    let gpu = gpu();
    let dtype = DTYPES[0];
    let kernels = NormKernels::new(gpu, dtype).unwrap();
    let x = upload_f(dtype, &[0.0; 64]);
    let w = upload_f(dtype, &[1.0; 32]);
    let mut out = upload_f(dtype, &[0.0; 64]);
    let err = kernels
        .rms_norm(
            gpu,
            3,
            32,
            EPS,
            &x.as_view(),
            &w.as_view(),
            &mut out.as_view_mut(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("`x`"), "{err}");
    let err = kernels
        .rms_norm(
            gpu,
            2,
            16,
            EPS,
            &x.as_view(),
            &w.as_view(),
            &mut out.as_view_mut(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("`weight`"), "{err}");
}
