//! KV block bookkeeping (which physical block belongs to whom, and which cached block
//! holds which prefix). The memory itself lives in `model::KvCache`; the engine only hands
//! out block ids.

pub mod block_pool;
pub mod hash;
pub mod manager;

pub use block_pool::BlockPool;
pub use manager::{KvManager, PrefixCacheStats};

/// Blocks needed to hold `tokens` tokens.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size)
}
