//! Shared by the parity modules: one GPU per test binary, uploads and downloads of bf16/f16
//! data, rounding on the host.
#![allow(dead_code)]

use std::sync::OnceLock;

use half::{bf16, f16};
use inferd_kernels::cuda::cudarc::driver::CudaSlice;
use inferd_kernels::cuda::{Dtype, Gpu};

/// GPU 0, opened once for the whole binary (a context per test would cost seconds).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::open(0).unwrap_or_else(|e| panic!("parity tests need a GPU: {e}")))
}

pub const DTYPES: [Dtype; 2] = [Dtype::Bf16, Dtype::F16];

/// `x` rounded to `dtype`, as bits.
pub fn to_bits(dtype: Dtype, x: &[f32]) -> Vec<u16> {
    match dtype {
        Dtype::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect(),
        Dtype::F16 => x.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
    }
}

pub fn from_bits(dtype: Dtype, x: &[u16]) -> Vec<f32> {
    match dtype {
        Dtype::Bf16 => x.iter().map(|&b| bf16::from_bits(b).to_f32()).collect(),
        Dtype::F16 => x.iter().map(|&b| f16::from_bits(b).to_f32()).collect(),
    }
}

/// `x` rounded to `dtype` and back: what the GPU sees of an f32 input.
pub fn round(dtype: Dtype, x: &[f32]) -> Vec<f32> {
    from_bits(dtype, &to_bits(dtype, x))
}

/// One unit in the last place of `dtype` at 1.0: the tolerance scale of its results.
pub fn eps(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::Bf16 => 1.0 / 128.0,
        Dtype::F16 => 1.0 / 1024.0,
    }
}

pub fn upload<T: inferd_kernels::cuda::cudarc::driver::DeviceRepr>(x: &[T]) -> CudaSlice<T> {
    gpu().stream().clone_htod(x).expect("upload")
}

pub fn upload_f(dtype: Dtype, x: &[f32]) -> CudaSlice<u16> {
    upload(&to_bits(dtype, x))
}

pub fn download<T: inferd_kernels::cuda::cudarc::driver::DeviceRepr + Default + Clone>(
    x: &CudaSlice<T>,
) -> Vec<T> {
    gpu().stream().clone_dtoh(x).expect("download")
}

pub fn download_f(dtype: Dtype, x: &CudaSlice<u16>) -> Vec<f32> {
    from_bits(dtype, &download(x))
}

/// `|a - b| <= tol * max(1, |b|)` element-wise, with the worst element in the message.
pub fn assert_close_slice(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs() / y.abs().max(1.0);
        // NaN counts as the worst.
        if err.is_nan() || err > worst.1 {
            worst = (i, err);
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: element {} is {} vs {} (relative error {} > {tol})",
        worst.0,
        a[worst.0],
        b[worst.0],
        worst.1
    );
}
