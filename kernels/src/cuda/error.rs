use cudarc::driver::DriverError;

/// Errors of the CUDA path.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// `libcuda.so.1` could not be loaded (no NVIDIA driver on this host, or not on the
    /// library path).
    #[error(
        "no CUDA driver could be loaded (libcuda.so.1 not found; on Kubernetes the NVIDIA \
         container runtime mounts it, elsewhere check LD_LIBRARY_PATH)"
    )]
    NoDriver,
    /// A CUDA library other than the driver could not be loaded.
    #[error("{lib} could not be loaded (put the CUDA 13 libraries on LD_LIBRARY_PATH)")]
    NoLibrary { lib: &'static str },
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLASLt call failed.
    #[error("cuBLASLt: {0}")]
    Blas(String),
    /// An embedded kernel is missing (a build without that `.cu` file).
    #[error("kernel `{0}` is not in the embedded modules")]
    MissingKernel(String),
    /// A launcher was given operands that do not fit its shapes.
    #[error("{op}: {reason}")]
    Shape { op: &'static str, reason: String },
    /// A shape or parameter the kernels do not implement.
    #[error("{op}: unsupported: {reason}")]
    Unsupported { op: &'static str, reason: String },
}
