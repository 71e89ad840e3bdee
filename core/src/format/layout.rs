//! Section layout: where each structure lives in the region, as a pure function of the region's
//! size and its [`Geometry`]. Attach recomputes the layout from the stored geometry and requires
//! the stored section table to match it exactly, so a corrupt table can never point a structure
//! outside the region or onto another structure.

use bytemuck::{Pod, Zeroable};
use static_assertions::const_assert_eq;

use super::superblock::{FormatError, SUPERBLOCK_SIZE};
use crate::coherence::CoherenceMode;

/// Size of one object directory slot (see `store::directory`).
pub const DIR_SLOT_SIZE: u64 = 128;
/// Size of one client table entry (see `store::clients`).
pub const CLIENT_ENTRY_SIZE: u64 = 128;
/// Size of one per-client reference record (see `store::refs`).
pub const REF_ENTRY_SIZE: u64 = 8;
/// Size of one host table entry (three cache lines: identity and consumer words, the producers'
/// ring tail, the consumer's ring head).
pub const HOST_ENTRY_SIZE: u64 = 384;
/// Size of one owner-node table entry (raylet id + IP address of an owner).
pub const NODE_ENTRY_SIZE: u64 = 64;
/// Size of one event-ring record (seal and delete notifications for a host's runner).
pub const EVENT_SIZE: u64 = 64;
/// Size of the control block (allocator heads, leader lease, maintenance lock, counters; one
/// 128-byte line per word).
pub const CONTROL_SIZE: u64 = 12288;
/// Allocation granule of the heap: large objects are runs of whole pages.
pub const PAGE_SIZE: u64 = 4096;
/// Small objects live in chunks of this size, each carved into blocks of one size class.
pub const CHUNK_SIZE: u64 = 64 * 1024;
/// Size of one chunk descriptor (run state and the block bitmap of a small-object chunk).
pub const CHUNK_DESC_SIZE: u64 = 128;
/// Alignment of every section.
pub const SECTION_ALIGN: u64 = 4096;

/// The sizing parameters chosen at format time. Stored in the superblock.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Geometry {
    /// Directory slots; a power of two.
    pub dir_capacity: u64,
    /// Pages in the heap; a multiple of `CHUNK_SIZE / PAGE_SIZE`.
    pub heap_pages: u64,
    /// Client table entries.
    pub max_clients: u32,
    /// Reference records per client; a power of two.
    pub refs_per_client: u32,
    /// Host table entries (and event rings).
    pub max_hosts: u32,
    /// Owner-node table entries; a power of two.
    pub node_capacity: u32,
    /// Records per host event ring; a power of two.
    pub ring_capacity: u32,
    /// `PAGE_SIZE` at format time (checked on attach).
    pub page_size: u32,
    /// `CHUNK_SIZE` at format time (checked on attach).
    pub chunk_size: u32,
    pub _reserved: u32,
}
const_assert_eq!(std::mem::size_of::<Geometry>(), 48);

/// One section: a byte range of the region.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Section {
    pub offset: u64,
    pub len: u64,
}
const_assert_eq!(std::mem::size_of::<Section>(), 16);

impl Section {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// The sections, in region order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum SectionKind {
    Control = 0,
    Hosts,
    Clients,
    ClientRefs,
    Nodes,
    Events,
    Directory,
    PageBitmap,
    Chunks,
    Heap,
}

impl SectionKind {
    pub const COUNT: usize = 10;
    pub const ALL: [SectionKind; Self::COUNT] = [
        SectionKind::Control,
        SectionKind::Hosts,
        SectionKind::Clients,
        SectionKind::ClientRefs,
        SectionKind::Nodes,
        SectionKind::Events,
        SectionKind::Directory,
        SectionKind::PageBitmap,
        SectionKind::Chunks,
        SectionKind::Heap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Control => "control",
            SectionKind::Hosts => "hosts",
            SectionKind::Clients => "clients",
            SectionKind::ClientRefs => "client-refs",
            SectionKind::Nodes => "nodes",
            SectionKind::Events => "events",
            SectionKind::Directory => "directory",
            SectionKind::PageBitmap => "page-bitmap",
            SectionKind::Chunks => "chunks",
            SectionKind::Heap => "heap",
        }
    }
}

/// What `format` is asked for. `None` fields are derived from the region size.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    pub coherence: CoherenceMode,
    pub dir_capacity: Option<u64>,
    pub max_clients: u32,
    pub refs_per_client: u32,
    pub max_hosts: u32,
    pub node_capacity: u32,
    pub ring_capacity: u32,
    /// Overwrite a region that already holds a valid superblock.
    pub force: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            coherence: CoherenceMode::Hardware,
            dir_capacity: None,
            max_clients: 128,
            refs_per_client: 2048,
            max_hosts: 16,
            node_capacity: 1024,
            ring_capacity: 1024,
            force: false,
        }
    }
}

/// The largest directory: slot indices (and the `FREEING` commit record) need 31 bits.
pub const MAX_DIR_CAPACITY: u64 = 1 << 31;
/// The most heap chunks: the allocator's partial stacks and hints store `index + 1` in 32 bits
/// (so a heap of at most about 256 TiB).
pub const MAX_CHUNKS: u64 = u32::MAX as u64 - 1;

/// A region's complete layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub total_size: u64,
    pub geometry: Geometry,
    pub sections: [Section; SectionKind::COUNT],
}

/// Words (`u64`) of the page bitmap proper: one bit per heap page.
pub fn page_bitmap_words(heap_pages: u64) -> u64 {
    heap_pages.div_ceil(64)
}

/// Words (`u64`) of one node of the free-run index (`store::allocator`'s run index): the pages
/// above its bottom free run, the pages below its top free run, and two words of run-length
/// classes (all zero: a wholly free node, so a fresh region needs no initialisation).
pub const RUN_INDEX_NODE_WORDS: u64 = 4;

/// Nodes of the free-run index for a heap of `heap_pages` pages, over all its levels: one leaf
/// per 64 bitmap words, one node per 64 nodes of the level below, up to a single root.
pub fn run_index_nodes(heap_pages: u64) -> u64 {
    let mut level = page_bitmap_words(heap_pages).div_ceil(64).max(1);
    let mut total = level;
    while level > 1 {
        level = level.div_ceil(64);
        total += level;
    }
    total
}

/// Words (`u64`) of the page-bitmap summary that follows the bitmap in its section: one *used*
/// and one *full* bit per bitmap word, as two arrays, then the free-run index
/// (`store::allocator`'s summary and run index).
pub fn page_summary_words(heap_pages: u64) -> u64 {
    2 * page_bitmap_words(heap_pages).div_ceil(64)
        + RUN_INDEX_NODE_WORDS * run_index_nodes(heap_pages)
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|x| x / a * a)
}

impl Layout {
    /// The section table for a region of `total_size` bytes with the given geometry; `None` if
    /// the sizes overflow or do not fit.
    pub fn from_geometry(total_size: u64, g: &Geometry) -> Option<Layout> {
        let lens: [u64; SectionKind::COUNT] = [
            CONTROL_SIZE,
            u64::from(g.max_hosts).checked_mul(HOST_ENTRY_SIZE)?,
            u64::from(g.max_clients).checked_mul(CLIENT_ENTRY_SIZE)?,
            u64::from(g.max_clients)
                .checked_mul(u64::from(g.refs_per_client))?
                .checked_mul(REF_ENTRY_SIZE)?,
            u64::from(g.node_capacity).checked_mul(NODE_ENTRY_SIZE)?,
            u64::from(g.max_hosts)
                .checked_mul(u64::from(g.ring_capacity))?
                .checked_mul(EVENT_SIZE)?,
            g.dir_capacity.checked_mul(DIR_SLOT_SIZE)?,
            page_bitmap_words(g.heap_pages)
                .checked_add(page_summary_words(g.heap_pages))?
                .checked_mul(8)?,
            (g.heap_pages / (CHUNK_SIZE / PAGE_SIZE)).checked_mul(CHUNK_DESC_SIZE)?,
            g.heap_pages.checked_mul(PAGE_SIZE)?,
        ];
        let mut sections = [Section::default(); SectionKind::COUNT];
        let mut cursor = SUPERBLOCK_SIZE as u64;
        for (i, len) in lens.iter().enumerate() {
            let align = if i == SectionKind::Heap as usize {
                CHUNK_SIZE
            } else {
                SECTION_ALIGN
            };
            cursor = align_up(cursor, align)?;
            sections[i] = Section {
                offset: cursor,
                len: *len,
            };
            cursor = cursor.checked_add(align_up(*len, SECTION_ALIGN)?)?;
        }
        (cursor <= total_size).then_some(Layout {
            total_size,
            geometry: *g,
            sections,
        })
    }

    /// Chooses a geometry for a region of `total_size` bytes: everything not taken by metadata
    /// becomes heap.
    ///
    /// # Errors
    /// [`FormatError::TooSmall`] when the region cannot hold the metadata and at least one chunk
    /// of heap; [`FormatError::BadGeometry`] for options out of range.
    pub fn compute(total_size: u64, opts: &FormatOptions) -> Result<Layout, FormatError> {
        let bad = |what: &'static str| FormatError::BadGeometry(what);
        if opts.max_clients == 0 || opts.max_clients > 65_535 {
            return Err(bad("max_clients must be 1..=65535"));
        }
        if opts.max_hosts == 0 || opts.max_hosts > 4096 {
            return Err(bad("max_hosts must be 1..=4096"));
        }
        for (v, what) in [
            (
                opts.refs_per_client,
                "refs_per_client must be a power of two >= 16",
            ),
            (
                opts.node_capacity,
                "node_capacity must be a power of two >= 16",
            ),
            (
                opts.ring_capacity,
                "ring_capacity must be a power of two >= 16",
            ),
        ] {
            if !v.is_power_of_two() || v < 16 {
                return Err(bad(what));
            }
        }
        let pages_per_chunk = CHUNK_SIZE / PAGE_SIZE;
        // Derived capacities are clamped to what attach accepts (core review L10): above a
        // 64 TiB heap the directory stays at 2^31 slots.
        let dir_for = |heap_bytes: u64| -> u64 {
            opts.dir_capacity.unwrap_or_else(|| {
                (heap_bytes / (32 * 1024))
                    .clamp(1024, MAX_DIR_CAPACITY)
                    .next_power_of_two()
            })
        };
        if let Some(c) = opts.dir_capacity {
            if !c.is_power_of_two() || !(64..=(1 << 31)).contains(&c) {
                return Err(bad("dir_capacity must be a power of two in 64..=2^31"));
            }
        }
        let mut g = Geometry {
            dir_capacity: dir_for(total_size),
            heap_pages: 0,
            max_clients: opts.max_clients,
            refs_per_client: opts.refs_per_client,
            max_hosts: opts.max_hosts,
            node_capacity: opts.node_capacity,
            ring_capacity: opts.ring_capacity,
            page_size: PAGE_SIZE as u32,
            chunk_size: CHUNK_SIZE as u32,
            _reserved: 0,
        };
        let too_small = FormatError::TooSmall { size: total_size };
        let meta = Layout::from_geometry(u64::MAX, &g).ok_or(bad("sizes overflow"))?;
        let fixed = meta.sections[SectionKind::Heap as usize].offset;
        // Each heap chunk costs its pages, its descriptor and its bitmap bits (2 bytes, plus
        // 2 summary bits per 64 pages and about 256 run-index bits per 4096 pages, together
        // under 2 bits per chunk, which the 1 byte of slack covers): solve for the largest
        // heap that fits, then shrink until the exact layout fits.
        let per_chunk = CHUNK_SIZE + CHUNK_DESC_SIZE + pages_per_chunk / 8 + 1;
        let mut chunks = total_size.checked_sub(fixed).ok_or(too_small.clone())? / per_chunk;
        if chunks > MAX_CHUNKS {
            return Err(FormatError::TooLarge {
                size: total_size,
                max_heap: MAX_CHUNKS * CHUNK_SIZE,
            });
        }
        loop {
            if chunks == 0 {
                return Err(too_small);
            }
            g.heap_pages = chunks * pages_per_chunk;
            if opts.dir_capacity.is_none() {
                g.dir_capacity = dir_for(g.heap_pages * PAGE_SIZE);
            }
            if let Some(layout) = Layout::from_geometry(total_size, &g) {
                return Ok(layout);
            }
            chunks -= 1;
        }
    }

    pub fn section(&self, kind: SectionKind) -> Section {
        self.sections[kind as usize]
    }

    /// Checks the geometry's own invariants (independently of any stored section table).
    pub fn check_geometry(g: &Geometry) -> Result<(), FormatError> {
        let bad = |what: &'static str| Err(FormatError::BadGeometry(what));
        if u64::from(g.page_size) != PAGE_SIZE || u64::from(g.chunk_size) != CHUNK_SIZE {
            return bad("page or chunk size differs from this build's");
        }
        if !g.dir_capacity.is_power_of_two() || g.dir_capacity > (1 << 31) {
            return bad("directory capacity is not a power of two <= 2^31");
        }
        if g.heap_pages == 0 || g.heap_pages % (CHUNK_SIZE / PAGE_SIZE) != 0 {
            return bad("heap is not a whole number of chunks");
        }
        if g.heap_pages / (CHUNK_SIZE / PAGE_SIZE) > MAX_CHUNKS {
            return bad("heap has more chunks than a 32-bit chunk index can name");
        }
        if g.max_clients == 0 || g.max_clients > 65_535 || g.max_hosts == 0 || g.max_hosts > 4096 {
            return bad("client or host count out of range");
        }
        if !g.refs_per_client.is_power_of_two()
            || !g.node_capacity.is_power_of_two()
            || !g.ring_capacity.is_power_of_two()
        {
            return bad("a table capacity is not a power of two");
        }
        Ok(())
    }

    /// Metadata bytes (directory + allocator) as a fraction of the heap.
    pub fn metadata_ratio(&self) -> f64 {
        let meta = self.section(SectionKind::Directory).len
            + self.section(SectionKind::PageBitmap).len
            + self.section(SectionKind::Chunks).len;
        meta as f64 / self.section(SectionKind::Heap).len as f64
    }
}
