//! Property test of the heap allocator: random alloc/free sequences of random sizes (small size
//! classes and large page runs, and requests larger than the heap) against a model that knows
//! which blocks are live.
//!
//! After every step:
//! - every block lies inside the heap, is 64-byte aligned, reserves `capacity_for(size)` bytes,
//!   and overlaps no other live block;
//! - `used_bytes()` is the sum of the live blocks' capacities (the allocator accounts capacities,
//!   not requested sizes) and `allocations()` their number;
//! - the pages the allocator holds are exactly accounted for (see *the bound* below);
//! - a free of a block that is no longer live is refused (`NotAllocated`) and changes nothing;
//! - the page bitmap's summary (the allocator's search hint) agrees with the bitmap.
//!
//! After freeing everything, `used_bytes()` is 0 and the largest allocation the design permits
//! (the whole heap but the empty hint chunks) succeeds: nothing leaked.
//!
//! # The fragmentation bound, and why it holds
//!
//! The allocator (`core/src/store/allocator.rs`) keeps small objects in 64 KiB chunks (16 pages,
//! aligned to 16 pages) carved into blocks of one size class, and large objects in runs of whole
//! pages found by a best fit over the page bitmap (guided by its summary, falling back to a scan
//! of the whole bitmap). In a single thread:
//!
//! 1. *Internal fragmentation*: a small block's class is the smallest class that fits; successive
//!    classes differ by a factor of at most 1.5 (128 → 192), so a request of more than 128 bytes
//!    reserves less than 1.5 × its size (and at most 128 bytes below that); a large one reserves
//!    less than one page more than it asked for.
//! 2. *Held but unused memory*: a chunk whose last block is freed returns its pages at once
//!    (`free_small` retires it, or marks it a zombie and `drain_zombies` retires it in the same
//!    call), unless it is its class's *hint* (the chunk new blocks come from). So the pages in use
//!    are exactly the large runs, the chunks holding a live block, and at most one empty chunk per
//!    class (`NUM_CLASSES` × 64 KiB). The test checks this page by page.
//! 3. *External fragmentation*: an allocation fails only when no placement exists: a large
//!    request of `n` pages fails only if no run of `n` free pages exists (before failing, the
//!    best fit scans the whole bitmap), and a small one only if every chunk of its class is
//!    full and no aligned 16-page lane is free. The test checks both against the model's
//!    picture of the heap whenever an allocation fails.
//!
//! The allocator is used as `core/tests/fragmentation.rs` uses it: over process-local metadata
//! (it touches only its metadata, never the heap's bytes).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gismo_core::store::allocator::{
    blocks_per_chunk, capacity_for, class_of, summary_words, AllocError, AllocHeads, Allocator,
    ChunkDesc, ChunkState, CHUNK, CLASSES, NUM_CLASSES, PAGE, SMALL_MAX,
};
use gismo_platform::sync::AtomicU64;
use proptest::prelude::*;

const PAGES_PER_CHUNK: u64 = CHUNK / PAGE;
/// The heap's region offset (any 64-byte-aligned value; not 0, so offsets are checked as offsets).
const HEAP_OFFSET: u64 = 1 << 20;

struct Meta {
    pages: Vec<AtomicU64>,
    summary: Vec<AtomicU64>,
    chunks: Vec<ChunkDesc>,
    heads: AllocHeads,
    heap_pages: u64,
}

impl Meta {
    fn new(heap_pages: u64) -> Meta {
        Meta {
            pages: (0..heap_pages.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            summary: (0..summary_words(heap_pages))
                .map(|_| AtomicU64::new(0))
                .collect(),
            chunks: (0..heap_pages / PAGES_PER_CHUNK)
                .map(|_| ChunkDesc::new_unused())
                .collect(),
            heads: AllocHeads::new(),
            heap_pages,
        }
    }

    fn allocator(&self) -> Allocator<'_> {
        Allocator::new(
            &self.pages,
            &self.summary,
            &self.chunks,
            &self.heads,
            HEAP_OFFSET,
            self.heap_pages,
        )
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64),
    /// Frees the live block `i % live`.
    Free(usize),
    /// Frees again the block freed last (if nothing live overlaps it now).
    FreeAgain,
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0..=SMALL_MAX,
        2 => proptest::sample::select(CLASSES.to_vec()).prop_map(u64::from),
        3 => (SMALL_MAX + 1)..=(48 * PAGE),
        1 => (1u64..=40).prop_map(|n| n * PAGE),
        // Larger than most heaps here: exercises `Full` and large-run fragmentation.
        1 => (48 * PAGE)..=(1300 * PAGE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => size().prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::FreeAgain),
    ]
}

/// The live blocks, by offset: (requested size, capacity).
#[derive(Default)]
struct Model {
    live: BTreeMap<u64, (u64, u64)>,
    /// Live small blocks per chunk index.
    chunk_blocks: HashMap<usize, u32>,
    large_pages: u64,
}

impl Model {
    fn used_bytes(&self) -> u64 {
        self.live.values().map(|&(_, cap)| cap).sum()
    }

    fn insert(&mut self, offset: u64, size: u64, capacity: u64) {
        self.live.insert(offset, (size, capacity));
        if class_of(size).is_some() {
            *self.chunk_blocks.entry(chunk_of(offset)).or_default() += 1;
        } else {
            self.large_pages += capacity / PAGE;
        }
    }

    fn remove(&mut self, offset: u64) -> (u64, u64) {
        let (size, capacity) = self.live.remove(&offset).expect("live");
        if class_of(size).is_some() {
            let n = self.chunk_blocks.get_mut(&chunk_of(offset)).expect("chunk");
            *n -= 1;
            if *n == 0 {
                self.chunk_blocks.remove(&chunk_of(offset));
            }
        } else {
            self.large_pages -= capacity / PAGE;
        }
        (size, capacity)
    }

    fn overlaps(&self, offset: u64, len: u64) -> bool {
        let before = self.live.range(..offset + len.max(1)).next_back();
        before.is_some_and(|(&o, &(_, cap))| o + cap > offset)
    }
}

fn chunk_of(offset: u64) -> usize {
    ((offset - HEAP_OFFSET) / CHUNK) as usize
}

/// Chunks the allocator may hold with no live block: the hints, one per class at most.
fn hint_chunks(a: &Allocator<'_>) -> BTreeSet<usize> {
    (0..NUM_CLASSES).filter_map(|c| a.hint(c)).collect()
}

/// Which pages the model says are in use: large runs, chunks with live blocks, hint chunks.
fn model_pages(a: &Allocator<'_>, m: &Model, heap_pages: u64) -> Vec<bool> {
    let mut used = vec![false; heap_pages as usize];
    let mut mark = |first: u64, n: u64| {
        for p in first..first + n {
            used[p as usize] = true;
        }
    };
    for (&off, &(size, cap)) in &m.live {
        if class_of(size).is_none() {
            mark((off - HEAP_OFFSET) / PAGE, cap / PAGE);
        }
    }
    let chunks: BTreeSet<usize> = m
        .chunk_blocks
        .keys()
        .copied()
        .chain(hint_chunks(a))
        .collect();
    for idx in chunks {
        mark(idx as u64 * PAGES_PER_CHUNK, PAGES_PER_CHUNK);
    }
    used
}

/// Bound 2: the pages in use are exactly the model's; every chunk's count is the model's.
fn check_pages_exactly(a: &Allocator<'_>, m: &Model, heap_pages: u64) -> Vec<bool> {
    let used = model_pages(a, m, heap_pages);
    for (p, &u) in used.iter().enumerate() {
        assert_eq!(
            a.pages_set(p as u64, 1),
            u64::from(u),
            "page {p}: allocator and model disagree"
        );
    }
    for idx in 0..(heap_pages / PAGES_PER_CHUNK) as usize {
        let info = a.chunk_info(idx);
        let live = m.chunk_blocks.get(&idx).copied().unwrap_or(0);
        match info.state {
            ChunkState::Active => assert_eq!(info.used, live, "chunk {idx} used count"),
            ChunkState::Unused => assert_eq!(live, 0, "chunk {idx} unused but holds blocks"),
            s => panic!("chunk {idx} is {s:?} in a quiescent heap"),
        }
    }
    for c in 0..NUM_CLASSES {
        if let Some(h) = a.hint(c) {
            let info = a.chunk_info(h);
            assert_eq!(
                (info.state, info.class),
                (ChunkState::Active, Some(c)),
                "class {c}'s hint chunk {h}"
            );
        }
    }
    used
}

fn longest_free_run(used: &[bool]) -> u64 {
    let (mut best, mut run) = (0u64, 0u64);
    for &u in used {
        run = if u { 0 } else { run + 1 };
        best = best.max(run);
    }
    best
}

/// Bound 3: an allocation of `size` failed; no placement may exist.
fn check_no_placement(a: &Allocator<'_>, m: &Model, heap_pages: u64, size: u64) {
    let used = check_pages_exactly(a, m, heap_pages);
    match class_of(size) {
        None => {
            let n = size.div_ceil(PAGE);
            let run = longest_free_run(&used);
            assert!(
                run < n,
                "{size} bytes ({n} pages) refused with a free run of {run} pages"
            );
        }
        Some(c) => {
            for (&idx, &blocks) in &m.chunk_blocks {
                if a.chunk_info(idx).class == Some(c) {
                    assert_eq!(
                        blocks,
                        blocks_per_chunk(c),
                        "class {c} refused with free blocks in chunk {idx}"
                    );
                }
            }
            if let Some(h) = a.hint(c) {
                let blocks = m.chunk_blocks.get(&h).copied().unwrap_or(0);
                assert_eq!(blocks, blocks_per_chunk(c), "refused with room in the hint");
            }
            for lane in 0..heap_pages / PAGES_PER_CHUNK {
                let first = (lane * PAGES_PER_CHUNK) as usize;
                assert!(
                    used[first..first + PAGES_PER_CHUNK as usize]
                        .iter()
                        .any(|&u| u),
                    "class {c} refused with chunk lane {lane} free"
                );
            }
        }
    }
}

fn check_counters(a: &Allocator<'_>, m: &Model) {
    assert_eq!(a.used_bytes(), m.used_bytes(), "used bytes");
    assert_eq!(a.allocations(), m.live.len() as u64, "allocations");
    // Bound 2 in numbers (page by page in `check_pages_exactly`).
    let chunks: BTreeSet<usize> = m
        .chunk_blocks
        .keys()
        .copied()
        .chain(hint_chunks(a))
        .collect();
    assert_eq!(
        a.pages_in_use(),
        m.large_pages + chunks.len() as u64 * PAGES_PER_CHUNK,
        "pages in use"
    );
    assert!(hint_chunks(a).len() <= NUM_CLASSES);
    // No process was killed, so the page bitmap's summary (a search hint) is exact.
    assert_eq!(
        a.check_summary(false),
        0,
        "page-bitmap summary words out of date"
    );
}

fn run(heap_pages: u64, ops: &[Op]) {
    let meta = Meta::new(heap_pages);
    let a = meta.allocator();
    let heap_end = HEAP_OFFSET + a.heap_bytes();
    let mut m = Model::default();
    let mut last_freed: Option<(u64, u64)> = None;
    for op in ops {
        match *op {
            Op::Alloc(size) => match a.alloc(size) {
                Ok(al) => {
                    let cap = al.capacity;
                    assert_eq!(cap, capacity_for(size), "capacity of {size}");
                    assert!(cap >= size.max(1));
                    // Bound 1: internal fragmentation.
                    match class_of(size) {
                        Some(_) if size > 128 => assert!(cap * 2 < size * 3, "{size} → {cap}"),
                        Some(_) => assert_eq!(cap, 128),
                        None => assert!(cap - size < PAGE),
                    }
                    assert_eq!(al.offset % 64, 0, "alignment");
                    assert!(
                        al.offset >= HEAP_OFFSET && al.offset + cap <= heap_end,
                        "{al:?} outside the heap [{HEAP_OFFSET:#x}, {heap_end:#x})"
                    );
                    assert!(!m.overlaps(al.offset, cap), "{al:?} overlaps a live block");
                    if class_of(size).is_none() {
                        assert_eq!(al.offset % PAGE, 0);
                        let first = (al.offset - HEAP_OFFSET) / PAGE;
                        assert_eq!(a.pages_set(first, cap / PAGE), cap / PAGE);
                    }
                    m.insert(al.offset, size, cap);
                }
                Err(AllocError::Full { requested }) => {
                    assert_eq!(requested, size);
                    check_no_placement(&a, &m, heap_pages, size);
                }
                Err(e) => panic!("alloc({size}): {e}"),
            },
            Op::Free(i) => {
                if m.live.is_empty() {
                    continue;
                }
                let offset = *m.live.keys().nth(i % m.live.len()).unwrap();
                let (size, _) = m.remove(offset);
                a.free(offset, size)
                    .unwrap_or_else(|e| panic!("free({offset:#x}, {size}): {e}"));
                last_freed = Some((offset, size));
            }
            Op::FreeAgain => {
                let Some((offset, size)) = last_freed else {
                    continue;
                };
                // Only while nothing live shares its bytes (a reused block is legitimately live).
                if m.overlaps(offset, capacity_for(size)) {
                    continue;
                }
                // A page run has no owner record: the allocator can refuse a second free only
                // while none of its pages is in use again (by a chunk, say). The store never
                // frees twice (its directory slot owns the allocation).
                if class_of(size).is_none() {
                    let used = model_pages(&a, &m, heap_pages);
                    let first = ((offset - HEAP_OFFSET) / PAGE) as usize;
                    let n = (capacity_for(size) / PAGE) as usize;
                    if used[first..first + n].iter().any(|&u| u) {
                        continue;
                    }
                }
                let before = (a.used_bytes(), a.allocations(), a.pages_in_use());
                assert_eq!(
                    a.free(offset, size),
                    Err(AllocError::NotAllocated { offset }),
                    "second free of {offset:#x}"
                );
                assert_eq!(
                    (a.used_bytes(), a.allocations(), a.pages_in_use()),
                    before,
                    "a refused free changed the allocator"
                );
            }
        }
        check_counters(&a, &m);
    }
    check_pages_exactly(&a, &m, heap_pages);

    // Free everything: nothing is left but the empty hint chunks, and the largest run between
    // them can be allocated in one piece.
    let live: Vec<(u64, u64)> = m.live.iter().map(|(&o, &(s, _))| (o, s)).collect();
    for (offset, size) in live {
        m.remove(offset);
        a.free(offset, size).unwrap();
    }
    assert_eq!(a.used_bytes(), 0, "used bytes after freeing everything");
    assert_eq!(a.allocations(), 0);
    check_counters(&a, &m);
    let used = check_pages_exactly(&a, &m, heap_pages);
    let run = longest_free_run(&used);
    if run * PAGE > SMALL_MAX {
        let biggest = a.alloc(run * PAGE).expect("the largest free run");
        assert_eq!(biggest.capacity, run * PAGE);
        a.free(biggest.offset, run * PAGE).unwrap();
    }
    assert_eq!(a.used_bytes(), 0);
    // The hint chunks are reusable too: a block of each class that has one still fits.
    for (c, &class) in CLASSES.iter().enumerate() {
        if a.hint(c).is_some() {
            let b = a
                .alloc(u64::from(class))
                .expect("a block in the hint chunk");
            assert_eq!(Some(chunk_of(b.offset)), a.hint(c));
            a.free(b.offset, u64::from(class)).unwrap();
        }
    }
    assert_eq!((a.used_bytes(), a.allocations()), (0, 0));
}

proptest! {
    // 256 cases of up to 300 steps over heaps of 33..1200 pages (not all whole chunks or
    // bitmap words): a few seconds in a debug build.
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_alloc_free_sequences_match_the_model(
        heap_pages in 33u64..1200,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        run(heap_pages, &ops);
    }
}

/// A heap filled with one block of every class and then large runs until full, freed in the
/// reverse order: the edge the random sequences reach only sometimes.
#[test]
fn fill_to_full_and_drain() {
    let heap_pages = 1024;
    let meta = Meta::new(heap_pages);
    let a = meta.allocator();
    let mut m = Model::default();
    for &c in &CLASSES {
        let al = a.alloc(u64::from(c)).unwrap();
        m.insert(al.offset, u64::from(c), al.capacity);
    }
    loop {
        match a.alloc(5 * PAGE) {
            Ok(al) => m.insert(al.offset, 5 * PAGE, al.capacity),
            Err(AllocError::Full { .. }) => {
                check_no_placement(&a, &m, heap_pages, 5 * PAGE);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        check_counters(&a, &m);
    }
    let live: Vec<(u64, u64)> = m.live.iter().rev().map(|(&o, &(s, _))| (o, s)).collect();
    for (offset, size) in live {
        m.remove(offset);
        a.free(offset, size).unwrap();
        check_counters(&a, &m);
    }
    check_pages_exactly(&a, &m, heap_pages);
    assert_eq!(a.used_bytes(), 0);
}
