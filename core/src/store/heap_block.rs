//! Raw heap blocks: the store's allocator without its directory, for a process that keeps its own
//! object table over a region no other process attaches as a store (the plasma fallback's
//! private segment).
//!
//! A [`HeapBlock`] is `size` bytes of the heap, reserved by the same lock-free allocator objects
//! use (so accounted in the used-bytes counter and safe against a crash at any instruction: the
//! metadata stays well formed) and freed when the block is dropped. It is not named by any
//! directory slot or intent, so `fsck` and the orphan collector cannot tell it from a leak: while
//! a region has raw blocks (the control block's `raw_bytes` is not 0) neither frees leaked blocks
//! or pages; they are reported only. A process that dies holding raw blocks leaves them behind
//! for good, which is why raw blocks are for regions that die with their one process.
//!
//! Ordering: a raw allocation adds its capacity to `raw_bytes` and then fences (SeqCst) before it
//! claims anything in the allocator, and the orphan collector reads `raw_bytes` after the SeqCst
//! fence that ends its scan. If the scan saw a block a raw allocation claimed, the fences
//! synchronize through that bitmap word and the collector sees `raw_bytes > 0` and frees nothing.

use std::sync::Arc;

use crate::store::allocator::capacity_for;
use crate::store::error::{Result, StoreError};
use crate::store::handle::Store;
use crate::sync::{fence, Ordering};

/// A block of the heap owned by this process; freed on drop.
#[must_use = "a dropped block is freed at once"]
pub struct HeapBlock {
    store: Arc<Store>,
    offset: u64,
    size: u64,
    capacity: u64,
}

impl std::fmt::Debug for HeapBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBlock")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl HeapBlock {
    /// Offset of the block from the start of the region.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The bytes asked for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes reserved (what the used-bytes counter counts for it).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // The block came from `alloc_block` with this size and is freed only here, so the free
        // cannot be a double free; a failure would mean corrupt allocator metadata, which fsck
        // reports. Nothing useful can be done with it in a destructor.
        if self.store.allocator().free(self.offset, self.size).is_ok() {
            self.store
                .control()
                .raw_bytes
                .fetch_sub(self.capacity, Ordering::Relaxed);
        }
    }
}

impl Store {
    /// Allocates a raw block of `size` bytes (at least one; 64-byte aligned) from the heap,
    /// without a directory entry. See the module docs for what that means for `fsck`.
    ///
    /// # Errors
    /// [`StoreError::StoreFull`] when the heap has no room (nothing is evicted here);
    /// [`StoreError::Corrupt`] if the allocator metadata is inconsistent.
    pub fn alloc_block(self: &Arc<Self>, size: u64) -> Result<HeapBlock> {
        let size = size.max(1);
        let a = self.allocator();
        let full = || StoreError::StoreFull {
            requested: size,
            free: a.heap_bytes().saturating_sub(a.used_bytes()),
            capacity: a.heap_bytes(),
        };
        if size > a.heap_bytes() {
            return Err(full());
        }
        let capacity = capacity_for(size);
        let raw = &self.control().raw_bytes;
        raw.fetch_add(capacity, Ordering::Relaxed);
        // SeqCst fence: pairs with the SeqCst fence after the orphan collector's scan (module
        // docs): a block claimed below and seen by a scan comes with `raw_bytes > 0`.
        fence(Ordering::SeqCst);
        match a.alloc(size) {
            Ok(got) => {
                debug_assert_eq!(got.capacity, capacity);
                Ok(HeapBlock {
                    store: Arc::clone(self),
                    offset: got.offset,
                    size,
                    capacity,
                })
            }
            Err(e) => {
                raw.fetch_sub(capacity, Ordering::Relaxed);
                Err(match e {
                    crate::store::allocator::AllocError::Full { .. } => full(),
                    other => StoreError::Corrupt(other.to_string()),
                })
            }
        }
    }

    /// Bytes reserved by live raw blocks ([`Store::alloc_block`]).
    pub fn raw_bytes(&self) -> u64 {
        self.control().raw_bytes.load(Ordering::Relaxed)
    }
}
