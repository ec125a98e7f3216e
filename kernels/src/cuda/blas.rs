//! Linear layers through cuBLASLt: `y [m, n] = x [m, k] · w [n, k]ᵀ (+ beta · y)`, bf16/f16 in
//! and out, f32 accumulation (PyTorch `Linear` layout, the same as [`crate::linear`]).
//!
//! cuBLASLt is dlopened on first use (`libcublasLt.so.13`); without it [`Blas::new`] answers
//! [`CudaError::NoLibrary`] instead of panicking. Descriptors, layouts and the chosen algorithm
//! of each `(dtype, m, n, k, beta)` are built once and cached ([`Plan`]): a step only launches.
//! The workspace is allocated once, so a matmul may be captured in a CUDA graph.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Mutex;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::{CudaError, Dtype, Gpu};

/// Workspace NVIDIA recommends for Hopper (32 MiB; 4 MiB before it).
fn workspace_bytes(compute_capability: (u32, u32)) -> usize {
    if compute_capability.0 >= 9 {
        32 << 20
    } else {
        4 << 20
    }
}

fn blas_err(what: &str, e: lt::CublasError) -> CudaError {
    CudaError::Blas(format!("{what}: {e}"))
}

/// One cuBLASLt handle, its workspace and its cached plans; used from one thread (the
/// engine's), on the [`Gpu`]'s stream.
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: Mutex<HashMap<PlanKey, Plan>>,
}

// SAFETY: the handle is only used through `&self` methods that launch on one stream; cuBLASLt
// handles may be used from any thread as long as calls are not concurrent, which the plans'
// mutex (held across each launch) guarantees.
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    dtype: Dtype,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    /// `y` in f32 (logits) rather than `dtype`.
    f32_out: bool,
}

/// What one shape needs at launch: the descriptors and the algorithm the heuristic picked.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by `Plan::new`, destroyed once; errors at teardown are ignored.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

fn data_type(dtype: Dtype) -> sys::cudaDataType {
    match dtype {
        Dtype::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        Dtype::F16 => sys::cudaDataType_t::CUDA_R_16F,
    }
}

impl Plan {
    /// Row-major `y [m, n] = x [m, k] · w [n, k]ᵀ` is column-major `yᵀ [n, m] = op(W) · xᵀ`
    /// with `W` the column-major `[k, n]` view of `w` transposed, `xᵀ` the column-major
    /// `[k, m]` view of `x`.
    fn new(
        handle: sys::cublasLtHandle_t,
        key: PlanKey,
        workspace: usize,
    ) -> Result<Self, CudaError> {
        let ty = data_type(key.dtype);
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| blas_err("matmul descriptor", e))?;
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            // SAFETY: a plain C struct of integers, overwritten by the heuristic below.
            algo: unsafe { std::mem::zeroed() },
        };
        // `cublasOperation_t`: 0 = N, 1 = T (cuBLASLt's headers; cudarc has no Lt binding of it).
        let trans: i32 = 1;
        // SAFETY: `desc` is live; the attribute is a 32-bit `cublasOperation_t`.
        unsafe {
            lt::set_matmul_desc_attribute(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&trans) as *const _ as *const c_void,
                size_of::<i32>(),
            )
        }
        .map_err(|e| blas_err("transpose", e))?;
        plan.a = lt::create_matrix_layout(ty, k, n, k as i64).map_err(|e| blas_err("w", e))?;
        plan.b = lt::create_matrix_layout(ty, k, m, k as i64).map_err(|e| blas_err("x", e))?;
        let ty_c = if key.f32_out {
            sys::cudaDataType_t::CUDA_R_32F
        } else {
            ty
        };
        plan.c = lt::create_matrix_layout(ty_c, n, m, n as i64).map_err(|e| blas_err("y", e))?;
        let pref = lt::create_matmul_pref().map_err(|e| blas_err("preference", e))?;
        // SAFETY: every descriptor is live; `pref` is destroyed right after the query.
        let heuristic = unsafe {
            let r = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace) as *const usize as *const c_void,
                size_of::<usize>(),
            )
            .and_then(|()| {
                lt::get_matmul_algo_heuristic(
                    handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref,
                )
            });
            let _ = lt::destroy_matmul_pref(pref);
            r
        }
        .map_err(|e| {
            blas_err(
                &format!(
                    "no cuBLASLt algorithm for {:?} m={m} n={n} k={k}",
                    key.dtype
                ),
                e,
            )
        })?;
        plan.algo = heuristic.algo;
        Ok(plan)
    }
}

impl Blas {
    /// Loads cuBLASLt, creates a handle and the workspace on `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Self, CudaError> {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoLibrary {
                lib: "libcublasLt.so.13",
            });
        }
        gpu.context().bind_to_thread()?;
        let handle = lt::create_handle().map_err(|e| blas_err("handle", e))?;
        let bytes = workspace_bytes(gpu.info().compute_capability);
        // SAFETY: the workspace is scratch cuBLASLt writes before reading.
        let workspace = unsafe { gpu.stream().alloc::<u8>(bytes) }?;
        Ok(Self {
            handle,
            workspace,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Builds (once) the plan of a shape ahead of time, e.g. for every batch bucket before
    /// graph capture, so the first captured step does not run the heuristic.
    pub fn prepare(
        &self,
        dtype: Dtype,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let key = PlanKey {
            dtype,
            m,
            n,
            k,
            accumulate,
            f32_out: false,
        };
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(key) {
            e.insert(Plan::new(self.handle, key, self.workspace.len())?);
        }
        Ok(())
    }

    /// `y = x · wᵀ` (`accumulate`: `y += x · wᵀ`, e.g. into the residual stream), with `x`
    /// `[m, k]`, `w` `[n, k]` and `y` `[m, n]`, row-major, of `dtype`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear<X, W, Y>(
        &self,
        gpu: &Gpu,
        dtype: Dtype,
        (m, n, k): (usize, usize, usize),
        x: &X,
        w: &W,
        y: &mut Y,
        accumulate: bool,
    ) -> Result<(), CudaError>
    where
        X: DevicePtr<u16>,
        W: DevicePtr<u16>,
        Y: DevicePtrMut<u16>,
    {
        super::ops::check_at_least("linear", "y", y.len(), m * n)?;
        let (y_ptr, _y) = y.device_ptr_mut(gpu.stream());
        self.matmul(gpu, dtype, (m, n, k), x, w, y_ptr, accumulate, false)
    }

    /// `y = x · wᵀ` as [`Blas::linear`], `x` and `w` of `dtype`, `y` in f32 (the logits of the
    /// output projection: no rounding to the model dtype before sampling).
    pub fn linear_f32<X, W, Y>(
        &self,
        gpu: &Gpu,
        dtype: Dtype,
        (m, n, k): (usize, usize, usize),
        x: &X,
        w: &W,
        y: &mut Y,
    ) -> Result<(), CudaError>
    where
        X: DevicePtr<u16>,
        W: DevicePtr<u16>,
        Y: DevicePtrMut<f32>,
    {
        super::ops::check_at_least("linear_f32", "y", y.len(), m * n)?;
        let (y_ptr, _y) = y.device_ptr_mut(gpu.stream());
        self.matmul(gpu, dtype, (m, n, k), x, w, y_ptr, false, true)
    }

    /// The launch behind both: `y_ptr` holds at least `m * n` elements of the output type
    /// (checked by the callers).
    #[allow(clippy::too_many_arguments)]
    fn matmul<X, W>(
        &self,
        gpu: &Gpu,
        dtype: Dtype,
        (m, n, k): (usize, usize, usize),
        x: &X,
        w: &W,
        y_ptr: u64,
        accumulate: bool,
        f32_out: bool,
    ) -> Result<(), CudaError>
    where
        X: DevicePtr<u16>,
        W: DevicePtr<u16>,
    {
        const OP: &str = "linear";
        super::ops::check_at_least(OP, "x", x.len(), m * k)?;
        super::ops::check_len(OP, "w", w.len(), n * k)?;
        if m == 0 {
            return Ok(());
        }
        let key = PlanKey {
            dtype,
            m,
            n,
            k,
            accumulate,
            f32_out,
        };
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Plan::new(self.handle, key, self.workspace.len())?)
            }
        };
        let stream = gpu.stream();
        let (alpha, beta) = (1f32, if accumulate { 1f32 } else { 0f32 });
        let (w_ptr, _w) = w.device_ptr(stream);
        let (x_ptr, _x) = x.device_ptr(stream);
        let (ws_ptr, _ws) = self.workspace.device_ptr(stream);
        // SAFETY: the lengths were checked against the plan's shapes (here and by the
        // callers for `y`); every pointer is a live allocation on this context, used on
        // `stream` only.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                w_ptr as *const c_void,
                plan.a,
                x_ptr as *const c_void,
                plan.b,
                y_ptr as *const c_void,
                plan.c,
                y_ptr as *mut c_void,
                plan.c,
                &plan.algo,
                ws_ptr as *mut c_void,
                self.workspace.len(),
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| blas_err(OP, e))
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        self.plans
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // SAFETY: created in `new`, destroyed once, after every plan.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}
