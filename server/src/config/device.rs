//! `device` and `gpu_memory_utilization`: where a model runs, as written in `models.toml` or
//! given by `inferd serve --device`. Pure parsing; which devices exist is decided at start-up
//! (`crate::device`).

use std::fmt;
use std::str::FromStr;

/// `device = "auto" | "cpu" | "cuda" | "cuda:N"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The first CUDA device when the binary has CUDA and a GPU is visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `"cuda"` (`None`: the first visible GPU) or `"cuda:N"` (GPU ordinal `N`).
    Cuda(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a device; use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                // Digits only: "cuda:+1" or "cuda: 1" are typos, not ordinals.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse().map(|n| Self::Cuda(Some(n))).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

/// Default of `gpu_memory_utilization`: the share of a GPU's memory inferd may use in all
/// (weights, buffers and the KV cache), as in vLLM.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;

/// `gpu_memory_utilization`: a fraction in (0, 1]. `Eq` through its bits: it is validated
/// finite, so equal values have equal bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuMemoryUtilization(f64);

impl Eq for GpuMemoryUtilization {}

impl Default for GpuMemoryUtilization {
    fn default() -> Self {
        Self(DEFAULT_GPU_MEMORY_UTILIZATION)
    }
}

impl GpuMemoryUtilization {
    /// `Err` with the reason unless `0 < v <= 1`.
    pub fn new(v: f64) -> Result<Self, String> {
        if v.is_finite() && v > 0.0 && v <= 1.0 {
            Ok(Self(v))
        } else {
            Err(format!(
                "must be a fraction of the GPU's memory in (0, 1], e.g. 0.9, got {v}"
            ))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// Where one model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub device: DeviceSpec,
    pub gpu_memory_utilization: GpuMemoryUtilization,
    /// `enforce_eager` (default false): on a GPU, run every step eagerly instead of replaying
    /// decode steps as CUDA graphs (to debug, or to compare).
    pub enforce_eager: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print_back() {
        for (text, spec) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(None)),
            ("cuda:0", DeviceSpec::Cuda(Some(0))),
            ("cuda:7", DeviceSpec::Cuda(Some(7))),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec));
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(DeviceSpec::default(), DeviceSpec::Auto);
    }

    #[test]
    fn typos_are_refused_with_the_choices() {
        for bad in [
            "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda: 1", "mps", "",
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains("\"cuda:N\""), "{bad:?}: {err}");
        }
    }

    #[test]
    fn utilization_is_a_fraction() {
        assert_eq!(GpuMemoryUtilization::default().get(), 0.9);
        assert_eq!(GpuMemoryUtilization::new(1.0).unwrap().get(), 1.0);
        assert_eq!(GpuMemoryUtilization::new(0.05).unwrap().get(), 0.05);
        for bad in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
            assert!(GpuMemoryUtilization::new(bad)
                .unwrap_err()
                .contains("(0, 1]"));
        }
    }
}
