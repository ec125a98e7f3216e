//! Launchers of the kernels in `kernels/cuda/`. Each op family is a struct that resolves its
//! entry points once ([`Gpu::function`] is a lookup by name: not a per-step cost), checks
//! operand lengths against the shapes it is given, and launches on the GPU's stream.

pub mod activation;
pub mod attention;
pub mod cache;
pub mod embedding;
pub mod norm;
pub mod rotary;
pub mod sampling;

use super::CudaError;

/// Threads per block of the element-wise kernels.
pub(crate) const THREADS: u32 = 256;

/// `Err(Shape)` unless `len == want`.
pub(crate) fn check_len(
    op: &'static str,
    name: &str,
    len: usize,
    want: usize,
) -> Result<(), CudaError> {
    if len == want {
        Ok(())
    } else {
        Err(CudaError::Shape {
            op,
            reason: format!("`{name}` holds {len} elements, the shapes need {want}"),
        })
    }
}

/// `Err(Shape)` unless `len >= want`.
pub(crate) fn check_at_least(
    op: &'static str,
    name: &str,
    len: usize,
    want: usize,
) -> Result<(), CudaError> {
    if len >= want {
        Ok(())
    } else {
        Err(CudaError::Shape {
            op,
            reason: format!("`{name}` holds {len} elements, the shapes need at least {want}"),
        })
    }
}

/// A grid dimension from a count, or a typed error when it does not fit.
pub(crate) fn grid(op: &'static str, n: usize) -> Result<u32, CudaError> {
    u32::try_from(n).map_err(|_| CudaError::Unsupported {
        op,
        reason: format!("{n} thread blocks"),
    })
}

/// A kernel's `int` parameter from a size, or a typed error when it does not fit.
pub(crate) fn int(op: &'static str, name: &str, n: usize) -> Result<i32, CudaError> {
    i32::try_from(n).map_err(|_| CudaError::Unsupported {
        op,
        reason: format!("`{name}` = {n} does not fit the kernel's 32-bit index"),
    })
}

/// `Err(Unsupported)` unless `n > 0` (a zero-width row is a caller's bug, not a no-op).
pub(crate) fn check_nonzero(op: &'static str, name: &str, n: usize) -> Result<(), CudaError> {
    if n > 0 {
        Ok(())
    } else {
        Err(CudaError::Unsupported {
            op,
            reason: format!("`{name}` = 0"),
        })
    }
}
