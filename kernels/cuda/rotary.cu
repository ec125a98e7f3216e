// Rotary position embeddings applied in place to q [tokens, num_heads, head_dim] and
// k [tokens, num_kv_heads, head_dim] (token rows `q_stride` / `k_stride` elements apart, so
// q and k may sit inside a fused qkv product) from positions [tokens] and an f32 table
// cos/sin [max_pos, rotary_dim / 2]. The first rotary_dim elements of every head turn in
// pairs: interleaved (2i, 2i + 1) or halves (i, i + rotary_dim / 2), as
// (a, b) -> (a cos - b sin, a sin + b cos), each product and sum rounded in f32 (no FMA
// contraction: the same operations as the CPU spec). A position >= max_pos leaves its
// token alone (never read past the table; the decoder checks positions on the host).
// One thread block per token. CPU spec: inferd_kernels::reference::rotary.
#include "common.cuh"

template <typename T>
__device__ void rotary_impl(T* __restrict__ q, T* __restrict__ k,
                            const uint32_t* __restrict__ positions,
                            const float* __restrict__ cos_table,
                            const float* __restrict__ sin_table, int num_heads,
                            int num_kv_heads, int head_dim, int rotary_dim, int q_stride,
                            int k_stride, uint32_t max_pos, int interleaved) {
    const size_t token = blockIdx.x;
    const uint32_t pos = positions[token];
    if (pos >= max_pos) return;
    const int half = rotary_dim / 2;
    const float* c = cos_table + (size_t)pos * half;
    const float* s = sin_table + (size_t)pos * half;
    const int pairs = (num_heads + num_kv_heads) * half;
    for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
        const int head = j / half, i = j - head * half;
        T* x = head < num_heads ? q + token * q_stride + (size_t)head * head_dim
                                : k + token * k_stride + (size_t)(head - num_heads) * head_dim;
        const int i0 = interleaved ? 2 * i : i;
        const int i1 = interleaved ? 2 * i + 1 : i + half;
        const float a = inferd::to_float(x[i0]), b = inferd::to_float(x[i1]);
        const float ci = c[i], si = s[i];
        x[i0] = inferd::from_float<T>(__fsub_rn(__fmul_rn(a, ci), __fmul_rn(b, si)));
        x[i1] = inferd::from_float<T>(__fadd_rn(__fmul_rn(a, si), __fmul_rn(b, ci)));
    }
}

#define ROTARY_KERNELS(NAME, T)                                                              \
    extern "C" __global__ void rotary_##NAME(                                               \
        T* q, T* k, const uint32_t* positions, const float* cos_table,                      \
        const float* sin_table, int num_heads, int num_kv_heads, int head_dim,              \
        int rotary_dim, int q_stride, int k_stride, uint32_t max_pos, int interleaved) {     \
        rotary_impl<T>(q, k, positions, cos_table, sin_table, num_heads, num_kv_heads,     \
                       head_dim, rotary_dim, q_stride, k_stride, max_pos, interleaved);     \
    }
INFERD_FOR_DTYPES(ROTARY_KERNELS)
