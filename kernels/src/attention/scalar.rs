//! Portable kernel and the polynomial `exp` shared (operation for operation)
//! with the AVX2 path.

use super::{Kernel, Rows};

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

/// Dot product with a fixed order: 8 lane accumulators (lane = index mod 8),
/// reduced as `((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7))`; auto-vectorizes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
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
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Portable kernel: one row at a time, keys in order.
pub(super) struct Scalar;

impl Kernel for Scalar {
    fn scores(
        &self,
        q: &[f32],
        rows: usize,
        k: &[f32],
        ks: usize,
        nk: usize,
        scale: f32,
        s: &mut [f32],
        kw: usize,
    ) {
        let d = q.len() / rows;
        for r in 0..rows {
            let qr = &q[r * d..(r + 1) * d];
            for t in 0..nk {
                s[r * kw + t] = dot(qr, &k[t * ks..t * ks + d]) * scale;
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

    fn pv(
        &self,
        acc: &mut [f32],
        p: &[f32],
        kw: usize,
        c: &[f32],
        rows: usize,
        v: &[f32],
        vs: usize,
        cnt: usize,
    ) {
        let d = acc.len() / rows;
        for r in 0..rows {
            let a = &mut acc[r * d..(r + 1) * d];
            for x in a.iter_mut() {
                *x *= c[r];
            }
            for t in 0..cnt {
                let w = p[r * kw + t];
                for (x, y) in a.iter_mut().zip(&v[t * vs..t * vs + d]) {
                    *x += w * y;
                }
            }
        }
    }
}
