//! CPU bodies of the kernels: what runs when an op's operands live in host
//! memory, called from the op's `cpu_fwd`.
//!
//! The modules one level up (`attention`, `cache`, `linear`) are device
//! neutral: they check dtypes, shapes and layouts, return typed errors, hold
//! the composed "slow" references and hand the checked operands to a device
//! body. A GPU build adds a `cuda` module next to this one (behind the `cuda`
//! feature) with the same shape: one submodule per op, called from that op's
//! `cuda_fwd`, plus the helpers its bodies share. Nothing in here is
//! reachable from another device's body.
//!
//! Shared by the CPU bodies: [`Isa`] (run-time instruction-set detection),
//! [`OutPtr`] (disjoint writes from parallel tasks), [`prefetch`], the
//! reduction orders in [`dot`], and typed views of [`CpuStorage`].

pub(crate) mod attention;
pub(crate) mod cache;
pub(crate) mod dot;
mod isa;
pub(crate) mod linear;

pub use isa::Isa;

use candle_core::{CpuStorage, Layout};

/// A raw pointer to an output buffer, shared by parallel tasks that each
/// write their own disjoint elements of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);

// SAFETY: an `OutPtr` is only dereferenced through `get` / `slice_mut`, whose
// callers guarantee that no two tasks touch the same element and that the
// buffer outlives every task.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        OutPtr(out.as_mut_ptr())
    }

    /// The start of the buffer. (A method, not a field access, so closures
    /// capture the whole `Send` wrapper.)
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }

    /// Elements `at..at + len` of the buffer.
    ///
    /// # Safety
    /// The range must lie inside the buffer, and no other task may read or
    /// write it while the returned slice lives.
    pub(crate) unsafe fn slice_mut<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// Hints the cache lines of `data` into L1, one prefetch per 16 floats
/// (64 bytes) in address order. Never faults and changes no result.
#[inline]
pub(crate) fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetching is only a hint, and the address is in bounds.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// The part of `data` covered by the contiguous layout `l`.
fn contiguous<'a, T>(data: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::msg("inferd-kernels: non-contiguous operand"))?;
    Ok(&data[a..b])
}

/// The contiguous `f32` data of a CPU storage, as a slice covering `l`.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous(v, l),
        _ => Err(candle_core::Error::msg(
            "inferd-kernels: expected f32 storage",
        )),
    }
}

/// The contiguous `u32` data of a CPU storage, as a slice covering `l`.
pub(crate) fn u32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    match s {
        CpuStorage::U32(v) => contiguous(v, l),
        _ => Err(candle_core::Error::msg(
            "inferd-kernels: expected u32 storage",
        )),
    }
}
