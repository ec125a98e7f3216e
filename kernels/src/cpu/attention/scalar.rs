//! Portable kernel and the polynomial `exp` shared (operation for operation)
//! with the AVX2 path.

use super::{Kernel, KvRows, Rows, Widths};
use crate::cpu::dot::dot_fold_pairs;

/// `log2(e)`.
pub(super) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// High part of `ln 2` (exact in few bits, so `n * LN2_HI` is exact).
pub(super) const LN2_HI: f32 = 0.693_359_4;
/// Low part: `ln 2 - LN2_HI`.
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `exp` would leave the normal range; the result is flushed to 0.
pub(super) const EXP_LO: f32 = -87.336_54;
/// Inputs are clamped to at most this (`exp(88)` is finite).
pub(super) const EXP_HI: f32 = 88.0;
/// Minimax coefficients of `(exp(r) - 1 - r) / r² ` on `|r| <= ln(2) / 2`,
/// highest degree first (Cephes `expf`).
pub(super) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` for `x <= 88`: Cody-Waite reduction `x = n ln2 + r`, a degree-7
/// polynomial for `e^r`, then scaling by `2^n` built from the exponent bits.
/// Max relative error ≈ 1.2e-7 on `[EXP_LO, 88]`; below `EXP_LO` (including
/// `-inf`) returns `+0.0`. Uses plain multiplies and adds (no FMA), in the
/// exact order of the AVX2 version, so both agree bit for bit.
#[inline]
pub(super) fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI);
    let n = (xc * LOG2E + 0.5).floor();
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut y = EXP_P[0];
    for c in &EXP_P[1..] {
        y = y * r + c;
    }
    let y = (y * (r * r) + r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < EXP_LO {
        0.0
    } else {
        y * scale
    }
}

/// Portable kernel: one row at a time, keys in order.
pub(super) struct Scalar;

impl Kernel for Scalar {
    fn scores(&self, w: Widths, q: &[f32], k: KvRows<'_>, scale: f32, s: &mut [f32]) {
        for (r, qr) in q.chunks_exact(w.d).enumerate() {
            for t in 0..k.n {
                s[r * w.kw + t] = dot_fold_pairs(qr, k.row(t, w.d)) * scale;
            }
        }
    }

    fn softmax(&self, kw: usize, x: Rows<'_>, _tmp: &mut [f32]) {
        for (r, &cnt) in x.cnt.iter().enumerate() {
            let s = &mut x.s[r * kw..r * kw + cnt as usize];
            let bmax = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let (m, m_new) = (x.m[r], x.m[r].max(bmax));
            // exp(0) == 1 exactly, so the shortcut changes no bit.
            let c = if m == m_new { 1.0 } else { exp(m - m_new) };
            let mut sum = 0.0;
            for v in s.iter_mut() {
                *v = exp(*v - m_new);
                sum += *v;
            }
            x.l[r] = x.l[r] * c + sum;
            x.m[r] = m_new;
            x.c[r] = c;
        }
    }

    fn pv(&self, w: Widths, acc: &mut [f32], p: &[f32], c: &[f32], v: KvRows<'_>) {
        for (r, a) in acc.chunks_exact_mut(w.d).enumerate() {
            for x in a.iter_mut() {
                *x *= c[r];
            }
            for t in 0..v.n {
                let pt = p[r * w.kw + t];
                for (x, y) in a.iter_mut().zip(v.row(t, w.d)) {
                    *x += pt * y;
                }
            }
        }
    }
}
