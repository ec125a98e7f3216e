//! Paged attention (`kernels/cuda/paged_attention.cu`): split-K decode + reduce, and varlen
//! causal prefill, over the block tables of one layer's paged KV cache. CPU spec:
//! [`crate::paged_attention`] (layout and results); the GPU's algorithms themselves are
//! written out in [`crate::reference::attention`].
//!
//! Graph capture: [`AttentionKernels::decode`] allocates nothing (the split-K scratch is the
//! caller's, sized once with [`AttentionKernels::decode_scratch_len`]) and its launches depend
//! only on `num_seqs` and `max_context`, so a captured decode step replays for any contexts
//! `<= max_context`.

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, DevicePtr, LaunchConfig, PushKernelArg};

use super::{check_at_least, check_len};
use crate::cuda::{CudaError, Dtype, Gpu};
use crate::reference::attention::{KEY_TILE, PARTITION_SIZE};

/// Threads per block of every attention kernel (`THREADS` in the `.cu`).
const THREADS: u32 = 128;

/// Query rows per prefill thread block (`TQ` in the `.cu`).
const QUERY_TILE: usize = 16;

/// Head dims with compiled kernels.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// The largest block size the kernels accept (every power of two up to it).
pub const MAX_BLOCK_SIZE: usize = 256;

/// CUDA's limit on a grid's y and z dimensions.
const MAX_GRID_YZ: usize = 65_535;

// The key tile is one key per lane of a warp in the prefill kernel.
const _: () = assert!(KEY_TILE == 32);

/// One layer's paged KV cache and the batch's block tables and context lengths, as the
/// kernels read them (layout of [`crate::paged_attention`]).
#[derive(Debug)]
pub struct PagedKv<'a> {
    /// `[num_blocks, block_size, num_kv_heads, head_dim]`, 16-byte aligned.
    pub k_cache: CudaView<'a, u16>,
    /// Same shape as `k_cache`, 16-byte aligned.
    pub v_cache: CudaView<'a, u16>,
    pub num_blocks: usize,
    /// `[num_seqs, max_blocks_per_seq]`; entries past a context are never read. The entries
    /// a context uses must be `< num_blocks` (the engine's block pool guarantees it; the
    /// kernels do not re-check them).
    pub block_tables: CudaView<'a, u32>,
    pub max_blocks_per_seq: usize,
    /// `[num_seqs]`, cached tokens after this step's `reshape_and_cache`.
    pub context_lens: CudaView<'a, u32>,
    pub num_seqs: usize,
}

/// The attention kernels of one dtype and one head geometry.
pub struct AttentionKernels {
    decode: CudaFunction,
    reduce: CudaFunction,
    prefill: CudaFunction,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

fn unsupported(op: &'static str, reason: String) -> CudaError {
    CudaError::Unsupported { op, reason }
}

/// `n` as a kernel's `int` parameter, or a typed error.
fn int(op: &'static str, what: &str, n: usize) -> Result<i32, CudaError> {
    i32::try_from(n).map_err(|_| unsupported(op, format!("{what} = {n} does not fit an int")))
}

/// A grid y/z dimension, or a typed error past CUDA's limit.
fn grid_yz(op: &'static str, what: &str, n: usize) -> Result<u32, CudaError> {
    if n > MAX_GRID_YZ {
        return Err(unsupported(
            op,
            format!("{n} {what} (the grid allows {MAX_GRID_YZ})"),
        ));
    }
    Ok(n as u32)
}

impl AttentionKernels {
    /// Tokens per decode partition (one thread block each).
    pub const PARTITION_SIZE: usize = PARTITION_SIZE;

    /// Resolves the entry points for `dtype` and `head_dim`, refusing what the kernels do not
    /// implement: head dims other than [`HEAD_DIMS`], block sizes that are not a power of two
    /// in `1..=256`, `num_heads` not a positive multiple of `num_kv_heads`.
    pub fn new(
        gpu: &Gpu,
        dtype: Dtype,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        block_size: usize,
    ) -> Result<Self, CudaError> {
        const OP: &str = "paged_attention";
        if !HEAD_DIMS.contains(&head_dim) {
            return Err(unsupported(
                OP,
                format!("head_dim {head_dim} (the CUDA kernels are built for {HEAD_DIMS:?})"),
            ));
        }
        if !block_size.is_power_of_two() || block_size > MAX_BLOCK_SIZE {
            return Err(unsupported(
                OP,
                format!("block_size {block_size} (a power of two in 1..={MAX_BLOCK_SIZE})"),
            ));
        }
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(unsupported(
                OP,
                format!(
                    "num_heads {num_heads} is not a positive multiple of num_kv_heads \
                     {num_kv_heads}"
                ),
            ));
        }
        int(OP, "num_heads", num_heads)?;
        let f = |kind: &str| {
            gpu.function(&format!(
                "paged_attention_{kind}_{}_d{head_dim}",
                dtype.suffix()
            ))
        };
        Ok(Self {
            decode: f("decode")?,
            reduce: f("reduce")?,
            prefill: f("prefill")?,
            num_heads,
            num_kv_heads,
            head_dim,
            block_size,
        })
    }

    /// Decode partitions of a launch for contexts up to `max_context` (at least 1).
    pub fn decode_partitions(max_context: usize) -> usize {
        max_context.div_ceil(PARTITION_SIZE).max(1)
    }

    /// f32 elements of the split-K scratch [`AttentionKernels::decode`] needs for `num_seqs`
    /// sequences of contexts up to `max_context`: per (sequence, head, partition) a max
    /// logit, a sum of exponentials and a partial output row.
    pub fn decode_scratch_len(&self, num_seqs: usize, max_context: usize) -> usize {
        num_seqs * self.num_heads * Self::decode_partitions(max_context) * (self.head_dim + 2)
    }

    /// Checks `kv` against this geometry: cache lengths and alignment, table lengths.
    fn check_kv(&self, op: &'static str, gpu: &Gpu, kv: &PagedKv<'_>) -> Result<(), CudaError> {
        let elements = kv.num_blocks * self.block_size * self.num_kv_heads * self.head_dim;
        check_len(op, "key_cache", kv.k_cache.len(), elements)?;
        check_len(op, "value_cache", kv.v_cache.len(), elements)?;
        for (name, cache) in [("key_cache", &kv.k_cache), ("value_cache", &kv.v_cache)] {
            let (ptr, _sync) = cache.device_ptr(gpu.stream());
            if ptr % 16 != 0 {
                return Err(CudaError::Shape {
                    op,
                    reason: format!("`{name}` is not 16-byte aligned (address {ptr:#x})"),
                });
            }
        }
        let table = kv.num_seqs * kv.max_blocks_per_seq;
        check_at_least(op, "block_tables", kv.block_tables.len(), table)?;
        check_at_least(op, "context_lens", kv.context_lens.len(), kv.num_seqs)?;
        let max_blocks = kv.max_blocks_per_seq;
        int(
            op,
            "max_blocks_per_seq * block_size",
            max_blocks * self.block_size,
        )?;
        Ok(())
    }

    /// Decode: one query row per sequence, `q` and `out` `[num_seqs, num_heads, head_dim]`
    /// (row `s` is sequence `s`, at position `context_lens[s] - 1`). Every context must be
    /// `<= max_context` (a longer one, or one longer than its block table, gets NaN rows; a
    /// context of 0, a padding row, gets zeros). `scratch` holds at least
    /// [`AttentionKernels::decode_scratch_len`]`(num_seqs, max_context)` floats; it is only
    /// used when `max_context > PARTITION_SIZE`, and then followed by the reduce launch.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        gpu: &Gpu,
        kv: &PagedKv<'_>,
        max_context: usize,
        q: &CudaView<'_, u16>,
        scale: f32,
        scratch: &mut CudaViewMut<'_, f32>,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "paged_attention_decode";
        self.check_kv(OP, gpu, kv)?;
        let rows = kv.num_seqs * self.num_heads * self.head_dim;
        check_at_least(OP, "query", q.len(), rows)?;
        check_at_least(OP, "output", out.len(), rows)?;
        let need = self.decode_scratch_len(kv.num_seqs, max_context);
        check_at_least(OP, "scratch", scratch.len(), need)?;
        if kv.num_seqs == 0 {
            return Ok(());
        }
        let parts = Self::decode_partitions(max_context);
        int(OP, "max_context", parts * PARTITION_SIZE)?;
        let (seqs, parts_z) = (
            grid_yz(OP, "sequences", kv.num_seqs)?,
            grid_yz(OP, "partitions", parts)?,
        );
        let heads = self.num_heads as u32;
        let (kvh, bs) = (self.num_kv_heads as i32, self.block_size as i32);
        let max_blocks = int(OP, "max_blocks_per_seq", kv.max_blocks_per_seq)?;
        let cfg = LaunchConfig {
            grid_dim: (heads, seqs, parts_z),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.decode);
        b.arg(&mut *out)
            .arg(&mut *scratch)
            .arg(q)
            .arg(&kv.k_cache)
            .arg(&kv.v_cache)
            .arg(&kv.block_tables)
            .arg(&kv.context_lens)
            .arg(&kvh)
            .arg(&bs)
            .arg(&max_blocks)
            .arg(&scale);
        // SAFETY: lengths checked above for `num_seqs` rows, tables and the scratch of `parts`
        // partitions; the kernel reads cache rows of blocks `< num_blocks` (the block tables'
        // contract) with 16-byte loads (alignment checked), never table entries past
        // `max_blocks_per_seq` nor partitions past `parts` (it writes NaN instead).
        unsafe { b.launch(cfg) }?;
        if parts == 1 {
            return Ok(());
        }
        let parts = parts as i32;
        let cfg = LaunchConfig {
            grid_dim: (heads, seqs, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let scratch = scratch.as_view();
        let mut b = gpu.stream().launch_builder(&self.reduce);
        b.arg(&mut *out)
            .arg(&scratch)
            .arg(&kv.context_lens)
            .arg(&parts)
            .arg(&bs)
            .arg(&max_blocks);
        // SAFETY: the same `num_seqs`, heads and `parts` as the decode launch whose scratch
        // it reads (checked above); writes `out` rows `< num_seqs`.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Prefill, chunked prefill and mixed steps: `q` and `out` `[num_tokens, num_heads,
    /// head_dim]`, sequence `s` owning rows `query_start_loc[s]..query_start_loc[s + 1]`
    /// (`[num_seqs + 1]`, from 0 to `num_tokens`, each length `<= context_lens[s]`: a longer
    /// one, or a context longer than its block table, gets NaN rows).
    #[allow(clippy::too_many_arguments)]
    pub fn prefill(
        &self,
        gpu: &Gpu,
        kv: &PagedKv<'_>,
        num_tokens: usize,
        q: &CudaView<'_, u16>,
        query_start_loc: &CudaView<'_, u32>,
        scale: f32,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "paged_attention_prefill";
        self.check_kv(OP, gpu, kv)?;
        let rows = num_tokens * self.num_heads * self.head_dim;
        check_at_least(OP, "query", q.len(), rows)?;
        check_at_least(OP, "output", out.len(), rows)?;
        check_at_least(
            OP,
            "query_start_loc",
            query_start_loc.len(),
            kv.num_seqs + 1,
        )?;
        if num_tokens == 0 || kv.num_seqs == 0 {
            return Ok(());
        }
        // Every sequence's rows in tiles of QUERY_TILE: at most this many tiles in all.
        let tiles = grid_yz(
            OP,
            "query tiles",
            num_tokens.div_ceil(QUERY_TILE) + kv.num_seqs,
        )?;
        let num_seqs = int(OP, "num_seqs", kv.num_seqs)?;
        let tokens = int(OP, "num_tokens", num_tokens)?;
        let (kvh, bs) = (self.num_kv_heads as i32, self.block_size as i32);
        let max_blocks = int(OP, "max_blocks_per_seq", kv.max_blocks_per_seq)?;
        let cfg = LaunchConfig {
            grid_dim: (self.num_heads as u32, tiles, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = gpu.stream().launch_builder(&self.prefill);
        b.arg(&mut *out)
            .arg(q)
            .arg(&kv.k_cache)
            .arg(&kv.v_cache)
            .arg(&kv.block_tables)
            .arg(&kv.context_lens)
            .arg(query_start_loc)
            .arg(&tokens)
            .arg(&num_seqs)
            .arg(&kvh)
            .arg(&bs)
            .arg(&max_blocks)
            .arg(&scale);
        // SAFETY: lengths checked above; the kernel touches only q/out rows `< num_tokens`
        // (it clamps `query_start_loc` to `num_tokens`, NaN rows for a sequence that runs
        // past it) and reads cache rows as decode does.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
