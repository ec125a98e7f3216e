//! Plain-Rust f32 specifications of the CUDA kernels that have no CPU twin among this
//! crate's candle ops (see `docs/cuda.md`). Always compiled (no feature): the CUDA parity
//! tests compare every kernel with these, and the host side of the GPU decoder reuses the
//! table builders (e.g. [`rotary::rotary_table`]).
//!
//! Slices are row-major; functions panic on inconsistent lengths (they are specs, not
//! serving code).

pub mod activation;
pub mod embedding;
pub mod norm;
pub mod rotary;
pub mod sampling;
