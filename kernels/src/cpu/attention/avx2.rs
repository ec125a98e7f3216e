//! AVX2 + FMA kernel (x86-64, detected at run time; `head_dim % 8 == 0`).
//!
//! Per-row arithmetic, identical whichever register tile or lane a row lands
//! in (rows never mix):
//! * score: lane `l` accumulates `q[8i + l] * k[8i + l]` by FMA over `i`
//!   ascending, lanes reduce by [`hsum4_pairs`]
//!   (`((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`), then `* scale`;
//! * softmax (8 rows at a time, one per lane): masked keys become `-inf`,
//!   running max over the keys in order, `c = exp8(m - m')`,
//!   `p_t = exp8(s_t - m')`, `sum` over `t` ascending, `l = fma(l, c, sum)`;
//! * PV: `acc = acc * c`, then one FMA `acc += p_t * v_t` per key, in order.
//!
//! Every `unsafe fn` here requires AVX2 and FMA; the ones taking pointers
//! also state their bounds.

use std::arch::x86_64::*;

use super::scalar::{EXP_HI, EXP_LO, EXP_P, LN2_HI, LN2_LO, LOG2E};
use super::{Kernel, KvRows, Rows, Widths};
use crate::cpu::dot::avx2::hsum4_pairs;

/// The AVX2 kernel; only constructible on a CPU with AVX2 and FMA.
pub(super) struct Avx2(());

impl Avx2 {
    /// `Some` iff this CPU supports AVX2 and FMA.
    pub(super) fn new() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        ok.then_some(Avx2(()))
    }
}

/// Eight `exp`s: the reduction and polynomial of [`super::scalar::exp`],
/// evaluated with FMAs (so not bitwise equal to it, but just as accurate).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let xc = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
        _mm256_set1_ps(EXP_HI),
    );
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        xc,
        _mm256_set1_ps(LOG2E),
        _mm256_set1_ps(0.5),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut y = _mm256_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    let y = _mm256_add_ps(y, _mm256_set1_ps(1.0));
    let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e)));
    let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
    _mm256_andnot_ps(tiny, y)
}

/// Scores of `R` rows × `NK` keys (`NK` is 4, or 1 for a ragged tail).
///
/// # Safety
/// `q` valid for `R * d` reads, key `t < NK` for `d` reads at `k + t * ks`,
/// `s + r * kw` for `NK` writes; AVX2 and FMA present.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn score_tile<const R: usize, const NK: usize>(
    w: Widths,
    q: *const f32,
    k: *const f32,
    ks: usize,
    scale: f32,
    s: *mut f32,
) {
    let (d, kw) = (w.d, w.kw);
    let mut acc = [[_mm256_setzero_ps(); NK]; R];
    for i in (0..d).step_by(8) {
        let mut kv = [_mm256_setzero_ps(); NK];
        for (t, v) in kv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(k.add(t * ks + i));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let qv = _mm256_loadu_ps(q.add(r * d + i));
            for (a, v) in row.iter_mut().zip(&kv) {
                *a = _mm256_fmadd_ps(qv, *v, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let four = std::array::from_fn(|t| row[t.min(NK - 1)]);
        let sums = _mm_mul_ps(hsum4_pairs(four), _mm_set1_ps(scale));
        let mut tmp = [0f32; 4];
        _mm_storeu_ps(tmp.as_mut_ptr(), sums);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), s.add(r * kw), NK);
    }
}

/// `acc_r = acc_r * c_r + Σ_t p_r[t] v_t` on `8 * C` columns of `R` rows.
///
/// # Safety
/// `acc + r * d` valid for `8 * C` reads/writes, `p + r * kw` for `cnt`
/// reads, `c` for `R`, `v + t * vs` for `8 * C` reads (`t < cnt`); AVX2/FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_tile<const R: usize, const C: usize>(
    w: Widths,
    acc: *mut f32,
    p: *const f32,
    c: *const f32,
    v: *const f32,
    vs: usize,
    cnt: usize,
) {
    let (d, kw) = (w.d, w.kw);
    let mut a = [[_mm256_setzero_ps(); C]; R];
    for (r, row) in a.iter_mut().enumerate() {
        let cr = _mm256_set1_ps(*c.add(r));
        for (j, x) in row.iter_mut().enumerate() {
            *x = _mm256_mul_ps(_mm256_loadu_ps(acc.add(r * d + 8 * j)), cr);
        }
    }
    for t in 0..cnt {
        let mut vv = [_mm256_setzero_ps(); C];
        for (j, x) in vv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(v.add(t * vs + 8 * j));
        }
        for (r, row) in a.iter_mut().enumerate() {
            let pt = _mm256_set1_ps(*p.add(r * kw + t));
            for (x, y) in row.iter_mut().zip(&vv) {
                *x = _mm256_fmadd_ps(pt, *y, *x);
            }
        }
    }
    for (r, row) in a.iter().enumerate() {
        for (j, x) in row.iter().enumerate() {
            _mm256_storeu_ps(acc.add(r * d + 8 * j), *x);
        }
    }
}

/// Transposes an 8×8 block: column `k` of the result is lane `k` of the rows.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // t[0] = lo(r0, r1), t[1] = hi(r0, r1), t[2] = lo(r2, r3), ...
    let u: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (t[i / 4 * 4 + (i % 4) / 2], t[i / 4 * 4 + 2 + (i % 4) / 2]);
        if i % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    // u[0..4] hold columns 0..4 of rows 0..4 (per 128-bit half), u[4..8] rows 4..8.
    std::array::from_fn(|k| {
        if k < 4 {
            _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4])
        } else {
            _mm256_permute2f128_ps::<0x31>(u[k - 4], u[k])
        }
    })
}

#[target_feature(enable = "avx2,fma")]
unsafe fn scores(w: Widths, q: &[f32], k: KvRows<'_>, sc: f32, s: &mut [f32]) {
    let (d, kw, ks, nk) = (w.d, w.kw, k.stride, k.n);
    let rows = q.len() / d;
    assert!(rows >= 1 && q.len() == rows * d && d.is_multiple_of(8));
    assert!((rows - 1) * kw + nk <= s.len());
    assert!(nk >= 1 && (nk - 1) * ks + d <= k.data.len());
    let (q, k, s) = (q.as_ptr(), k.data.as_ptr(), s.as_mut_ptr());
    // The asserts above bound every access of the tiles.
    let mut r = 0;
    while r < rows {
        let (qr, sr) = (q.add(r * d), s.add(r * kw));
        let two = rows - r >= 2;
        let mut t = 0;
        while t < nk {
            let (kt, st) = (k.add(t * ks), sr.add(t));
            match (two, nk - t >= 4) {
                (true, true) => score_tile::<2, 4>(w, qr, kt, ks, sc, st),
                (true, false) => score_tile::<2, 1>(w, qr, kt, ks, sc, st),
                (false, true) => score_tile::<1, 4>(w, qr, kt, ks, sc, st),
                (false, false) => score_tile::<1, 1>(w, qr, kt, ks, sc, st),
            }
            t += if nk - t >= 4 { 4 } else { 1 };
        }
        r += if two { 2 } else { 1 };
    }
}

/// Softmax step of 8 rows at a time, one row per lane (8×8 transposes in
/// and out); a short last group repeats its last row in the spare lanes and
/// writes back only its own rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax(kw: usize, x: Rows<'_>, tmp: &mut [f32]) {
    let rows = x.cnt.len();
    assert!(kw.is_multiple_of(8) && x.s.len() == rows * kw && tmp.len() >= 8 * kw);
    assert!(x.m.len() == rows && x.l.len() == rows && x.c.len() == rows);
    let (s, tmp) = (x.s.as_mut_ptr(), tmp.as_mut_ptr());
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    for g0 in (0..rows).step_by(8) {
        let live = (rows - g0).min(8);
        let row = |j: usize| g0 + j.min(live - 1);
        let gather =
            |a: &[f32]| _mm256_loadu_ps(std::array::from_fn::<f32, 8, _>(|j| a[row(j)]).as_ptr());
        let cnt: [i32; 8] = std::array::from_fn(|j| x.cnt[row(j)] as i32);
        let cnt = _mm256_loadu_si256(cnt.as_ptr().cast());
        let mut bmax = ninf;
        for v in (0..kw).step_by(8) {
            let cols = transpose8(std::array::from_fn(|j| {
                _mm256_loadu_ps(s.add(row(j) * kw + v))
            }));
            for (j, col) in cols.into_iter().enumerate() {
                let keep = _mm256_cmpgt_epi32(cnt, _mm256_set1_epi32((v + j) as i32));
                let col = _mm256_blendv_ps(ninf, col, _mm256_castsi256_ps(keep));
                _mm256_storeu_ps(tmp.add((v + j) * 8), col);
                bmax = _mm256_max_ps(bmax, col);
            }
        }
        let m = gather(x.m);
        let m_new = _mm256_max_ps(m, bmax);
        let c = exp8(_mm256_sub_ps(m, m_new));
        let mut sum = _mm256_setzero_ps();
        for t in 0..kw {
            let p = exp8(_mm256_sub_ps(_mm256_loadu_ps(tmp.add(t * 8)), m_new));
            _mm256_storeu_ps(tmp.add(t * 8), p);
            sum = _mm256_add_ps(sum, p);
        }
        let l = _mm256_fmadd_ps(gather(x.l), c, sum);
        let mut out = [[0f32; 8]; 3];
        for (o, v) in out.iter_mut().zip([m_new, l, c]) {
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
        let dst = x.m.iter_mut().zip(x.l.iter_mut()).zip(x.c.iter_mut());
        for (j, ((m, l), c)) in dst.skip(g0).take(live).enumerate() {
            (*m, *l, *c) = (out[0][j], out[1][j], out[2][j]);
        }
        for v in (0..kw).step_by(8) {
            let rows8 = transpose8(std::array::from_fn(|j| {
                _mm256_loadu_ps(tmp.add((v + j) * 8))
            }));
            for (j, r) in rows8.into_iter().take(live).enumerate() {
                _mm256_storeu_ps(s.add((g0 + j) * kw + v), r);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pv(w: Widths, acc: &mut [f32], p: &[f32], c: &[f32], v: KvRows<'_>) {
    let (d, kw, vs, cnt) = (w.d, w.kw, v.stride, v.n);
    let rows = acc.len() / d;
    assert!(rows >= 1 && acc.len() == rows * d && d.is_multiple_of(8) && c.len() >= rows);
    assert!(cnt >= 1 && (rows - 1) * kw + cnt <= p.len() && (cnt - 1) * vs + d <= v.data.len());
    let (acc, p, c, v) = (acc.as_mut_ptr(), p.as_ptr(), c.as_ptr(), v.data.as_ptr());
    // The asserts above bound every access of the tiles.
    let mut r = 0;
    while r < rows {
        let (ar, pr, cr) = (acc.add(r * d), p.add(r * kw), c.add(r));
        let two = rows - r >= 2;
        let mut j = 0;
        while j < d {
            let (aj, vj) = (ar.add(j), v.add(j));
            match (two, d - j >= 32) {
                (true, true) => pv_tile::<2, 4>(w, aj, pr, cr, vj, vs, cnt),
                (true, false) => pv_tile::<2, 1>(w, aj, pr, cr, vj, vs, cnt),
                (false, true) => pv_tile::<1, 4>(w, aj, pr, cr, vj, vs, cnt),
                (false, false) => pv_tile::<1, 1>(w, aj, pr, cr, vj, vs, cnt),
            }
            j += if d - j >= 32 { 32 } else { 8 };
        }
        r += if two { 2 } else { 1 };
    }
}

impl Kernel for Avx2 {
    fn scores(&self, w: Widths, q: &[f32], k: KvRows<'_>, scale: f32, s: &mut [f32]) {
        // SAFETY: an `Avx2` exists only where AVX2 and FMA were detected.
        unsafe { scores(w, q, k, scale, s) }
    }

    fn softmax(&self, kw: usize, rows: Rows<'_>, tmp: &mut [f32]) {
        // SAFETY: as above.
        unsafe { softmax(kw, rows, tmp) }
    }

    fn pv(&self, w: Widths, acc: &mut [f32], p: &[f32], c: &[f32], v: KvRows<'_>) {
        // SAFETY: as above.
        unsafe { pv(w, acc, p, c, v) }
    }
}
