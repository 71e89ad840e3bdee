//! The atomics facade. Every atomic the store core touches comes from here, so the `loom` model
//! checker can replace them
//! (`RUSTFLAGS="--cfg loom" cargo test --release -p gismo-core --test loom`).
//!
//! In normal builds these are the `std` atomics, which are plain machine words and therefore may be
//! placed in shared memory: each `AtomicU64` is exactly an aligned `u64`. Under `loom` they are
//! loom's instrumented types and the structures that hold them live on the heap of one process.

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Hint that we are spinning on another thread or host; under loom, yields to the scheduler so
/// that spin loops terminate in the model.
#[inline]
pub fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
