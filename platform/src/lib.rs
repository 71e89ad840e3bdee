//! GISMO's platform layer: what the store core stands on, with no knowledge of the store.
//!
//! - [`region`] — mapping device DAX, hugetlbfs, tmpfs/regular files and memfds.
//! - [`coherence`] — `memory_copy`, cache-line flush and invalidate, chosen from CPUID, and the
//!   payload-only non-coherent emulation used by tests.
//! - [`emulation`] — a non-coherent multi-host emulator for a whole region: a process joins an
//!   emulated host from its environment and maps that host's view (its "cache") of the region.
//! - [`sync`] and [`shm`] — shared-memory building blocks: the atomics facade (swapped for `loom`
//!   in model checks), and typed, bounds-checked views of region memory.
//! - [`clock`] and [`units`] — wall-clock milliseconds comparable across hosts, and byte sizes.
//!
//! Nothing inside the region is a pointer: every reference is an offset from the region's start,
//! resolved against the caller's own mapping, because every host maps the region at another address.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod clock;
pub mod coherence;
pub mod emulation;
pub mod region;
pub mod shm;
pub mod sync;
pub mod units;
