// RMS norm and the fused residual add + RMS norm of a pre-norm block. One thread block per
// row of [rows, hidden]; f32 math, one rounding to T per output.
// CPU spec: inferd_kernels::reference::norm.
#include "common.cuh"

// out = x * (1 / sqrt(mean(x^2) + eps)) * weight.
template <typename T>
__device__ void rms_norm_impl(const T* __restrict__ x, const T* __restrict__ weight,
                              T* __restrict__ out, int hidden, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * hidden;
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = inferd::to_float(x[base + i]);
        ss += v * v;
    }
    ss = inferd::block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = inferd::to_float(x[base + i]);
        out[base + i] = inferd::from_float<T>(v * inv * inferd::to_float(weight[i]));
    }
}

// residual += x (rounded to T, written back), then out = rms_norm(residual): the norm of
// the stored (rounded) sum, as the CPU model's `residual + x` in the model dtype.
template <typename T>
__device__ void add_rms_norm_impl(T* __restrict__ residual, const T* __restrict__ x,
                                  const T* __restrict__ weight, T* __restrict__ out,
                                  int hidden, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * hidden;
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const T s = inferd::from_float<T>(inferd::to_float(residual[base + i]) +
                                          inferd::to_float(x[base + i]));
        residual[base + i] = s;
        const float v = inferd::to_float(s);
        ss += v * v;
    }
    ss = inferd::block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)hidden + eps);
    // Each thread reads back only the elements it wrote.
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = inferd::to_float(residual[base + i]);
        out[base + i] = inferd::from_float<T>(v * inv * inferd::to_float(weight[i]));
    }
}

#define NORM_KERNELS(NAME, T)                                                                \
    extern "C" __global__ void rms_norm_##NAME(const T* x, const T* weight, T* out,         \
                                               int hidden, float eps) {                     \
        rms_norm_impl<T>(x, weight, out, hidden, eps);                                       \
    }                                                                                        \
    extern "C" __global__ void add_rms_norm_##NAME(T* residual, const T* x, const T* weight, \
                                                   T* out, int hidden, float eps) {          \
        add_rms_norm_impl<T>(residual, x, weight, out, hidden, eps);                         \
    }
INFERD_FOR_DTYPES(NORM_KERNELS)
