//! Shared-memory building blocks: what may live in the region, and typed, bounds-checked views
//! of it.
//!
//! The region is mapped by several processes on several hosts, each at its own address, and any of
//! them (or a bug, or a bit flip) may write any bytes anywhere in it. Two rules follow:
//!
//! * Only types for which *every* bit pattern is a valid value, that hold no pointers or handles,
//!   and that are `#[repr(C)]` with a fixed layout may be viewed in the region. They implement the
//!   `unsafe` marker trait [`RegionSafe`]. Mutable state in them is atomics only, so concurrent
//!   access from other processes is never a data race.
//! * Every offset read from the region is validated against the mapping before it becomes an
//!   address: [`view`] and [`view_slice`] do the bounds and alignment checks.

use crate::region::{Region, RegionError};

/// Marker for types that may be viewed in shared region memory.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or `#[repr(transparent)]`), contain no pointers, references
/// or process-local handles, accept every bit pattern as a valid value, and have all their
/// interior mutability through atomics (or none).
pub unsafe trait RegionSafe: Sync + Sized {}

// SAFETY: the facade's std-backed atomics of plain integers are `repr(transparent)` over the std
// atomics, which accept every bit pattern and are exactly the aligned machine word they hold.
unsafe impl RegionSafe for crate::sync::unmodelled::AtomicU64 {}
// SAFETY: as above.
unsafe impl RegionSafe for crate::sync::unmodelled::AtomicU32 {}
// SAFETY: plain integers and byte arrays accept every bit pattern.
unsafe impl RegionSafe for u64 {}
// SAFETY: as above.
unsafe impl RegionSafe for u8 {}

/// A typed reference to one `T` at `offset` in `region`, checked for bounds and alignment.
///
/// # Errors
/// [`RegionError::OutOfBounds`] if `offset..offset + size_of::<T>()` is not inside the mapping or
/// `offset` is not aligned for `T`.
pub fn view<T: RegionSafe>(region: &Region, offset: usize) -> Result<&T, RegionError> {
    let ptr = region.range_ptr(offset, std::mem::size_of::<T>(), std::mem::align_of::<T>())?;
    // SAFETY: the range is inside the live mapping owned by `region` (checked above) and aligned;
    // `T: RegionSafe` makes every bit pattern valid and all mutation atomic, so a shared reference
    // for the lifetime of `region` is sound.
    Ok(unsafe { &*ptr.as_ptr().cast::<T>() })
}

/// A typed slice of `count` values of `T` starting at `offset`, checked for bounds and alignment.
///
/// # Errors
/// As [`view`], also when `count * size_of::<T>()` overflows.
pub fn view_slice<T: RegionSafe>(
    region: &Region,
    offset: usize,
    count: usize,
) -> Result<&[T], RegionError> {
    let len = count
        .checked_mul(std::mem::size_of::<T>())
        .ok_or(RegionError::OutOfBounds {
            offset,
            len: usize::MAX,
            align: std::mem::align_of::<T>(),
            region_len: region.len(),
        })?;
    let ptr = region.range_ptr(offset, len, std::mem::align_of::<T>())?;
    // SAFETY: as in `view`: in bounds, aligned, every bit pattern valid, mutation only atomic.
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<T>(), count) })
}

/// Keeps a `T` on cache lines of its own: `T` at the start of a block 128-byte aligned and a
/// multiple of 128 bytes long, so that words that different writers update (ring head vs tail,
/// a role word vs the counters) never share a line.
///
/// Our own type rather than `crossbeam_utils::CachePadded`: that one's alignment depends on the
/// target (128 on x86_64 and aarch64, 32, 64 or 256 elsewhere), while the region is an on-media
/// format whose layout must be identical on every target and in every build. 128 bytes covers
/// the spatial prefetcher pairs of x86_64 and the 128-byte lines of some ARM parts (and CXL
/// devices transfer 64-byte lines, so each padded word is also alone on its device line).
#[repr(C, align(128))]
#[derive(Default)]
pub struct CachePadded<T> {
    value: T,
}

/// The size and alignment of [`CachePadded`] blocks, in bytes.
pub const CACHE_PADDED_ALIGN: usize = 128;

impl<T> CachePadded<T> {
    /// Pads `value`.
    #[inline]
    pub const fn new(value: T) -> Self {
        Self { value }
    }

    /// The padded value.
    #[inline]
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CachePadded").field(&self.value).finish()
    }
}

// SAFETY: `repr(C)` with `T` at offset 0 followed only by padding; `T: RegionSafe` accepts every
// bit pattern and holds no pointers, and the padding bytes are never read as a value.
unsafe impl<T: RegionSafe> RegionSafe for CachePadded<T> {}

static_assertions::const_assert_eq!(std::mem::align_of::<CachePadded<u64>>(), CACHE_PADDED_ALIGN);
static_assertions::const_assert_eq!(std::mem::size_of::<CachePadded<u64>>(), CACHE_PADDED_ALIGN);
static_assertions::const_assert_eq!(
    std::mem::size_of::<CachePadded<[u64; 17]>>(),
    2 * CACHE_PADDED_ALIGN
);
