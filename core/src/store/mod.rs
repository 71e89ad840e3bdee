//! The store core: any process that maps the region creates, seals, gets, releases and deletes
//! objects with atomic operations on the region alone — no server round trip, no copy.
//!
//! * [`directory`] — the lock-free object directory (ids → slots, the object state machine).
//! * [`allocator`] — the lock-free heap allocator (size-class chunks and page runs).
//! * [`refs`] — per-client reference tables (who holds what; crash-safe reference counts).
//! * [`clients`] — the client table (identity, liveness, epochs, in-flight intents).
//! * [`registration`] — claiming and publishing a client table entry (`connect`), and reclaiming
//!   one left half registered.
//! * [`fencing`] — a registered client's writes checked against its entry word, and the reaper's
//!   steps over a fenced entry (fence, references, free).
//! * [`HeapBlock`] — a raw heap block without a directory entry, for a process that keeps its own
//!   object table over a private region (the plasma fallback).
//! * [`nodes`] — interned owner nodes (raylet id + IP) referenced by directory slots.
//! * [`eviction`] — the eviction policy (which objects to evict, and how much, for a create or
//!   under memory pressure).
//! * [`maintenance`] — the [`Maintainer`](maintenance::Maintainer): the periodic work that keeps a
//!   region healthy (own heartbeat, leader lease, reaping, orphan collection, eviction).
//! * [`Store`] — one process's attachment to a region; [`Client`] — a registered client.
//!
//! The object lifecycle and its crash protocol are specified in `docs/store.md`.

pub mod allocator;
pub mod clients;
pub mod control;
pub mod crashpoint;
pub mod directory;
pub mod error;
pub mod events;
pub mod fencing;
pub mod leader;
pub mod nodes;
pub mod object_id;
pub mod refs;
pub mod registration;
pub mod ring_claim;

#[cfg(not(loom))]
mod client;
#[cfg(not(loom))]
pub mod eviction;
#[cfg(not(loom))]
pub mod fsck;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod heap_block;
#[cfg(not(loom))]
pub mod heartbeat;
#[cfg(not(loom))]
pub mod maintenance;
#[cfg(not(loom))]
mod reaper;
#[cfg(not(loom))]
mod usage;
#[cfg(not(loom))]
pub mod wait;

#[cfg(not(loom))]
pub use client::{
    Client, CreateBuffer, CreateInfo, DeleteOutcome, FenceToken, Located, ObjectRef, ObjectSource,
    OwnerAddress,
};
pub use error::{Result, StoreError};
#[cfg(not(loom))]
pub use handle::{ClientSummary, ObjectSummary, Stats, Store};
#[cfg(not(loom))]
pub use heap_block::HeapBlock;
pub use object_id::ObjectId;
#[cfg(not(loom))]
pub use reaper::{DeathCause, Maintenance, ReapReport, MAINTENANCE_LEASE};
