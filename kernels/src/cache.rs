//! KV-cache writes: `reshape_and_cache` scatters this step's keys and values
//! into their slots of the paged cache, in place. The public entry points,
//! their checks and the composed reference; the CPU body is `cpu::cache`.

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

use crate::cpu::{self, f32_slice, u32_slice};
use crate::{check, check_value_cache, shape_err, KernelError, Result};

const OP: &str = "reshape_and_cache";

/// Validated dimensions of a `reshape_and_cache` call.
struct Dims {
    num_tokens: usize,
    num_blocks: usize,
    block_size: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

fn validate(
    key: &Tensor,
    value: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<Dims> {
    let kd = check(OP, "key", key, DType::F32, 3, &|| {
        "[num_tokens, num_kv_heads, head_dim]".into()
    })?;
    let (num_tokens, num_kv_heads, head_dim) = (kd[0], kd[1], kd[2]);
    check(OP, "value", value, DType::F32, 3, &|| format!("{kd:?}"))?;
    if value.dims() != kd {
        return Err(shape_err(
            OP,
            "value",
            value,
            format!("{kd:?} (same as key)"),
        ));
    }
    let expected_cache = || format!("[num_blocks, block_size, {num_kv_heads}, {head_dim}]");
    let cd = check(OP, "key_cache", key_cache, DType::F32, 4, &expected_cache)?;
    if cd[2] != num_kv_heads || cd[3] != head_dim {
        return Err(shape_err(OP, "key_cache", key_cache, expected_cache()));
    }
    check_value_cache(OP, value_cache, cd)?;
    let sd = check(OP, "slot_mapping", slot_mapping, DType::U32, 1, &|| {
        format!("[{num_tokens}]")
    })?;
    if sd[0] != num_tokens {
        return Err(shape_err(
            OP,
            "slot_mapping",
            slot_mapping,
            format!("[{num_tokens}]"),
        ));
    }
    let dims = Dims {
        num_tokens,
        num_blocks: cd[0],
        block_size: cd[1],
        num_kv_heads,
        head_dim,
    };
    let num_slots = dims.num_blocks * dims.block_size;
    for (index, &slot) in slot_mapping.to_vec1::<u32>()?.iter().enumerate() {
        if slot as usize >= num_slots {
            return Err(KernelError::OutOfRange {
                op: OP,
                name: "slot_mapping",
                index,
                value: slot as u64,
                limit: num_slots as u64,
            });
        }
    }
    Ok(dims)
}

/// In-place scatter of `src [num_tokens, row]` rows into `dst [num_slots, row]`
/// at the rows named by `slots [num_tokens]`; each device's `*_fwd` hands the
/// checked operands to that device's body.
struct ScatterRows {
    row: usize,
}

impl InplaceOp3 for ScatterRows {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> candle_core::Result<()> {
        let src = f32_slice(src, src_l)?;
        let slots = u32_slice(slots, slots_l)?;
        let (a, b) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("reshape_and_cache: cache not contiguous"))?;
        let dst = match dst {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("reshape_and_cache: cache must be f32"),
        };
        cpu::cache::scatter_rows(dst, src, slots, self.row)
    }
}

/// Writes `key`/`value` (`[num_tokens, num_kv_heads, head_dim]`) in place into
/// `key_cache`/`value_cache` (`[num_blocks, block_size, num_kv_heads, head_dim]`)
/// at `slot_mapping[t] = block_index * block_size + offset_in_block`.
///
/// All tensors must be contiguous CPU tensors (`f32`, `slot_mapping` `u32`).
/// Slots should be distinct; with duplicates the last token wins. A slot
/// `>= num_blocks * block_size` yields [`KernelError::OutOfRange`] and nothing
/// is written.
pub fn reshape_and_cache(
    key: &Tensor,
    value: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<()> {
    let d = validate(key, value, key_cache, value_cache, slot_mapping)?;
    if d.num_tokens == 0 {
        return Ok(());
    }
    let op = ScatterRows {
        row: d.num_kv_heads * d.head_dim,
    };
    key_cache.inplace_op3(key, slot_mapping, &op)?;
    value_cache.inplace_op3(value, slot_mapping, &op)?;
    Ok(())
}

/// Composed reference for [`reshape_and_cache`]: returns the updated
/// `(key_cache, value_cache)` as new tensors, leaving the inputs untouched.
pub fn reshape_and_cache_slow(
    key: &Tensor,
    value: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let d = validate(key, value, key_cache, value_cache, slot_mapping)?;
    let row = d.num_kv_heads * d.head_dim;
    let num_slots = d.num_blocks * d.block_size;
    let idx = slot_mapping
        .unsqueeze(1)?
        .broadcast_as((d.num_tokens, row))?
        .contiguous()?;
    let write = |cache: &Tensor, src: &Tensor| -> Result<Tensor> {
        Ok(cache
            .reshape((num_slots, row))?
            .scatter(&idx, &src.reshape((d.num_tokens, row))?, 0)?
            .reshape(cache.shape())?)
    };
    Ok((write(key_cache, key)?, write(value_cache, value)?))
}
