//! `rms_norm` and `add_rms_norm` (`kernels/cuda/norm.cu`). CPU spec:
//! [`crate::reference::norm`].

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_len, check_nonzero, grid, int, THREADS};
use crate::cuda::{CudaError, Dtype, Gpu};

/// The RMS-norm kernels of one dtype.
pub struct NormKernels {
    rms_norm: CudaFunction,
    add_rms_norm: CudaFunction,
}

impl NormKernels {
    pub fn new(gpu: &Gpu, dtype: Dtype) -> Result<Self, CudaError> {
        let s = dtype.suffix();
        Ok(Self {
            rms_norm: gpu.function(&format!("rms_norm_{s}"))?,
            add_rms_norm: gpu.function(&format!("add_rms_norm_{s}"))?,
        })
    }

    /// `out = rms_norm(x) * weight` for `x`, `out` `[rows, hidden]`, `weight [hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        gpu: &Gpu,
        rows: usize,
        hidden: usize,
        eps: f32,
        x: &CudaView<'_, u16>,
        weight: &CudaView<'_, u16>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "rms_norm";
        let hidden_i = check(OP, rows, hidden, weight)?;
        check_at_least(OP, "x", x.len(), rows * hidden)?;
        check_at_least(OP, "out", out.len(), rows * hidden)?;
        if rows == 0 {
            return Ok(());
        }
        let mut b = gpu.stream().launch_builder(&self.rms_norm);
        b.arg(x).arg(weight).arg(out).arg(&hidden_i).arg(&eps);
        // SAFETY: lengths checked above; the kernel touches rows `< rows` of `hidden`
        // elements of `x`/`out` and `hidden` elements of `weight`.
        unsafe { b.launch(config(OP, rows)?) }?;
        Ok(())
    }

    /// The fused residual add: `residual += x` (rounded to the dtype, written back), then
    /// `out = rms_norm(residual) * weight`; all `[rows, hidden]` but `weight [hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rms_norm(
        &self,
        gpu: &Gpu,
        rows: usize,
        hidden: usize,
        eps: f32,
        residual: &mut CudaViewMut<'_, u16>,
        x: &CudaView<'_, u16>,
        weight: &CudaView<'_, u16>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "add_rms_norm";
        let hidden_i = check(OP, rows, hidden, weight)?;
        check_at_least(OP, "residual", residual.len(), rows * hidden)?;
        check_at_least(OP, "x", x.len(), rows * hidden)?;
        check_at_least(OP, "out", out.len(), rows * hidden)?;
        if rows == 0 {
            return Ok(());
        }
        let mut b = gpu.stream().launch_builder(&self.add_rms_norm);
        b.arg(residual)
            .arg(x)
            .arg(weight)
            .arg(out)
            .arg(&hidden_i)
            .arg(&eps);
        // SAFETY: lengths checked above; as `rms_norm`, plus `residual` read and written
        // at the same elements as `x`.
        unsafe { b.launch(config(OP, rows)?) }?;
        Ok(())
    }
}

fn check(
    op: &'static str,
    rows: usize,
    hidden: usize,
    weight: &CudaView<'_, u16>,
) -> Result<i32, CudaError> {
    check_nonzero(op, "hidden", hidden)?;
    check_len(op, "weight", weight.len(), hidden)?;
    rows.checked_mul(hidden).ok_or(CudaError::Unsupported {
        op,
        reason: format!("{rows} rows of {hidden}"),
    })?;
    int(op, "hidden", hidden)
}

fn config(op: &'static str, rows: usize) -> Result<LaunchConfig, CudaError> {
    Ok(LaunchConfig {
        grid_dim: (grid(op, rows)?, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}
