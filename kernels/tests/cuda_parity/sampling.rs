//! `argmax`, `top_k_lse` and `log_softmax` against `reference::sampling`: ids and candidate
//! logits bitwise (ties and NaN included), log-sum-exps within f32 summation error.

use inferd_kernels::cuda::ops::sampling::{SamplingKernels, MAX_TOP_K};
use inferd_kernels::cuda::Dtype;
use inferd_kernels::reference::sampling::{argmax, log_softmax, top_k_lse};

use crate::common::Rng;
use crate::harness::*;

const VOCABS: [usize; 3] = [49_152, 128_256, 1000];
const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// Rows of logits in [-8, 8): row 0 as drawn, row 1 rounded to bf16 (many ties), row 2
/// with a planted tie at the maximum and some NaN, row 3 a few large spikes.
fn rows(rng: &mut Rng, vocab: usize) -> Vec<f32> {
    let mut out = Vec::new();
    let base: Vec<f32> = (0..vocab).map(|_| rng.unit() * 8.0).collect();
    out.extend_from_slice(&base);
    out.extend(round(Dtype::Bf16, &base));
    let mut tied = base.clone();
    let (a, b) = (rng.below(vocab), rng.below(vocab));
    tied[a.max(b)] = 9.0;
    tied[a.min(b)] = 9.0;
    for _ in 0..vocab / 100 {
        tied[rng.below(vocab)] = NAN;
    }
    out.extend(tied);
    let mut spiky: Vec<f32> = base.iter().map(|v| v * 0.5).collect();
    for i in 0..20 {
        spiky[(i * 2011) % vocab] += 12.0;
    }
    out.extend(spiky);
    out
}

/// Rows the contract singles out: all NaN, NaN and -inf, a +inf, fewer finite than k.
fn edge_rows(vocab: usize) -> Vec<f32> {
    let mut out = vec![NAN; vocab];
    out.extend((0..vocab).map(|i| if i % 2 == 0 { NAN } else { -INF }));
    out.extend((0..vocab).map(|i| if i == vocab / 2 { INF } else { (i % 7) as f32 }));
    out.extend((0..vocab).map(|i| match i % 97 {
        0 => i as f32 / vocab as f32,
        1 => -0.0,
        _ => NAN,
    }));
    out
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    a == b || (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn argmax_matches_the_spec() {
    let gpu = gpu();
    let kernels = SamplingKernels::new(gpu).unwrap();
    for vocab in VOCABS {
        let mut rng = Rng::new(vocab as u64);
        let mut logits = rows(&mut rng, vocab);
        logits.extend(edge_rows(vocab));
        let n = logits.len() / vocab;
        let want: Vec<u32> = logits.chunks(vocab).map(argmax).collect();
        let gl = upload(&logits);
        let mut out = upload(&vec![u32::MAX; n]);
        kernels
            .argmax(gpu, n, vocab, &gl.as_view(), &mut out.as_view_mut())
            .unwrap();
        assert_eq!(download(&out), want, "vocab {vocab}");
    }
}

#[test]
fn top_k_lse_matches_the_spec() {
    let gpu = gpu();
    let kernels = SamplingKernels::new(gpu).unwrap();
    for vocab in VOCABS {
        let mut rng = Rng::new(vocab as u64 + 1);
        let mut logits = rows(&mut rng, vocab);
        logits.extend(edge_rows(vocab));
        let n = logits.len() / vocab;
        let temps: Vec<f32> = (0..n).map(|r| [1.0, 0.7, 0.0, 1.5, 0.05][r % 5]).collect();
        let gl = upload(&logits);
        let gt = upload(&temps);
        for k in [1, 5, 40, MAX_TOP_K] {
            let mut ids = upload(&vec![u32::MAX; n * k]);
            let mut top = upload(&vec![0f32; n * k]);
            let (mut lse, mut lse_t) = (upload(&vec![0f32; n]), upload(&vec![0f32; n]));
            kernels
                .top_k_lse(
                    gpu,
                    n,
                    vocab,
                    k,
                    &gl.as_view(),
                    &gt.as_view(),
                    &mut ids.as_view_mut(),
                    &mut top.as_view_mut(),
                    &mut lse.as_view_mut(),
                    &mut lse_t.as_view_mut(),
                )
                .unwrap();
            let (ids, top) = (download(&ids), download(&top));
            let (lse, lse_t) = (download(&lse), download(&lse_t));
            for (r, row) in logits.chunks(vocab).enumerate() {
                let want = top_k_lse(row, k, temps[r]);
                let what = format!("vocab {vocab} k {k} row {r}");
                assert_eq!(ids[r * k..][..k], want.ids[..], "{what}: ids");
                let (got, exp) = (&top[r * k..][..k], &want.logits);
                assert!(
                    got.iter().zip(exp).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}"
                );
                assert!(
                    close(lse[r], want.lse, 1e-5),
                    "{what}: lse {} vs {}",
                    lse[r],
                    want.lse
                );
                let (g, w) = (lse_t[r], want.lse_t);
                assert!(
                    close(g, w, 1e-5),
                    "{what}: lse_t {g} vs {w} (T {})",
                    temps[r]
                );
            }
        }
    }
}

#[test]
fn top_k_refuses_k_it_cannot_hold() {
    let gpu = gpu();
    let kernels = SamplingKernels::new(gpu).unwrap();
    let gl = upload(&[0f32; 300]);
    let gt = upload(&[1f32; 1]);
    for (vocab, k) in [(300, 0), (300, MAX_TOP_K + 1), (100, 101)] {
        let mut ids = upload(&[0u32; 1000]);
        let mut top = upload(&[0f32; 1000]);
        let (mut a, mut b) = (upload(&[0f32; 1]), upload(&[0f32; 1]));
        let err = kernels
            .top_k_lse(
                gpu,
                1,
                vocab,
                k,
                &gl.as_view(),
                &gt.as_view(),
                &mut ids.as_view_mut(),
                &mut top.as_view_mut(),
                &mut a.as_view_mut(),
                &mut b.as_view_mut(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("k ="), "{err}");
    }
}

#[test]
fn log_softmax_matches_the_spec() {
    let gpu = gpu();
    let kernels = SamplingKernels::new(gpu).unwrap();
    for vocab in VOCABS {
        let mut rng = Rng::new(vocab as u64 + 2);
        let logits = rows(&mut rng, vocab);
        let n = logits.len() / vocab;
        let mut want = vec![0f32; logits.len()];
        for (row, out) in logits.chunks(vocab).zip(want.chunks_mut(vocab)) {
            log_softmax(row, out);
        }
        let gl = upload(&logits);
        let mut out = upload(&vec![0f32; logits.len()]);
        kernels
            .log_softmax(gpu, n, vocab, &gl.as_view(), &mut out.as_view_mut())
            .unwrap();
        let got = download(&out);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 2e-5 * w.abs().max(1.0);
            assert!(ok, "vocab {vocab} element {i}: {g} vs {w}");
        }
    }
}
