//! GISMO: a shared-memory object store for Ray that lives in one region of (CXL) memory mapped by
//! several hosts at once.
//!
//! The crate is layered; each layer only uses the ones above it in this list:
//!
//! 1. [`region`] — platform: mapping device DAX, hugetlbfs, tmpfs/regular files and memfds.
//! 2. [`coherence`] — platform: `memory_copy`, cache-line flush and invalidate, chosen from CPUID,
//!    and the non-coherent multi-host emulation used by tests.
//! 3. [`sync`] and [`shm`] — shared-memory building blocks: the atomics facade (swapped for `loom`
//!    in model checks), offsets, and typed, bounds-checked views of region memory.
//! 4. [`format`] — the on-region format: superblock, section layout, attach-time validation.
//! 5. [`store`] — the store core: object directory, allocator, client table, per-client references,
//!    and the [`store::Store`] handle that creates, seals, gets, releases and deletes objects.
//! 6. [`interface`] — Ray-shaped client and runner interfaces and status codes.
//! 7. [`plugin`] — plugin configuration, the C ABI (`CreateRunner`/`CreateClient`) and the
//!    plugin manager that loads shared-library plugins.
//!
//! Nothing inside the region is a pointer: every reference is an offset from the region's start,
//! resolved against the caller's own mapping, because every host maps the region at another address.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod coherence;
pub mod format;
#[cfg(not(loom))]
pub mod interface;
#[cfg(not(loom))]
pub mod plasma;
#[cfg(not(loom))]
pub mod plugin;
pub mod region;
pub mod shm;
pub mod store;
pub mod sync;
pub mod units;
