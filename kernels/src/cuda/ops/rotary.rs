//! `rotary` (`kernels/cuda/rotary.cu`): rotary position embeddings applied to q and k in
//! place from an f32 cos/sin table ([`crate::reference::rotary::rotary_table`], uploaded
//! once). CPU spec: [`crate::reference::rotary::rotary`].

use cudarc::driver::{
    CudaFunction, CudaView, CudaViewMut, DevicePtrMut, LaunchConfig, PushKernelArg,
};

use super::{check_at_least, grid, int, THREADS};
use crate::cuda::{CudaError, Dtype, Gpu};
use crate::reference::rotary::RotaryStyle;

/// What one rotary launch covers: `num_tokens` tokens of q `[num_heads, head_dim]` and k
/// `[num_kv_heads, head_dim]`, the first `rotary_dim` elements of every head turned, with a
/// table of `max_pos` positions (`cos`/`sin` each `[max_pos, rotary_dim / 2]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotaryShape {
    pub num_tokens: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub max_pos: usize,
    pub style: RotaryStyle,
}

/// The rotary kernel of one dtype.
pub struct RotaryKernels {
    rotary: CudaFunction,
}

/// The checked scalar arguments of one launch.
struct Args {
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    rotary_dim: i32,
    max_pos: u32,
    interleaved: i32,
    cfg: LaunchConfig,
}

impl RotaryKernels {
    pub fn new(gpu: &Gpu, dtype: Dtype) -> Result<Self, CudaError> {
        Ok(Self {
            rotary: gpu.function(&format!("rotary_{}", dtype.suffix()))?,
        })
    }

    /// Rotates `q [num_tokens, num_heads, head_dim]` and `k [num_tokens, num_kv_heads,
    /// head_dim]` in place, token `t` at `positions[t]`. A position `>= max_pos` leaves its
    /// token alone (check positions on the host, where they are packed).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        gpu: &Gpu,
        shape: RotaryShape,
        positions: &CudaView<'_, u32>,
        cos: &CudaView<'_, f32>,
        sin: &CudaView<'_, f32>,
        q: &mut CudaViewMut<'_, u16>,
        k: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "rotary";
        let a = check(OP, shape, positions, cos, sin)?;
        let (q_width, k_width) = (
            shape.num_heads * shape.head_dim,
            shape.num_kv_heads * shape.head_dim,
        );
        check_at_least(OP, "q", q.len(), shape.num_tokens * q_width)?;
        check_at_least(OP, "k", k.len(), shape.num_tokens * k_width)?;
        let (q_stride, k_stride) = (int(OP, "q row", q_width)?, int(OP, "k row", k_width)?);
        if shape.num_tokens == 0 {
            return Ok(());
        }
        let mut b = gpu.stream().launch_builder(&self.rotary);
        b.arg(q).arg(k).arg(positions).arg(cos).arg(sin);
        b.arg(&a.heads)
            .arg(&a.kv_heads)
            .arg(&a.head_dim)
            .arg(&a.rotary_dim)
            .arg(&q_stride)
            .arg(&k_stride)
            .arg(&a.max_pos)
            .arg(&a.interleaved);
        // SAFETY: lengths checked above; the kernel reads `num_tokens` positions and table
        // rows `< max_pos` only, and touches `num_tokens` rows of q and k.
        unsafe { b.launch(a.cfg) }?;
        Ok(())
    }

    /// Rotates the q and k parts of a fused `qkv [num_tokens, (num_heads + 2 * num_kv_heads)
    /// * head_dim]` product (each row q, then k, then v) in place; v is not touched.
    pub fn apply_qkv(
        &self,
        gpu: &Gpu,
        shape: RotaryShape,
        positions: &CudaView<'_, u32>,
        cos: &CudaView<'_, f32>,
        sin: &CudaView<'_, f32>,
        qkv: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "rotary_qkv";
        let a = check(OP, shape, positions, cos, sin)?;
        let width = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim;
        check_at_least(OP, "qkv", qkv.len(), shape.num_tokens * width)?;
        let stride = int(OP, "qkv row", width)?;
        if shape.num_tokens == 0 {
            return Ok(());
        }
        let stream = gpu.stream();
        let (q_ptr, _record) = qkv.device_ptr_mut(stream);
        // k starts after the q heads of each row (bytes: u16 elements).
        let k_ptr = q_ptr + (shape.num_heads * shape.head_dim * 2) as u64;
        let mut b = stream.launch_builder(&self.rotary);
        b.arg(&q_ptr).arg(&k_ptr).arg(positions).arg(cos).arg(sin);
        b.arg(&a.heads)
            .arg(&a.kv_heads)
            .arg(&a.head_dim)
            .arg(&a.rotary_dim)
            .arg(&stride)
            .arg(&stride)
            .arg(&a.max_pos)
            .arg(&a.interleaved);
        // SAFETY: `qkv` holds `num_tokens` rows of `width` (checked); the kernel touches
        // q heads at `q_ptr + t * width` and k heads at `k_ptr + t * width`, both inside the
        // row, disjoint; positions and table as in `apply`.
        unsafe { b.launch(a.cfg) }?;
        Ok(())
    }
}

fn check(
    op: &'static str,
    shape: RotaryShape,
    positions: &CudaView<'_, u32>,
    cos: &CudaView<'_, f32>,
    sin: &CudaView<'_, f32>,
) -> Result<Args, CudaError> {
    let s = shape;
    if s.rotary_dim == 0 || !s.rotary_dim.is_multiple_of(2) || s.rotary_dim > s.head_dim {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "rotary_dim {} (must be even, > 0 and <= head_dim {})",
                s.rotary_dim, s.head_dim
            ),
        });
    }
    let half = s.rotary_dim / 2;
    check_at_least(op, "positions", positions.len(), s.num_tokens)?;
    check_at_least(op, "cos", cos.len(), s.max_pos * half)?;
    check_at_least(op, "sin", sin.len(), s.max_pos * half)?;
    let pairs = (s.num_heads + s.num_kv_heads) * half;
    int(op, "pairs per token", pairs)?;
    Ok(Args {
        heads: int(op, "num_heads", s.num_heads)?,
        kv_heads: int(op, "num_kv_heads", s.num_kv_heads)?,
        head_dim: int(op, "head_dim", s.head_dim)?,
        rotary_dim: int(op, "rotary_dim", s.rotary_dim)?,
        max_pos: u32::try_from(s.max_pos).map_err(|_| CudaError::Unsupported {
            op,
            reason: format!("{} positions", s.max_pos),
        })?,
        interleaved: i32::from(s.style == RotaryStyle::Interleaved),
        cfg: LaunchConfig {
            grid_dim: (grid(op, s.num_tokens)?, 1, 1),
            block_dim: (THREADS.min(pairs.max(1) as u32).max(32), 1, 1),
            shared_mem_bytes: 0,
        },
    })
}
