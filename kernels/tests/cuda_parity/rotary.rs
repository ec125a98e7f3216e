//! `rotary` against `reference::rotary`, both styles, separate q/k and a fused qkv product.
//! The kernel does the spec's f32 operations (no FMA), so results are within one rounding of
//! the dtype (in practice bitwise).

use inferd_kernels::cuda::ops::rotary::{RotaryKernels, RotaryShape};
use inferd_kernels::reference::rotary::{
    rotary, rotary_table, RopeScaling, RotaryStyle, RotaryTable,
};

use crate::common::Rng;
use crate::harness::*;

const STYLES: [RotaryStyle; 2] = [RotaryStyle::Interleaved, RotaryStyle::Halves];

fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit() * 2.0).collect()
}

/// Shapes: (tokens, heads, kv_heads, head_dim, rotary_dim, scaling).
fn cases() -> Vec<(usize, usize, usize, usize, usize, RopeScaling)> {
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 8192,
    };
    vec![
        (1, 9, 3, 64, 64, RopeScaling::None),
        (37, 32, 8, 128, 128, llama3),
        (5, 4, 4, 128, 64, RopeScaling::Linear { factor: 2.0 }),
        (300, 15, 5, 64, 64, RopeScaling::None),
    ]
}

fn positions(rng: &mut Rng, tokens: usize, max_pos: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..tokens).map(|_| rng.below(max_pos) as u32).collect();
    p[0] = (max_pos - 1) as u32;
    if tokens > 2 {
        p[1] = 0;
        p[2] = max_pos as u32; // beyond the table: left alone
    }
    p
}

fn upload_table(t: &RotaryTable) -> (CudaF32, CudaF32) {
    (upload(&t.cos), upload(&t.sin))
}

type CudaF32 = inferd_kernels::cuda::cudarc::driver::CudaSlice<f32>;

#[test]
fn rotary_matches_the_spec() {
    let gpu = gpu();
    let max_pos = 4096;
    for dtype in DTYPES {
        let kernels = RotaryKernels::new(gpu, dtype).unwrap();
        for (tokens, heads, kv, d, rot, scaling) in cases() {
            let table = rotary_table(rot, 500_000.0, max_pos, scaling);
            let (gcos, gsin) = upload_table(&table);
            for style in STYLES {
                let mut rng = Rng::new((tokens * heads + d) as u64);
                let pos = positions(&mut rng, tokens, max_pos);
                let q0 = round(dtype, &rand_vec(&mut rng, tokens * heads * d));
                let k0 = round(dtype, &rand_vec(&mut rng, tokens * kv * d));
                let (mut q, mut k) = (q0.clone(), k0.clone());
                rotary(style, &table, &pos, &mut q, heads, d);
                rotary(style, &table, &pos, &mut k, kv, d);
                let shape = RotaryShape {
                    num_tokens: tokens,
                    num_heads: heads,
                    num_kv_heads: kv,
                    head_dim: d,
                    rotary_dim: rot,
                    max_pos,
                    style,
                };
                let (mut gq, mut gk) = (upload_f(dtype, &q0), upload_f(dtype, &k0));
                let gp = upload(&pos);
                kernels
                    .apply(
                        gpu,
                        shape,
                        &gp.as_view(),
                        &gcos.as_view(),
                        &gsin.as_view(),
                        &mut gq.as_view_mut(),
                        &mut gk.as_view_mut(),
                    )
                    .unwrap();
                let what = format!("{dtype:?} {style:?} {shape:?}");
                let tol = eps(dtype);
                assert_close_slice(&what, &download_f(dtype, &gq), &round(dtype, &q), tol);
                assert_close_slice(&what, &download_f(dtype, &gk), &round(dtype, &k), tol);

                // The same through a fused qkv product; v stays as it was.
                let v0 = round(dtype, &rand_vec(&mut rng, tokens * kv * d));
                let pack = |q: &[f32], k: &[f32], v: &[f32]| -> Vec<f32> {
                    (0..tokens)
                        .flat_map(|t| {
                            let (qw, kw) = (heads * d, kv * d);
                            let q = &q[t * qw..][..qw];
                            let (k, v) = (&k[t * kw..][..kw], &v[t * kw..][..kw]);
                            q.iter().chain(k).chain(v).copied().collect::<Vec<_>>()
                        })
                        .collect()
                };
                let mut gqkv = upload_f(dtype, &pack(&q0, &k0, &v0));
                kernels
                    .apply_qkv(
                        gpu,
                        shape,
                        &gp.as_view(),
                        &gcos.as_view(),
                        &gsin.as_view(),
                        &mut gqkv.as_view_mut(),
                    )
                    .unwrap();
                let want = pack(&download_f(dtype, &gq), &download_f(dtype, &gk), &v0);
                assert_eq!(download_f(dtype, &gqkv), want, "{what} qkv");
            }
        }
    }
}

#[test]
fn bad_rotary_dims_are_refused() {
    let gpu = gpu();
    let dtype = DTYPES[0];
    let kernels = RotaryKernels::new(gpu, dtype).unwrap();
    let (cos, sin) = (upload(&[1f32; 64]), upload(&[0f32; 64]));
    let p = upload(&[0u32]);
    let (mut q, mut k) = (upload_f(dtype, &[0.0; 64]), upload_f(dtype, &[0.0; 64]));
    for rot in [0, 63, 66] {
        let shape = RotaryShape {
            num_tokens: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 64,
            rotary_dim: rot,
            max_pos: 1,
            style: RotaryStyle::Halves,
        };
        let err = kernels
            .apply(
                gpu,
                shape,
                &p.as_view(),
                &cos.as_view(),
                &sin.as_view(),
                &mut q.as_view_mut(),
                &mut k.as_view_mut(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("rotary_dim"), "{err}");
    }
}
