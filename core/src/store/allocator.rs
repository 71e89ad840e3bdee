//! The heap allocator, lock-free and cross-process: no lock anywhere, so no dead process can hold
//! one.
//!
//! # Design
//!
//! The heap is an array of 4 KiB **pages** tracked by a bitmap (one bit per page, set = in use),
//! grouped in 64 KiB **chunks** (16 pages, one 16-bit lane of a bitmap word).
//!
//! * **Small objects** (≤ 16 KiB) use 27 size classes from 128 B to 16 KiB (about four per
//!   doubling, multiples of 64 B so every payload starts on a cache line). A chunk serving a class
//!   is carved into equal blocks; its [`ChunkDesc`] holds a packed word
//!   (`gen:31 | in_list:1 | state:8 | class:8 | used:16`) and a 512-bit block bitmap. Allocating
//!   is O(1): reserve a block by a CAS that increments `used` (only below capacity, so a free bit
//!   is guaranteed to exist), then claim a clear bit with `fetch_or`. Each class keeps a hint (its
//!   current chunk) and a Treiber stack of partially free chunks whose head packs a 32-bit ABA tag
//!   beside the chunk index. A chunk whose last block is freed returns its pages to the page
//!   bitmap (or, if it sits in a stack, becomes a zombie that the next pop retires).
//! * **Large objects** (> 16 KiB) are contiguous runs of pages placed by **best fit** (the
//!   smallest free run that fits; among equals the highest; the object is placed at the top of
//!   the run, so large objects collect at the top of the heap while small chunks, allocated
//!   first-fit from the bottom, collect at the other end) and claimed word by word with CAS; a
//!   conflict rolls back the words already claimed. Next fit was measured at 64 % heap
//!   utilisation before the first failed allocation in the fragmentation simulation
//!   (`core/tests/fragmentation.rs`), best fit at 88 %.
//!
//! # The page-bitmap summary and the free-run index
//!
//! Best fit over the whole bitmap costs one pass (1 bit per 4 KiB: 8 MiB and about 0.75 ms for
//! a 256 GiB heap, against 0.05 ms to copy 1 MiB), and so would a first fit for a new chunk once
//! the bottom of the heap is full. So the bitmap's section carries two hints after it:
//!
//! * the **summary** (`summary.rs`): per 64-page bitmap word, a *used* bit (some page in use) and
//!   a *full* bit (every page in use). A chunk (first fit from the bottom) skips the words
//!   marked full.
//! * the **free-run index** (`run_index.rs`): a tree of fanout 64 over the bitmap (a leaf per 64
//!   words, 4096 pages), each node recording the free pages at its two ends and which *lengths*
//!   of free run lie inside it, in 128 classes (8 per doubling). Best fit for `n` pages descends
//!   only into the nodes holding a run of the class of `n` (or, if none of those reaches `n`,
//!   of the next class present), and measures only those runs, with the summary's bits telling
//!   it which page words of a leaf it need not read. The cost is the number of runs of about
//!   `n` pages, not the heap's size nor the number of its runs.
//!
//! Every change of page words is followed by a sync of their summary bits and of the index
//! leaves over them (and, where a leaf changed, of the nodes above). The placement is exactly
//! the full scan's while both are up to date (the tests compare them). Both are hints, never
//! authoritative: claims CAS the page words, a stale entry (a process killed between a word's
//! change and its sync) or a corrupt one costs at most a failed claim, a worse placement or a
//! full scan, which the allocator runs before it reports the heap full, and which repairs the
//! hints when it finds what they hid. fsck reports and repairs stale bits and nodes.
//!
//! # Crash consistency
//!
//! Every step is a single atomic on region memory, so a process killed at any instruction leaves
//! the metadata well formed; what it can leave is stale summary bits (harmless, see above) and
//! *orphans*: pages or blocks claimed but never recorded in a directory slot, or `used` counts
//! one too high. The store records each allocation in the client's intent record as soon as it
//! has it, and in the directory slot before committing the object; `fsck` and the reaper reconcile the allocator against the directory and
//! live intents (`docs/recovery.md`).

use crate::shm::CachePadded;
use crate::sync::{AtomicU64, Ordering};

mod run_index;
mod summary;

use run_index::Levels;
use summary::BestFit;

/// Heap page size (the large-object granule).
pub const PAGE: u64 = crate::format::layout::PAGE_SIZE;
/// Chunk size (one small-object run).
pub const CHUNK: u64 = crate::format::layout::CHUNK_SIZE;
const PAGES_PER_CHUNK: u64 = CHUNK / PAGE;

/// Size classes for small objects, in bytes.
pub const CLASSES: [u32; 27] = [
    128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072,
    3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384,
];
/// Number of size classes.
pub const NUM_CLASSES: usize = CLASSES.len();
/// The largest small-object size.
pub const SMALL_MAX: u64 = 16384;

const CH_UNUSED: u8 = 0;
const CH_ACTIVE: u8 = 1;
const CH_ZOMBIE: u8 = 2;

/// Blocks per chunk for class `c`.
pub fn blocks_per_chunk(c: usize) -> u32 {
    (CHUNK / u64::from(CLASSES[c])) as u32
}

/// The size class serving `size` bytes, if small.
pub fn class_of(size: u64) -> Option<usize> {
    if size > SMALL_MAX {
        return None;
    }
    Some(CLASSES.partition_point(|&c| u64::from(c) < size.max(1)))
}

/// Bytes actually reserved for an object of `size` bytes (saturating at `u64::MAX` for a size
/// no heap can hold, e.g. one read from a corrupt slot, so callers' range checks fail cleanly).
pub fn capacity_for(size: u64) -> u64 {
    match class_of(size) {
        Some(c) => u64::from(CLASSES[c]),
        None => size.div_ceil(PAGE).saturating_mul(PAGE),
    }
}

/// A chunk's state, as fsck reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkState {
    Unused,
    Active,
    /// Empty and waiting on a partial stack to be retired.
    Zombie,
    Corrupt,
}

/// A chunk descriptor, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub state: ChunkState,
    pub class: Option<usize>,
    pub used: u32,
    /// Marked as sitting on its class's partial stack.
    pub in_list: bool,
    pub bitmap: [u64; 8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkWord {
    used: u16,
    class: u8,
    state: u8,
    in_list: bool,
    gen: u32,
}

impl ChunkWord {
    fn pack(self) -> u64 {
        u64::from(self.used)
            | u64::from(self.class) << 16
            | u64::from(self.state) << 24
            | u64::from(self.in_list) << 32
            | u64::from(self.gen & 0x7fff_ffff) << 33
    }
    fn unpack(w: u64) -> ChunkWord {
        ChunkWord {
            used: w as u16,
            class: (w >> 16) as u8,
            state: (w >> 24) as u8,
            in_list: (w >> 32) & 1 == 1,
            gen: (w >> 33) as u32,
        }
    }
}

/// Descriptor of one chunk: 128 bytes.
#[repr(C)]
pub struct ChunkDesc {
    word: AtomicU64,
    /// Next chunk index + 1 in the class's partial stack (0 = end).
    next: AtomicU64,
    bitmap: [AtomicU64; 8],
    _reserved: [AtomicU64; 6],
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<ChunkDesc>() as u64,
    crate::format::layout::CHUNK_DESC_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for ChunkDesc {}

impl ChunkDesc {
    pub fn new_unused() -> ChunkDesc {
        ChunkDesc {
            word: AtomicU64::new(0),
            next: AtomicU64::new(0),
            bitmap: std::array::from_fn(|_| AtomicU64::new(0)),
            _reserved: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Allocator state shared in the region's control block.
///
/// Every word is on cache lines of its own ([`CachePadded`]): the heads of different classes
/// are updated by different allocating clients at once, and the two global counters by every
/// allocation and free; on shared lines they would contend for lines they do not need.
#[repr(C)]
pub struct AllocHeads {
    /// Per class: partial-chunk stack head, `tag:32 | (index + 1):32`.
    stacks: [CachePadded<AtomicU64>; 32],
    /// Per class: current chunk index + 1 (0 = none).
    hints: [CachePadded<AtomicU64>; 32],
    /// Bytes of heap handed out (capacities).
    used_bytes: CachePadded<AtomicU64>,
    /// Objects (allocations) live.
    allocations: CachePadded<AtomicU64>,
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::size_of::<AllocHeads>(), 66 * 128);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::align_of::<AllocHeads>(), 128);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(AllocHeads, hints), 32 * 128);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(AllocHeads, used_bytes), 64 * 128);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(AllocHeads, allocations), 65 * 128);
// SAFETY: repr(C), integer atomics only.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for AllocHeads {}

impl AllocHeads {
    pub fn new() -> AllocHeads {
        AllocHeads {
            stacks: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            hints: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            used_bytes: CachePadded::new(AtomicU64::new(0)),
            allocations: CachePadded::new(AtomicU64::new(0)),
        }
    }
}

impl Default for AllocHeads {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an allocation or free failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("heap full: no room for {requested} bytes")]
    Full { requested: u64 },
    #[error("allocator metadata is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("free of {offset:#x} that is not allocated (double free or bad offset)")]
    NotAllocated { offset: u64 },
}

/// One allocation: where it is (region offset) and how many bytes it reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub offset: u64,
    pub capacity: u64,
}

/// Index-guided searches per page-run allocation before every further search is the full scan
/// of the bitmap ([`Allocator::alloc_pages`]).
const HINTED_ATTEMPTS: usize = 16;

/// Words of page-bitmap summary for a heap of `heap_pages` pages (the *used* bits, then the
/// *full* bits; see the module docs).
pub fn summary_words(heap_pages: u64) -> usize {
    crate::format::layout::page_summary_words(heap_pages) as usize
}

/// The allocator over its metadata (in the region, or on the heap for models).
pub struct Allocator<'a> {
    pages: &'a [AtomicU64],
    /// Summary of each page word `i`: bit `i % 64` of `used[i / 64]` is set when some page of
    /// the word is in use, of `full[i / 64]` when every page is. A hint (see the module docs).
    used: &'a [AtomicU64],
    full: &'a [AtomicU64],
    /// The free-run index over the bitmap (`run_index`): [`run_index::NODE_WORDS`] words per
    /// node, level by level from the leaves. A hint too.
    index: &'a [AtomicU64],
    levels: Levels,
    chunks: &'a [ChunkDesc],
    heads: &'a AllocHeads,
    heap_offset: u64,
    heap_pages: u64,
}

impl<'a> Allocator<'a> {
    /// `pages` has `heap_pages.div_ceil(64)` words, `summary` [`summary_words`]`(heap_pages)`,
    /// `chunks` one descriptor per chunk.
    pub fn new(
        pages: &'a [AtomicU64],
        summary: &'a [AtomicU64],
        chunks: &'a [ChunkDesc],
        heads: &'a AllocHeads,
        heap_offset: u64,
        heap_pages: u64,
    ) -> Allocator<'a> {
        let words = heap_pages.div_ceil(64) as usize;
        assert!(pages.len() >= words);
        assert!(summary.len() >= summary_words(heap_pages));
        assert!(chunks.len() as u64 >= heap_pages / PAGES_PER_CHUNK);
        let (bits, index) = summary[..summary_words(heap_pages)].split_at(2 * words.div_ceil(64));
        let (used, full) = bits.split_at(words.div_ceil(64));
        let levels = Levels::new(words);
        assert_eq!(index.len(), levels.nodes() * run_index::NODE_WORDS);
        Allocator {
            pages: &pages[..words],
            used,
            full,
            index,
            levels,
            chunks,
            heads,
            heap_offset,
            heap_pages,
        }
    }

    pub fn heap_bytes(&self) -> u64 {
        self.heap_pages * PAGE
    }

    pub fn used_bytes(&self) -> u64 {
        self.heads.used_bytes.load(Ordering::Relaxed)
    }

    pub fn allocations(&self) -> u64 {
        self.heads.allocations.load(Ordering::Relaxed)
    }

    /// Allocates room for `size` bytes (at least one block), 64-byte aligned.
    ///
    /// # Errors
    /// [`AllocError::Full`] when no room is left (no eviction happens here).
    pub fn alloc(&self, size: u64) -> Result<Allocation, AllocError> {
        let a = match class_of(size) {
            Some(c) => self.alloc_small(c, size)?,
            None => {
                let n = size.div_ceil(PAGE);
                let first = self
                    .alloc_pages(n)
                    .ok_or(AllocError::Full { requested: size })?;
                Allocation {
                    offset: self.heap_offset + first * PAGE,
                    capacity: n * PAGE,
                }
            }
        };
        crate::crash_point!("alloc.claimed");
        self.heads
            .used_bytes
            .fetch_add(a.capacity, Ordering::Relaxed);
        self.heads.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(a)
    }

    /// Frees the allocation at `offset` made for `size` bytes.
    ///
    /// # Errors
    /// [`AllocError::NotAllocated`] for a double free or an offset that is not an allocation of
    /// that size; [`AllocError::Corrupt`] if the metadata is inconsistent. Nothing is changed then.
    pub fn free(&self, offset: u64, size: u64) -> Result<(), AllocError> {
        let rel = offset
            .checked_sub(self.heap_offset)
            .ok_or(AllocError::NotAllocated { offset })?;
        if rel >= self.heap_bytes() {
            return Err(AllocError::NotAllocated { offset });
        }
        let capacity = capacity_for(size);
        match class_of(size) {
            Some(c) => self.free_small(c, rel, offset)?,
            None => {
                let n = size.div_ceil(PAGE);
                if rel % PAGE != 0 || rel / PAGE + n > self.heap_pages {
                    return Err(AllocError::NotAllocated { offset });
                }
                // A page run freed twice after its pages went to a small-object chunk would
                // clear that chunk's page bits (its blocks are live objects) and lower the used
                // bytes twice: refuse a run that a chunk holds or that is not wholly in use.
                if !self.run_is_ours(rel / PAGE, n) {
                    return Err(AllocError::NotAllocated { offset });
                }
                self.release_pages(rel / PAGE, n)
                    .map_err(|_| AllocError::NotAllocated { offset })?;
            }
        }
        crate::crash_point!("free.released");
        self.heads.used_bytes.fetch_sub(capacity, Ordering::Relaxed);
        self.heads.allocations.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    // ---- small objects -------------------------------------------------------------------

    fn alloc_small(&self, c: usize, size: u64) -> Result<Allocation, AllocError> {
        let hint = &self.heads.hints[c];
        // Bounded: every pop takes a chunk off the stack and every new chunk takes 16 pages, so
        // a sound region ends in an allocation or `Full` well within these; a corrupt (cyclic)
        // partial stack of full chunks would pop forever, so past `max_pops` pops we stop
        // trusting the stack and take new chunks, and past `max_rounds` rounds give up.
        let max_pops = self.chunks.len() + 1;
        let max_rounds = 2 * self.chunks.len() + 64;
        let mut pops = 0usize;
        for _ in 0..max_rounds {
            // Acquire: pairs with the Release store of a hint after the chunk was initialised.
            let h = hint.load(Ordering::Acquire);
            if h != 0 && h - 1 < self.chunks.len() as u64 {
                if let Some(a) = self.alloc_in_chunk((h - 1) as usize, c) {
                    return Ok(a);
                }
            }
            if pops < max_pops {
                if let Some(idx) = self.pop_partial(c)? {
                    pops += 1;
                    // Release: pairs with the Acquire load of the hint at the top of this loop in
                    // other allocators of class c; hands on the chunk state our pop Acquired.
                    hint.store(idx as u64 + 1, Ordering::Release);
                    continue;
                }
            }
            let idx = self
                .new_chunk(c)
                .ok_or(AllocError::Full { requested: size })?;
            // Release: pairs with the Acquire load of the hint above in other allocators of class c;
            // publishes the initialised descriptor.
            hint.store(idx as u64 + 1, Ordering::Release);
        }
        Err(AllocError::Corrupt(
            "no block found after bounded retries (cyclic partial-chunk stack?)",
        ))
    }

    fn alloc_in_chunk(&self, idx: usize, c: usize) -> Option<Allocation> {
        let desc = &self.chunks[idx];
        let cap = blocks_per_chunk(c);
        // Acquire: pairs with the Release store of the word in `new_chunk` (the bitmap is
        // initialised before the chunk is ACTIVE).
        let mut w = desc.word.load(Ordering::Acquire);
        loop {
            let cw = ChunkWord::unpack(w);
            if cw.state != CH_ACTIVE || usize::from(cw.class) != c || u32::from(cw.used) >= cap {
                return None;
            }
            let new = ChunkWord {
                used: cw.used + 1,
                ..cw
            };
            // Acquire on success: pairs with the Release that initialised the bitmap.
            match desc.word.compare_exchange_weak(
                w,
                new.pack(),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        // A block is reserved, so a clear bit exists (set bits never exceed `used`).
        crate::crash_point!("alloc.block_reserved");
        let words = cap.div_ceil(64) as usize;
        let start = (ChunkWord::unpack(w).used as usize / 64) % words;
        // Bounded: legitimately a pass misses only when racing other claimers; a bitmap that
        // stays full despite the reservation is corrupt (fsck repairs the count).
        for _pass in 0..10_000 {
            for k in 0..words {
                let i = (start + k) % words;
                let bits = desc.bitmap[i].load(Ordering::Relaxed);
                if bits == u64::MAX {
                    continue;
                }
                let bit = (!bits).trailing_zeros();
                // Acquire: pairs with the freer's Release `fetch_and` in `free_small`, so the
                // previous owner's (and its readers') accesses to the block happen before ours.
                let prev = desc.bitmap[i].fetch_or(1 << bit, Ordering::Acquire);
                if prev & (1 << bit) == 0 {
                    let block = i as u64 * 64 + u64::from(bit);
                    let offset =
                        self.heap_offset + idx as u64 * CHUNK + block * u64::from(CLASSES[c]);
                    return Some(Allocation {
                        offset,
                        capacity: u64::from(CLASSES[c]),
                    });
                }
            }
            crate::sync::spin_hint();
        }
        None
    }

    fn new_chunk(&self, c: usize) -> Option<usize> {
        let first = self.alloc_chunk_pages()?;
        let idx = (first / PAGES_PER_CHUNK) as usize;
        let desc = &self.chunks[idx];
        let cap = blocks_per_chunk(c) as usize;
        for (i, word) in desc.bitmap.iter().enumerate() {
            // Bits past the capacity are permanently set so they can never be claimed.
            let lo = i * 64;
            let v = if lo + 64 <= cap {
                0
            } else if lo >= cap {
                u64::MAX
            } else {
                u64::MAX << (cap - lo)
            };
            word.store(v, Ordering::Relaxed);
        }
        desc.next.store(0, Ordering::Relaxed);
        let old = ChunkWord::unpack(desc.word.load(Ordering::Relaxed));
        let new = ChunkWord {
            used: 0,
            class: c as u8,
            state: CH_ACTIVE,
            in_list: false,
            gen: old.gen.wrapping_add(1),
        };
        // Release: pairs with the Acquire loads and CAS of the word in `alloc_in_chunk` and
        // `free_small`; publishes the bitmap initialisation.
        desc.word.store(new.pack(), Ordering::Release);
        crate::crash_point!("alloc.chunk_published");
        Some(idx)
    }

    fn free_small(&self, c: usize, rel: u64, offset: u64) -> Result<(), AllocError> {
        let idx = (rel / CHUNK) as usize;
        let within = rel % CHUNK;
        let size = u64::from(CLASSES[c]);
        if within % size != 0
            || within / size >= u64::from(blocks_per_chunk(c))
            || idx >= self.chunks.len()
        {
            return Err(AllocError::NotAllocated { offset });
        }
        let desc = &self.chunks[idx];
        // Acquire: pairs with the Release store of the word in `new_chunk`, so class and state are
        // those of an initialised chunk.
        let cw = ChunkWord::unpack(desc.word.load(Ordering::Acquire));
        if cw.state == CH_UNUSED || usize::from(cw.class) != c {
            return Err(AllocError::NotAllocated { offset });
        }
        let block = within / size;
        let (i, bit) = ((block / 64) as usize, block % 64);
        // Release: pairs with the Acquire `fetch_or` in `alloc_in_chunk` of the block's next owner;
        // orders our last reads of the block (by the deleter) before its reuse.
        let prev = desc.bitmap[i].fetch_and(!(1 << bit), Ordering::Release);
        if prev & (1 << bit) == 0 {
            return Err(AllocError::NotAllocated { offset });
        }
        crate::crash_point!("free.block_cleared");
        let cap = blocks_per_chunk(c) as u16;
        let mut w = desc.word.load(Ordering::Relaxed);
        loop {
            let cw = ChunkWord::unpack(w);
            if cw.used == 0 {
                return Err(AllocError::Corrupt("chunk used count underflow"));
            }
            let used = cw.used - 1;
            let is_hint = self.heads.hints[c].load(Ordering::Relaxed) == idx as u64 + 1;
            let mut new = ChunkWord { used, ..cw };
            let mut retire = false;
            let mut push = false;
            if used == 0 && !is_hint {
                if cw.in_list {
                    new.state = CH_ZOMBIE;
                } else {
                    new.state = CH_UNUSED;
                    new.gen = cw.gen.wrapping_add(1);
                    retire = true;
                }
            } else if cw.used == cap && !cw.in_list {
                new.in_list = true;
                push = true;
            }
            // AcqRel: the Release pairs with the Acquire CAS of the word in `alloc_in_chunk`,
            // `pop_partial` and `drain_zombies` (the next updater sees our bitmap clear before our
            // lower count); the Acquire pairs with their AcqRel updates, so a retire here follows
            // every claim the count reflected.
            match desc.word.compare_exchange_weak(
                w,
                new.pack(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if push {
                        crate::crash_point!("free.chunk_listed");
                    }
                    if retire {
                        self.release_chunk_pages(idx)?;
                    } else if push {
                        self.push_partial(c, idx);
                    } else if new.state == CH_ZOMBIE {
                        self.drain_zombies(c)?;
                    }
                    return Ok(());
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Returns a retired chunk's 16 pages to the page bitmap.
    fn release_chunk_pages(&self, idx: usize) -> Result<(), AllocError> {
        // The chunk word is UNUSED already; its pages are not back yet.
        crate::crash_point!("free.chunk_retired");
        self.release_pages(idx as u64 * PAGES_PER_CHUNK, PAGES_PER_CHUNK)
            .map_err(|_| AllocError::Corrupt("chunk pages were not allocated"))
    }

    fn push_partial(&self, c: usize, idx: usize) {
        let stack = &self.heads.stacks[c];
        let mut head = stack.load(Ordering::Relaxed);
        loop {
            self.chunks[idx]
                .next
                .store(head & 0xffff_ffff, Ordering::Relaxed);
            let new = (head >> 32).wrapping_add(1) << 32 | (idx as u64 + 1);
            // Release: pairs with the Acquire load and CAS of the head in `pop_partial`; publishes
            // `next` to the popper.
            match stack.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Pops an active chunk of class `c` (retiring zombies on the way).
    fn pop_partial(&self, c: usize) -> Result<Option<usize>, AllocError> {
        let stack = &self.heads.stacks[c];
        // Bounded: a stack longer than the number of chunks (times retries) has a cycle.
        for _ in 0..(self.chunks.len() + 1) * 64 {
            // Acquire: pairs with the Release push; makes the chunk's `next` visible.
            let head = stack.load(Ordering::Acquire);
            let top = head & 0xffff_ffff;
            if top == 0 {
                return Ok(None);
            }
            let idx = (top - 1) as usize;
            if idx >= self.chunks.len() {
                return Err(AllocError::Corrupt(
                    "partial-chunk stack points outside the heap",
                ));
            }
            let next = self.chunks[idx].next.load(Ordering::Relaxed) & 0xffff_ffff;
            let new = (head >> 32).wrapping_add(1) << 32 | next;
            // Acquire: pairs with the Release CAS of the head in `push_partial` (the `next` we read
            // was stored before the push).
            if stack
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            crate::crash_point!("alloc.partial_popped");
            // The chunk is ours to take off the list: clear `in_list`, retiring a zombie.
            let desc = &self.chunks[idx];
            // Acquire: pairs with the AcqRel CAS of the word in `free_small` and `drain_zombies`
            // that listed the chunk (or made it a zombie).
            let mut w = desc.word.load(Ordering::Acquire);
            loop {
                let cw = ChunkWord::unpack(w);
                let (new, retire) = match cw.state {
                    CH_ZOMBIE => (
                        ChunkWord {
                            state: CH_UNUSED,
                            in_list: false,
                            gen: cw.gen.wrapping_add(1),
                            ..cw
                        },
                        true,
                    ),
                    _ => (
                        ChunkWord {
                            in_list: false,
                            ..cw
                        },
                        false,
                    ),
                };
                // AcqRel: pairs with the AcqRel CAS of the word in `free_small` and `drain_zombies`
                // and the Acquire CAS in `alloc_in_chunk`: a retire here is ordered after every
                // earlier update of the word, and the next updater sees `in_list` clear.
                match desc.word.compare_exchange_weak(
                    w,
                    new.pack(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        if retire {
                            self.release_chunk_pages(idx)?;
                        } else if cw.state == CH_ACTIVE && usize::from(cw.class) == c {
                            return Ok(Some(idx));
                        }
                        break;
                    }
                    Err(actual) => w = actual,
                }
            }
        }
        Err(AllocError::Corrupt("partial-chunk stack has a cycle"))
    }

    /// Takes every chunk off class `c`'s stack, retiring zombies (`pop_partial` does that), and
    /// puts the active ones back, so empty chunks return their pages to the heap promptly.
    fn drain_zombies(&self, c: usize) -> Result<(), AllocError> {
        let mut active = Vec::new();
        while let Some(idx) = self.pop_partial(c)? {
            active.push(idx);
            if active.len() > self.chunks.len() {
                return Err(AllocError::Corrupt("partial-chunk stack has a cycle"));
            }
        }
        for idx in active {
            let desc = &self.chunks[idx];
            // Acquire: pairs with the AcqRel CAS of the word in `pop_partial` that took the chunk
            // off the stack.
            let mut w = desc.word.load(Ordering::Acquire);
            loop {
                let cw = ChunkWord::unpack(w);
                if cw.state != CH_ACTIVE || usize::from(cw.class) != c || cw.in_list {
                    break;
                }
                let is_hint = self.heads.hints[c].load(Ordering::Relaxed) == idx as u64 + 1;
                let retire = cw.used == 0 && !is_hint;
                let new = if retire {
                    ChunkWord {
                        state: CH_UNUSED,
                        gen: cw.gen.wrapping_add(1),
                        ..cw
                    }
                } else {
                    ChunkWord {
                        in_list: true,
                        ..cw
                    }
                };
                // AcqRel: pairs with the AcqRel CAS of the word in `free_small` and `pop_partial`
                // (as there): a retire follows every earlier update, a relist is seen by the next
                // popper.
                match desc.word.compare_exchange_weak(
                    w,
                    new.pack(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        if retire {
                            self.release_chunk_pages(idx)?;
                        } else {
                            self.push_partial(c, idx);
                        }
                        break;
                    }
                    Err(actual) => w = actual,
                }
            }
        }
        Ok(())
    }

    // ---- pages ---------------------------------------------------------------------------

    /// Claims a free, chunk-aligned run of 16 pages (first fit from the bottom). The words the
    /// summary marks full are skipped; only if that finds nothing is every word looked at (the
    /// summary may be stale), and then the summary is repaired.
    fn alloc_chunk_pages(&self) -> Option<u64> {
        if let Some(first) = self.alloc_chunk_pages_hinted() {
            return Some(first);
        }
        let found = (0..self.pages.len()).find_map(|i| self.claim_lane_in(i));
        if found.is_some() {
            self.check_summary(true);
        }
        found
    }

    /// Claims the lowest free 16-page lane of page word `i`, if it has one.
    fn claim_lane_in(&self, i: usize) -> Option<u64> {
        let mut w = self.pages[i].load(Ordering::Relaxed);
        for lane in 0..4u64 {
            let first = i as u64 * 64 + lane * PAGES_PER_CHUNK;
            if first + PAGES_PER_CHUNK > self.heap_pages {
                break;
            }
            let mask = 0xffffu64 << (lane * 16);
            while w & mask == 0 {
                // Acquire: pairs with the Release in `release_pages`; the previous user's
                // accesses to these pages happen before ours.
                match self.pages[i].compare_exchange_weak(
                    w,
                    w | mask,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        crate::crash_point!("alloc.lane_claimed");
                        self.sync_summary(i);
                        return Some(first);
                    }
                    Err(actual) => w = actual,
                }
            }
        }
        None
    }

    /// Claims `n` contiguous free pages; returns the first page index, or `None` when the
    /// authoritative scan of the bitmap finds no free run of `n` pages (core review L9).
    ///
    /// A claim that fails is retried, however often: the first [`HINTED_ATTEMPTS`] searches are
    /// index-guided, and after them every search is the scan of the whole bitmap. A guided
    /// search can be misled without anyone else running (a stale or garbage summary or index, a
    /// killed process's leftovers), and each failure repairs the words and nodes over the run it
    /// tried, but it is not trusted forever: garbage that a repair cannot fix must not loop, and
    /// when the guided searches are used up the whole summary and index are repaired once. A
    /// claim of what the full scan found fails only if a page word of the run changed between
    /// the scan and the claim, that is, if another process claimed pages meanwhile: every lost
    /// race is someone else's progress, so the loop is lock-free, and a region no one else
    /// writes ends it after at most `HINTED_ATTEMPTS + 1` searches.
    fn alloc_pages(&self, n: u64) -> Option<u64> {
        if n == 0 || n > self.heap_pages {
            return None;
        }
        // Best fit (smallest free run that fits, the highest of equals), placing the object at
        // the top of the run; see the module docs for why, and for how the index finds it.
        let mut attempt = 0usize;
        loop {
            #[cfg(all(test, not(loom)))]
            test_hooks::run(self, test_hooks::Step::Search);
            let hinted = if attempt < HINTED_ATTEMPTS {
                self.find_run_hinted(n)
            } else {
                None
            };
            if attempt == HINTED_ATTEMPTS {
                // Every guided claim failed: the summary or the index may be wrong far beyond
                // the runs tried (a zeroed or garbage index always offers something, so the
                // repair below never runs). One repair of the whole index, as costly as the
                // full scan that follows; afterwards the guided search is exact again.
                self.check_summary(true);
            }
            if attempt > HINTED_ATTEMPTS {
                // Racing claimers on the full scan: back off a little (lock-free, not bounded:
                // every lost race is someone else's allocation).
                std::hint::spin_loop();
            }
            let found = match hinted {
                Some(found) => found,
                None => {
                    // The authoritative scan: the index may have missed a fitting run (stale
                    // nodes or bits of a process killed between a page word's change and its
                    // sync, or a race); if so, bring the summary and the index up to date.
                    let found = self.find_run_best(n)?;
                    if attempt < HINTED_ATTEMPTS {
                        self.check_summary(true);
                    }
                    found
                }
            };
            attempt = attempt.saturating_add(1);
            #[cfg(all(test, not(loom)))]
            test_hooks::run(self, test_hooks::Step::Claim { first: found, n });
            if self.claim_run(found, n).is_ok() {
                return Some(found);
            }
            // A race, or words or nodes that wrongly call the run free: re-sync them all, every
            // node up to the root (one above may be stale while those below are right).
            let words = Self::run_words(found, n);
            for i in words.clone() {
                self.sync_bits(i);
            }
            self.sync_index(words, true);
        }
    }

    /// The page words of pages `[first, first + n)`, `n ≥ 1`.
    fn run_words(first: u64, n: u64) -> std::ops::RangeInclusive<usize> {
        (first / 64) as usize..=((first + n - 1) / 64) as usize
    }

    /// The start page for `n` pages at the top of the smallest free run of at least `n` pages:
    /// a scan of every page word (the reference the summary-guided search agrees with).
    fn find_run_best(&self, n: u64) -> Option<u64> {
        let mut fit = BestFit::new(n);
        for i in (0..self.pages.len()).rev() {
            let w = self.pages[i].load(Ordering::Relaxed) | !self.valid_mask(i);
            fit.word(i, w);
            if let Some(first) = fit.exact() {
                return Some(first); // an exact fit cannot be beaten
            }
        }
        fit.finish()
    }

    fn run_masks(first: u64, n: u64) -> impl Iterator<Item = (usize, u64)> {
        let end = first + n;
        let mut p = first;
        std::iter::from_fn(move || {
            if p >= end {
                return None;
            }
            let i = p / 64;
            let lo = p % 64;
            let hi = (end - i * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            p = i * 64 + hi;
            Some((i as usize, mask))
        })
    }

    /// Claims pages `[first, first + n)` word by word; if one is taken, releases the words
    /// already claimed. The summary bits are synced after each word, the index once at the end.
    fn claim_run(&self, first: u64, n: u64) -> Result<(), ()> {
        // A run a stale hint offers may run into a used word: found by loads first, so that a
        // doomed claim never holds free pages for a moment (a concurrent full scan passing them
        // would report the store full: core review L9).
        if Self::run_masks(first, n).any(|(i, m)| self.pages[i].load(Ordering::Relaxed) & m != 0) {
            return Err(());
        }
        let mut claimed: Vec<(usize, u64)> = Vec::new();
        for (i, mask) in Self::run_masks(first, n) {
            let mut w = self.pages[i].load(Ordering::Relaxed);
            loop {
                if w & mask != 0 {
                    for &(j, m) in &claimed {
                        // Release: pairs with the Acquire CAS of the next claimer in
                        // `claim_lane_in` or `claim_run`, as in `release_pages` (we wrote
                        // nothing to these pages, but the bits were ours).
                        self.pages[j].fetch_and(!m, Ordering::Release);
                        self.sync_bits(j);
                    }
                    if let (Some(&(lo, _)), Some(&(hi, _))) = (claimed.first(), claimed.last()) {
                        self.sync_index(lo..=hi, false);
                    }
                    return Err(());
                }
                // Acquire: pairs with the Release in `release_pages` (see `claim_lane_in`).
                match self.pages[i].compare_exchange_weak(
                    w,
                    w | mask,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => w = actual,
                }
            }
            crate::crash_point!("alloc.run_word_claimed");
            self.sync_bits(i);
            claimed.push((i, mask));
        }
        self.sync_index(Self::run_words(first, n), false);
        Ok(())
    }

    /// Whether pages `[first, first + n)` look like one allocated page run: every page marked in
    /// use and no chunk over any of them serving small objects. In a sound region a chunk's
    /// descriptor turns `UNUSED` before its pages are released (`free_small`, `drain_zombies`)
    /// and `ACTIVE` only after they are claimed (`new_chunk`), so the pages of a run we hold are
    /// never under a live chunk and a legitimate free always passes. A double free racing with a
    /// chunk that is claiming the same pages may still pass: this catches the caller's bug after
    /// the fact, it does not make a double free safe.
    fn run_is_ours(&self, first: u64, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let lanes = first / PAGES_PER_CHUNK..=(first + n - 1) / PAGES_PER_CHUNK;
        let chunk_live = lanes.into_iter().any(|idx| {
            self.chunks.get(idx as usize).is_some_and(|desc| {
                // Acquire: pairs with the Release store of the word in `new_chunk` (and the
                // AcqRel retire CAS in `free_small`): a chunk seen `UNUSED` released its pages
                // before, or has not claimed them yet.
                let st = ChunkWord::unpack(desc.word.load(Ordering::Acquire)).state;
                st == CH_ACTIVE || st == CH_ZOMBIE
            })
        });
        !chunk_live && self.pages_set(first, n) == n
    }

    /// Clears the bits of pages `[first, first + n)`; fails (after clearing what was set) if any
    /// was not set.
    fn release_pages(&self, first: u64, n: u64) -> Result<(), ()> {
        let mut ok = true;
        for (i, mask) in Self::run_masks(first, n) {
            // Release: pairs with the Acquire CAS of the next claimer in `claim_lane_in` or
            // `claim_run`: our (and the object's readers', via the directory) accesses to these
            // pages happen before its.
            let prev = self.pages[i].fetch_and(!mask, Ordering::Release);
            crate::crash_point!("free.page_word_released");
            self.sync_bits(i);
            ok &= prev & mask == mask;
        }
        if n > 0 {
            self.sync_index(Self::run_words(first, n), false);
        }
        ok.then_some(()).ok_or(())
    }

    /// A chunk descriptor as fsck sees it.
    pub fn chunk_info(&self, idx: usize) -> ChunkInfo {
        let Some(desc) = self.chunks.get(idx) else {
            return ChunkInfo {
                state: ChunkState::Corrupt,
                class: None,
                used: 0,
                in_list: false,
                bitmap: [0; 8],
            };
        };
        // Acquire: pairs with the Release and AcqRel updates of the word (`new_chunk`,
        // `free_small`), so the bitmap words read below are at least that new.
        let cw = ChunkWord::unpack(desc.word.load(Ordering::Acquire));
        let state = match cw.state {
            CH_UNUSED => ChunkState::Unused,
            CH_ACTIVE => ChunkState::Active,
            CH_ZOMBIE => ChunkState::Zombie,
            _ => ChunkState::Corrupt,
        };
        ChunkInfo {
            state,
            class: (usize::from(cw.class) < NUM_CLASSES).then_some(usize::from(cw.class)),
            used: u32::from(cw.used),
            in_list: cw.in_list,
            bitmap: std::array::from_fn(|i| desc.bitmap[i].load(Ordering::Relaxed)),
        }
    }

    /// fsck: the chunks on class `c`'s partial stack, top first, walked at most once around the
    /// table. `Err` if the stack points outside the chunk table or has a cycle.
    pub fn partial_stack(&self, c: usize) -> Result<Vec<usize>, &'static str> {
        let mut out = Vec::new();
        let mut seen = vec![false; self.chunks.len()];
        // Acquire: pairs with the Release CAS of the head in `push_partial`, so each chunk's `next`
        // is the one stored before its push.
        let mut top = self.heads.stacks[c].load(Ordering::Acquire) & 0xffff_ffff;
        while top != 0 {
            let idx = (top - 1) as usize;
            match seen.get_mut(idx) {
                None => return Err("points outside the chunk table"),
                Some(true) => return Err("has a cycle"),
                Some(s) => *s = true,
            }
            out.push(idx);
            top = self.chunks[idx].next.load(Ordering::Relaxed) & 0xffff_ffff;
        }
        Ok(out)
    }

    /// fsck: the hint (current chunk) of class `c`, if it names a chunk.
    pub fn hint(&self, c: usize) -> Option<usize> {
        let h = self.heads.hints[c].load(Ordering::Relaxed);
        (h != 0 && h - 1 < self.chunks.len() as u64).then(|| (h - 1) as usize)
    }

    /// fsck repair (quiescent region only): empties class `c`'s partial stack, so that a corrupt
    /// one is rebuilt by [`Allocator::relist_chunk`] from the chunks themselves.
    pub fn reset_partial_stack(&self, c: usize) {
        let head = self.heads.stacks[c].load(Ordering::Relaxed);
        // Release: pairs with the Acquire loads of the head in `pop_partial` and `partial_stack`;
        // the repair runs quiescent, but every writer of the head releases it.
        self.heads.stacks[c].store((head >> 32).wrapping_add(1) << 32, Ordering::Release);
    }

    /// fsck repair (quiescent region only): puts a chunk that is neither on its class's partial
    /// stack nor the hint back in service: an empty one is retired (its pages go back to the
    /// heap), one with free blocks is pushed on the stack. `false` if the descriptor changed or is
    /// not an active (or zombie) chunk of a known class.
    pub fn relist_chunk(&self, idx: usize) -> bool {
        let Some(desc) = self.chunks.get(idx) else {
            return false;
        };
        // Acquire: pairs with the Release and AcqRel updates of the word (`new_chunk`,
        // `free_small`, `pop_partial`).
        let w = desc.word.load(Ordering::Acquire);
        let cw = ChunkWord::unpack(w);
        let c = usize::from(cw.class);
        if !matches!(cw.state, CH_ACTIVE | CH_ZOMBIE) || c >= NUM_CLASSES {
            return false;
        }
        // Never list a chunk twice (that would make the stack cyclic): it may have been pushed
        // since the caller looked, e.g. by a repair's free.
        if self.hint(c) == Some(idx) || self.partial_stack(c).is_ok_and(|v| v.contains(&idx)) {
            return false;
        }
        let retire = cw.used == 0;
        let new = if retire {
            ChunkWord {
                state: CH_UNUSED,
                in_list: false,
                gen: cw.gen.wrapping_add(1),
                ..cw
            }
        } else {
            ChunkWord {
                state: CH_ACTIVE,
                in_list: true,
                ..cw
            }
        };
        // AcqRel: pairs with the AcqRel CAS of the word in `free_small` and `pop_partial` (a retire
        // or relist ordered after every earlier update, seen by the next one).
        if desc
            .word
            .compare_exchange(w, new.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if retire {
            self.release_chunk_pages(idx).is_ok()
        } else {
            self.push_partial(c, idx);
            true
        }
    }

    /// How many of pages `[first, first + n)` are marked in use.
    pub fn pages_set(&self, first: u64, n: u64) -> u64 {
        if first.checked_add(n).is_none_or(|end| end > self.heap_pages) {
            return 0;
        }
        Self::run_masks(first, n)
            .map(|(i, m)| u64::from((self.pages[i].load(Ordering::Relaxed) & m).count_ones()))
            .sum()
    }

    /// fsck repair: frees pages `[first, first + n)` that nothing accounts for.
    pub fn release_page_run(&self, first: u64, n: u64) -> bool {
        if first.checked_add(n).is_none_or(|end| end > self.heap_pages)
            || self.release_pages(first, n).is_err()
        {
            return false;
        }
        self.heads.used_bytes.fetch_sub(n * PAGE, Ordering::Relaxed);
        true
    }

    /// Orphan collection: lowers a chunk's `used` count from `from` to `to` if it is still `from`.
    pub fn cas_chunk_used(&self, idx: usize, from: u32, to: u32) -> bool {
        let Some(desc) = self.chunks.get(idx) else {
            return false;
        };
        // Acquire: pairs with the Release and AcqRel updates of the word (`new_chunk`,
        // `free_small`).
        let w = desc.word.load(Ordering::Acquire);
        let cw = ChunkWord::unpack(w);
        if u32::from(cw.used) != from || to > from {
            return false;
        }
        let new = ChunkWord {
            used: to as u16,
            ..cw
        };
        // AcqRel: pairs with the Acquire and AcqRel CASes of the word in `alloc_in_chunk` and
        // `free_small`: the lowered count is seen with everything before it.
        desc.word
            .compare_exchange(w, new.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Orphan collection: resets the used-bytes counter from `from` to `to` if it is still `from`.
    pub fn cas_used_bytes(&self, from: u64, to: u64) -> bool {
        self.heads
            .used_bytes
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// fsck repair: sets a chunk's `used` count (quiescent region only).
    pub fn set_chunk_used(&self, idx: usize, used: u32) -> bool {
        let Some(desc) = self.chunks.get(idx) else {
            return false;
        };
        // Acquire: pairs with the Release and AcqRel updates of the word (`new_chunk`,
        // `free_small`).
        let w = desc.word.load(Ordering::Acquire);
        let new = ChunkWord {
            used: used.min(u32::from(u16::MAX)) as u16,
            ..ChunkWord::unpack(w)
        };
        // AcqRel: pairs with the Acquire and AcqRel CASes of the word in `alloc_in_chunk` and
        // `free_small`, as in `cas_chunk_used`.
        desc.word
            .compare_exchange(w, new.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// fsck repair: sets the usage counters (quiescent region only).
    pub fn set_used_bytes(&self, bytes: u64, allocations: u64) {
        self.heads.used_bytes.store(bytes, Ordering::Relaxed);
        self.heads.allocations.store(allocations, Ordering::Relaxed);
    }

    /// Pages currently marked in use (for statistics and fsck).
    pub fn pages_in_use(&self) -> u64 {
        self.pages
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Per size class: (chunks active, blocks used).
    pub fn class_usage(&self) -> Vec<(u32, u64, u64)> {
        let mut v: Vec<(u32, u64, u64)> = CLASSES.iter().map(|&c| (c, 0, 0)).collect();
        for d in self
            .chunks
            .iter()
            .take((self.heap_pages / PAGES_PER_CHUNK) as usize)
        {
            let cw = ChunkWord::unpack(d.word.load(Ordering::Relaxed));
            if cw.state != CH_UNUSED && usize::from(cw.class) < NUM_CLASSES {
                v[usize::from(cw.class)].1 += 1;
                v[usize::from(cw.class)].2 += u64::from(cw.used);
            }
        }
        v
    }
}

/// Test-only hooks into the allocator's steps, for its unit tests.
#[cfg(all(test, not(loom)))]
pub(crate) mod test_hooks {
    use super::Allocator;
    use std::cell::RefCell;

    /// Where in `alloc_pages` the hook runs.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Step {
        /// Before each search for a run.
        Search,
        /// Between a search and the claim of pages `[first, first + n)`.
        Claim { first: u64, n: u64 },
    }

    type Hook = Box<dyn FnMut(&Allocator<'_>, Step)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `hook` in this thread at every [`Step`] of a page-run allocation, until [`clear`].
    pub(crate) fn set(hook: impl FnMut(&Allocator<'_>, Step) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(crate) fn clear() {
        HOOK.with(|h| *h.borrow_mut() = None);
    }

    pub(super) fn run(a: &Allocator<'_>, step: Step) {
        // Taken out while it runs, so that the hook may call the allocator.
        let Some(mut hook) = HOOK.with(|h| h.borrow_mut().take()) else {
            return;
        };
        hook(a, step);
        HOOK.with(|h| {
            h.borrow_mut().get_or_insert(hook);
        });
    }
}

/// A heap of process-local metadata for the allocator's unit tests (here and in `summary`).
#[cfg(all(test, not(loom)))]
pub(crate) mod test_heap {
    use super::*;

    pub(crate) struct Heap {
        pub(crate) pages: Vec<AtomicU64>,
        pub(crate) summary: Vec<AtomicU64>,
        chunks: Vec<ChunkDesc>,
        pub(crate) heads: AllocHeads,
        heap_offset: u64,
        pub(crate) heap_pages: u64,
    }

    impl Heap {
        /// `heap_pages` pages starting at region offset `heap_offset`, all free.
        pub(crate) fn with_pages(heap_pages: u64, heap_offset: u64) -> Heap {
            let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
            Heap {
                pages: zeros(heap_pages.div_ceil(64) as usize),
                summary: zeros(summary_words(heap_pages)),
                chunks: (0..heap_pages / PAGES_PER_CHUNK)
                    .map(|_| ChunkDesc::new_unused())
                    .collect(),
                heads: AllocHeads::new(),
                heap_offset,
                heap_pages,
            }
        }

        pub(crate) fn alloc(&self) -> Allocator<'_> {
            Allocator::new(
                &self.pages,
                &self.summary,
                &self.chunks,
                &self.heads,
                self.heap_offset,
                self.heap_pages,
            )
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_heap::Heap as TestHeap;
    use super::*;

    /// A heap of `bytes` at region offset 1 MiB (a heap never starts at 0 in a region).
    fn heap(bytes: u64) -> TestHeap {
        TestHeap::with_pages(bytes / PAGE, 1 << 20)
    }

    #[test]
    fn classes_are_cache_line_multiples() {
        for c in CLASSES {
            assert_eq!(c % 64, 0);
        }
        assert_eq!(class_of(0), Some(0));
        assert_eq!(class_of(128), Some(0));
        assert_eq!(class_of(129), Some(1));
        assert_eq!(class_of(16384), Some(NUM_CLASSES - 1));
        assert_eq!(class_of(16385), None);
        assert_eq!(capacity_for(16385), 20480);
    }

    #[test]
    fn small_and_large_do_not_overlap_and_free_returns_everything() {
        let h = heap(64 << 20);
        let a = h.alloc();
        let mut live = Vec::new();
        let sizes = [
            1u64,
            100,
            128,
            129,
            1000,
            4096,
            5000,
            16384,
            16385,
            100_000,
            1 << 20,
        ];
        for round in 0..20 {
            for &s in &sizes {
                let al = a.alloc(s + round).unwrap();
                assert_eq!(al.offset % 64, 0);
                assert!(al.capacity >= s + round);
                live.push((al, s + round));
            }
        }
        let mut spans: Vec<(u64, u64)> = live
            .iter()
            .map(|(al, _)| (al.offset, al.offset + al.capacity))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {:?}", w);
        }
        for (al, s) in &live {
            a.free(al.offset, *s).unwrap();
        }
        assert_eq!(a.used_bytes(), 0);
        assert_eq!(a.allocations(), 0);
        // Every chunk went back to the page bitmap except the per-class hints.
        let hinted = h
            .heads
            .hints
            .iter()
            .filter(|x| x.load(Ordering::Relaxed) != 0)
            .count() as u64;
        assert!(a.pages_in_use() <= hinted * PAGES_PER_CHUNK);
    }

    #[test]
    fn double_free_is_refused() {
        let h = heap(4 << 20);
        let a = h.alloc();
        let s = a.alloc(300).unwrap();
        let l = a.alloc(300_000).unwrap();
        a.free(s.offset, 300).unwrap();
        assert!(matches!(
            a.free(s.offset, 300),
            Err(AllocError::NotAllocated { .. })
        ));
        a.free(l.offset, 300_000).unwrap();
        assert!(matches!(
            a.free(l.offset, 300_000),
            Err(AllocError::NotAllocated { .. })
        ));
        assert!(a.free(12, 300).is_err());
        assert!(a.free(u64::MAX - 5, 300).is_err());
    }

    /// A page run freed a second time after a small-object chunk took its pages: refused, and
    /// the chunk's objects and the byte count are untouched.
    #[test]
    fn double_free_of_a_page_run_reused_by_a_chunk_is_refused() {
        let h = heap(32 * PAGE);
        let a = h.alloc();
        let big = a.alloc(5 * PAGE).unwrap();
        a.free(big.offset, 5 * PAGE).unwrap();
        let s1 = a.alloc(128).unwrap();
        let s2 = a.alloc(192).unwrap();
        let used = a.used_bytes();
        let pages = a.pages_in_use();
        assert!(matches!(
            a.free(big.offset, 5 * PAGE),
            Err(AllocError::NotAllocated { .. })
        ));
        assert_eq!(a.used_bytes(), used);
        assert_eq!(a.pages_in_use(), pages);
        a.free(s1.offset, 128).unwrap();
        a.free(s2.offset, 192).unwrap();

        // A run only partly in use is refused too (nothing is cleared).
        let h = heap(64 * PAGE);
        let a = h.alloc();
        let run = a.alloc(3 * PAGE).unwrap();
        assert!(matches!(
            a.free(run.offset - PAGE, 4 * PAGE),
            Err(AllocError::NotAllocated { .. })
        ));
        a.free(run.offset, 3 * PAGE).unwrap();
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn fills_up_then_reports_full() {
        let h = heap(2 << 20);
        let a = h.alloc();
        let mut n = 0u64;
        while a.alloc(64 * 1024).is_ok() {
            n += 1;
        }
        assert_eq!(n, 32);
        assert!(matches!(a.alloc(64 * 1024), Err(AllocError::Full { .. })));
    }

    /// Core review L9: lost claim races are retried, not reported as `Full`. Another
    /// "process" (the hook) takes the top page of every run found, 200 times over, before the
    /// allocation gets to claim it: each lost race is its progress, and the allocation still
    /// succeeds, beside the pages the other one took (the old code gave up after 64).
    #[test]
    fn lost_claim_races_are_retried_not_reported_full() {
        use std::cell::Cell;
        use std::rc::Rc;
        let h = heap(64 << 20);
        let a = h.alloc();
        let (losses, calls) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
        let (l, c) = (losses.clone(), calls.clone());
        test_hooks::set(move |a, step| {
            let test_hooks::Step::Claim { first, n } = step else {
                return;
            };
            c.set(c.get() + 1);
            if l.get() < 200 {
                a.claim_run(first + n - 1, 1).unwrap();
                l.set(l.get() + 1);
            }
        });
        let got = a.alloc(300_000);
        test_hooks::clear();
        let got = got.expect("lost races are retried");
        assert_eq!((losses.get(), calls.get()), (200, 201));
        // Best fit below the 200 pages the other one took at the top.
        let top = (1 << 20) + (64 << 20) - 200 * PAGE;
        assert_eq!(got.offset + got.capacity, top);
        assert_eq!(a.pages_in_use(), 200 + got.capacity / PAGE);
        assert_eq!(a.check_summary(false), 0);
    }

    /// A summary and index that call everything free, rewritten before every search (garbage
    /// a repair cannot fix): the allocation stops trusting them after `HINTED_ATTEMPTS` failed
    /// claims and finds the one free run by the full scan; with no run, `Full` comes as quickly.
    /// No endless loop, and no `Full` while a run exists (the old code gave up after 64).
    #[test]
    fn a_summary_rewritten_to_lie_cannot_make_the_allocation_loop_or_fail() {
        use std::cell::Cell;
        use std::rc::Rc;
        for free_run in [true, false] {
            let h = Rc::new(heap(16 << 20));
            let a = h.alloc();
            for w in &h.pages {
                w.store(u64::MAX, Ordering::Relaxed);
            }
            if free_run {
                // Pages 1000..1100 free.
                a.release_pages(1000, 100).unwrap();
            }
            a.check_summary(true);
            let calls = Rc::new(Cell::new(0usize));
            let c = calls.clone();
            let liar = h.clone();
            test_hooks::set(move |_, step| {
                if let test_hooks::Step::Search = step {
                    c.set(c.get() + 1);
                    for w in &liar.summary {
                        w.store(0, Ordering::Relaxed);
                    }
                }
            });
            let got = a.alloc(90 * PAGE);
            test_hooks::clear();
            if free_run {
                assert_eq!(got.unwrap().offset, (1 << 20) + 1010 * PAGE);
            } else {
                assert!(matches!(got, Err(AllocError::Full { .. })));
            }
            // Searches: the guided ones, each claim failing, then the full scan.
            assert_eq!(calls.get(), HINTED_ATTEMPTS + 1);
        }
    }

    /// An index zeroed once (as a foreign writer could leave it: "everything free") misleads
    /// the guided search until the guided attempts are used up; then the whole index is repaired,
    /// so the next allocation that cannot be met is answered by one exact search (before, every
    /// `Full` cost the 16 failed claims again, each repairing a few nodes only).
    #[test]
    fn an_index_wrong_everywhere_is_repaired_once_not_on_every_full() {
        use std::cell::Cell;
        use std::rc::Rc;
        let h = heap(256 << 20);
        let a = h.alloc();
        for w in &h.pages {
            w.store(u64::MAX, Ordering::Relaxed);
        }
        // Free runs of 8 pages every 64 words: too short for the request.
        for i in (0..h.pages.len()).step_by(64) {
            a.release_pages(i as u64 * 64, 8).unwrap();
        }
        a.check_summary(true);
        for w in &h.summary {
            w.store(0, Ordering::Relaxed);
        }
        let searches = Rc::new(Cell::new(0usize));
        let s = searches.clone();
        test_hooks::set(move |_, step| {
            if let test_hooks::Step::Search = step {
                s.set(s.get() + 1);
            }
        });
        assert!(matches!(a.alloc(90 * PAGE), Err(AllocError::Full { .. })));
        let first = searches.replace(0);
        assert!(matches!(a.alloc(90 * PAGE), Err(AllocError::Full { .. })));
        let second = searches.get();
        test_hooks::clear();
        assert_eq!(
            first,
            HINTED_ATTEMPTS + 1,
            "the guided attempts, then the full scan"
        );
        assert_eq!(second, 1, "the index was left wrong after the first Full");
        assert_eq!(a.check_summary(false), 0);
    }

    #[test]
    fn concurrent_threads_never_hand_out_the_same_block() {
        let h = heap(64 << 20);
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                let seen = &seen;
                s.spawn(move || {
                    let a = h.alloc();
                    let mut mine = Vec::new();
                    for i in 0..2000u64 {
                        let size = [200u64, 3000, 20_000, 700][((i + t) % 4) as usize];
                        let al = a.alloc(size).unwrap();
                        assert!(seen.lock().unwrap().insert(al.offset));
                        mine.push((al, size));
                        if i % 3 == 0 {
                            let (al, size) = mine.swap_remove((i as usize * 7) % mine.len());
                            seen.lock().unwrap().remove(&al.offset);
                            a.free(al.offset, size).unwrap();
                        }
                    }
                    for (al, size) in mine {
                        seen.lock().unwrap().remove(&al.offset);
                        a.free(al.offset, size).unwrap();
                    }
                });
            }
        });
        assert_eq!(h.alloc().used_bytes(), 0);
    }
}
