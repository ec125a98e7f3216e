// Paged attention over the block-table-addressed KV cache: decode (split-K over partitions of
// PARTITION tokens, then a reduce over partitions) and varlen causal prefill (tiles of query
// rows, online softmax over tiles of keys).
//
// Layout (exactly the CPU kernel's, inferd_kernels::paged_attention):
//   q, out         [num_tokens, num_heads, head_dim]
//   k/v cache      [num_blocks, block_size, num_kv_heads, head_dim]
//   block_tables   [num_seqs, max_blocks_per_seq] u32
//   context_lens   [num_seqs] u32, cached tokens *after* this step's reshape_and_cache
//   query_start    [num_seqs + 1] u32 (prefill only; decode reads query row s for sequence s)
// Query row j of a sequence with q_len rows sits at position context_len - q_len + j and attends
// to keys 0..=p. GQA: query head h reads kv head h / (num_heads / num_kv_heads).
//
// CPU specs: inferd_kernels::paged_attention (results), and the very algorithms below written
// out in plain Rust in inferd_kernels::reference::attention (decode_split_k, prefill_tiled).
//
// Entry points, for NAME in {bf16, f16} and D in {64, 128}:
//   paged_attention_decode_NAME_dD, paged_attention_reduce_NAME_dD, paged_attention_prefill_NAME_dD
// block_size is read at run time (any power of two 1..=256; the launcher refuses others).
// Cache rows are read with 16-byte loads: the launcher checks the caches are 16-byte aligned.
#include "common.cuh"

namespace inferd {
namespace pa {

constexpr int THREADS = 128;
constexpr int WARPS = THREADS / 32;
// Tokens per decode partition (one thread block each); keep in sync with
// reference::attention::PARTITION_SIZE and AttentionKernels::PARTITION_SIZE.
constexpr int PARTITION = 512;
// Prefill: query rows per thread block (WARPS * ROWS_PER_WARP), keys per tile (one per lane).
constexpr int ROWS_PER_WARP = 4;
constexpr int TQ = WARPS * ROWS_PER_WARP;
constexpr int TK = 32;
constexpr int VEC = 8;  // elements of one 16-byte load

// 8 consecutive elements at `p` (16-byte aligned) as floats.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* out) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_float(e[i]);
}

// Element offset of the K/V row of position t, kv head kvh, in the cache.
__device__ __forceinline__ size_t kv_row(const uint32_t* table, int t, int shift, int block_size,
                                         int num_kv_heads, int kvh, int D) {
    const size_t blk = table[t >> shift];
    return ((blk * block_size + (t & (block_size - 1))) * num_kv_heads + kvh) * D;
}

template <typename T, int D>
__device__ __forceinline__ void fill(T* o, float v) {
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = from_float<T>(v);
}

// Decode, grid (num_heads, num_seqs, num_partitions), THREADS threads. Block (h, s, part) takes
// keys [part * PARTITION, min(ctx, (part + 1) * PARTITION)) of sequence s:
//   s_t = (q . k_t) * scale, m = max s_t, e_t = exp(s_t - m), l = sum e_t,
//   o = (sum e_t v_t) / l.
// A context of one partition writes o to `out` directly; a longer one writes (m, l, o) to the
// f32 scratch [max_logits: S*H*P][exp_sums: S*H*P][partial: S*H*P*D] (P = num_partitions),
// which paged_attention_reduce combines. A context of 0 (a padding row) writes zeros; one longer
// than num_partitions * PARTITION or than its block table writes NaN (never a silent partial
// answer).
template <typename T, int D>
__device__ void decode_impl(T* __restrict__ out, float* __restrict__ scratch,
                            const T* __restrict__ q, const T* __restrict__ k_cache,
                            const T* __restrict__ v_cache,
                            const uint32_t* __restrict__ block_tables,
                            const uint32_t* __restrict__ context_lens, int num_kv_heads,
                            int block_size, int max_blocks, float scale) {
    constexpr int GROUP = D / VEC;     // lanes per key row: 8 or 16
    constexpr int ROWS = 32 / GROUP;   // key rows per warp step: 4 or 2
    static_assert(D % 32 == 0 && GROUP <= 32, "head_dim");
    const int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z;
    const int num_heads = gridDim.x, num_seqs = gridDim.y, parts = gridDim.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int t0 = part * PARTITION;
    T* o = out + ((size_t)s * num_heads + h) * D;
    // Bounds compared unsigned (both fit an int: the launcher checks): a context >= 2^31
    // must not wrap to a negative int, which would pass them and write zeros, not NaN.
    const uint32_t ctx_u = context_lens[s];
    if (ctx_u > (uint32_t)(parts * PARTITION) || ctx_u > (uint32_t)(max_blocks * block_size)) {
        if (part == 0) fill<T, D>(o, NAN);
        return;
    }
    const int ctx = (int)ctx_u;
    if (t0 >= ctx) {
        if (part == 0) fill<T, D>(o, 0.f);
        return;
    }
    const int n = min(ctx - t0, PARTITION);
    const int kvh = h / (num_heads / num_kv_heads);
    const int shift = __ffs(block_size) - 1;
    const uint32_t* table = block_tables + (size_t)s * max_blocks;

    __shared__ float logits[PARTITION];
    __shared__ float red[32];
    __shared__ float acc_s[WARPS][D];

    // Lane (r, c) of a warp step handles key row `r` of the step, elements c*8 .. c*8+8.
    const int c = lane % GROUP, r = lane / GROUP;
    float qv[VEC];
    const T* qp = q + ((size_t)s * num_heads + h) * D + c * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) qv[i] = to_float(qp[i]);

    for (int base = warp * ROWS; base < n; base += WARPS * ROWS) {
        const int i = base + r;
        float dot = 0.f;
        if (i < n) {
            float kv[VEC];
            load8(k_cache + kv_row(table, t0 + i, shift, block_size, num_kv_heads, kvh, D) +
                      c * VEC,
                  kv);
#pragma unroll
            for (int j = 0; j < VEC; ++j) dot = fmaf(qv[j], kv[j], dot);
        }
#pragma unroll
        for (int off = GROUP / 2; off > 0; off >>= 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (i < n && c == 0) logits[i] = dot * scale;
    }
    __syncthreads();

    float m = -INFINITY;
    for (int i = tid; i < n; i += THREADS) m = fmaxf(m, logits[i]);
    m = block_max(m, red);
    float l = 0.f;
    for (int i = tid; i < n; i += THREADS) {
        const float e = expf(logits[i] - m);
        logits[i] = e;
        l += e;
    }
    // Its barriers also publish the `logits` writes above to the whole block.
    l = block_sum(l, red);

    float acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = 0.f;
    for (int base = warp * ROWS; base < n; base += WARPS * ROWS) {
        const int i = base + r;
        if (i < n) {
            float vv[VEC];
            load8(v_cache + kv_row(table, t0 + i, shift, block_size, num_kv_heads, kvh, D) +
                      c * VEC,
                  vv);
            const float p = logits[i];
#pragma unroll
            for (int j = 0; j < VEC; ++j) acc[j] = fmaf(p, vv[j], acc[j]);
        }
    }
#pragma unroll
    for (int off = GROUP; off < 32; off <<= 1) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], off);
    }
    if (r == 0) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc_s[warp][c * VEC + j] = acc[j];
    }
    __syncthreads();

    const float inv = 1.f / l;
    const bool direct = ctx <= PARTITION;
    const size_t idx = ((size_t)s * num_heads + h) * parts + part;
    const size_t cells = (size_t)num_seqs * num_heads * parts;
    float* partial = scratch + 2 * cells + idx * D;
    for (int d = tid; d < D; d += THREADS) {
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) a += acc_s[w][d];
        a *= inv;
        if (direct)
            o[d] = from_float<T>(a);
        else
            partial[d] = a;
    }
    if (!direct && tid == 0) {
        scratch[idx] = m;
        scratch[cells + idx] = l;
    }
}

// Reduce, grid (num_heads, num_seqs), THREADS threads, after decode with the same
// num_partitions `parts`: for a context of n > 1 partitions (M = max_p m_p,
// w_p = exp(m_p - M) * l_p, L = sum_p w_p) out = (sum_p w_p o_p) * (1 / L), partitions in
// order. Contexts of one partition (written directly by decode) and decode's NaN cases are
// left alone.
template <typename T, int D>
__device__ void reduce_impl(T* __restrict__ out, const float* __restrict__ scratch,
                            const uint32_t* __restrict__ context_lens, int parts,
                            int block_size, int max_blocks) {
    const int h = blockIdx.x, s = blockIdx.y;
    const int num_heads = gridDim.x, num_seqs = gridDim.y;
    // Unsigned, as in decode: a context >= 2^31 is decode's NaN case, left alone here.
    const uint32_t ctx_u = context_lens[s];
    if (ctx_u <= (uint32_t)PARTITION || ctx_u > (uint32_t)(parts * PARTITION) ||
        ctx_u > (uint32_t)(max_blocks * block_size))
        return;
    const int ctx = (int)ctx_u;
    const int n = (ctx + PARTITION - 1) / PARTITION;
    const size_t idx0 = ((size_t)s * num_heads + h) * parts;
    const size_t cells = (size_t)num_seqs * num_heads * parts;
    const float* max_logits = scratch + idx0;
    const float* exp_sums = scratch + cells + idx0;
    const float* partial = scratch + 2 * cells + idx0 * D;
    float m = -INFINITY;
    for (int p = 0; p < n; ++p) m = fmaxf(m, max_logits[p]);
    float l = 0.f;
    for (int p = 0; p < n; ++p) l += expf(max_logits[p] - m) * exp_sums[p];
    const float inv = 1.f / l;
    T* o = out + ((size_t)s * num_heads + h) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f;
        for (int p = 0; p < n; ++p)
            a = fmaf(expf(max_logits[p] - m) * exp_sums[p], partial[(size_t)p * D + d], a);
        o[d] = from_float<T>(a * inv);
    }
}

// Prefill (any query lengths), grid (num_heads, ceil(num_tokens / TQ) + num_seqs), THREADS
// threads. Each sequence's query rows are cut into tiles of TQ rows, numbered sequence by
// sequence; block (h, g) takes tile g (blocks past the last tile exit). Warp w owns rows
// w*ROWS_PER_WARP.. of the tile. The block walks key tiles [kt, kt + TK), kt = 0, TK, ... up to
// the tile's last position, K/V staged in shared memory; a row at position p skips tiles with
// kt > p and, per tile it takes, with keys t <= p only (s_t = (q . k_t) * scale):
//   m' = max(m, max_t s_t), c = exp(m - m'), p_t = exp(s_t - m'), l = l * c + sum_t p_t,
//   acc = acc * c + sum_t p_t v_t (t ascending), m = m';   finally out = acc * (1 / l).
// Shared memory is O(TQ * D + TK * D), whatever the lengths.
template <typename T, int D>
__device__ void prefill_impl(T* __restrict__ out, const T* __restrict__ q,
                             const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                             const uint32_t* __restrict__ block_tables,
                             const uint32_t* __restrict__ context_lens,
                             const uint32_t* __restrict__ query_start, int num_tokens,
                             int num_seqs, int num_kv_heads, int block_size, int max_blocks, float scale) {
    constexpr int KS = D + 2;   // padded K row stride in shared memory (no bank conflicts)
    constexpr int DL = D / 32;  // output elements per lane: lane + 32 * i
    constexpr int CHUNKS = D / VEC;
    __shared__ float q_s[TQ][D];
    __shared__ __align__(16) T k_s[TK * KS];
    __shared__ __align__(16) T v_s[TK * D];
    __shared__ int tile[2];
    const int h = blockIdx.x, num_heads = gridDim.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    if (tid == 0) {
        int g = blockIdx.y, seq = -1, j0 = 0;
        for (int s = 0; s < num_seqs; ++s) {
            // Rows past num_tokens are never touched, whatever query_start says.
            const int a = (int)min(query_start[s], (uint32_t)num_tokens);
            const int b = (int)min(query_start[s + 1], (uint32_t)num_tokens);
            const int tiles = (max(b - a, 0) + TQ - 1) / TQ;
            if (g < tiles) {
                seq = s;
                j0 = g * TQ;
                break;
            }
            g -= tiles;
        }
        tile[0] = seq;
        tile[1] = j0;
    }
    __syncthreads();
    const int seq = tile[0], j0 = tile[1];
    if (seq < 0) return;
    // This sequence has a tile, so query_start[seq] < min(query_start[seq + 1], num_tokens).
    const int q0 = (int)query_start[seq];
    const bool bad_rows = query_start[seq + 1] > (uint32_t)num_tokens;
    const int q_len = (int)min(query_start[seq + 1], (uint32_t)num_tokens) - q0;
    // Checked unsigned before the cast: a context >= 2^31 cast to int is negative, passed the
    // table check below, and `ctx - q_len + j0` could overflow to a huge `first`, walking
    // positions (and block table entries) far past the sequence's table.
    const bool bad_ctx = context_lens[seq] > (uint32_t)(max_blocks * block_size);
    const int ctx = bad_ctx ? 0 : (int)context_lens[seq];
    const int rows = min(TQ, q_len - j0);
    // Position of the tile's row 0 and of its last row.
    const int first = ctx - q_len + j0, last = first + rows - 1;
    // Rows past num_tokens, q_len > ctx, or a context past its table: NaN rows, not silence.
    if (bad_rows || bad_ctx || first < 0) {
        for (int i = tid; i < rows * D; i += THREADS)
            out[((size_t)(q0 + j0 + i / D) * num_heads + h) * D + i % D] = from_float<T>(NAN);
        return;
    }
    const int kvh = h / (num_heads / num_kv_heads);
    const int shift = __ffs(block_size) - 1;
    const uint32_t* table = block_tables + (size_t)seq * max_blocks;

    for (int i = tid; i < TQ * D; i += THREADS) {
        const int r = i / D, d = i % D;
        q_s[r][d] = r < rows ? to_float(q[((size_t)(q0 + j0 + r) * num_heads + h) * D + d]) : 0.f;
    }

    float m[ROWS_PER_WARP], l[ROWS_PER_WARP], acc[ROWS_PER_WARP][DL];
#pragma unroll
    for (int k = 0; k < ROWS_PER_WARP; ++k) {
        m[k] = -INFINITY;
        l[k] = 0.f;
#pragma unroll
        for (int i = 0; i < DL; ++i) acc[k][i] = 0.f;
    }

    for (int kt = 0; kt <= last; kt += TK) {
        __syncthreads();  // the previous tile is consumed (and q_s is published)
        for (int i = tid; i < TK * CHUNKS; i += THREADS) {
            const int j = i / CHUNKS, c = i % CHUNKS, t = kt + j;
            uint4 ku = make_uint4(0, 0, 0, 0), vu = ku;
            if (t <= last) {
                const size_t off =
                    kv_row(table, t, shift, block_size, num_kv_heads, kvh, D) + c * VEC;
                ku = *reinterpret_cast<const uint4*>(k_cache + off);
                vu = *reinterpret_cast<const uint4*>(v_cache + off);
            }
            // K rows are padded (4-byte aligned only); V rows are 16-byte aligned.
            uint32_t* kd = reinterpret_cast<uint32_t*>(k_s + j * KS + c * VEC);
            kd[0] = ku.x;
            kd[1] = ku.y;
            kd[2] = ku.z;
            kd[3] = ku.w;
            *reinterpret_cast<uint4*>(v_s + j * D + c * VEC) = vu;
        }
        __syncthreads();

        // Scores of key kt + lane for this warp's rows.
        float dot[ROWS_PER_WARP];
#pragma unroll
        for (int k = 0; k < ROWS_PER_WARP; ++k) dot[k] = 0.f;
        const T* kr = k_s + lane * KS;
#pragma unroll 8
        for (int d = 0; d < D; ++d) {
            const float kd = to_float(kr[d]);
#pragma unroll
            for (int k = 0; k < ROWS_PER_WARP; ++k)
                dot[k] = fmaf(q_s[warp * ROWS_PER_WARP + k][d], kd, dot[k]);
        }
        float p[ROWS_PER_WARP], cr[ROWS_PER_WARP];
#pragma unroll
        for (int k = 0; k < ROWS_PER_WARP; ++k) {
            const int row = warp * ROWS_PER_WARP + k, pos = first + row;
            p[k] = 0.f;
            cr[k] = 1.f;
            // Warp-uniform: the row takes this tile (so key kt, lane 0, is live).
            if (row < rows && kt <= pos) {
                const bool live = kt + lane <= pos;
                const float sc = live ? dot[k] * scale : -INFINITY;
                const float m_new = fmaxf(m[k], warp_max(sc));
                cr[k] = expf(m[k] - m_new);
                p[k] = live ? expf(sc - m_new) : 0.f;
                l[k] = l[k] * cr[k] + warp_sum(p[k]);
                m[k] = m_new;
            }
        }
#pragma unroll
        for (int k = 0; k < ROWS_PER_WARP; ++k) {
#pragma unroll
            for (int i = 0; i < DL; ++i) acc[k][i] *= cr[k];
        }
        for (int j = 0; j < TK; ++j) {
            float vv[DL];
#pragma unroll
            for (int i = 0; i < DL; ++i) vv[i] = to_float(v_s[j * D + lane + 32 * i]);
#pragma unroll
            for (int k = 0; k < ROWS_PER_WARP; ++k) {
                const float pj = __shfl_sync(0xffffffffu, p[k], j);
#pragma unroll
                for (int i = 0; i < DL; ++i) acc[k][i] = fmaf(pj, vv[i], acc[k][i]);
            }
        }
    }

#pragma unroll
    for (int k = 0; k < ROWS_PER_WARP; ++k) {
        const int row = warp * ROWS_PER_WARP + k;
        if (row >= rows) continue;
        const float inv = 1.f / l[k];
        T* o = out + ((size_t)(q0 + j0 + row) * num_heads + h) * D;
#pragma unroll
        for (int i = 0; i < DL; ++i) o[lane + 32 * i] = from_float<T>(acc[k][i] * inv);
    }
}

}  // namespace pa
}  // namespace inferd

#define PA_KERNELS_D(NAME, T, D)                                                              \
    extern "C" __global__ void __launch_bounds__(inferd::pa::THREADS)                         \
        paged_attention_decode_##NAME##_d##D(                                                  \
            T* out, float* scratch, const T* q, const T* k_cache, const T* v_cache,           \
            const uint32_t* block_tables, const uint32_t* context_lens, int num_kv_heads,     \
            int block_size, int max_blocks, float scale) {                                     \
        inferd::pa::decode_impl<T, D>(out, scratch, q, k_cache, v_cache, block_tables,       \
                                      context_lens, num_kv_heads, block_size, max_blocks,    \
                                      scale);                                                  \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(inferd::pa::THREADS)                         \
        paged_attention_reduce_##NAME##_d##D(T* out, const float* scratch,                    \
                                             const uint32_t* context_lens, int parts,         \
                                             int block_size, int max_blocks) {                \
        inferd::pa::reduce_impl<T, D>(out, scratch, context_lens, parts, block_size,         \
                                      max_blocks);                                             \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(inferd::pa::THREADS)                         \
        paged_attention_prefill_##NAME##_d##D(                                                 \
            T* out, const T* q, const T* k_cache, const T* v_cache,                           \
            const uint32_t* block_tables, const uint32_t* context_lens,                       \
            const uint32_t* query_start, int num_tokens, int num_seqs, int num_kv_heads,      \
            int block_size, int max_blocks, float scale) {                                     \
        inferd::pa::prefill_impl<T, D>(out, q, k_cache, v_cache, block_tables, context_lens, \
                                       query_start, num_tokens, num_seqs, num_kv_heads,      \
                                       block_size, max_blocks, scale);                         \
    }
#define PA_KERNELS(NAME, T) PA_KERNELS_D(NAME, T, 64) PA_KERNELS_D(NAME, T, 128)
INFERD_FOR_DTYPES(PA_KERNELS)
