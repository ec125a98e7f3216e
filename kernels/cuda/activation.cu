// The gated MLP's activation: out[r, i] = silu(gate[r, i]) * up[r, i], f32 math.
// `gate` and `up` rows are `in_stride` elements apart (inter for separate [rows, inter]
// buffers; 2 * inter for a fused [rows, 2 * inter] gate|up product, with `up = gate +
// inter`); `out` is [rows, inter]. Grid: (rows, ceil(inter / blockDim)).
// CPU spec: inferd_kernels::reference::activation.
#include "common.cuh"

template <typename T>
__device__ void silu_mul_impl(const T* __restrict__ gate, const T* __restrict__ up,
                              T* __restrict__ out, int inter, int in_stride) {
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const size_t row = blockIdx.x;
    const float g = inferd::to_float(gate[row * in_stride + i]);
    const float u = inferd::to_float(up[row * in_stride + i]);
    out[row * inter + i] = inferd::from_float<T>(g / (1.f + expf(-g)) * u);
}

#define ACTIVATION_KERNELS(NAME, T)                                                   \
    extern "C" __global__ void silu_mul_##NAME(const T* gate, const T* up, T* out,   \
                                               int inter, int in_stride) {           \
        silu_mul_impl<T>(gate, up, out, inter, in_stride);                            \
    }
INFERD_FOR_DTYPES(ACTIVATION_KERNELS)
