//! Per-sequence block tables on top of the block pool, with prefix caching: a new
//! sequence starts from the longest run of cached full blocks matching its tokens.

use std::collections::HashMap;

use super::block_pool::BlockPool;
use super::blocks_for;
use super::hash::{extend_hashes, BlockHash};

pub type SeqId = u64;

#[derive(Debug, Default)]
struct SeqBlocks {
    blocks: Vec<u32>,
    /// Hashes of the sequence's full blocks, as far as its tokens are known.
    hashes: Vec<BlockHash>,
    /// Leading blocks already registered in the pool's cache.
    registered: usize,
}

/// Prefix-cache counters, in tokens (vLLM's `prefix_cache_queries` / `_hits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub queries: u64,
    pub hits: u64,
}

#[derive(Debug)]
pub struct KvManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixCacheStats,
}

impl KvManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            prefix_caching,
            seqs: HashMap::new(),
            stats: PrefixCacheStats::default(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    pub fn prefix_stats(&self) -> PrefixCacheStats {
        self.stats
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// The physical blocks of a sequence, in logical order.
    pub fn blocks(&self, id: SeqId) -> &[u32] {
        self.seqs.get(&id).map_or(&[], |s| s.blocks.as_slice())
    }

    /// For a sequence that holds no blocks: shares the longest cached prefix of `tokens`
    /// (whole blocks, never every token: the last one must be computed to get logits).
    /// Returns the number of tokens now in the cache for it.
    pub fn match_prefix(&mut self, id: SeqId, tokens: &[u32]) -> usize {
        let s = self.seqs.entry(id).or_default();
        debug_assert!(s.blocks.is_empty());
        if !self.prefix_caching {
            return 0;
        }
        extend_hashes(&mut s.hashes, tokens, self.block_size);
        let max_blocks = (tokens.len().saturating_sub(1)) / self.block_size;
        let mut hits = Vec::new();
        for &h in s.hashes.iter().take(max_blocks) {
            match self.pool.lookup(h) {
                Some(b) => hits.push(b),
                None => break,
            }
        }
        for &b in &hits {
            self.pool.touch(b);
        }
        s.registered = hits.len();
        s.blocks = hits;
        let cached = s.blocks.len() * self.block_size;
        self.stats.queries += tokens.len() as u64;
        self.stats.hits += cached as u64;
        cached
    }

    /// Blocks `id` still needs to hold `total_tokens`.
    pub fn blocks_missing(&self, id: SeqId, total_tokens: usize) -> usize {
        let have = self.seqs.get(&id).map_or(0, |s| s.blocks.len());
        blocks_for(total_tokens, self.block_size).saturating_sub(have)
    }

    /// Grows `id`'s table to hold `total_tokens`; all or nothing.
    pub fn grow(&mut self, id: SeqId, total_tokens: usize) -> bool {
        let need = self.blocks_missing(id, total_tokens);
        match self.pool.allocate(need) {
            Some(new) => {
                self.seqs.entry(id).or_default().blocks.extend(new);
                true
            }
            None => false,
        }
    }

    /// Registers every full block among the first `num_computed` tokens in the cache.
    /// Call only after those tokens' K/V were written.
    pub fn register_computed(&mut self, id: SeqId, tokens: &[u32], num_computed: usize) {
        if !self.prefix_caching {
            return;
        }
        let Some(s) = self.seqs.get_mut(&id) else {
            return;
        };
        extend_hashes(&mut s.hashes, &tokens[..num_computed], self.block_size);
        let full = (num_computed / self.block_size).min(s.blocks.len());
        while s.registered < full {
            let i = s.registered;
            self.pool.cache(s.blocks[i], s.hashes[i]);
            s.registered += 1;
        }
    }

    /// Releases every block of `id` (tail first, so tails are evicted before shared heads).
    pub fn free(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.remove(&id) {
            self.pool.release(s.blocks.into_iter().rev());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sequence_reuses_the_cached_prefix_blocks() {
        let mut m = KvManager::new(16, 4, true);
        let a: Vec<u32> = (0..10).collect();
        assert_eq!(m.match_prefix(1, &a), 0);
        assert!(m.grow(1, 10));
        m.register_computed(1, &a, 10);
        let mut b = a[..8].to_vec();
        b.extend([99, 98, 97]);
        assert_eq!(m.match_prefix(2, &b), 8, "two full blocks shared");
        assert_eq!(&m.blocks(2)[..2], &m.blocks(1)[..2]);
        assert_eq!(m.pool().ref_count(m.blocks(1)[0]), 2);
        assert!(m.grow(2, 11));
        assert_eq!(
            m.prefix_stats(),
            PrefixCacheStats {
                queries: 21,
                hits: 8
            }
        );
        m.free(1);
        m.free(2);
        assert_eq!(m.num_free_blocks(), 16);
    }

    #[test]
    fn the_last_token_is_always_computed() {
        let mut m = KvManager::new(16, 4, true);
        let a: Vec<u32> = (0..8).collect();
        m.match_prefix(1, &a);
        assert!(m.grow(1, 8));
        m.register_computed(1, &a, 8);
        assert_eq!(
            m.match_prefix(2, &a),
            4,
            "an identical 8-token prompt reuses 1 block, not 2"
        );
    }

    #[test]
    fn disabled_prefix_caching_never_hits() {
        let mut m = KvManager::new(16, 4, false);
        let a: Vec<u32> = (0..10).collect();
        m.match_prefix(1, &a);
        assert!(m.grow(1, 10));
        m.register_computed(1, &a, 10);
        assert_eq!(m.match_prefix(2, &a), 0);
    }
}
