// Sampling reductions over f32 logits [rows, vocab], one thread block per row:
//   argmax_f32       the id of the largest logit (lowest id among equals)
//   top_k_lse_f32    the k best (id, logit) pairs, best first, and the row's log-sum-exp at
//                    temperature 1 and at the row's temperature
//   log_softmax_f32  the full row minus its log-sum-exp
// Order: by value, -0 == +0, NaN below -inf, equal values to the lower id (a u32 rank key,
// packed with ~id into a u64 whose maximum is the best candidate). Log-sum-exps skip NaN and
// are the maximum itself when it is not finite. CPU spec: inferd_kernels::reference::sampling
// (whose module doc states the contract).
//
// top_k_lse: a radix select of the k-th best key (four 8-bit digits, a shared-memory
// histogram per digit, warp-aggregated atomics), then one pass gathering the keys above it
// and the lowest-id ones equal to it, then a bitonic sort of the k candidates. Needs
// blockDim.x a multiple of 32 and >= 256, and 1 <= k <= min(vocab, INFERD_MAX_TOP_K).
#include "common.cuh"

#define INFERD_MAX_TOP_K 256

namespace {

__device__ __forceinline__ uint32_t rank_key(float v) {
    if (isnan(v)) return 0u;
    const uint32_t b = v == 0.f ? 0u : __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ unsigned long long pack(uint32_t key, uint32_t id) {
    return ((unsigned long long)key << 32) | (unsigned long long)(~id);
}

__device__ __forceinline__ uint32_t packed_id(unsigned long long p) { return ~(uint32_t)p; }

__device__ __forceinline__ unsigned long long max_u64(unsigned long long a,
                                                      unsigned long long b) {
    return a > b ? a : b;
}

// Maximum over the block (0 is the identity); `scratch` holds 32 values.
__device__ unsigned long long block_max_u64(unsigned long long v, unsigned long long* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max_u64(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? scratch[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max_u64(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float inv_temperature(float t) {
    const float s = 1.f / t;
    return (s > 0.f && isfinite(s)) ? s : 1.f;
}

// `hist[bin] += 1` for every active lane, one atomic per distinct bin of the warp. Every
// lane of the warp must call it.
__device__ __forceinline__ void hist_add(uint32_t* hist, uint32_t bin, bool active) {
    const uint32_t act = __ballot_sync(0xffffffffu, active);
    if (active) {
        const uint32_t peers = __match_any_sync(act, bin);
        if ((int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(1024) argmax_f32(const float* __restrict__ logits, int vocab,
                                      uint32_t* __restrict__ out) {
    __shared__ unsigned long long scratch[32];
    const float* x = logits + (size_t)blockIdx.x * vocab;
    unsigned long long best = 0ull;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) best = max_u64(best, pack(rank_key(x[i]), i));
    best = block_max_u64(best, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = vocab > 0 ? packed_id(best) : 0u;
}

extern "C" __global__ void __launch_bounds__(1024) log_softmax_f32(const float* __restrict__ logits,
                                           float* __restrict__ out, int vocab) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * vocab;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, logits[base + i]);
    m = inferd::block_max(m, scratch);
    float s = 0.f;
    if (isfinite(m)) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float v = logits[base + i];
            if (!isnan(v)) s += expf(v - m);
        }
    }
    s = inferd::block_sum(s, scratch);
    const float lse = isfinite(m) ? m + logf(s) : m;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) out[base + i] = logits[base + i] - lse;
}

extern "C" __global__ void __launch_bounds__(1024) top_k_lse_f32(const float* __restrict__ logits, int vocab, int k,
                                         const float* __restrict__ temperatures,
                                         uint32_t* __restrict__ out_ids,
                                         float* __restrict__ out_logits,
                                         float* __restrict__ out_lse,
                                         float* __restrict__ out_lse_t) {
    __shared__ uint32_t hist[256];
    __shared__ unsigned long long cand[INFERD_MAX_TOP_K];
    __shared__ float scratch[32];
    __shared__ uint32_t warp_counts[32];
    __shared__ uint32_t sel_bin, sel_above, n_gt, eq_base, done;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warps = blockDim.x >> 5;
    const size_t row = blockIdx.x;
    const float* x = logits + row * vocab;
    const float inv_t = inv_temperature(temperatures[row]);

    // Radix select: after the digit at `shift`, `prefix` (under `mask`) holds the k-th best
    // key's digits so far and `remaining` how many of the best k share them. The first pass
    // also finds the maximum, the second sums the exponentials.
    float m = -INFINITY, s1 = 0.f, st = 0.f;
    uint32_t prefix = 0u, mask = 0u, remaining = (uint32_t)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0u;
        __syncthreads();
        const bool sums = shift == 16 && isfinite(m);
        for (int base = 0; base < vocab; base += blockDim.x) {
            const int i = base + tid;
            const float v = i < vocab ? x[i] : __int_as_float(0x7fc00000);  // NaN: inactive
            const uint32_t key = rank_key(v);
            hist_add(hist, (key >> shift) & 255u, i < vocab && (key & mask) == prefix);
            if (shift == 24) m = fmaxf(m, v);
            if (sums && !isnan(v)) {
                const float d = v - m;
                s1 += expf(d);
                st += expf(d * inv_t);
            }
        }
        if (shift == 24) m = inferd::block_max(m, scratch);
        __syncthreads();
        // Suffix sums: hist[b] = how many matching keys have digit >= b.
        for (int off = 1; off < 256; off <<= 1) {
            const uint32_t add = (tid < 256 && tid + off < 256) ? hist[tid + off] : 0u;
            __syncthreads();
            if (tid < 256) hist[tid] += add;
            __syncthreads();
        }
        // The digit whose bin holds the remaining-th best (hist is non-increasing and
        // hist[0] >= remaining, so exactly one thread matches).
        if (tid < 256) {
            const uint32_t above = tid < 255 ? hist[tid + 1] : 0u;
            if (above < remaining && hist[tid] >= remaining) {
                sel_bin = (uint32_t)tid;
                sel_above = above;
            }
        }
        __syncthreads();
        prefix |= sel_bin << shift;
        mask |= 255u << shift;
        remaining -= sel_above;
        __syncthreads();
    }
    s1 = inferd::block_sum(s1, scratch);
    st = inferd::block_sum(st, scratch);

    // Gather: every key above the threshold (there are k - remaining) in any order, then the
    // `remaining` lowest ids whose key equals it, scanning the row in id order.
    const uint32_t thr = prefix, n_eq = remaining, n_above = (uint32_t)k - remaining;
    if (tid == 0) {
        n_gt = 0u;
        eq_base = 0u;
        done = 0u;
    }
    __syncthreads();
    for (int base = 0; base < vocab; base += blockDim.x) {
        const int i = base + tid;
        const uint32_t key = i < vocab ? rank_key(x[i]) : 0u;
        if (i < vocab && key > thr) {
            const uint32_t slot = atomicAdd(&n_gt, 1u);
            if (slot < n_above) cand[slot] = pack(key, i);
        }
        const bool eq = i < vocab && key == thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        if (eq) {
            uint32_t off = eq_base + __popc(ballot & ((1u << lane) - 1u));
            for (int w = 0; w < warp; ++w) off += warp_counts[w];
            if (off < n_eq) cand[n_above + off] = pack(key, i);
        }
        __syncthreads();
        if (tid == 0) {
            uint32_t total = 0u;
            for (int w = 0; w < warps; ++w) total += warp_counts[w];
            eq_base += total;
            done = eq_base >= n_eq && n_gt >= n_above;
        }
        __syncthreads();
        if (done) break;
    }

    // Bitonic sort of the candidates, descending (padding 0 sorts last: every packed
    // candidate is > 0 because ~id != 0).
    int p2 = 1;
    while (p2 < k) p2 <<= 1;
    for (int j = k + tid; j < p2; j += blockDim.x) cand[j] = 0ull;
    __syncthreads();
    for (int size = 2; size <= p2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = tid; t < p2; t += blockDim.x) {
                const int partner = t ^ stride;
                if (partner > t) {
                    const unsigned long long a = cand[t], b = cand[partner];
                    const bool descending = (t & size) == 0;
                    if (descending ? a < b : a > b) {
                        cand[t] = b;
                        cand[partner] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
    for (int j = tid; j < k; j += blockDim.x) {
        const uint32_t id = packed_id(cand[j]);
        const float v = x[id];
        out_ids[row * k + j] = id;
        out_logits[row * k + j] = isnan(v) ? -INFINITY : v;
    }
    if (tid == 0) {
        out_lse[row] = isfinite(m) ? m + logf(s1) : m;
        out_lse_t[row] = isfinite(m) ? m * inv_t + logf(st) : m;
    }
}
