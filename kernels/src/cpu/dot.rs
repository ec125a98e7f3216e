//! Dot products and lane reductions, one function per summation order.
//!
//! Batch invariance and the bitwise tests rest on each kernel summing in
//! exactly one documented order, so an order is never changed in place: a
//! kernel that wants another order gets another function here.
//!
//! Every order starts from eight lane partial sums: lane `l` accumulates the
//! products `a[p] * b[p]` for `p ≡ l (mod 8)`, `p` ascending (a ragged tail of
//! `len % 8` elements lands in lanes `0..len % 8`). The portable functions
//! round each product before adding it (no FMA; Rust never contracts
//! floating point), the AVX2 reductions receive lanes accumulated by FMA.
//! The orders then differ only in how the eight lanes `l0..l7` are summed:
//!
//! | order | lanes summed as | used by |
//! | --- | --- | --- |
//! | half-fold, pairs | `((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7))` | [`dot_fold_pairs`]: portable attention scores |
//! | half-fold, half-fold | `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))` | [`dot_fold_fold`]: portable linear; [`avx2::hsum_fold_fold`]: AVX2 linear |
//! | pairs, pairs | `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))` | [`avx2::hsum4_pairs`]: AVX2 attention scores |

/// The eight lane partial sums of `a · b` (see the module docs); `a` and `b`
/// have the same length.
#[inline(always)]
fn lanes(a: &[f32], b: &[f32]) -> [f32; 8] {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        acc[l] += x * y;
    }
    acc
}

/// `a · b` with the lanes summed as `((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7))`.
/// Auto-vectorizes.
#[inline]
pub(crate) fn dot_fold_pairs(a: &[f32], b: &[f32]) -> f32 {
    let l = lanes(a, b);
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `a · b` with the lanes summed as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`,
/// the order of [`avx2::hsum_fold_fold`]. Auto-vectorizes.
#[inline]
pub(crate) fn dot_fold_fold(a: &[f32], b: &[f32]) -> f32 {
    let l = lanes(a, b);
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Horizontal sums of AVX2 lane accumulators. Every function requires AVX2
/// and FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes of `v` as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`
    /// (fold the upper half onto the lower one, twice, then the last pair).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum_fold_fold(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    /// Lane sums of four vectors (element `i` of the result is `a[i]`'s),
    /// each as `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum4_pairs(a: [__m256; 4]) -> __m128 {
        let u = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps::<1>(u))
    }
}
