// KV-cache writes: reshape_and_cache (new K/V rows into their slots) and copy_blocks.
// Layout per layer: K and V each [num_blocks, block_size, num_kv_heads, head_dim]; a slot is
// `block * block_size + offset`, so a slot's row is contiguous at `slot * kv_width`.
// CPU spec: inferd_kernels::reshape_and_cache and reference::copy_blocks.
#include "common.cuh"

// One thread block per token; `kv_width` = num_kv_heads * head_dim elements. A slot of
// 0xffffffff (u32::MAX) skips the token (padding rows of a CUDA-graph bucket).
template <typename T>
__device__ void reshape_and_cache_impl(const T* __restrict__ k, const T* __restrict__ v,
                                       T* __restrict__ k_cache, T* __restrict__ v_cache,
                                       const uint32_t* __restrict__ slot_mapping,
                                       int kv_width) {
    const int token = blockIdx.x;
    const uint32_t slot = slot_mapping[token];
    if (slot == 0xffffffffu) return;
    const size_t src = (size_t)token * kv_width, dst = (size_t)slot * kv_width;
    for (int i = threadIdx.x; i < kv_width; i += blockDim.x) {
        k_cache[dst + i] = k[src + i];
        v_cache[dst + i] = v[src + i];
    }
}

// Copies whole blocks: pairs [src0, dst0, src1, dst1, ...]; one thread block per pair,
// `block_width` = block_size * kv_width elements; K and V alike.
template <typename T>
__device__ void copy_blocks_impl(T* __restrict__ k_cache, T* __restrict__ v_cache,
                                 const uint32_t* __restrict__ pairs, size_t block_width) {
    const size_t src = (size_t)pairs[2 * blockIdx.x] * block_width;
    const size_t dst = (size_t)pairs[2 * blockIdx.x + 1] * block_width;
    for (size_t i = threadIdx.x; i < block_width; i += blockDim.x) {
        k_cache[dst + i] = k_cache[src + i];
        v_cache[dst + i] = v_cache[src + i];
    }
}

#define CACHE_KERNELS(NAME, T)                                                               \
    extern "C" __global__ void reshape_and_cache_##NAME(                                    \
        const T* k, const T* v, T* k_cache, T* v_cache, const uint32_t* slot_mapping,       \
        int kv_width) {                                                                      \
        reshape_and_cache_impl<T>(k, v, k_cache, v_cache, slot_mapping, kv_width);          \
    }                                                                                        \
    extern "C" __global__ void copy_blocks_##NAME(T* k_cache, T* v_cache,                   \
                                                  const uint32_t* pairs, size_t block_width) { \
        copy_blocks_impl<T>(k_cache, v_cache, pairs, block_width);                          \
    }
INFERD_FOR_DTYPES(CACHE_KERNELS)
