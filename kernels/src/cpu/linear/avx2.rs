//! AVX2 + FMA micro-kernel of the CPU linear layer (x86-64, detected at run
//! time): per output, FMA lanes over `k` (the ragged tail loaded masked, i.e.
//! zero-padded), then [`hsum_fold_fold`].

use std::arch::x86_64::*;

use super::Kernel;
use crate::cpu::dot::avx2::hsum_fold_fold;

/// The AVX2 + FMA linear kernel; callers check [`crate::Isa::is_supported`].
pub(super) struct Avx2Fma;

impl Kernel for Avx2Fma {
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        tile::<MR, NR>(x, w, k, out, ldo)
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let body = k / 8 * 8;
    let mut p = 0;
    while p < body {
        let mut wv = [_mm256_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(w.add(c * k + p));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(r * k + p));
            for (a, v) in row.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, *v, *a);
            }
        }
        p += 8;
    }
    if body < k {
        // Zero-padded tail: lanes past k load 0.0 and add 0 * 0.
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - body) as i32), lane);
        let mut wv = [_mm256_setzero_ps(); NR];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = _mm256_maskload_ps(w.add(c * k + p), mask);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let xv = _mm256_maskload_ps(x.add(r * k + p), mask);
            for (a, v) in row.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, *v, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, a) in row.iter().enumerate() {
            *out.add(r * ldo + c) = hsum_fold_fold(*a);
        }
    }
}
