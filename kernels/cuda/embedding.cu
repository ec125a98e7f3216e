// Token embedding: out[t] = table[ids[t]] for table [vocab, hidden]; an id >= vocab gets a
// zero row and the table is never read out of bounds. One thread block per token.
// CPU spec: inferd_kernels::reference::embedding.
#include "common.cuh"

template <typename T>
__device__ void embedding_impl(const T* __restrict__ table, const uint32_t* __restrict__ ids,
                               T* __restrict__ out, int hidden, uint32_t vocab) {
    const uint32_t id = ids[blockIdx.x];
    T* dst = out + (size_t)blockIdx.x * hidden;
    if (id >= vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = inferd::from_float<T>(0.f);
        return;
    }
    const T* src = table + (size_t)id * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}

#define EMBEDDING_KERNELS(NAME, T)                                                       \
    extern "C" __global__ void embedding_##NAME(const T* table, const uint32_t* ids,    \
                                                T* out, int hidden, uint32_t vocab) {    \
        embedding_impl<T>(table, ids, out, hidden, vocab);                               \
    }
INFERD_FOR_DTYPES(EMBEDDING_KERNELS)
