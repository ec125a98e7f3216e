//! Run-time instruction-set selection for the CPU bodies.

use std::sync::OnceLock;

/// Instruction set used by the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (8 independent accumulators, fixed reduction order).
    Scalar,
    /// x86-64 AVX2 + FMA, detected at run time.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set of this CPU (detected once, then cached).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if Isa::Avx2Fma.is_supported() {
                Isa::Avx2Fma
            } else {
                Isa::Scalar
            }
        })
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2Fma => false,
        }
    }
}
