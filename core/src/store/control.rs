//! The control block: region-wide mutable state that is not per object — allocator heads, the
//! leader lease, and counters.

use crate::store::allocator::AllocHeads;
use crate::sync::AtomicU64;

/// The control block, at the start of the control section (4 KiB).
#[repr(C)]
pub struct ControlBlock {
    pub alloc: AllocHeads,
    /// `epoch:32 | client index + 1:32` of the server holding the leader lease (0 = none).
    pub leader: AtomicU64,
    /// Wall-clock ms until which the leader's lease is valid.
    pub leader_lease_until_ms: AtomicU64,
    /// Monotonic counters.
    pub objects_created: AtomicU64,
    pub objects_sealed: AtomicU64,
    pub objects_deleted: AtomicU64,
    pub objects_evicted: AtomicU64,
    pub objects_aborted: AtomicU64,
    pub clients_reaped: AtomicU64,
    pub bytes_created: AtomicU64,
    /// One past the highest client-table index ever claimed: reference scans stop there.
    pub clients_hwm: AtomicU64,
    /// Creates that failed for lack of room even after evicting: runners watch it and call
    /// the raylet's `object_store_full` and `spill_objects` callbacks.
    pub create_full_events: AtomicU64,
    /// `epoch:32 | client index + 1:32` of the client holding the maintenance lock (reaping and
    /// orphan collection; `Store::begin_maintenance`), 0 = none.
    pub maintenance: AtomicU64,
    /// Bumped by the holder of the maintenance lock at every check that it still holds it: a
    /// taker that sees it unchanged for `MAINTENANCE_LEASE` takes the lock over.
    pub maintenance_beat: AtomicU64,
    /// Bytes reserved by live raw heap blocks (`Store::alloc_block`), which no directory slot
    /// names: while not 0, fsck and the orphan collector report leaks but never free them.
    pub raw_bytes: AtomicU64,
    pub _reserved: [AtomicU64; 50],
}

#[cfg(not(loom))]
static_assertions::const_assert!(
    std::mem::size_of::<ControlBlock>() as u64 <= crate::format::layout::CONTROL_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for ControlBlock {}
