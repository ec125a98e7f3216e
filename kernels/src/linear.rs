//! Dense `f32` linear layer `x [m, k] · w [n, k]ᵀ → [m, n]`, the CPU hot path.
//!
//! Every output element is `dot(x[i], w[j])` evaluated by one fixed sequence
//! of floating point operations: eight lanes accumulate `x[p] * w[p]` for
//! `p ≡ lane (mod 8)` in increasing `p` (AVX2: one FMA per step; the ragged
//! tail is loaded masked, i.e. zero-padded), then the lanes are summed by a
//! fixed tree. Register tiles (4 rows of `x` × 3 rows of `w`; 1-3 leftover
//! rows × 1 row of `w`) only decide which elements are computed together,
//! never how, so the result for a row does not depend on `m`, on the row's
//! position in the batch, on blocking, or on thread scheduling.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::{check, f32_slice, shape_err, KernelError, Result};

const OP: &str = "linear";

/// Instruction set used by the [`linear`] micro-kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (8 independent accumulators, fixed reduction order).
    Scalar,
    /// x86-64 AVX2 + FMA, detected at run time.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set of this CPU (detected once, then cached).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if Isa::Avx2Fma.is_supported() {
                Isa::Avx2Fma
            } else {
                Isa::Scalar
            }
        })
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2Fma => false,
        }
    }
}

/// `x [m, k]` times `w [n, k]` transposed → `[m, n]` (PyTorch `Linear` weight
/// layout, no bias), using the best instruction set of this CPU.
///
/// Both inputs must be contiguous `f32` CPU tensors. Batch invariant: row `i`
/// of the result is bitwise equal to `linear(x.narrow(0, i, 1), w)`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_with(x, w, Isa::detect())
}

/// [`linear`] with an explicit instruction set (for tests and benchmarks);
/// an `isa` this CPU lacks yields [`KernelError::Invalid`].
pub fn linear_with(x: &Tensor, w: &Tensor, isa: Isa) -> Result<Tensor> {
    validate(x, w)?;
    if !isa.is_supported() {
        return Err(KernelError::Invalid {
            op: OP,
            reason: format!("{isa:?} is not supported by this CPU"),
        });
    }
    Ok(x.apply_op2_no_bwd(w, &Linear { isa })?)
}

/// Composed reference for [`linear`]: `x.matmul(&w.t())`.
pub fn linear_slow(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    validate(x, w)?;
    Ok(x.matmul(&w.t()?)?)
}

fn validate(x: &Tensor, w: &Tensor) -> Result<()> {
    let xd = check(OP, "x", x, DType::F32, 2, &|| "[m, k]".into())?;
    let k = xd[1];
    let wd = check(OP, "w", w, DType::F32, 2, &|| format!("[n, {k}]"))?;
    if wd[1] != k {
        return Err(shape_err(OP, "w", w, format!("[n, {k}]")));
    }
    Ok(())
}

struct Linear {
    isa: Isa,
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?);
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let mut out = vec![0f32; m * n];
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma if Isa::Avx2Fma.is_supported() => {
                gemm::<avx2::Avx2Fma>(x, w, &mut out, m, n, k)
            }
            Isa::Avx2Fma => candle_core::bail!("linear: AVX2/FMA not supported by this CPU"),
            Isa::Scalar => gemm::<Scalar>(x, w, &mut out, m, n, k),
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// A register-tile micro-kernel: computes `out[r * ldo + c] = dot(x_r, w_c)`
/// for `r < MR`, `c < NR`, where `x_r = x[r * k ..][..k]`, `w_c = w[c * k ..][..k]`.
trait Kernel {
    /// # Safety
    /// `x` must be valid for `MR * k` reads, `w` for `NR * k` reads, `out` for
    /// writes at `r * ldo + c`, and the CPU must support the kernel's ISA.
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        out: *mut f32,
        ldo: usize,
    );
}

struct Scalar;

impl Kernel for Scalar {
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        for r in 0..MR {
            let xr = std::slice::from_raw_parts(x.add(r * k), k);
            for c in 0..NR {
                let wc = std::slice::from_raw_parts(w.add(c * k), k);
                *out.add(r * ldo + c) = dot_scalar(xr, wc);
            }
        }
    }
}

/// Portable dot product: 8 lane accumulators (lane = index mod 8, tail in the
/// lanes too), reduced as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline]
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
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
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Kernel;

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

    /// Sum of the 8 lanes as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
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
                *out.add(r * ldo + c) = hsum(*a);
            }
        }
    }
}

/// The output pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements and the buffer outlives the scope.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Below this many multiply-adds, run on the calling thread.
const PAR_THRESHOLD: usize = 1 << 16;

/// Rows of x per main register tile (the tile is `MR_MAIN × 3` outputs).
const MR_MAIN: usize = 4;

fn gemm<K: Kernel>(x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(x.len() == m * k && w.len() == n * k && out.len() == m * n);
    let threads = rayon::current_num_threads().max(1);
    // Row block of x (~20 KiB, L1-resident) reused by every w tile of a task.
    let mb = (20 * 1024 / (4 * k.max(1))).clamp(MR_MAIN, 64) / MR_MAIN * MR_MAIN;
    // Rows of w per task (~256 KiB, L2-resident, a multiple of 3), shrunk
    // until there are a few tasks per thread.
    let mut nb = (256 * 1024 / (4 * k.max(1))).clamp(24, 192) / 24 * 24;
    while nb > 24 && n.div_ceil(nb) < 4 * threads {
        nb -= 24;
    }
    let out = OutPtr(out.as_mut_ptr());
    let task = |j0: usize| {
        let j1 = (j0 + nb).min(n);
        if m >= MR_MAIN {
            // The 4×3 tiles read three w rows at once, which hardware
            // prefetchers stream poorly; pull the block in with one linear
            // sweep first (measured ~1.5x faster with cold weights).
            prefetch(&w[j0 * k..j1 * k]);
        }
        for i0 in (0..m).step_by(mb) {
            let i1 = (i0 + mb).min(m);
            // SAFETY: tiles stay within rows i0..i1 and columns j0..j1, which
            // index x, w and out in bounds (asserted above); this task is the
            // only writer of columns j0..j1; K's ISA was checked by the caller.
            unsafe { block::<K>(x, w, out.get(), n, k, i0, i1, j0, j1) };
        }
    };
    if m * n * k < PAR_THRESHOLD || n <= nb {
        (0..n).step_by(nb).for_each(task);
    } else {
        (0..n.div_ceil(nb))
            .into_par_iter()
            .for_each(|b| task(b * nb));
    }
}

/// Issues a prefetch for every cache line of `data`, in address order.
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: prefetching is a hint and never faults; the address is valid.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Computes `out[i0..i1, j0..j1]`.
///
/// # Safety
/// Rows and columns must be in bounds of `x [m, k]`, `w [n, k]` and
/// `out [m, ldo]`, no one else may touch those outputs, and the CPU must
/// support `K`.
#[allow(clippy::too_many_arguments)]
unsafe fn block<K: Kernel>(
    x: &[f32],
    w: &[f32],
    out: *mut f32,
    ldo: usize,
    k: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
) {
    let full = i0 + (i1 - i0) / MR_MAIN * MR_MAIN;
    // Main 4×3 tiles: each w tile is loaded once for all row tiles.
    let mut j = j0;
    while j < j1 {
        let nr = if j + 3 <= j1 { 3 } else { 1 };
        for i in (i0..full).step_by(MR_MAIN) {
            let (xp, wp, op) = (
                x.as_ptr().add(i * k),
                w.as_ptr().add(j * k),
                out.add(i * ldo + j),
            );
            if nr == 3 {
                K::tile::<MR_MAIN, 3>(xp, wp, k, op, ldo);
            } else {
                K::tile::<MR_MAIN, 1>(xp, wp, k, op, ldo);
            }
        }
        j += nr;
    }
    // Leftover rows (all of a decode batch of 1-3): one w row at a time, so w
    // is read as a single sequential stream (measured fastest with cold
    // weights, which is the decode case).
    match i1 - full {
        0 => {}
        1 => row_tiles::<K, 1>(x, w, out, ldo, k, full, j0, j1),
        2 => row_tiles::<K, 2>(x, w, out, ldo, k, full, j0, j1),
        _ => row_tiles::<K, 3>(x, w, out, ldo, k, full, j0, j1),
    }
}

/// `MR` rows starting at `i` against columns `j0..j1`, one column at a time.
/// Same safety contract as [`block`].
#[allow(clippy::too_many_arguments)]
unsafe fn row_tiles<K: Kernel, const MR: usize>(
    x: &[f32],
    w: &[f32],
    out: *mut f32,
    ldo: usize,
    k: usize,
    i: usize,
    j0: usize,
    j1: usize,
) {
    let xp = x.as_ptr().add(i * k);
    for j in j0..j1 {
        K::tile::<MR, 1>(xp, w.as_ptr().add(j * k), k, out.add(i * ldo + j), ldo);
    }
}
