use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::{fatbin, CudaError};

/// What start-up logs and sizing need to know of one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub compute_capability: (u32, u32),
}

fn driver_present() -> Result<(), CudaError> {
    // SAFETY: only dlopens the driver library (cudarc's lazy loader), calls nothing in it.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::NoDriver)
    }
}

/// Every visible GPU, or why there is none. Creates (retains) each device's primary context
/// to read its free memory; on a host without a driver it returns [`CudaError::NoDriver`]
/// and loads nothing.
pub fn probe() -> Result<Vec<GpuInfo>, CudaError> {
    driver_present()?;
    cudarc::driver::result::init()?;
    let count = CudaContext::device_count()?;
    (0..count as usize)
        .map(|i| {
            let ctx = CudaContext::new(i)?;
            info(&ctx)
        })
        .collect()
}

fn info(ctx: &Arc<CudaContext>) -> Result<GpuInfo, CudaError> {
    let (free, total) = ctx.mem_get_info()?;
    let major = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(GpuInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        total_bytes: total as u64,
        free_bytes: free as u64,
        compute_capability: (major as u32, minor as u32),
    })
}

/// One GPU, ready to launch inferd's kernels: its primary context, one stream every launch
/// goes to (so a step can be captured as a CUDA graph), and the embedded modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Vec<(&'static str, Arc<CudaModule>)>,
    info: GpuInfo,
}

impl Gpu {
    /// Opens GPU `ordinal` and loads every embedded kernel module into it.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        driver_present()?;
        let ctx = CudaContext::new(ordinal)?;
        // One stream, ordered launches: cudarc's per-buffer event tracking only costs time
        // and would record events inside graph captures.
        // SAFETY: every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let modules = fatbin::MODULES
            .iter()
            .map(|(name, image)| Ok((*name, ctx.load_module(Ptx::from_binary(image.to_vec()))?)))
            .collect::<Result<Vec<_>, CudaError>>()?;
        let info = info(&ctx)?;
        Ok(Self {
            ctx,
            stream,
            modules,
            info,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher uses.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The GPU as it was when opened (free memory is re-read by [`Gpu::mem_info`]).
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// `(free, total)` device memory now, in bytes.
    pub fn mem_info(&self) -> Result<(u64, u64), CudaError> {
        let (free, total) = self.ctx.mem_get_info()?;
        Ok((free as u64, total as u64))
    }

    /// The kernel entry point `name` from whichever embedded module defines it.
    pub fn function(&self, name: &str) -> Result<CudaFunction, CudaError> {
        for (_, m) in &self.modules {
            if let Ok(f) = m.load_function(name) {
                return Ok(f);
            }
        }
        Err(CudaError::MissingKernel(name.to_string()))
    }
}
