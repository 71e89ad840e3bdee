//! [`LocalBuffer`]: the private memory a creator writes an object into before `seal` sends it.
//!
//! The buffer is owned by the [`WritableBuffer`](crate::interface::WritableBuffer)'s release handle
//! (and, until seal or abort, by the creating client too), so it is freed only when *both* are done
//! with it: a safe write through a `WritableBuffer` kept past its seal or abort lands in live
//! memory, never in freed memory.

use std::alloc::Layout;
use std::ptr::NonNull;

/// Zeroed heap memory of a fixed length, written through raw pointers only.
pub struct LocalBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain heap memory; the plugin's contract (write, then seal) orders the
// creator's writes before the seal's reads, and nothing else touches it.
unsafe impl Send for LocalBuffer {}
// SAFETY: as above; shared references only read (`read`) under that contract.
unsafe impl Sync for LocalBuffer {}

impl LocalBuffer {
    /// `len` zero bytes (untouched pages for large sizes), or `None` if the allocation fails.
    pub fn zeroed(len: usize) -> Option<LocalBuffer> {
        if len == 0 {
            return Some(LocalBuffer {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        let layout = Layout::array::<u8>(len).ok()?;
        // SAFETY: the layout has a non-zero size (len > 0).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(p).map(|ptr| LocalBuffer { ptr, len })
    }

    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, for the seal.
    ///
    /// # Safety
    /// No write to the buffer may run while the returned slice lives (the creator writes before
    /// it seals: the interface's contract).
    pub unsafe fn read(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised (zeroed) bytes for the buffer's lifetime;
        // no concurrent writer by the caller's contract. A dangling pointer with len 0 is fine.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LocalBuffer {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Ok(layout) = Layout::array::<u8>(self.len) {
            // SAFETY: allocated in `zeroed` with this same layout and not freed before.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LocalBuffer;

    #[test]
    fn zeroed_write_read() {
        let b = LocalBuffer::zeroed(4096).unwrap();
        // SAFETY: no write runs while the slice lives.
        assert!(unsafe { b.read() }.iter().all(|&x| x == 0));
        // SAFETY: in bounds; no slice is alive.
        unsafe { b.as_mut_ptr().add(10).write(7) };
        // SAFETY: as above.
        assert_eq!(unsafe { b.read() }[10], 7);
        let e = LocalBuffer::zeroed(0).unwrap();
        // SAFETY: empty.
        assert!(unsafe { e.read() }.is_empty());
    }

    #[test]
    fn absurd_sizes_fail_cleanly() {
        assert!(LocalBuffer::zeroed(usize::MAX).is_none());
    }
}
