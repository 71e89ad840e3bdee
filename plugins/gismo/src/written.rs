//! Which bytes of an object being created were written coherently (with `memory_copy`), so that
//! a Flush-mode seal writes back only the rest instead of the whole payload again.
//!
//! The contract (also on [`ObjectStoreClient::memory_copy`](super::ObjectStoreClient)): bytes
//! written by `memory_copy` are visible to other hosts when it returns; a seal writes back every
//! other byte of the payload. Bytes that `memory_copy` wrote must not be overwritten through the
//! buffer afterwards (copy them again with `memory_copy` instead): the seal would not write them
//! back. Ray's `Put` writes each byte once (`MemoryCopy` or serialization into the buffer).

/// One object under creation: where its payload is in this process, and the coherently written
/// ranges (sorted, disjoint, merged).
#[derive(Debug)]
pub(crate) struct Written {
    start: usize,
    len: usize,
    ranges: Vec<(usize, usize)>,
}

impl Written {
    /// A payload of `len` bytes at address `start`, nothing written yet.
    pub fn new(start: usize, len: usize) -> Written {
        Written {
            start,
            len,
            ranges: Vec::new(),
        }
    }

    /// Whether `[addr, addr + n)` lies in this payload.
    pub fn contains(&self, addr: usize, n: usize) -> bool {
        addr >= self.start
            && addr
                .checked_add(n)
                .is_some_and(|e| e <= self.start + self.len)
    }

    /// Records `[off, off + n)` (offsets from the payload start) as written coherently.
    pub fn add(&mut self, off: usize, n: usize) {
        if n == 0 {
            return;
        }
        let (mut lo, mut hi) = (off, off + n);
        // Merge with every range that overlaps or touches [lo, hi).
        self.ranges.retain(|&(a, b)| {
            if b < lo || a > hi {
                true
            } else {
                lo = lo.min(a);
                hi = hi.max(b);
                false
            }
        });
        let at = self.ranges.partition_point(|&(a, _)| a < lo);
        self.ranges.insert(at, (lo, hi));
    }

    /// Records `[addr, addr + n)` (an address in this process) if it lies in the payload.
    pub fn add_addr(&mut self, addr: usize, n: usize) -> bool {
        if !self.contains(addr, n) {
            return false;
        }
        self.add(addr - self.start, n);
        true
    }

    /// The `(offset, len)` ranges not written coherently: what a seal must write back.
    pub fn unwritten(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(a, b) in &self.ranges {
            if a > at {
                out.push((at as u64, (a - at) as u64));
            }
            at = at.max(b);
        }
        if at < self.len {
            out.push((at as u64, (self.len - at) as u64));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gaps_are_what_was_not_copied() {
        let mut w = Written::new(1000, 100);
        assert_eq!(w.unwritten(), vec![(0, 100)]);
        w.add(10, 20);
        w.add(50, 10);
        assert_eq!(w.unwritten(), vec![(0, 10), (30, 20), (60, 40)]);
        w.add(30, 20); // touches both neighbours: one range 10..60
        assert_eq!(w.unwritten(), vec![(0, 10), (60, 40)]);
        assert!(w.add_addr(1000, 10));
        assert!(!w.add_addr(1095, 10), "runs past the payload");
        assert!(!w.add_addr(999, 1));
        w.add(60, 40);
        assert!(w.unwritten().is_empty());
    }

    proptest! {
        /// Against a byte map: the gaps are exactly the bytes no range covered.
        #[test]
        fn matches_a_byte_map(len in 0usize..300, ops in prop::collection::vec((0usize..300, 0usize..80), 0..20)) {
            let mut w = Written::new(0, len);
            let mut map = vec![false; len];
            for (off, n) in ops {
                if off + n <= len {
                    w.add(off, n);
                    map[off..off + n].iter_mut().for_each(|b| *b = true);
                }
            }
            let mut gaps = vec![false; len];
            for (o, n) in w.unwritten() {
                prop_assert!(n > 0);
                gaps[o as usize..(o + n) as usize].iter_mut().for_each(|b| *b = true);
            }
            for i in 0..len {
                prop_assert_eq!(gaps[i], !map[i], "byte {}", i);
            }
        }
    }
}
