//! inferd compute kernels: KV-cache writes, paged attention and the dense
//! linear layer, each with a fast CPU body and a composed "slow" reference
//! (plain candle tensor ops) that serves as its executable specification.
//!
//! # Code layout
//!
//! `attention`, `cache` and `linear` hold the device-neutral part of each op:
//! the public functions, their dtype/shape/layout checks and typed errors,
//! the composed reference, and the candle op whose `cpu_fwd` hands the
//! checked operands to the CPU body in `cpu/`. The CUDA path (`cuda/`, behind
//! the `cuda` feature) is not a candle device: it launches the kernels of
//! `kernels/cuda/*.cu` on cudarc buffers (see `docs/cuda.md`), and the CPU
//! functions here are its executable specification.
//!
//! # Layout conventions
//!
//! All float tensors are `f32`, all index tensors are `u32`, and every tensor
//! must be row-major contiguous (a non-zero start offset, e.g. from
//! `narrow(0, ..)`, is fine) and live on the CPU device. Violations return a
//! typed [`KernelError`]; nothing is silently copied.
//!
//! * **Token-major activations**: `key`, `value`, `query` and the attention
//!   output are `[num_tokens, num_heads, head_dim]`; tokens of all sequences
//!   of a batch are packed back to back.
//! * **Paged KV cache**: `key_cache` / `value_cache` are
//!   `[num_blocks, block_size, num_kv_heads, head_dim]`. A *slot* is
//!   `block_index * block_size + offset_in_block`, i.e. the row index into
//!   the cache viewed as `[num_blocks * block_size, num_kv_heads * head_dim]`.
//! * **Block tables**: `block_tables[s][i]` (`[num_seqs, max_blocks_per_seq]`)
//!   is the physical block that holds positions
//!   `i * block_size .. (i + 1) * block_size` of sequence `s`; entries past the
//!   sequence's context are ignored and may hold anything.
//! * **Ragged batches**: `query_start_loc` (`[num_seqs + 1]`, cumulative,
//!   starting at 0) says sequence `s` owns query rows
//!   `query_start_loc[s] .. query_start_loc[s + 1]`; `context_lens[s]` is the
//!   number of cached tokens of `s` *after* this step's cache writes. Query
//!   row `j` of a sequence with `q_len` rows sits at position
//!   `context_len - q_len + j` and attends causally to positions `0..=p`.
//!   This covers prefill, chunked prefill and decode (`q_len = 1`) alike.
//! * **GQA**: query head `h` reads kv head `h / (num_heads / num_kv_heads)`.
//! * **Linear**: `x [m, k]` times `w [n, k]` transposed (PyTorch `Linear`
//!   weight layout, no bias) gives `[m, n]`.
//!
//! # Determinism
//!
//! The fast kernels are *batch invariant*: the floating point operations that
//! produce one output element depend only on that element's own inputs, never
//! on the batch size, on where a row sits in the batch, or on how work is split
//! across threads. A sequence's attention output and a row's linear output are
//! bitwise identical whether computed alone or inside any batch.

mod attention;
mod cache;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod linear;
pub mod reference;

pub use attention::{paged_attention, paged_attention_slow};
pub use cache::{reshape_and_cache, reshape_and_cache_slow};
pub use cpu::Isa;
pub use linear::{linear, linear_slow, linear_with};

use candle_core::{DType, Tensor};

/// Errors returned by every kernel in this crate.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// An argument has the wrong element type.
    #[error("{op}: `{name}` must have dtype {expected:?}, got {got:?}")]
    DType {
        op: &'static str,
        name: &'static str,
        expected: DType,
        got: DType,
    },
    /// An argument has the wrong shape.
    #[error("{op}: `{name}` must have shape {expected}, got {got:?}")]
    Shape {
        op: &'static str,
        name: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    /// An argument is not row-major contiguous.
    #[error("{op}: `{name}` must be contiguous")]
    NotContiguous {
        op: &'static str,
        name: &'static str,
    },
    /// A tensor does not live on a device this build supports (CPU only).
    #[error("{op}: unsupported device (this build only supports CPU tensors)")]
    Device { op: &'static str },
    /// An index (slot, block id, length, offset) is outside its valid range.
    #[error("{op}: `{name}`[{index}] = {value} is out of range (must be < {limit})")]
    OutOfRange {
        op: &'static str,
        name: &'static str,
        index: usize,
        value: u64,
        limit: u64,
    },
    /// Argument values are inconsistent with each other.
    #[error("{op}: {reason}")]
    Invalid { op: &'static str, reason: String },
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Checks that `t` is a CPU tensor of dtype `dtype`, with `rank` dimensions,
/// row-major contiguous. Returns its dims.
pub(crate) fn check<'a>(
    op: &'static str,
    name: &'static str,
    t: &'a Tensor,
    dtype: DType,
    rank: usize,
    expected: &dyn Fn() -> String,
) -> Result<&'a [usize]> {
    if !t.device().is_cpu() {
        return Err(KernelError::Device { op });
    }
    if t.dtype() != dtype {
        return Err(KernelError::DType {
            op,
            name,
            expected: dtype,
            got: t.dtype(),
        });
    }
    if t.rank() != rank {
        return Err(shape_err(op, name, t, expected()));
    }
    if !t.is_contiguous() {
        return Err(KernelError::NotContiguous { op, name });
    }
    Ok(t.dims())
}

/// Checks `value_cache` against `key_cache` (whose dims `cd` were already checked): f32,
/// rank 4, contiguous, CPU and the very same shape.
pub(crate) fn check_value_cache(
    op: &'static str,
    value_cache: &Tensor,
    cd: &[usize],
) -> Result<()> {
    check(op, "value_cache", value_cache, DType::F32, 4, &|| {
        format!("{cd:?}")
    })?;
    if value_cache.dims() != cd {
        return Err(shape_err(
            op,
            "value_cache",
            value_cache,
            format!("{cd:?} (same as key_cache)"),
        ));
    }
    Ok(())
}

pub(crate) fn shape_err(
    op: &'static str,
    name: &'static str,
    t: &Tensor,
    expected: String,
) -> KernelError {
    KernelError::Shape {
        op,
        name,
        expected,
        got: t.dims().to_vec(),
    }
}
