//! Plain-Rust f32 specifications of the algorithms of the CUDA kernels (`kernels/cuda/*.cu`)
//! that have no CPU twin in this crate, or whose GPU algorithm differs from the CPU kernel's
//! (split-K decode). Always compiled (no feature): the CPU unit tests check each one against
//! the crate's CPU kernels, and the GPU parity tests (`tests/cuda_parity`) check the CUDA
//! kernels against them or against the CPU kernels directly.
//!
//! Everything here favours being obviously the algorithm over speed: one output row at a
//! time, sums in order.

pub mod attention;
