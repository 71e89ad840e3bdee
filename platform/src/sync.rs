//! The atomics facade. Every atomic the store core touches comes from here, so the `loom` model
//! checker can replace them
//! (`RUSTFLAGS="--cfg loom" cargo test --release -p gismo-core --test loom`).
//!
//! The types here are this module's own `#[repr(transparent)]` wrappers, not re-exports, so that
//! `gismo-core`'s `clippy.toml` can forbid `std::sync::atomic`'s types and fences outright
//! (`disallowed-types`, `disallowed-methods`): a direct use of `std::sync::atomic::AtomicU64` in
//! the store core fails `cargo clippy -- -D warnings`, while these wrappers, being other types,
//! do not.
//!
//! In normal builds the wrappers hold the `std` atomics, which are plain machine words and
//! therefore may be placed in shared memory: each [`AtomicU64`] is exactly an aligned `u64`
//! (`repr(transparent)` over `std::sync::atomic::AtomicU64`, which has the size and alignment of
//! `u64` on every target we build for). Under `loom` they hold loom's instrumented types, and the
//! structures that hold them live on the heap of one process.
//!
//! [`unmodelled`] has the same wrappers always backed by `std`, also under `loom`: for words that
//! code outside the models reads from a real mapping (the superblock) and for the region views of
//! `crate::shm`. In normal builds the two sets are the same types.
//!
//! Only the operations the store core needs are provided; add more here, not a direct import.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub use std::sync::atomic::Ordering;

/// Defines `#[repr(transparent)]` atomic wrapper types over `$inner` (a path to a module with
/// `std::sync::atomic`'s API: `std::sync::atomic` or `loom::sync::atomic`).
///
/// `const`: whether `new` can be a `const fn` (std's can, loom's cannot).
macro_rules! atomic_wrappers {
    (@common $name:ident, $inner:path, $value:ty, $($const:ident)?) => {
        #[doc = concat!("An atomic `", stringify!($value), "`: `", stringify!($inner),
            "`, through the atomics facade.")]
        #[repr(transparent)]
        pub struct $name($inner);

        impl $name {
            /// A new atomic holding `v`.
            #[inline]
            #[must_use]
            pub $($const)? fn new(v: $value) -> Self {
                Self(<$inner>::new(v))
            }

            /// Loads the value.
            #[inline]
            pub fn load(&self, order: Ordering) -> $value {
                self.0.load(order)
            }

            /// Stores `v`.
            #[inline]
            pub fn store(&self, v: $value, order: Ordering) {
                self.0.store(v, order);
            }

            /// Stores `v`, returning the previous value.
            #[inline]
            pub fn swap(&self, v: $value, order: Ordering) -> $value {
                self.0.swap(v, order)
            }

            /// Stores `new` if the value is `current`; `Ok(previous)` if it did, `Err(actual)`
            /// if not.
            ///
            /// # Errors
            /// `Err(actual)` when the value was not `current`.
            #[inline]
            pub fn compare_exchange(
                &self,
                current: $value,
                new: $value,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$value, $value> {
                self.0.compare_exchange(current, new, success, failure)
            }

            /// As [`Self::compare_exchange`], but may fail spuriously (for retry loops).
            ///
            /// # Errors
            /// `Err(actual)` when the value was not `current`, or spuriously.
            #[inline]
            pub fn compare_exchange_weak(
                &self,
                current: $value,
                new: $value,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$value, $value> {
                self.0.compare_exchange_weak(current, new, success, failure)
            }

            /// Bitwise and with `v`, returning the previous value.
            #[inline]
            pub fn fetch_and(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_and(v, order)
            }

            /// Bitwise or with `v`, returning the previous value.
            #[inline]
            pub fn fetch_or(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_or(v, order)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new(<$value>::default())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
    (@int $name:ident, $inner:path, $value:ty, $($const:ident)?) => {
        atomic_wrappers!(@common $name, $inner, $value, $($const)?);

        impl $name {
            /// Wrapping add of `v`, returning the previous value.
            #[inline]
            pub fn fetch_add(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_add(v, order)
            }

            /// Wrapping subtract of `v`, returning the previous value.
            #[inline]
            pub fn fetch_sub(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_sub(v, order)
            }

            /// Maximum with `v`, returning the previous value.
            #[inline]
            pub fn fetch_max(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_max(v, order)
            }

            /// Minimum with `v`, returning the previous value.
            #[inline]
            pub fn fetch_min(&self, v: $value, order: Ordering) -> $value {
                self.0.fetch_min(v, order)
            }
        }
    };
    ($atomic:ident; $($const:ident)?) => {
        atomic_wrappers!(@int AtomicU64, $atomic::AtomicU64, u64, $($const)?);
        atomic_wrappers!(@int AtomicU32, $atomic::AtomicU32, u32, $($const)?);
        atomic_wrappers!(@int AtomicU16, $atomic::AtomicU16, u16, $($const)?);
        atomic_wrappers!(@int AtomicU8, $atomic::AtomicU8, u8, $($const)?);
        atomic_wrappers!(@int AtomicUsize, $atomic::AtomicUsize, usize, $($const)?);
        atomic_wrappers!(@int AtomicI64, $atomic::AtomicI64, i64, $($const)?);
        atomic_wrappers!(@common AtomicBool, $atomic::AtomicBool, bool, $($const)?);
    };
}

/// The same wrappers, backed by `std` in every build (also under `loom`): for words that code
/// outside the loom models reads in a real mapping (the superblock), and for the region views of
/// `crate::shm` (`RegionSafe`). Not modelled by loom; in normal builds these are the very types
/// of the parent module.
pub mod unmodelled {
    use super::Ordering;
    use std::sync::atomic as std_atomic;

    atomic_wrappers!(std_atomic; const);

    /// A memory fence (`std::sync::atomic::fence`).
    #[inline]
    pub fn fence(order: Ordering) {
        std_atomic::fence(order);
    }
}

#[cfg(not(loom))]
pub use unmodelled::{
    fence, AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};

#[cfg(loom)]
mod modelled {
    use super::Ordering;
    use loom::sync::atomic as loom_atomic;

    atomic_wrappers!(loom_atomic;);

    /// A memory fence, modelled by loom.
    #[inline]
    pub fn fence(order: Ordering) {
        loom_atomic::fence(order);
    }
}

#[cfg(loom)]
pub use modelled::{
    fence, AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};

/// Hint that we are spinning on another thread or host; under loom, yields to the scheduler so
/// that spin loops terminate in the model.
#[inline]
pub fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

// The region layout depends on these being exactly the machine words they wrap.
static_assertions::assert_eq_size!(unmodelled::AtomicU64, u64);
static_assertions::assert_eq_align!(unmodelled::AtomicU64, u64);
static_assertions::assert_eq_size!(unmodelled::AtomicU32, u32);
static_assertions::assert_eq_align!(unmodelled::AtomicU32, u32);
