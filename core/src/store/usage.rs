//! How full the store is, and the counters plugins read or bump: a small read-mostly API over the
//! control block and the allocator, so that code above the store core never touches either.

use crate::sync::Ordering;

use crate::store::Store;

impl Store {
    /// Bytes of the object heap: the store's capacity.
    pub fn heap_bytes(&self) -> u64 {
        self.allocator().heap_bytes()
    }

    /// Bytes of the heap that live allocations hold.
    pub fn used_bytes(&self) -> u64 {
        self.allocator().used_bytes()
    }

    /// Bytes of objects ever created in this region (data plus metadata).
    pub fn bytes_created(&self) -> u64 {
        self.control().bytes_created.load(Ordering::Relaxed)
    }

    /// How many creates failed for want of space even after eviction. Runners compare it with
    /// the value they saw last and call the raylet's full and spill callbacks when it moved.
    pub fn create_full_events(&self) -> u64 {
        self.control().create_full_events.load(Ordering::Relaxed)
    }

    /// Counts a create that failed for want of space even after eviction (see
    /// [`Store::create_full_events`]).
    pub fn note_create_full(&self) {
        // Relaxed: a statistic polled by runners; it publishes nothing.
        self.control()
            .create_full_events
            .fetch_add(1, Ordering::Relaxed);
    }
}
