//! The page-bitmap summary: two bits per page word, so that chunk and page-run searches skip
//! whole words without reading them. (The free-run index over the same bitmap, which guides
//! page-run best fit, is `run_index`; [`Allocator::sync_summary`] keeps both.)
//!
//! For page word `i` (pages `64 i .. 64 i + 64`), bit `i % 64` of summary word `i / 64` of
//! * the **used** array is set when some page of the word is in use (clear: the word is wholly
//!   free), and
//! * the **full** array is set when every page of the word is in use.
//!
//! A zeroed summary describes a zeroed (empty) bitmap, so a freshly formatted region needs no
//! initialisation. Pages past the end of the heap (in the last word, if the heap is not a
//! multiple of 64 pages) count as in use.
//!
//! # A hint, kept in sync
//!
//! The summary is never authoritative: a claim still CASes the page words, and a search that
//! reads a page word trusts the word. After every change of a page word, its changer *syncs* the
//! word's summary bits ([`Allocator::sync_bits`]): read the word, set both bits from it with
//! AcqRel read-modify-writes, re-read the word, and go again if the bits it implies changed
//! meanwhile. Every update of a summary word is an RMW, so each one reads from the release
//! sequence of every earlier one: the last thread to write a word's bits re-reads the page word
//! after all changes whose syncs came before, sees the final value, and leaves the bits right.
//! With no process killed, the summary equals the bitmap whenever no sync is in flight (the
//! property and loom tests check it).
//!
//! A process killed between a page word's change and its sync leaves a stale bit (the window
//! has crash points). A stale "free" costs a failed claim (the claimer re-syncs the words it
//! tried) or a wasted read; a stale "used" or "full" hides free pages, so when the guided search
//! finds no fitting run, the allocator runs the full scan of the bitmap, and repairs the summary
//! if that finds one: `Full` is never reported while a fitting run exists. fsck reports
//! stale bits (`Problem::StaleSummary`) and repairs them. Garbage in the summary (it is region
//! memory like any other) can only misdirect a search in the same ways.
//!
//! # Searches
//!
//! The bits serve two searches: [`Allocator::alloc_chunk_pages_hinted`], the first fit of a
//! 16-page lane from the bottom, skips the words the *full* array marks full (a partly used word
//! without a free lane is still read each time); and the page-run best fit of the run index
//! (`run_index`) reads a leaf's *used* and *full* words to find its free runs without reading
//! the page words it can decide. [`BestFit`] is the reference scan over every page word
//! ([`Allocator::find_run_best`]) that both fall back on.

use super::Allocator;
use crate::sync::{AtomicU64, Ordering};

/// The shortest free run that always contains a wholly free page word.
pub(super) const RUN_WITH_FREE_WORD: u64 = 127;

/// Rounds of one sync before it gives up (each round means the word changed under it, and its
/// changer syncs it too); past them a bit may be left stale, which is safe (see above).
const SYNC_ROUNDS: usize = 64;

/// The best-fit scan over page words visited from the top of the heap down: the smallest free
/// run of at least `n` pages, the highest of equals; the object goes at the top of the run.
pub(super) struct BestFit {
    n: u64,
    /// (length, bottom page) of the best run so far.
    best: Option<(u64, u64)>,
    /// Free pages seen since the last used page (the run being extended downwards).
    run: u64,
}

impl BestFit {
    pub(super) fn new(n: u64) -> BestFit {
        BestFit {
            n,
            best: None,
            run: 0,
        }
    }

    /// The current run ends at page `bottom` (a used page lies just below it).
    fn end_run(&mut self, bottom: u64) {
        if self.run >= self.n && self.best.is_none_or(|(l, _)| self.run < l) {
            self.best = Some((self.run, bottom));
        }
        self.run = 0;
    }

    /// Page word `i` has value `w` (pages past the heap set).
    pub(super) fn word(&mut self, i: usize, w: u64) {
        let base = i as u64 * 64;
        if w == 0 {
            self.run += 64;
            return;
        }
        if w == u64::MAX {
            self.end_run(base + 64);
            return;
        }
        // A mixed word: walk its runs from bit 63 down.
        let mut bit = 64u32;
        while bit > 0 {
            let x = w << (64 - bit);
            let z = x.leading_zeros().min(bit);
            self.run += u64::from(z);
            bit -= z;
            if bit == 0 {
                break;
            }
            self.end_run(base + u64::from(bit));
            let x = w << (64 - bit);
            bit -= x.leading_ones().min(bit);
        }
    }

    /// The placement, if an exact fit was found (it cannot be beaten).
    pub(super) fn exact(&self) -> Option<u64> {
        self.best
            .filter(|(len, _)| *len == self.n)
            .map(|(len, bottom)| bottom + len - self.n)
    }

    /// The placement, after the bottom word.
    pub(super) fn finish(mut self) -> Option<u64> {
        self.end_run(0);
        self.best.map(|(len, bottom)| bottom + len - self.n)
    }
}

fn set_bit(word: &AtomicU64, bit: u64, on: bool) {
    // AcqRel: pairs with the AcqRel updates of this summary word by other syncs (of this page
    // word or of the 63 others it summarises). Release: whoever updates it after us re-reads the
    // page word after our change of it; Acquire: our re-read sees the page-word change of
    // everyone who updated it before us (see the module docs).
    if on {
        word.fetch_or(bit, Ordering::AcqRel);
    } else {
        // AcqRel: pairs with the AcqRel updates of this summary word by other syncs, as above.
        word.fetch_and(!bit, Ordering::AcqRel);
    }
}

impl Allocator<'_> {
    /// The bits of page word `i` that are pages of the heap.
    pub(super) fn valid_mask(&self, i: usize) -> u64 {
        let base = i as u64 * 64;
        if base + 64 <= self.heap_pages {
            u64::MAX
        } else {
            (1u64 << (self.heap_pages.saturating_sub(base).min(63))) - 1
        }
    }

    /// The summary bits (used, full) that page word `i` with value `v` implies.
    fn state_of(&self, i: usize, v: u64) -> (bool, bool) {
        let valid = self.valid_mask(i);
        (v & valid != 0, v & valid == valid)
    }

    /// The summary bits (used, full) recorded for page word `i`.
    fn recorded(&self, i: usize) -> (bool, bool) {
        let (s, bit) = (i / 64, 1u64 << (i % 64));
        (
            self.used[s].load(Ordering::Relaxed) & bit != 0,
            self.full[s].load(Ordering::Relaxed) & bit != 0,
        )
    }

    /// Brings the summary bits of page word `i` and the run-index leaf over it (and the nodes
    /// above, where it changed) up to date with the word, after a change of it.
    pub(super) fn sync_summary(&self, i: usize) {
        self.sync_bits(i);
        self.sync_index(i..=i, false);
    }

    /// Brings the summary bits of page word `i` up to date with the word.
    pub(super) fn sync_bits(&self, i: usize) {
        let (s, bit) = (i / 64, 1u64 << (i % 64));
        let mut v = self.pages[i].load(Ordering::Relaxed);
        for _ in 0..SYNC_ROUNDS {
            let state = self.state_of(i, v);
            set_bit(&self.used[s], bit, state.0);
            set_bit(&self.full[s], bit, state.1);
            let now = self.pages[i].load(Ordering::Relaxed);
            if self.state_of(i, now) == state {
                return;
            }
            v = now;
        }
    }

    /// Page words whose summary bits disagree with them, plus run-index nodes that disagree with
    /// the bitmap; with `repair`, syncs them. Exact only on a quiescent heap (a sync in flight is
    /// counted); repairing is safe at any time.
    pub fn check_summary(&self, repair: bool) -> u64 {
        let (words, nodes) = self.check_summary_parts(repair);
        words + nodes
    }

    /// As [`Allocator::check_summary`], apart: (page words with stale summary bits, stale
    /// run-index nodes).
    pub fn check_summary_parts(&self, repair: bool) -> (u64, u64) {
        let mut stale = 0;
        for i in 0..self.pages.len() {
            let v = self.pages[i].load(Ordering::Relaxed);
            if self.recorded(i) != self.state_of(i, v) {
                stale += 1;
                if repair {
                    self.sync_bits(i);
                }
            }
        }
        // After the bits: the index is repaired from the bitmap itself, bottom up.
        (stale, self.check_index(repair))
    }

    /// The summary word of `s` for a search: `valid` masks the page words that exist.
    pub(super) fn summary_valid(&self, s: usize) -> u64 {
        let words = self.pages.len();
        if (s + 1) * 64 <= words {
            u64::MAX
        } else {
            (1u64 << (words - s * 64)) - 1
        }
    }

    /// The first free 16-page lane from the bottom, claimed, skipping the page words the
    /// summary marks full.
    pub(super) fn alloc_chunk_pages_hinted(&self) -> Option<u64> {
        for s in 0..self.full.len() {
            let mut open = !self.full[s].load(Ordering::Relaxed) & self.summary_valid(s);
            while open != 0 {
                let i = s * 64 + open.trailing_zeros() as usize;
                open &= open - 1;
                if let Some(first) = self.claim_lane_in(i) {
                    return Some(first);
                }
                // Full after all (a stale or corrupt bit, or a race): repair it.
                let v = self.pages[i].load(Ordering::Relaxed);
                if self.state_of(i, v).1 {
                    self.sync_summary(i);
                }
            }
        }
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::{PAGE, PAGES_PER_CHUNK};
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::super::test_heap::Heap as TestHeap;

    /// The shared test heap, at region offset 0, with a way to set the bitmap directly.
    struct Heap(TestHeap);

    impl std::ops::Deref for Heap {
        type Target = TestHeap;
        fn deref(&self) -> &TestHeap {
            &self.0
        }
    }

    impl Heap {
        fn new(heap_pages: u64) -> Heap {
            Heap(TestHeap::with_pages(heap_pages, 0))
        }
        fn alloc(&self) -> Allocator<'_> {
            self.0.alloc()
        }
        fn set_pages(&self, words: &[u64]) {
            for (p, w) in self.0.pages.iter().zip(words) {
                p.store(*w, Ordering::Relaxed);
            }
        }
        fn page_used(&self, p: u64) -> bool {
            self.0.pages[(p / 64) as usize].load(Ordering::Relaxed) >> (p % 64) & 1 == 1
        }
        fn full_bit(&self, i: usize) -> &AtomicU64 {
            &self.0.summary[self.0.pages.len().div_ceil(64) + i / 64]
        }
    }

    /// Best fit page by page (no words, no summary): the placement policy itself.
    fn naive_best_fit(h: &Heap, n: u64) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        let mut p = h.heap_pages;
        while p > 0 {
            let top = p;
            while p > 0 && !h.page_used(p - 1) {
                p -= 1;
            }
            let len = top - p;
            if len >= n && best.is_none_or(|(l, _)| len < l) {
                best = Some((len, p));
            }
            while p > 0 && h.page_used(p - 1) {
                p -= 1;
            }
        }
        best.map(|(len, bottom)| bottom + len - n)
    }

    /// A random bitmap of used and free runs (lengths 1 page to a few words).
    fn random_bitmap(rng: &mut SmallRng, heap_pages: u64) -> Vec<u64> {
        let mut words = vec![0u64; heap_pages.div_ceil(64) as usize];
        let mut p = 0;
        let mut used = rng.gen_bool(0.5);
        while p < heap_pages {
            let len = match rng.gen_range(0..4) {
                0 => rng.gen_range(1..8),
                1 => rng.gen_range(8..70),
                2 => rng.gen_range(70..200),
                _ => rng.gen_range(200..700),
            };
            for q in p..(p + len).min(heap_pages) {
                if used {
                    words[(q / 64) as usize] |= 1 << (q % 64);
                }
            }
            p += len;
            used = !used;
        }
        words
    }

    #[test]
    fn summary_guided_best_fit_places_as_the_full_scan() {
        let mut rng = SmallRng::seed_from_u64(7);
        // A heap ending inside a page word, and one spanning several summary words.
        for heap_pages in [16 * 521, 64 * 64 * 3 + 48, 64 * 64 * 13 + 16] {
            let h = Heap::new(heap_pages);
            let a = h.alloc();
            for _ in 0..60 {
                h.set_pages(&random_bitmap(&mut rng, heap_pages));
                a.check_summary(true);
                for n in [
                    5, 16, 17, 63, 64, 65, 100, 126, 127, 128, 200, 256, 400, 700,
                ] {
                    let want = naive_best_fit(&h, n);
                    assert_eq!(a.find_run_best(n), want, "full scan, {n} pages");
                    assert_eq!(a.find_run_hinted(n), want, "summary-guided, {n} pages");
                }
            }
            // Stretches of summary words (4096 pages each) wholly free or wholly used, between
            // random ones.
            for _ in 0..60 {
                let mut words = random_bitmap(&mut rng, heap_pages);
                for chunk in words.chunks_mut(64) {
                    match rng.gen_range(0..4) {
                        0 => chunk.fill(0),
                        1 => chunk.fill(u64::MAX),
                        // Every word in use, with free pages at both ends of each.
                        2 => chunk.iter_mut().for_each(|w| {
                            *w = (u64::MAX << rng.gen_range(1..32)) >> rng.gen_range(1..32)
                        }),
                        _ => {}
                    }
                }
                h.set_pages(&words);
                a.check_summary(true);
                for n in [5, 100, 127, 128, 200, 256, 400, 700, 5000, 9000] {
                    let want = naive_best_fit(&h, n);
                    assert_eq!(a.find_run_hinted(n), want, "summary-guided, {n} pages");
                }
            }
            // Wholly free words at the ends and in the middle.
            let mut words = vec![u64::MAX; heap_pages.div_ceil(64) as usize];
            let last = words.len() - 1;
            for i in [0, 1, 70, 71, 72, last - 1, last] {
                words[i] = 0;
            }
            words[69] = 0x00ff_0000_0000_0000;
            words[73] = 0x0000_0000_0000_00f0;
            h.set_pages(&words);
            a.check_summary(true);
            for n in [5, 127, 128, 192, 200, 300] {
                assert_eq!(a.find_run_hinted(n), naive_best_fit(&h, n), "{n} pages");
            }
        }
    }

    #[test]
    fn summary_matches_the_bitmap_after_mixed_allocations_and_frees() {
        let mut rng = SmallRng::seed_from_u64(11);
        let h = Heap::new(64 * 64 * 2 + 32);
        let a = h.alloc();
        let mut live = Vec::new();
        for step in 0..3000 {
            if !live.is_empty() && rng.gen_bool(0.45) {
                let (off, size) = live.swap_remove(rng.gen_range(0..live.len()));
                a.free(off, size).unwrap();
            } else {
                let size = match rng.gen_range(0..3) {
                    0 => rng.gen_range(1..16_384),
                    1 => rng.gen_range(16_385..600_000),
                    _ => rng.gen_range(600_000..3_000_000),
                };
                if let Ok(al) = a.alloc(size) {
                    live.push((al.offset, size));
                }
            }
            assert_eq!(a.check_summary(false), 0, "step {step}");
        }
    }

    /// A process killed between freeing page words and syncing their bits: the words look full,
    /// but an allocation that fits only there succeeds (the fallback scan), and the summary is
    /// repaired. Both search modes (below and from 127 pages).
    #[test]
    fn stale_used_bits_cost_a_fallback_not_the_space() {
        for (free_words, n) in [(1usize, 64u64), (3, 130)] {
            let h = Heap::new(64 * 64 * 2);
            let a = h.alloc();
            h.set_pages(&vec![u64::MAX; h.pages.len()]);
            a.check_summary(true);
            // The "crash": two runs of words freed, their summary bits and index nodes left as
            // they were.
            for i in (10..10 + free_words).chain(100..100 + free_words) {
                h.pages[i].store(0, Ordering::Relaxed);
            }
            // Both leaves and the root are stale.
            assert_eq!(a.check_summary_parts(false), (2 * free_words as u64, 3));
            assert_eq!(a.find_run_hinted(n), None, "the summary hides both");
            let got = a.alloc(n * PAGE).unwrap();
            let top = (100 + free_words as u64) * 64;
            assert_eq!(
                got.offset,
                (top - n) * PAGE,
                "best fit: the highest of equals"
            );
            assert_eq!(a.check_summary(false), 0, "repaired");
            // And the other run is found through the summary.
            assert_eq!(
                a.find_run_hinted(n),
                Some((10 + free_words as u64) * 64 - n)
            );
        }
    }

    /// The same for a stale *full* bit: a chunk still finds the one free lane.
    #[test]
    fn a_stale_full_bit_costs_a_fallback_not_the_lane() {
        let h = Heap::new(64 * 64 * 2);
        let a = h.alloc();
        let mut words = vec![u64::MAX; h.pages.len()];
        words[77] = !(0xffffu64 << 32);
        h.set_pages(&words);
        a.check_summary(true);
        // The "crash": a chunk's lane released, the word's bits left full.
        h.set_pages(&vec![u64::MAX; h.pages.len()]);
        a.check_summary(true);
        h.set_pages(&words);
        assert_eq!(h.full_bit(77).load(Ordering::Relaxed) >> (77 - 64) & 1, 1);
        let got = a.alloc(1000).unwrap();
        assert_eq!(got.offset, (77 * 64 + 32) * PAGE);
        assert_eq!(a.check_summary(false), 0);
        assert!(a.alloc(64 * 1024).is_err(), "now really full");
    }

    /// A stale "free" bit (a process killed between claiming a word and setting its bits) only
    /// costs a failed claim: the allocation lands elsewhere and the bit is repaired.
    #[test]
    fn a_stale_free_bit_costs_a_failed_claim() {
        let h = Heap::new(64 * 64);
        let a = h.alloc();
        let mut words = vec![u64::MAX; h.pages.len()];
        words[5] = 0;
        h.set_pages(&words);
        a.check_summary(true);
        // The "crash": word 20 claimed, its bits left free.
        h.pages[20].store(0, Ordering::Relaxed);
        a.check_summary(true);
        h.pages[20].store(u64::MAX, Ordering::Relaxed);
        let got = a.alloc(64 * PAGE).unwrap();
        assert_eq!(got.offset, 5 * 64 * PAGE);
        assert_eq!(a.check_summary(false), 0);
    }

    /// Garbage in the summary (corrupt region memory) never loses space or loops: the heap
    /// still fills completely, and frees bring everything back.
    #[test]
    fn garbage_in_the_summary_never_loses_space() {
        let mut rng = SmallRng::seed_from_u64(3);
        for round in 0..20 {
            let h = Heap::new(64 * 64 + 16);
            let a = h.alloc();
            for w in &h.summary {
                w.store(rng.gen(), Ordering::Relaxed);
            }
            let size = [1000, 64 * 1024, 70_000, 300_000, 600_000][round % 5];
            let mut live = Vec::new();
            while let Ok(al) = a.alloc(size) {
                live.push(al.offset);
                if round % 2 == 1 {
                    h.summary[rng.gen_range(0..h.summary.len())]
                        .store(rng.gen(), Ordering::Relaxed);
                }
            }
            let pages = size.div_ceil(PAGE).max(PAGES_PER_CHUNK);
            assert_eq!(
                naive_best_fit(&h, pages),
                None,
                "round {round}: full while {pages} pages were free"
            );
            for off in live {
                a.free(off, size).unwrap();
            }
            assert_eq!(a.used_bytes(), 0);
        }
    }
}
