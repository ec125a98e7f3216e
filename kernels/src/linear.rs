//! Dense `f32` linear layer `x [m, k] · w [n, k]ᵀ → [m, n]`: the public entry
//! points, their checks and the composed reference. The CPU body is
//! `cpu::linear`.
//!
//! Every output element is `dot(x[i], w[j])` evaluated by one fixed sequence
//! of floating point operations: eight lanes accumulate `x[p] * w[p]` for
//! `p ≡ lane (mod 8)` in increasing `p` (AVX2: one FMA per step; the ragged
//! tail is loaded masked, i.e. zero-padded), then the lanes are summed by a
//! fixed tree. Register tiles (4 rows of `x` × 3 rows of `w`; 1-3 leftover
//! rows × 1 row of `w`) only decide which elements are computed together,
//! never how, so the result for a row does not depend on `m`, on the row's
//! position in the batch, on blocking, or on thread scheduling.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use crate::cpu::{self, f32_slice, Isa};
use crate::{check, shape_err, KernelError, Result};

const OP: &str = "linear";

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

/// The candle op; each device's `*_fwd` hands the checked operands to that
/// device's body.
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
        let out = cpu::linear::forward(self.isa, x, w, (m, n, k))?;
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
