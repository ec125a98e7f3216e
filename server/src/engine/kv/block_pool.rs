//! Fixed-size KV blocks: reference counts, the free list in eviction order, and the
//! hash → block map of cached full blocks (prefix caching).
//!
//! A block whose last reference goes away keeps its contents and hash: it joins the tail of
//! the free list and can still be found by its hash until the pool hands it out again
//! (least recently freed first). Taking such a block back from the cache removes it from
//! the free list.

use std::collections::HashMap;

use super::hash::BlockHash;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
pub struct BlockPool {
    ref_counts: Vec<u32>,
    hashes: Vec<Option<BlockHash>>,
    cached: HashMap<BlockHash, u32>,
    // Doubly linked free list over block ids (O(1) removal from the middle).
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    num_free: usize,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let n = num_blocks as u32;
        let mut pool = Self {
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            cached: HashMap::new(),
            prev: vec![NIL; num_blocks],
            next: vec![NIL; num_blocks],
            head: NIL,
            tail: NIL,
            num_free: 0,
        };
        for b in 0..n {
            pool.push_free(b);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks not referenced by any sequence (cached or not).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks referenced by sequences, 0..=1 (cached-but-free blocks count as
    /// free: the pool can hand them out at any time).
    pub fn usage(&self) -> f64 {
        if self.ref_counts.is_empty() {
            0.0
        } else {
            1.0 - self.num_free as f64 / self.ref_counts.len() as f64
        }
    }

    pub fn ref_count(&self, block: u32) -> u32 {
        self.ref_counts[block as usize]
    }

    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    fn push_free(&mut self, b: u32) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn unlink_free(&mut self, b: u32) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.num_free -= 1;
    }

    /// Takes `n` fresh blocks (evicting cached contents, oldest first), all or nothing.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.head;
            self.unlink_free(b);
            if let Some(h) = self.hashes[b as usize].take() {
                if self.cached.get(&h) == Some(&b) {
                    self.cached.remove(&h);
                }
            }
            debug_assert_eq!(self.ref_counts[b as usize], 0);
            self.ref_counts[b as usize] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// The cached block holding `hash`, if any (does not take a reference).
    pub fn lookup(&self, hash: BlockHash) -> Option<u32> {
        self.cached.get(&hash).copied()
    }

    /// Takes a reference to a cached block found by `lookup`.
    pub fn touch(&mut self, b: u32) {
        if self.ref_counts[b as usize] == 0 {
            self.unlink_free(b);
        }
        self.ref_counts[b as usize] += 1;
    }

    /// Records that block `b` (referenced, now full) holds the contents named `hash`.
    /// If another block already holds them, `b` stays uncached.
    pub fn cache(&mut self, b: u32, hash: BlockHash) {
        if self.hashes[b as usize].is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(b);
            self.hashes[b as usize] = Some(hash);
        }
    }

    /// Drops one reference to each block; blocks that reach zero join the free list tail
    /// (in the order given, so pass a sequence's blocks tail-first to evict tails first).
    pub fn release(&mut self, blocks: impl IntoIterator<Item = u32>) {
        for b in blocks {
            let rc = &mut self.ref_counts[b as usize];
            assert!(*rc > 0, "block {b} released with no reference");
            *rc -= 1;
            if *rc == 0 {
                self.push_free(b);
            }
        }
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
        p.release(a.iter().rev().copied());
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
        p.release(a.clone());
        p.release(a);
    }

    #[test]
    fn freed_cached_blocks_stay_findable_until_evicted_oldest_first() {
        let mut p = BlockPool::new(3);
        let a = p.allocate(2).unwrap();
        p.cache(a[0], 100);
        p.cache(a[1], 101);
        p.release([a[1], a[0]]);
        assert_eq!(p.lookup(100), Some(a[0]));
        assert_eq!(p.lookup(101), Some(a[1]));
        // Free order now: [never used], a[1], a[0]. One allocation takes the unused block.
        let b = p.allocate(1).unwrap();
        assert!(!a.contains(&b[0]));
        assert_eq!(p.lookup(101), Some(a[1]));
        // The next one evicts a[1] (freed before a[0]).
        let c = p.allocate(1).unwrap();
        assert_eq!(c[0], a[1]);
        assert_eq!(p.lookup(101), None);
        assert_eq!(p.lookup(100), Some(a[0]));
    }

    #[test]
    fn touching_a_cached_block_shares_it_and_protects_it_from_eviction() {
        let mut p = BlockPool::new(2);
        let a = p.allocate(1).unwrap()[0];
        p.cache(a, 7);
        p.touch(a);
        assert_eq!(p.ref_count(a), 2);
        p.release([a]);
        assert_eq!(p.ref_count(a), 1);
        assert_eq!(p.num_free(), 1);
        assert!(
            p.allocate(2).is_none(),
            "a referenced cached block is not free"
        );
        p.release([a]);
        // Free again, still cached; touching takes it back off the free list.
        p.touch(a);
        assert_eq!(p.num_free(), 1);
        assert_eq!(p.allocate(1).unwrap().len(), 1);
        assert_eq!(p.lookup(7), Some(a));
    }

    #[test]
    fn duplicate_contents_leave_the_second_block_uncached() {
        let mut p = BlockPool::new(2);
        let a = p.allocate(2).unwrap();
        p.cache(a[0], 5);
        p.cache(a[1], 5);
        assert_eq!(p.lookup(5), Some(a[0]));
        assert_eq!(p.num_cached(), 1);
    }
}
