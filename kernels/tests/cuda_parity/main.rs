//! CUDA vs CPU parity of every kernel in `kernels/cuda/`. Needs a GPU: compiled by `make
//! test` (`--no-run`), run by `scripts/gpu-check.sh` on a lent GPU host. Every test opens
//! GPU 0 and fails (never skips) when there is none, so a run without a GPU cannot pass.
//!
//! Each module compares one kernel family with its CPU spec: the CPU kernels of this crate
//! (`reshape_and_cache`, `paged_attention`) or `inferd_kernels::reference`, on inputs
//! rounded to the GPU dtype first, so the comparison measures the kernel, not the rounding
//! of its inputs.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod activation;
mod attention;
mod cache;
mod embedding;
mod linear;
mod norm;
mod rotary;
mod sampling;
