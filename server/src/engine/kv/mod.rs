//! KV block bookkeeping (which physical block belongs to whom). The memory itself lives in
//! `model::KvCache`; the engine only hands out block ids.

pub mod block_pool;

pub use block_pool::BlockPool;

/// Blocks needed to hold `tokens` tokens.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size)
}
