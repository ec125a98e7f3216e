//! Where each model runs: its [`DeviceSpec`] (`models.toml` `device`, or `inferd serve
//! --device`) resolved against what this binary was built with and what the host has.
//!
//! A CUDA device asked for on a build or host without one is a start-up error naming where
//! it was asked for, never a silent CPU fallback; only `auto` falls back to the CPU. The
//! decision ([`resolve`]) is a pure function of the spec and a [`Probe`], so every branch is
//! tested on a machine without a GPU; [`probe`] is the one place that asks the driver.

use std::fmt;

pub use crate::config::DeviceSpec;

/// One visible GPU, as start-up logs it and KV sizing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub compute_capability: (u32, u32),
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.compute_capability;
        write!(
            f,
            "cuda:{} ({}, {} MiB, {} MiB free, compute capability {major}.{minor})",
            self.ordinal,
            self.name,
            self.total_bytes >> 20,
            self.free_bytes >> 20
        )
    }
}

/// What the host offers, as far as this binary can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The binary was built without the `cuda` feature.
    NotBuilt,
    /// Built with CUDA, but no GPU is usable: why (no driver, no device, a driver error).
    Unavailable(String),
    /// Built with CUDA, and these GPUs are visible (at least one).
    Gpus(Vec<GpuInfo>),
}

/// Where a model runs, decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComputeDevice {
    Cpu,
    Cuda(GpuInfo),
}

/// Where a [`DeviceSpec`] was given, for messages: a `models.toml` key or the flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `device` of model `model` in the catalog at `path`.
    Catalog { path: String, model: String },
    /// `inferd serve --device` (or `INFERD_DEVICE`).
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Catalog { path, model } => write!(f, "{path}: model {model:?}: `device`"),
            Self::Flag => f.write_str("`--device` (INFERD_DEVICE)"),
        }
    }
}

/// Why a model cannot run where it was asked to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error(
        "{origin} = \"{spec}\" asks for a CUDA GPU, but this inferd was built without CUDA: \
         use the CUDA build (`make build-cuda`, the inferd-cuda image) or set it to \"cpu\""
    )]
    NotBuilt { origin: Origin, spec: DeviceSpec },
    #[error(
        "{origin} = \"{spec}\" asks for a CUDA GPU, but none is usable on this host: {reason}; \
         set it to \"cpu\" or \"auto\" to run on the CPU"
    )]
    NoGpu {
        origin: Origin,
        spec: DeviceSpec,
        reason: String,
    },
    #[error("{origin} = \"{spec}\": there is no GPU {ordinal}; this host has {count} (cuda:0..cuda:{})", count - 1)]
    NoSuchGpu {
        origin: Origin,
        spec: DeviceSpec,
        ordinal: usize,
        count: usize,
    },
    #[error(
        "{origin} = \"{spec}\": {gpu} is older than the compute capability {}.{} this binary's \
         kernels were built for; rebuild with CUDA_COMPUTE_CAP={}{} (80, 89 and 90 are \
         supported)",
        built.0, built.1, gpu.compute_capability.0, gpu.compute_capability.1
    )]
    TooOld {
        origin: Origin,
        spec: DeviceSpec,
        gpu: Box<GpuInfo>,
        built: (u32, u32),
    },
}

/// Decides where a model runs. `built` is the compute capability of the embedded kernels: a
/// GPU below it cannot run them (the embedded PTX only JIT-compiles for newer GPUs).
pub fn resolve(
    spec: DeviceSpec,
    origin: &Origin,
    probe: &Probe,
    built: (u32, u32),
) -> Result<ComputeDevice, DeviceError> {
    let usable = |g: &GpuInfo| g.compute_capability >= built;
    let ordinal = match (spec, probe) {
        (DeviceSpec::Cpu, _) => return Ok(ComputeDevice::Cpu),
        (DeviceSpec::Auto, Probe::Gpus(gpus)) => {
            return Ok(match gpus.first() {
                Some(g) if usable(g) => ComputeDevice::Cuda(g.clone()),
                Some(g) => {
                    tracing::warn!(gpu = %g, "device = \"auto\": the GPU is older than this build's kernels; running on the CPU");
                    ComputeDevice::Cpu
                }
                None => ComputeDevice::Cpu,
            })
        }
        (DeviceSpec::Auto, _) => return Ok(ComputeDevice::Cpu),
        (DeviceSpec::Cuda(_), Probe::NotBuilt) => {
            return Err(DeviceError::NotBuilt {
                origin: origin.clone(),
                spec,
            })
        }
        (DeviceSpec::Cuda(_), Probe::Unavailable(reason)) => {
            return Err(DeviceError::NoGpu {
                origin: origin.clone(),
                spec,
                reason: reason.clone(),
            })
        }
        (DeviceSpec::Cuda(n), Probe::Gpus(_)) => n.unwrap_or(0),
    };
    let Probe::Gpus(gpus) = probe else {
        unreachable!("the other probes returned above")
    };
    let gpu = gpus.get(ordinal).ok_or_else(|| DeviceError::NoSuchGpu {
        origin: origin.clone(),
        spec,
        ordinal,
        count: gpus.len(),
    })?;
    if !usable(gpu) {
        return Err(DeviceError::TooOld {
            origin: origin.clone(),
            spec,
            gpu: Box::new(gpu.clone()),
            built,
        });
    }
    Ok(ComputeDevice::Cuda(gpu.clone()))
}

/// The compute capability this binary's kernels were built for; `(0, 0)` without CUDA.
pub fn built_compute_capability() -> (u32, u32) {
    #[cfg(feature = "cuda")]
    return inferd_kernels::cuda::BUILT_COMPUTE_CAP;
    #[cfg(not(feature = "cuda"))]
    (0, 0)
}

/// Asks the driver which GPUs are visible (once per process: it creates a context on each).
/// Without the `cuda` feature: [`Probe::NotBuilt`], and nothing is loaded.
pub fn probe() -> Probe {
    static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
    PROBE.get_or_init(probe_once).clone()
}

#[cfg(not(feature = "cuda"))]
fn probe_once() -> Probe {
    Probe::NotBuilt
}

#[cfg(feature = "cuda")]
fn probe_once() -> Probe {
    use inferd_kernels::cuda::{self, CudaError};
    match cuda::probe() {
        Ok(gpus) if gpus.is_empty() => Probe::Unavailable("the NVIDIA driver sees no GPU".into()),
        Ok(gpus) => Probe::Gpus(
            gpus.into_iter()
                .map(|g| GpuInfo {
                    ordinal: g.ordinal,
                    name: g.name,
                    total_bytes: g.total_bytes,
                    free_bytes: g.free_bytes,
                    compute_capability: g.compute_capability,
                })
                .collect(),
        ),
        Err(CudaError::NoDriver) => {
            Probe::Unavailable("no NVIDIA driver (libcuda.so.1 could not be loaded)".into())
        }
        Err(e) => Probe::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(ordinal: usize, cc: (u32, u32)) -> GpuInfo {
        GpuInfo {
            ordinal,
            name: "NVIDIA H200".into(),
            total_bytes: 140 << 30,
            free_bytes: 139 << 30,
            compute_capability: cc,
        }
    }

    fn catalog() -> Origin {
        Origin::Catalog {
            path: "models.toml".into(),
            model: "m".into(),
        }
    }

    const H: (u32, u32) = (9, 0);

    #[test]
    fn cpu_is_always_the_cpu() {
        for probe in [
            Probe::NotBuilt,
            Probe::Unavailable("x".into()),
            Probe::Gpus(vec![gpu(0, H)]),
        ] {
            assert_eq!(
                resolve(DeviceSpec::Cpu, &catalog(), &probe, H),
                Ok(ComputeDevice::Cpu)
            );
        }
    }

    #[test]
    fn auto_takes_the_first_usable_gpu_else_the_cpu() {
        let two = Probe::Gpus(vec![gpu(0, H), gpu(1, H)]);
        assert_eq!(
            resolve(DeviceSpec::Auto, &catalog(), &two, H),
            Ok(ComputeDevice::Cuda(gpu(0, H)))
        );
        for probe in [Probe::NotBuilt, Probe::Unavailable("no driver".into())] {
            assert_eq!(
                resolve(DeviceSpec::Auto, &catalog(), &probe, H),
                Ok(ComputeDevice::Cpu)
            );
        }
        // An A100 under an sm_90 build cannot run the kernels: auto stays on the CPU.
        let old = Probe::Gpus(vec![gpu(0, (8, 0))]);
        assert_eq!(
            resolve(DeviceSpec::Auto, &catalog(), &old, H),
            Ok(ComputeDevice::Cpu)
        );
    }

    #[test]
    fn cuda_without_a_cuda_build_names_the_key_and_the_fix() {
        let e = resolve(DeviceSpec::Cuda(None), &catalog(), &Probe::NotBuilt, H).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("models.toml: model \"m\": `device` = \"cuda\""),
            "{msg}"
        );
        assert!(msg.contains("built without CUDA"), "{msg}");
        let e = resolve(
            DeviceSpec::Cuda(Some(0)),
            &Origin::Flag,
            &Probe::NotBuilt,
            H,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("`--device`"), "{e}");
    }

    #[test]
    fn cuda_on_a_host_without_a_gpu_says_why() {
        let probe =
            Probe::Unavailable("no NVIDIA driver (libcuda.so.1 could not be loaded)".into());
        let msg = resolve(DeviceSpec::Cuda(None), &catalog(), &probe, H)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`device` = \"cuda\""), "{msg}");
        assert!(msg.contains("libcuda.so.1"), "{msg}");
    }

    #[test]
    fn ordinals_are_checked() {
        let two = Probe::Gpus(vec![gpu(0, H), gpu(1, H)]);
        assert_eq!(
            resolve(DeviceSpec::Cuda(Some(1)), &catalog(), &two, H),
            Ok(ComputeDevice::Cuda(gpu(1, H)))
        );
        assert_eq!(
            resolve(DeviceSpec::Cuda(None), &catalog(), &two, H),
            Ok(ComputeDevice::Cuda(gpu(0, H)))
        );
        let msg = resolve(DeviceSpec::Cuda(Some(2)), &catalog(), &two, H)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no GPU 2; this host has 2 (cuda:0..cuda:1)"),
            "{msg}"
        );
    }

    #[test]
    fn a_gpu_older_than_the_build_is_refused_with_the_rebuild_flag() {
        let probe = Probe::Gpus(vec![gpu(0, (8, 0))]);
        let msg = resolve(DeviceSpec::Cuda(None), &catalog(), &probe, H)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("CUDA_COMPUTE_CAP=80"), "{msg}");
        // Newer GPUs run the embedded PTX.
        let newer = Probe::Gpus(vec![gpu(0, (10, 0))]);
        assert!(resolve(DeviceSpec::Cuda(None), &catalog(), &newer, H).is_ok());
    }

    #[test]
    fn gpus_are_logged_with_name_memory_and_capability() {
        assert_eq!(
            gpu(0, H).to_string(),
            "cuda:0 (NVIDIA H200, 143360 MiB, 142336 MiB free, compute capability 9.0)"
        );
    }
}
