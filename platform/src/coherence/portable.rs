//! The portable fallback, used on every architecture other than x86-64: plain copies and a
//! sequentially consistent fence, no cache maintenance at all.
//!
//! What it guarantees is exactly what Rust's memory model guarantees on *coherent* memory: the
//! fence (together with the store's `Release`/`Acquire` atomics) orders the copy before the
//! publication, so another thread or process that shares this machine's caches — or any host of a
//! hardware-coherent CXL device — sees the bytes. It guarantees nothing on non-coherent memory:
//! no line is written back, no stale line is dropped. A region formatted for `Flush` coherence
//! must therefore only be shared across hosts from x86-64 (or from a future port of the
//! `x86_64.rs` kernels to the platform's cache-maintenance instructions, e.g. `dc cvac` /
//! `dc civac` on AArch64).

use std::ptr;
use std::sync::atomic::{fence, Ordering};

#[cfg(not(target_arch = "x86_64"))]
use super::strategy::CopyStrategy;

/// Plain copy, then a `SeqCst` fence.
///
/// # Safety
/// `src..src+len` is readable and `dst..dst+len` writable; they do not overlap.
pub(super) unsafe fn copy_fenced(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { ptr::copy_nonoverlapping(src, dst, len) };
    fence(Ordering::SeqCst);
}

/// The portable counterpart of `x86_64::copy_written_back`: [`copy_fenced`].
///
/// # Safety
/// As [`copy_fenced`].
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn copy_written_back(_: &CopyStrategy, dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { copy_fenced(dst, src, len) }
}

/// The portable counterpart of `x86_64::write_back`: a `SeqCst` fence.
///
/// # Safety
/// None beyond the x86-64 counterpart's (`ptr..ptr+len` mapped); nothing is dereferenced.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn write_back(_: &CopyStrategy, _ptr: *const u8, _len: usize) {
    fence(Ordering::SeqCst);
}

/// The portable counterpart of `x86_64::invalidate`: a `SeqCst` fence.
///
/// # Safety
/// None beyond the x86-64 counterpart's (`ptr..ptr+len` mapped); nothing is dereferenced.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn invalidate(_: &CopyStrategy, _ptr: *const u8, _len: usize) {
    fence(Ordering::SeqCst);
}
