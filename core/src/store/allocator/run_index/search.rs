//! The index-guided best fit: the classes from the class of `n` up, each searched from the root
//! down through the nodes that hold a run of it, until a class yields a run of at least `n`
//! pages (any run of a later class is longer). Inside a leaf, the summary's bits say which page
//! words need reading (see the parent module for the index itself).

use super::super::summary::RUN_WITH_FREE_WORD;
use super::super::Allocator;
use super::{child, class_range, inner_runs, run_class, span, Joiner, FANOUT};
use crate::sync::Ordering;

/// The best run found so far: the shortest of at least `n` pages inside the heap, the highest of
/// equals (as `BestFit`).
struct Best {
    n: u64,
    heap_pages: u64,
    /// (length, first page).
    best: Option<(u64, u64)>,
    /// Nodes the search may still visit.
    budget: usize,
}

impl Best {
    fn offer(&mut self, start: u64, len: u64) {
        if len < self.n
            || start
                .checked_add(len)
                .is_none_or(|end| end > self.heap_pages)
        {
            return;
        }
        if self
            .best
            .is_none_or(|(l, s)| len < l || (len == l && start > s))
        {
            self.best = Some((len, start));
        }
    }

    fn class(&self) -> Option<usize> {
        self.best.map(|(len, _)| run_class(len))
    }
}

impl Allocator<'_> {
    /// The index-guided best fit: what [`Allocator::find_run_best`] finds when the index and the
    /// summary are up to date, reading only the nodes and page words near runs of about `n`
    /// pages. `None` if it finds no run (or gives up on a garbage index).
    pub(in crate::store::allocator) fn find_run_hinted(&self, n: u64) -> Option<u64> {
        let top = self.levels.depth - 1;
        let root = self.read_node(top, 0);
        let mut best = Best {
            n,
            heap_pages: self.heap_pages,
            best: None,
            budget: 4 * self.levels.nodes() + 16,
        };
        // The runs at the bottom and the top of the heap (pages past its end are free here).
        if root.prefix >= span(top) {
            best.offer(0, self.heap_pages);
        } else {
            best.offer(0, root.prefix);
            let start = span(top) - root.suffix;
            best.offer(start, self.heap_pages.saturating_sub(start));
        }
        let mut c = run_class(n.max(1));
        while c < 128 {
            // The next class at or above `c` that occurs.
            let word = root.classes[c / 64] & (u64::MAX << (c % 64));
            if word == 0 {
                c = (c / 64 + 1) * 64;
                continue;
            }
            c = c / 64 * 64 + word.trailing_zeros() as usize;
            if best.class().is_some_and(|b| b < c) {
                break;
            }
            self.visit(top, 0, c, &mut best)?;
            if best.class().is_some_and(|b| b <= c) {
                break;
            }
            c += 1;
        }
        best.best.map(|(len, start)| start + len - n)
    }

    /// Offers the runs of class `c` inside node `j` of level `l`; `None` when out of budget.
    fn visit(&self, l: usize, j: usize, c: usize, best: &mut Best) -> Option<()> {
        best.budget = best.budget.checked_sub(1)?;
        if l == 0 {
            self.search_leaf(j, c, best);
            return Some(());
        }
        let cs = span(l - 1);
        let words = self.child_words(l, j);
        let mut joiner = Joiner::default();
        let children = (self.levels.count[l - 1] - j * FANOUT).min(FANOUT);
        for k in 0..children {
            let idx = j * FANOUT + k;
            let base = idx as u64 * cs;
            let node = child(&words, l, k);
            if node.prefix >= cs {
                joiner.free(base, cs);
                continue;
            }
            if let Some((start, len)) = joiner.close(base, cs, node.prefix, node.suffix.min(cs)) {
                if run_class(len) == c {
                    best.offer(start, len);
                }
            }
            if node.has(c) {
                self.visit(l - 1, idx, c, best)?;
            }
        }
        Some(())
    }

    /// Offers the runs of class `c` inside leaf `s`, read with the help of the summary bits.
    fn search_leaf(&self, s: usize, c: usize, best: &mut Best) {
        let (lo, hi) = class_range(c);
        let need = lo.max(best.n);
        let words = self.pages.len();
        let tail = (self.heap_pages % 64 != 0).then_some(words - 1);
        let valid = self.summary_valid(s);
        let used = self.used[s].load(Ordering::Relaxed);
        let word_at = |i: usize| -> u64 {
            self.pages
                .get(i)
                .map_or(0, |w| w.load(Ordering::Relaxed) & self.valid_mask(i))
        };
        if need >= RUN_WITH_FREE_WORD {
            // Every run of the class holds a wholly free word: look at the maximal runs of free
            // words that the summary shows, and read the two words around those that may make a
            // run of the class.
            let mut free = !used & valid;
            if let Some(t) = tail.filter(|t| t / 64 == s) {
                free &= !(1u64 << (t % 64));
            }
            while free != 0 {
                let a = free.trailing_zeros() as usize;
                let k = (!(free >> a)).trailing_zeros() as usize;
                let b = a + k - 1;
                free &= !((u64::MAX >> (64 - k)) << a);
                if a == 0 || b == 63 {
                    continue; // reaches the leaf's edge: a prefix or suffix, the parent's run
                }
                let pages = 64 * k as u64;
                if pages > hi || pages + 2 * 63 < need || best.best.is_some_and(|(l, _)| pages > l)
                {
                    continue;
                }
                let (i0, i1) = (s * 64 + a, s * 64 + b);
                let (below, above) = (word_at(i0 - 1), word_at(i1 + 1));
                if below == 0 || above == 0 {
                    continue; // the run goes on (a stale bit, or past the heap's end)
                }
                let down = u64::from(below.leading_zeros());
                let len = down + pages + u64::from(above.trailing_zeros());
                if run_class(len) == c {
                    best.offer(i0 as u64 * 64 - down, len);
                }
            }
            return;
        }
        // Short runs may lie inside or between partly used words: walk the leaf, reading the
        // words the summary calls neither free nor full.
        let full = self.full[s].load(Ordering::Relaxed);
        let mut joiner = Joiner::default();
        for k in 0..FANOUT {
            let i = s * FANOUT + k;
            if i >= words {
                break; // free past the heap: the rest is the leaf's suffix
            }
            let base = i as u64 * 64;
            let v = if Some(i) == tail {
                word_at(i)
            } else if used >> k & 1 == 0 {
                0
            } else if full >> k & 1 == 1 {
                u64::MAX
            } else {
                word_at(i)
            };
            if v == 0 {
                joiner.free(base, 64);
                continue;
            }
            let (p, sfx) = (u64::from(v.trailing_zeros()), u64::from(v.leading_zeros()));
            if let Some((start, len)) = joiner.close(base, 64, p, sfx) {
                if run_class(len) == c {
                    best.offer(start, len);
                }
            }
            if lo <= 62 && v != u64::MAX {
                inner_runs(v, |a, len| {
                    if run_class(len) == c {
                        best.offer(base + a, len);
                    }
                });
            }
        }
    }
}
