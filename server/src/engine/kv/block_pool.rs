//! Fixed-size KV blocks with reference counts and a free list.
//!
//! Reference counts let later prefix caching share full blocks between sequences; the free
//! list order is the eviction order.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct BlockPool {
    ref_counts: Vec<u32>,
    free: VecDeque<u32>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        Self {
            ref_counts: vec![0; num_blocks],
            free: (0..num_blocks as u32).collect(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Fraction of blocks in use, 0..=1.
    pub fn usage(&self) -> f64 {
        if self.ref_counts.is_empty() {
            0.0
        } else {
            1.0 - self.free.len() as f64 / self.ref_counts.len() as f64
        }
    }

    /// Takes `n` blocks, all or nothing.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let blocks: Vec<u32> = self.free.drain(..n).collect();
        for &b in &blocks {
            debug_assert_eq!(self.ref_counts[b as usize], 0);
            self.ref_counts[b as usize] = 1;
        }
        Some(blocks)
    }

    /// Drops one reference to each block; blocks that reach zero go back to the free list.
    /// Blocks are released in reverse so a sequence's tail is reused first.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let rc = &mut self.ref_counts[b as usize];
            assert!(*rc > 0, "block {b} released with no reference");
            *rc -= 1;
            if *rc == 0 {
                self.free.push_back(b);
            }
        }
    }

    pub fn ref_count(&self, block: u32) -> u32 {
        self.ref_counts[block as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_all_or_nothing_and_release_returns_blocks() {
        let mut p = BlockPool::new(4);
        let a = p.allocate(3).unwrap();
        assert_eq!(p.num_free(), 1);
        assert!(p.allocate(2).is_none());
        assert_eq!(p.num_free(), 1, "a failed allocation takes nothing");
        assert!((p.usage() - 0.75).abs() < 1e-9);
        p.release(&a);
        assert_eq!(p.num_free(), 4);
        assert_eq!(p.usage(), 0.0);
        for b in 0..4 {
            assert_eq!(p.ref_count(b), 0);
        }
    }

    #[test]
    #[should_panic(expected = "no reference")]
    fn double_release_is_caught() {
        let mut p = BlockPool::new(2);
        let a = p.allocate(1).unwrap();
        p.release(&a);
        p.release(&a);
    }
}
