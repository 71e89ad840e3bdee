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
