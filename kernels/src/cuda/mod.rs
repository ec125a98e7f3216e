//! The CUDA path (feature `cuda`): a [`Gpu`] (context, stream, the embedded kernel modules),
//! device discovery ([`probe`]), and typed launchers of the kernels in `kernels/cuda/*.cu`.
//!
//! CUDA is loaded at run time (cudarc `dynamic-loading`): nothing here links a CUDA library,
//! and [`probe`] answers [`CudaError::NoDriver`] on a host without one instead of failing to
//! start. Device buffers are plain `CudaSlice`s, bf16/f16 stored as `u16` with a [`Dtype`]
//! tag; every launcher checks lengths against the shapes it is given and returns a typed
//! error, never launches out of bounds.

pub mod blas;
mod device;
mod error;
pub mod fatbin;
pub mod ops;

pub use blas::Blas;
pub use cudarc;
pub use device::{probe, Gpu, GpuInfo};
pub use error::CudaError;

/// The compute capability the embedded SASS was built for (`CUDA_COMPUTE_CAP` at build
/// time); the embedded PTX of the same arch lets the driver JIT for newer GPUs.
pub const BUILT_COMPUTE_CAP: (u32, u32) = parse_cap(env!("INFERD_CUDA_COMPUTE_CAP"));

const fn parse_cap(s: &str) -> (u32, u32) {
    let b = s.as_bytes();
    assert!(b.len() == 2, "INFERD_CUDA_COMPUTE_CAP must be two digits");
    ((b[0] - b'0') as u32, (b[1] - b'0') as u32)
}

/// Element type of a device tensor of 16-bit floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bf16,
    F16,
}

impl Dtype {
    /// The suffix of the kernel entry points instantiated for this dtype.
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}
