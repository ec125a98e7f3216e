//! CPU body of [`crate::linear`]: register-tiled GEMM `x [m, k] · w [n, k]ᵀ`.
//!
//! Tiles (4 rows of `x` × 3 rows of `w`; 1-3 leftover rows × 1 row of `w`)
//! only decide which outputs are computed together, never how: every output
//! is one dot product in the kernel's fixed order (portable:
//! [`dot_fold_fold`]; AVX2: FMA lanes, zero-padded tail, then
//! [`crate::cpu::dot::avx2::hsum_fold_fold`]).

use std::ops::Range;

use rayon::prelude::*;

use super::dot::dot_fold_fold;
use super::{prefetch, Isa, OutPtr};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// `x [m, k] · w [n, k]ᵀ → [m, n]` (row-major) with the kernels of `isa`.
pub(crate) fn forward(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let mut out = vec![0f32; m * n];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma if Isa::Avx2Fma.is_supported() => {
            gemm::<avx2::Avx2Fma>(x, w, &mut out, m, n, k)
        }
        Isa::Avx2Fma => candle_core::bail!("linear: AVX2/FMA not supported by this CPU"),
        Isa::Scalar => gemm::<Scalar>(x, w, &mut out, m, n, k),
    }
    Ok(out)
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

/// Portable kernel: [`dot_fold_fold`] per output.
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
                *out.add(r * ldo + c) = dot_fold_fold(xr, wc);
            }
        }
    }
}

/// Below this many multiply-adds, run on the calling thread.
const PAR_THRESHOLD: usize = 1 << 16;

/// Rows of x per main register tile (the tile is `MR_MAIN × 3` outputs).
const MR_MAIN: usize = 4;

/// The operands of one GEMM: `x [m, k]`, `w [n, k]` and the output
/// `[m, n]` (row pitch `n`), shared by the tasks that fill its columns.
#[derive(Clone, Copy)]
struct Gemm<'a> {
    x: &'a [f32],
    w: &'a [f32],
    out: OutPtr,
    n: usize,
    k: usize,
}

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
    let g = Gemm {
        x,
        w,
        out: OutPtr::new(out),
        n,
        k,
    };
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
            unsafe { block::<K>(g, i0..i1, j0..j1) };
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

/// Computes `out[rows, cols]`.
///
/// # Safety
/// `rows` and `cols` must be in bounds of `x [m, k]`, `w [n, k]` and
/// `out [m, n]`, no one else may touch those outputs, and the CPU must
/// support `K`.
unsafe fn block<K: Kernel>(g: Gemm<'_>, rows: Range<usize>, cols: Range<usize>) {
    let (ldo, k) = (g.n, g.k);
    let full = rows.start + rows.len() / MR_MAIN * MR_MAIN;
    // Main 4×3 tiles: each w tile is loaded once for all row tiles.
    let mut j = cols.start;
    while j < cols.end {
        let nr = if j + 3 <= cols.end { 3 } else { 1 };
        for i in (rows.start..full).step_by(MR_MAIN) {
            let (xp, wp, op) = (
                g.x.as_ptr().add(i * k),
                g.w.as_ptr().add(j * k),
                g.out.get().add(i * ldo + j),
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
    match rows.end - full {
        0 => {}
        1 => row_tiles::<K, 1>(g, full, cols),
        2 => row_tiles::<K, 2>(g, full, cols),
        _ => row_tiles::<K, 3>(g, full, cols),
    }
}

/// `MR` rows starting at `i` against `cols`, one column at a time.
/// Same safety contract as [`block`].
unsafe fn row_tiles<K: Kernel, const MR: usize>(g: Gemm<'_>, i: usize, cols: Range<usize>) {
    let (ldo, k) = (g.n, g.k);
    let (xp, op) = (g.x.as_ptr().add(i * k), g.out.get().add(i * ldo));
    for j in cols {
        K::tile::<MR, 1>(xp, g.w.as_ptr().add(j * k), k, op.add(j), ldo);
    }
}
