//! The control block: region-wide mutable state that is not per object — allocator heads, the
//! leader lease, and counters.

use crate::shm::CachePadded;
use crate::store::allocator::AllocHeads;
use crate::sync::AtomicU64;

/// The control block, at the start of the control section (`CONTROL_SIZE`, 12 KiB).
///
/// Every word sits on cache lines of its own ([`CachePadded`], 128 bytes): the words are written
/// by different parties — allocating clients (the allocator heads and counters), the leader and
/// its candidates (`leader`, `leader_lease_until_ms`), the maintenance lock holder and takers
/// (`maintenance`, `maintenance_beat`), registering clients (`clients_hwm`), and every create,
/// seal and delete (the statistics counters) — and must not contend for one line.
#[repr(C)]
pub struct ControlBlock {
    pub alloc: AllocHeads,
    /// `epoch:32 | client index + 1:32` of the server holding the leader lease (0 = none).
    pub leader: CachePadded<AtomicU64>,
    /// Wall-clock ms until which the leader's lease is valid.
    pub leader_lease_until_ms: CachePadded<AtomicU64>,
    /// Monotonic counters.
    pub objects_created: CachePadded<AtomicU64>,
    pub objects_sealed: CachePadded<AtomicU64>,
    pub objects_deleted: CachePadded<AtomicU64>,
    pub objects_evicted: CachePadded<AtomicU64>,
    pub objects_aborted: CachePadded<AtomicU64>,
    pub clients_reaped: CachePadded<AtomicU64>,
    pub bytes_created: CachePadded<AtomicU64>,
    /// One past the highest client-table index ever claimed: reference scans stop there.
    pub clients_hwm: CachePadded<AtomicU64>,
    /// Creates that failed for lack of room even after evicting: runners watch it and call
    /// the raylet's `object_store_full` and `spill_objects` callbacks.
    pub create_full_events: CachePadded<AtomicU64>,
    /// `epoch:32 | client index + 1:32` of the client holding the maintenance lock (reaping and
    /// orphan collection; `Store::begin_maintenance`), 0 = none.
    pub maintenance: CachePadded<AtomicU64>,
    /// Bumped by the holder of the maintenance lock at every check that it still holds it: a
    /// taker that sees it unchanged for `MAINTENANCE_LEASE` takes the lock over.
    pub maintenance_beat: CachePadded<AtomicU64>,
    /// Bytes reserved by live raw heap blocks (`Store::alloc_block`), which no directory slot
    /// names: while not 0, fsck and the orphan collector report leaks but never free them.
    pub raw_bytes: CachePadded<AtomicU64>,
    /// Sweeps owed (finish orphaned deletes, collect orphaned blocks): raised by a reap that
    /// found its victim died inside an operation or could not be reaped from its own records, and
    /// by a takeover of the maintenance lock; lowered by a maintainer only after a complete sweep
    /// (by a CAS from the value it saw before sweeping, so a sweep owed meanwhile stays owed). In
    /// the region, so that no crash or timeout loses the debt. Zero in older regions.
    pub sweeps_owed: CachePadded<AtomicU64>,
    /// Creates whose owner node could not be recorded (the owner-node table is full): their
    /// slots name no owner node (core review L6; `Stats::owner_nodes_dropped`).
    pub owner_nodes_dropped: CachePadded<AtomicU64>,
    /// Room for later words, one line each (zero in every region formatted so far).
    pub _reserved: [CachePadded<AtomicU64>; 13],
}

/// Byte offsets in the region format (docs/region-format.md, "Control block"): the allocator's
/// 66 lines, then one 128-byte line per word.
#[cfg(not(loom))]
mod layout_checks {
    use super::ControlBlock;
    use static_assertions::const_assert_eq;
    use std::mem::{align_of, offset_of, size_of};

    const_assert_eq!(align_of::<ControlBlock>(), 128);
    const_assert_eq!(offset_of!(ControlBlock, alloc), 0);
    const_assert_eq!(offset_of!(ControlBlock, leader), 8448);
    const_assert_eq!(offset_of!(ControlBlock, leader_lease_until_ms), 8576);
    const_assert_eq!(offset_of!(ControlBlock, objects_created), 8704);
    const_assert_eq!(offset_of!(ControlBlock, bytes_created), 9472);
    const_assert_eq!(offset_of!(ControlBlock, clients_hwm), 9600);
    const_assert_eq!(offset_of!(ControlBlock, create_full_events), 9728);
    const_assert_eq!(offset_of!(ControlBlock, maintenance), 9856);
    const_assert_eq!(offset_of!(ControlBlock, maintenance_beat), 9984);
    const_assert_eq!(offset_of!(ControlBlock, raw_bytes), 10112);
    const_assert_eq!(offset_of!(ControlBlock, sweeps_owed), 10240);
    const_assert_eq!(offset_of!(ControlBlock, owner_nodes_dropped), 10368);
    const_assert_eq!(offset_of!(ControlBlock, _reserved), 10496);
    const_assert_eq!(size_of::<ControlBlock>(), 12160);
    static_assertions::const_assert!(
        size_of::<ControlBlock>() as u64 <= crate::format::layout::CONTROL_SIZE
    );
}

// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for ControlBlock {}
