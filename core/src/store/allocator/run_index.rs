//! The free-run index: a tree over the page bitmap that tells best fit where the free runs of
//! each length are, so that finding the smallest free run of at least `n` pages reads the runs
//! of about that length, not the whole bitmap or summary.
//!
//! # What best fit needs
//!
//! Best fit looks for the shortest free run of at least `n` pages (the highest of equals). Most
//! runs are either much shorter than `n` (they cannot hold it) or much longer (any run nearer in
//! length beats them); only the runs of about `n` pages need to be measured. So the index keeps,
//! for every stretch of the heap, *which lengths of free run occur in it*, in 128 length classes
//! (exact up to 7 pages, then 8 per doubling up to 2^18 pages, then one class for all longer
//! runs: [`run_class`]), and the search visits only the stretches holding a run of the class of
//! `n` (and, if none of those runs reaches `n` pages, of the next class that occurs).
//!
//! # The tree
//!
//! A **leaf** summarises 64 page words (4096 pages, one word of the summary's *used* array); a
//! **node** at level `l + 1` summarises 64 nodes of level `l`, up to a single root. Each node
//! holds four words (a [`Node`]):
//! * `span − prefix`: the pages above the free run at the node's bottom (`prefix` free pages);
//! * `span − suffix`: the pages below the free run at its top;
//! * the classes (a 128-bit set) of the free runs *inside* the node: the maximal free runs
//!   whose bounding used pages, below and above, both lie in the node.
//!
//! A run is inside exactly one node: the smallest holding both of its bounding pages. There it is
//! either inside one child (and so recorded by that child) or made of the top run of one child,
//! any wholly free children, and the bottom run of a later one (a *joined* run, which the node
//! records itself). The runs at the very bottom and top of the heap are the root's prefix and
//! suffix. Pages past the end of the heap count as **free** here (unlike in the summary bits), and
//! so do words and nodes past the end of their level: then all zero describes an empty heap, and
//! the run that reaches the heap's top is the root's suffix, whatever the heap's size.
//!
//! # Kept in sync
//!
//! As the summary bits: after changing page words, the changer syncs the leaves over them
//! ([`Allocator::sync_index`]): read the leaf's 64 page words, compute the leaf, store its four
//! words with `swap` (AcqRel), re-read the page words and go again if they changed. If a store
//! changed a word's value, it syncs the parent the same way (from its 64 children's words), and so
//! on up. Every write of an index word is a read-modify-write, so the last writer of a node word
//! re-reads, after its write, every change of the children whose writer then wrote the node (the
//! argument of the summary module, one level at a time; a change that left a node's value as it
//! was needs no sync above it). With no process killed, the index is exact whenever no sync is in
//! flight (the loom models check it).
//!
//! A process killed between a change and its sync leaves a stale node; garbage is the same. Both
//! only misdirect the search: it never returns a run outside the heap, a claim still checks every
//! page word, a failed claim re-syncs the path over the run it tried, and when the search finds
//! nothing the allocator scans the whole bitmap before reporting the heap full (and repairs the
//! summary and the index if that finds a run). A search that visits more nodes than the tree has
//! (only garbage can make it) gives up early. fsck reports stale nodes and repairs them.

use super::Allocator;
use crate::sync::{AtomicU64, Ordering};

mod search;

/// Words per node (see the module docs).
pub(super) const NODE_WORDS: usize = crate::format::layout::RUN_INDEX_NODE_WORDS as usize;
/// Children per node, and page words per leaf.
const FANOUT: usize = 64;
/// Levels at most: 8 levels cover 2^60 pages, far beyond the largest heap (2^36 pages).
pub(super) const MAX_LEVELS: usize = 8;
/// Rounds of one node sync before it gives up and leaves the node possibly stale (see
/// `summary::SYNC_ROUNDS`).
const SYNC_ROUNDS: usize = 64;

/// The length class of a free run of `len ≥ 1` pages: exact up to 7 pages, then 8 classes per
/// doubling (`8 · 2^k ..` in steps of `2^k`), and class 127 for every run of 2^18 pages or more.
pub(super) fn run_class(len: u64) -> usize {
    if len < 8 {
        return len.saturating_sub(1) as usize;
    }
    let k = 63 - len.leading_zeros() as usize; // ≥ 3
    let sub = ((len >> (k - 3)) & 7) as usize;
    (7 + 8 * (k - 3) + sub).min(127)
}

/// The shortest and longest length of class `c` (`u64::MAX` for the last).
pub(super) fn class_range(c: usize) -> (u64, u64) {
    if c < 7 {
        return (c as u64 + 1, c as u64 + 1);
    }
    let k = (c - 7) / 8 + 3;
    let sub = ((c - 7) % 8) as u64;
    let lo = (8 + sub) << (k - 3);
    if c == 127 {
        (lo, u64::MAX)
    } else {
        (lo, ((9 + sub) << (k - 3)) - 1)
    }
}

/// Pages spanned by a node of level `l` (leaves are level 0).
pub(super) fn span(l: usize) -> u64 {
    1u64 << (6 * (l + 2))
}

/// One node, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Node {
    /// Free pages at the node's bottom (its span if it is wholly free).
    pub(super) prefix: u64,
    /// Free pages at its top.
    pub(super) suffix: u64,
    /// Classes of the free runs inside it.
    pub(super) classes: [u64; 2],
}

impl Node {
    fn add(&mut self, len: u64) {
        let c = run_class(len);
        self.classes[c / 64] |= 1 << (c % 64);
    }

    pub(super) fn has(&self, c: usize) -> bool {
        self.classes[c / 64] >> (c % 64) & 1 == 1
    }

    fn to_words(self, span: u64) -> [u64; NODE_WORDS] {
        [
            span - self.prefix,
            span - self.suffix,
            self.classes[0],
            self.classes[1],
        ]
    }

    /// A node of `span` pages from its words; garbage is clamped into range.
    fn from_words(w: [u64; NODE_WORDS], span: u64) -> Node {
        Node {
            prefix: span.saturating_sub(w[0]),
            suffix: span.saturating_sub(w[1]),
            classes: [w[2], w[3]],
        }
    }
}

/// Joins the runs of consecutive children, bottom up: the node's prefix and suffix, and the
/// joined runs inside it.
#[derive(Default)]
pub(super) struct Joiner {
    /// Free pages since the last used page (the run open at the top of the children seen).
    open: u64,
    /// Where the open run starts.
    open_start: u64,
    /// A used page has been seen (the open run no longer touches the node's bottom).
    above_bottom: bool,
    prefix: u64,
}

impl Joiner {
    /// A wholly free child of `span` pages at page `base`.
    pub(super) fn free(&mut self, base: u64, span: u64) {
        if self.open == 0 {
            self.open_start = base;
        }
        self.open += span;
    }

    /// A child that is not wholly free, with `p` free pages at its bottom and `s` at its top:
    /// the run it closes, as (first page, length), if that run is inside the node.
    pub(super) fn close(&mut self, base: u64, span: u64, p: u64, s: u64) -> Option<(u64, u64)> {
        let len = self.open + p;
        let start = if self.open > 0 { self.open_start } else { base };
        let run = if self.above_bottom {
            (len > 0).then_some((start, len))
        } else {
            self.prefix = len;
            None
        };
        self.above_bottom = true;
        self.open = s;
        self.open_start = base + span - s;
        run
    }

    /// The node's (prefix, suffix), for a node of `span` pages.
    pub(super) fn finish(&self, span: u64) -> (u64, u64) {
        if self.above_bottom {
            (self.prefix, self.open)
        } else {
            (span, span)
        }
    }
}

/// Calls `f(first bit, length)` for each free run of word `v ≠ 0` between its lowest and its
/// highest used page.
pub(super) fn inner_runs(v: u64, mut f: impl FnMut(u64, u64)) {
    let lo = v.trailing_zeros();
    let hi = 63 - v.leading_zeros();
    if hi <= lo + 1 {
        return;
    }
    let mut free = !v & ((1u64 << hi) - 1) & !((1u64 << (lo + 1)) - 1);
    while free != 0 {
        let a = free.trailing_zeros();
        let len = (!(free >> a)).trailing_zeros();
        f(u64::from(a), u64::from(len));
        free &= !(((1u64 << len) - 1) << a);
    }
}

/// A leaf from its 64 page words (pages past the heap clear).
fn fold_leaf(words: &[u64; FANOUT]) -> Node {
    let mut j = Joiner::default();
    let mut node = Node::default();
    for (k, &v) in words.iter().enumerate() {
        let base = k as u64 * 64;
        if v == 0 {
            j.free(base, 64);
            continue;
        }
        let (p, s) = (u64::from(v.trailing_zeros()), u64::from(v.leading_zeros()));
        if let Some((_, len)) = j.close(base, 64, p, s) {
            node.add(len);
        }
        inner_runs(v, |_, len| node.add(len));
    }
    (node.prefix, node.suffix) = j.finish(span(0));
    node
}

/// The words of the 64 children of a node, one after another (zero past the end of the level:
/// free).
pub(super) type ChildWords = [u64; FANOUT * NODE_WORDS];

/// Child `k` of a node of level `l ≥ 1`, from the children's words.
pub(super) fn child(words: &ChildWords, l: usize, k: usize) -> Node {
    let w = &words[k * NODE_WORDS..(k + 1) * NODE_WORDS];
    Node::from_words([w[0], w[1], w[2], w[3]], span(l - 1))
}

/// A node of level `l ≥ 1` from its children's words.
fn fold_inner(l: usize, words: &ChildWords) -> Node {
    let cs = span(l - 1);
    let mut j = Joiner::default();
    let mut node = Node::default();
    for k in 0..FANOUT {
        let base = k as u64 * cs;
        let c = child(words, l, k);
        if c.prefix >= cs {
            j.free(base, cs);
            continue;
        }
        if let Some((_, len)) = j.close(base, cs, c.prefix, c.suffix.min(cs)) {
            node.add(len);
        }
        node.classes[0] |= c.classes[0];
        node.classes[1] |= c.classes[1];
    }
    (node.prefix, node.suffix) = j.finish(span(l));
    node
}

/// Where each level's nodes start in the index and how many it has.
#[derive(Clone, Copy, Debug)]
pub(super) struct Levels {
    start: [usize; MAX_LEVELS],
    pub(super) count: [usize; MAX_LEVELS],
    /// Levels (the root is level `depth - 1`).
    pub(super) depth: usize,
}

impl Levels {
    /// The tree over `page_words` bitmap words (the same shape as
    /// `format::layout::run_index_nodes`).
    pub(super) fn new(page_words: usize) -> Levels {
        let mut lv = Levels {
            start: [0; MAX_LEVELS],
            count: [0; MAX_LEVELS],
            depth: 1,
        };
        let mut n = page_words.div_ceil(FANOUT).max(1);
        lv.count[0] = n;
        while n > 1 {
            assert!(lv.depth < MAX_LEVELS, "heap too large for the run index");
            n = n.div_ceil(FANOUT);
            lv.start[lv.depth] = lv.start[lv.depth - 1] + lv.count[lv.depth - 1];
            lv.count[lv.depth] = n;
            lv.depth += 1;
        }
        lv
    }

    /// Nodes over all levels.
    pub(super) fn nodes(&self) -> usize {
        self.start[self.depth - 1] + 1
    }
}

impl Allocator<'_> {
    fn node_words(&self, l: usize, j: usize) -> &[AtomicU64] {
        let at = (self.levels.start[l] + j) * NODE_WORDS;
        &self.index[at..at + NODE_WORDS]
    }

    /// Node `j` of level `l` as recorded (a hint: clamped, never trusted).
    pub(super) fn read_node(&self, l: usize, j: usize) -> Node {
        let w = self.node_words(l, j);
        Node::from_words(
            std::array::from_fn(|k| w[k].load(Ordering::Relaxed)),
            span(l),
        )
    }

    /// Stores a node; whether that changed any of its words.
    fn store_node(&self, l: usize, j: usize, node: Node) -> bool {
        let mut changed = false;
        for (word, v) in self.node_words(l, j).iter().zip(node.to_words(span(l))) {
            // AcqRel: pairs with the AcqRel swaps of this word by other syncs. Release: whoever
            // writes it after us re-reads the children after our change of them; Acquire: our
            // re-read sees the change of every child whose changer wrote this word before us.
            changed |= word.swap(v, Ordering::AcqRel) != v;
        }
        changed
    }

    /// The 64 page words under leaf `s` (pages past the heap clear, words past it zero).
    fn leaf_words(&self, s: usize) -> [u64; FANOUT] {
        let first = s * FANOUT;
        let end = (first + FANOUT).min(self.pages.len());
        let mut out = [0u64; FANOUT];
        for (o, w) in out.iter_mut().zip(&self.pages[first..end]) {
            *o = w.load(Ordering::Relaxed);
        }
        if end == self.pages.len() {
            out[end - 1 - first] &= self.valid_mask(end - 1);
        }
        out
    }

    /// The words of the children of node `j` of level `l ≥ 1` (consecutive nodes of level
    /// `l - 1`; zero past its end).
    pub(super) fn child_words(&self, l: usize, j: usize) -> ChildWords {
        let first = j * FANOUT;
        let end = (first + FANOUT).min(self.levels.count[l - 1]);
        let at = (self.levels.start[l - 1] + first) * NODE_WORDS;
        let mut out = [0u64; FANOUT * NODE_WORDS];
        for (o, w) in out
            .iter_mut()
            .zip(&self.index[at..at + (end - first) * NODE_WORDS])
        {
            *o = w.load(Ordering::Relaxed);
        }
        out
    }

    /// Brings node `j` of level `l` up to date with what is below it; whether a word changed.
    fn sync_node(&self, l: usize, j: usize) -> bool {
        let mut changed = false;
        if l == 0 {
            let mut seen = self.leaf_words(j);
            for _ in 0..SYNC_ROUNDS {
                changed |= self.store_node(0, j, fold_leaf(&seen));
                let now = self.leaf_words(j);
                if now == seen {
                    break;
                }
                seen = now;
            }
        } else {
            let mut seen = self.child_words(l, j);
            for _ in 0..SYNC_ROUNDS {
                changed |= self.store_node(l, j, fold_inner(l, &seen));
                let now = self.child_words(l, j);
                if now == seen {
                    break;
                }
                seen = now;
            }
        }
        changed
    }

    /// Syncs the leaves over page words `words` (after a change of them) and, where a node
    /// changed, the nodes above it; with `force`, every node on the paths to the root (a repair:
    /// a node above may be stale while the ones below are right).
    pub(super) fn sync_index(&self, words: std::ops::RangeInclusive<usize>, force: bool) {
        let (mut lo, mut hi) = (*words.start() / FANOUT, *words.end() / FANOUT);
        hi = hi.min(self.levels.count[0] - 1);
        for l in 0..self.levels.depth {
            if l == 1 {
                // The leaves synced, the nodes above not yet: a process killed here leaves
                // inner nodes stale (a hint only; fsck and the orphan collector repair it).
                crate::crash_point!("index.leaves_synced");
            }
            let mut changed: Option<(usize, usize)> = None;
            for j in lo..=hi {
                if self.sync_node(l, j) || force {
                    changed = Some((changed.map_or(j, |c| c.0), j));
                }
            }
            let Some((a, b)) = changed else {
                return;
            };
            (lo, hi) = (a / FANOUT, b / FANOUT);
        }
    }

    /// Index nodes that disagree with the bitmap below them; with `repair`, re-syncs the whole
    /// index bottom up. Exact only on a quiescent heap; repairing is safe at any time.
    pub(super) fn check_index(&self, repair: bool) -> u64 {
        let mut stale = 0;
        let mut below: Vec<Node> = Vec::new();
        for l in 0..self.levels.depth {
            let want: Vec<Node> = (0..self.levels.count[l])
                .map(|j| {
                    if l == 0 {
                        fold_leaf(&self.leaf_words(j))
                    } else {
                        let mut words = [0u64; FANOUT * NODE_WORDS];
                        for (k, c) in below.iter().skip(j * FANOUT).take(FANOUT).enumerate() {
                            words[k * NODE_WORDS..(k + 1) * NODE_WORDS]
                                .copy_from_slice(&c.to_words(span(l - 1)));
                        }
                        fold_inner(l, &words)
                    }
                })
                .collect();
            for (j, node) in want.iter().enumerate() {
                let w = self.node_words(l, j);
                let words: [u64; NODE_WORDS] =
                    std::array::from_fn(|k| w[k].load(Ordering::Relaxed));
                if words != node.to_words(span(l)) {
                    stale += 1;
                }
            }
            below = want;
        }
        if repair && stale > 0 {
            for l in 0..self.levels.depth {
                for j in 0..self.levels.count[l] {
                    self.sync_node(l, j);
                }
            }
        }
        stale
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::test_heap::Heap;
    use super::super::PAGE;
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A bitmap with structure at every level of the tree: groups of 64 leaves, leaves and
    /// words each wholly free, wholly used or mixed, with free runs of lengths from 1 page to
    /// a few leaves.
    fn structured_bitmap(rng: &mut SmallRng, heap_pages: u64) -> Vec<u64> {
        let words = heap_pages.div_ceil(64) as usize;
        let mut w = vec![0u64; words];
        for group in w.chunks_mut(64 * 64) {
            let group_mode = rng.gen_range(0..6);
            for leaf in group.chunks_mut(64) {
                let mode = if group_mode < 2 {
                    group_mode
                } else {
                    rng.gen_range(0..5)
                };
                match mode {
                    0 => leaf.fill(0),
                    1 => leaf.fill(u64::MAX),
                    2 => leaf.iter_mut().for_each(|x| {
                        *x = match rng.gen_range(0..4) {
                            0 => 0,
                            1 => u64::MAX,
                            _ => rng.gen::<u64>() | rng.gen::<u64>(),
                        }
                    }),
                    _ => {
                        // Used, with holes of one size.
                        leaf.fill(u64::MAX);
                        let hole = [3u64, 20, 90, 130, 200, 260, 1000][rng.gen_range(0..7)];
                        for _ in 0..rng.gen_range(1..6) {
                            let at = rng.gen_range(0..4096);
                            for p in at..(at + hole).min(64 * leaf.len() as u64) {
                                leaf[(p / 64) as usize] &= !(1 << (p % 64));
                            }
                        }
                    }
                }
            }
        }
        w
    }

    const SIZES: [u64; 22] = [
        5, 6, 7, 8, 16, 17, 63, 64, 65, 100, 126, 127, 128, 200, 256, 300, 1000, 4095, 4096, 5000,
        70_000, 300_000,
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        /// Over bitmaps of one to three levels of index (up to 140 leaves, the last one partly
        /// filled), the index-guided search places every size exactly as the full scan.
        #[test]
        fn the_guided_search_places_as_the_full_scan(
            seed: u64,
            leaves in 1u64..140,
            tail in 1u64..=4096,
        ) {
            let heap_pages = (leaves - 1) * 4096 + tail;
            let h = Heap::with_pages(heap_pages, 0);
            let a = h.alloc();
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..4 {
                for (p, v) in h.pages.iter().zip(structured_bitmap(&mut rng, heap_pages)) {
                    p.store(v, Ordering::Relaxed);
                }
                a.check_summary(true);
                prop_assert_eq!(a.check_summary(false), 0);
                for n in SIZES {
                    prop_assert_eq!(a.find_run_hinted(n), a.find_run_best(n), "{} pages", n);
                }
            }
        }

        /// Allocations and frees of page runs keep the index exact (every change syncs it), and
        /// every allocation lands where the full scan would put it.
        #[test]
        fn allocations_keep_the_index_exact_and_place_as_the_full_scan(
            seed: u64,
            leaves in 1u64..80,
            steps in 1usize..150,
        ) {
            let heap_pages = leaves * 4096 - 100;
            let h = Heap::with_pages(heap_pages, 0);
            let a = h.alloc();
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for _ in 0..steps {
                if !live.is_empty() && rng.gen_bool(0.4) {
                    let (off, size) = live.swap_remove(rng.gen_range(0..live.len()));
                    a.free(off, size).unwrap();
                } else {
                    let n = [5u64, 20, 100, 130, 256, 1000, 5000, 40_000][rng.gen_range(0..8)]
                        + rng.gen_range(0..8);
                    let want = a.find_run_best(n);
                    prop_assert_eq!(a.find_run_hinted(n), want, "{} pages", n);
                    match a.alloc(n * PAGE) {
                        Ok(al) => {
                            prop_assert_eq!(Some(al.offset / PAGE), want);
                            live.push((al.offset, n * PAGE));
                        }
                        Err(_) => prop_assert_eq!(want, None),
                    }
                }
                prop_assert_eq!(a.check_summary(false), 0);
            }
        }
    }

    #[test]
    fn classes_cover_every_length_in_order() {
        let mut last = 0;
        for len in 1..(1u64 << 20) {
            let c = run_class(len);
            assert!(c == last || c == last + 1, "{len}: {c} after {last}");
            let (lo, hi) = class_range(c);
            assert!(lo <= len && len <= hi, "{len} in class {c} = {lo}..={hi}");
            last = c;
        }
        assert_eq!(run_class(1 << 18), 127);
        assert_eq!(run_class(u64::MAX), 127);
        assert_eq!(class_range(127).1, u64::MAX);
    }

    #[test]
    fn a_leaf_records_its_edges_and_inner_runs() {
        let mut words = [u64::MAX; 64];
        words[0] = !0b111; // 3 free pages at the bottom
        words[10] = !(0xff << 8); // 8 inside one word
        words[20] = !(1 << 63); // 1 + 64 + 64 + 2 across words
        words[21] = 0;
        words[22] = 0;
        words[23] = !0b11;
        words[63] = !(0xf << 60); // 4 at the top
        let node = fold_leaf(&words);
        assert_eq!((node.prefix, node.suffix), (3, 4));
        let want: Vec<usize> = [8, 131].iter().map(|&l| run_class(l)).collect();
        for c in 0..128 {
            assert_eq!(node.has(c), want.contains(&c), "class {c}");
        }
        // Wholly free: all zero, at every level.
        let free = fold_leaf(&[0; 64]);
        assert_eq!(free.to_words(span(0)), [0; 4]);
        let up = fold_inner(1, &[0; FANOUT * NODE_WORDS]);
        assert_eq!(up.to_words(span(1)), [0; 4]);
    }
}
