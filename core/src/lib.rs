//! GISMO's store core: a shared-memory object store that lives in one region of (CXL) memory
//! mapped by several hosts at once.
//!
//! - [`format`] — the on-region format: superblock, section layout, attach-time validation.
//! - [`store`] — the object directory, allocator, client table, per-client references, and the
//!   [`store::Store`] handle that creates, seals, gets, releases and deletes objects.
//! - [`xhost`] — protocol v2's cross-host building blocks (single-writer structures written back
//!   and evicted explicitly, for memory without cross-host coherence).
//!
//! It stands on `gismo-platform` (region, coherence, the atomics facade) and knows nothing of
//! plugins: the interfaces Ray sees are `gismo-plugin`'s, implemented by the plugin crates.
#![deny(unsafe_op_in_unsafe_fn)]

// The platform modules this crate's code names as `crate::region`, `crate::sync`, ... (the paths
// they had when the store and the platform were one crate). Not re-exported.
use gismo_platform::{clock, coherence, region, shm, sync};

pub mod format;
pub mod store;
pub mod xhost;
