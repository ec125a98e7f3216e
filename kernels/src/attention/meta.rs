//! Argument validation for [`super::paged_attention`] and its slow twin.

use candle_core::{DType, Tensor};

use super::OP;
use crate::{check, check_value_cache, shape_err, KernelError, Result};

/// Validated dimensions and host copies of the (small) index tensors.
pub(crate) struct Meta {
    pub(crate) num_tokens: usize,
    pub(crate) num_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) block_size: usize,
    pub(crate) max_blocks: usize,
    pub(crate) block_tables: Vec<u32>,
    pub(crate) context_lens: Vec<u32>,
    pub(crate) query_start_loc: Vec<u32>,
}

fn invalid(reason: String) -> KernelError {
    KernelError::Invalid { op: OP, reason }
}

pub(crate) fn validate(
    query: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    block_tables: &Tensor,
    context_lens: &Tensor,
    query_start_loc: &Tensor,
) -> Result<Meta> {
    let qd = check(OP, "query", query, DType::F32, 3, &|| {
        "[num_tokens, num_heads, head_dim]".into()
    })?;
    let (num_tokens, num_heads, head_dim) = (qd[0], qd[1], qd[2]);
    let expected_cache = || format!("[num_blocks, block_size, num_kv_heads, {head_dim}]");
    let cd = check(OP, "key_cache", key_cache, DType::F32, 4, &expected_cache)?;
    if cd[3] != head_dim || cd[1] == 0 {
        return Err(shape_err(OP, "key_cache", key_cache, expected_cache()));
    }
    check_value_cache(OP, value_cache, cd)?;
    let (num_blocks, block_size, num_kv_heads) = (cd[0], cd[1], cd[2]);
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(invalid(format!(
            "num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
        )));
    }
    let bd = check(OP, "block_tables", block_tables, DType::U32, 2, &|| {
        "[num_seqs, max_blocks_per_seq]".into()
    })?;
    let (num_seqs, max_blocks) = (bd[0], bd[1]);
    let cl = check(OP, "context_lens", context_lens, DType::U32, 1, &|| {
        format!("[{num_seqs}]")
    })?;
    if cl[0] != num_seqs {
        return Err(shape_err(
            OP,
            "context_lens",
            context_lens,
            format!("[{num_seqs}]"),
        ));
    }
    let expected_qsl = || format!("[{}]", num_seqs + 1);
    let ql = check(
        OP,
        "query_start_loc",
        query_start_loc,
        DType::U32,
        1,
        &expected_qsl,
    )?;
    if ql[0] != num_seqs + 1 {
        return Err(shape_err(
            OP,
            "query_start_loc",
            query_start_loc,
            expected_qsl(),
        ));
    }
    let meta = Meta {
        num_tokens,
        num_heads,
        head_dim,
        num_kv_heads,
        block_size,
        max_blocks,
        block_tables: block_tables.flatten_all()?.to_vec1::<u32>()?,
        context_lens: context_lens.to_vec1::<u32>()?,
        query_start_loc: query_start_loc.to_vec1::<u32>()?,
    };
    let qsl = &meta.query_start_loc;
    if qsl[0] != 0 || qsl[num_seqs] as usize != num_tokens {
        return Err(invalid(format!(
            "query_start_loc must start at 0 and end at num_tokens ({num_tokens}), got {qsl:?}"
        )));
    }
    for s in 0..num_seqs {
        let ctx = meta.context_lens[s] as usize;
        if qsl[s + 1] < qsl[s] {
            return Err(invalid(format!(
                "query_start_loc must be non-decreasing, got {qsl:?}"
            )));
        }
        let q_len = (qsl[s + 1] - qsl[s]) as usize;
        if q_len > ctx {
            return Err(invalid(format!(
                "sequence {s}: q_len ({q_len}) exceeds context_len ({ctx})"
            )));
        }
        if ctx > max_blocks * block_size {
            return Err(KernelError::OutOfRange {
                op: OP,
                name: "context_lens",
                index: s,
                value: ctx as u64,
                limit: (max_blocks * block_size + 1) as u64,
            });
        }
        for i in 0..ctx.div_ceil(block_size) {
            let blk = meta.block_tables[s * max_blocks + i];
            if blk as usize >= num_blocks {
                return Err(KernelError::OutOfRange {
                    op: OP,
                    name: "block_tables",
                    index: s * max_blocks + i,
                    value: blk as u64,
                    limit: num_blocks as u64,
                });
            }
        }
    }
    Ok(meta)
}
