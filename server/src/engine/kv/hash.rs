//! Chained block hashes: a full block is identified by its parent's hash and its own
//! tokens, so two sequences share a block only if everything before it is identical too.

use std::hash::{Hash, Hasher};

/// Identity of a full block's contents (and of every block before it).
pub type BlockHash = u64;

/// Hash of one full block given its parent's hash (`None` for the first block).
pub fn block_hash(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    // SipHash with fixed keys: deterministic within and across runs.
    let mut h = std::hash::DefaultHasher::new();
    parent.unwrap_or(0x1f3d_5b79_a2c4_e6f8).hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Extends `hashes` with the hashes of every full block of `tokens` not hashed yet.
pub fn extend_hashes(hashes: &mut Vec<BlockHash>, tokens: &[u32], block_size: usize) {
    let full = tokens.len() / block_size;
    while hashes.len() < full {
        let i = hashes.len();
        let parent = hashes.last().copied();
        hashes.push(block_hash(
            parent,
            &tokens[i * block_size..(i + 1) * block_size],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_chain_over_the_whole_prefix() {
        let mut a = vec![];
        extend_hashes(&mut a, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 4);
        assert_eq!(a.len(), 2, "only full blocks are hashed");
        let mut b = vec![];
        extend_hashes(&mut b, &[9, 2, 3, 4, 5, 6, 7, 8], 4);
        assert_ne!(a[0], b[0]);
        assert_ne!(
            a[1], b[1],
            "same block tokens, different prefix => different hash"
        );
        let mut c = vec![];
        extend_hashes(&mut c, &[1, 2, 3, 4, 5, 6, 7, 8], 4);
        assert_eq!(a, c);
    }
}
