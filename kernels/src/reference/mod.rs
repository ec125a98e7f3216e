//! Plain-Rust f32 specifications of the CUDA kernels (`kernels/cuda/*.cu`) that have no CPU
//! twin among this crate's candle ops, or whose GPU algorithm differs from the CPU kernel's
//! (split-K decode); see `docs/cuda.md`. Always compiled (no feature): the CPU unit tests
//! check each one (attention against the crate's CPU kernel), the CUDA parity tests compare
//! every kernel with these or with the CPU kernels, and the host side of the GPU decoder
//! reuses the table builders (e.g. [`rotary::rotary_table`]).
//!
//! Slices are row-major; functions favour being obviously the algorithm over speed. Most
//! panic on inconsistent lengths (they are specs, not serving code); the attention ones
//! ([`attention::decode_split_k`], [`attention::prefill_tiled`]) check their geometry, tables
//! and lengths and return a [`crate::Result`] instead.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod norm;
pub mod rotary;
pub mod sampling;
