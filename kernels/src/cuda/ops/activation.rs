//! `silu_mul` (`kernels/cuda/activation.cu`): `out = silu(gate) * up`. CPU spec:
//! [`crate::reference::activation`].

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_nonzero, grid, int, THREADS};
use crate::cuda::{CudaError, Dtype, Gpu};

/// The gated-MLP activation of one dtype.
pub struct ActivationKernels {
    silu_mul: CudaFunction,
}

impl ActivationKernels {
    pub fn new(gpu: &Gpu, dtype: Dtype) -> Result<Self, CudaError> {
        Ok(Self {
            silu_mul: gpu.function(&format!("silu_mul_{}", dtype.suffix()))?,
        })
    }

    /// `out = silu(gate) * up`, each `[rows, inter]`.
    pub fn silu_mul(
        &self,
        gpu: &Gpu,
        rows: usize,
        inter: usize,
        gate: &CudaView<'_, u16>,
        up: &CudaView<'_, u16>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "silu_mul";
        check_at_least(OP, "gate", gate.len(), rows * inter)?;
        check_at_least(OP, "up", up.len(), rows * inter)?;
        self.launch(OP, gpu, rows, inter, inter, gate, up, out)
    }

    /// `out = silu(gate) * up` of a fused `gate_up [rows, 2 * inter]` product (each row
    /// gate then up) into `out [rows, inter]`.
    pub fn silu_mul_fused(
        &self,
        gpu: &Gpu,
        rows: usize,
        inter: usize,
        gate_up: &CudaView<'_, u16>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "silu_mul_fused";
        check_nonzero(OP, "inter", inter)?;
        check_at_least(OP, "gate_up", gate_up.len(), rows * 2 * inter)?;
        if rows == 0 {
            return Ok(());
        }
        let up = gate_up.slice(inter..);
        self.launch(OP, gpu, rows, inter, 2 * inter, gate_up, &up, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        op: &'static str,
        gpu: &Gpu,
        rows: usize,
        inter: usize,
        in_stride: usize,
        gate: &CudaView<'_, u16>,
        up: &CudaView<'_, u16>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        check_nonzero(op, "inter", inter)?;
        check_at_least(op, "out", out.len(), rows * inter)?;
        let (inter_i, stride_i) = (int(op, "inter", inter)?, int(op, "row stride", in_stride)?);
        if rows == 0 {
            return Ok(());
        }
        let chunks = inter.div_ceil(THREADS as usize);
        if chunks > 65_535 {
            return Err(CudaError::Unsupported {
                op,
                reason: format!("rows of {inter} elements"),
            });
        }
        let cfg = LaunchConfig {
            grid_dim: (grid(op, rows)?, chunks as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.silu_mul);
        b.arg(gate).arg(up).arg(out).arg(&inter_i).arg(&stride_i);
        // SAFETY: the callers checked that `gate` and `up` hold `rows` rows `in_stride`
        // apart of `inter` elements (`(rows - 1) * in_stride + inter <= len`) and `out`
        // `rows * inter`; the kernel reads and writes nothing else.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
