//! The buffer-protocol classes: a sealed object read in place, and an object being written.
//!
//! Both count their exports (`memoryview`s, NumPy arrays, anything that took a `Py_buffer`).
//! Each export holds a strong reference to the Python object (`view.obj`), so the Rust object —
//! and with it the store reference and the client's mapping — lives at least as long as the last
//! view. `release()` gives the store reference back early, and refuses while views exist: the
//! bytes under a live view must never be deleted or reused.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use gismo::GismoClient;
use gismo_core::store::ObjectId;
use gismo_plugin::interface::{self, ObjectStoreClient};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic (an Option that is taken or not).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one-dimensional unsigned-byte format every export uses.
const FORMAT_B: &CStr = c"B";

/// Fills `view` for `len` bytes at `data`, exported by `owner`.
///
/// # Safety
/// `view` must be the `Py_buffer` CPython passed to `bf_getbuffer`; `data..data+len` must stay
/// valid until the matching `bf_releasebuffer` (the caller's export count guarantees that).
unsafe fn fill_view(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    data: *mut u8,
    len: usize,
    readonly: bool,
    owner: Bound<'_, PyAny>,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("null Py_buffer"));
    }
    let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("object too large"))?;
    // SAFETY: `view` is the non-null Py_buffer of this request (contract); every pointer stored
    // in it stays valid until the release: `shape` and `strides` point into the view itself,
    // `format` to a static C string, `buf` to bytes the caller keeps alive.
    unsafe {
        (*view).obj = owner.into_ptr();
        (*view).buf = data.cast::<c_void>();
        (*view).len = len;
        (*view).readonly = c_int::from(readonly);
        (*view).itemsize = 1;
        (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
            FORMAT_B.as_ptr().cast_mut()
        } else {
            ptr::null_mut()
        };
        (*view).ndim = 1;
        (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
            &mut (*view).len
        } else {
            ptr::null_mut()
        };
        (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
            &mut (*view).itemsize
        } else {
            ptr::null_mut()
        };
        (*view).suboffsets = ptr::null_mut();
        (*view).internal = ptr::null_mut();
    }
    Ok(())
}

/// A sealed object in the region, read in place.
///
/// Supports the buffer protocol (read-only): `memoryview(buf)`, `numpy.frombuffer(buf, …)`. It
/// holds one store reference — the object cannot be deleted or evicted — until `release()` (or
/// the end of a `with` block) *and* the last view is gone, or until it is garbage collected.
#[pyclass(frozen, module = "gismo._native")]
pub struct ObjectBuffer {
    id: ObjectId,
    data: *const u8,
    data_len: usize,
    metadata: Vec<u8>,
    buffer: Mutex<Option<interface::ObjectBuffer>>,
    exports: AtomicUsize,
}

// SAFETY: `data` points to a sealed object's immutable bytes, kept alive by the store reference
// in `buffer` (itself Send + Sync) and, once that is released, never dereferenced (`__getbuffer__`
// checks `buffer` under its lock; live exports block `release`).
unsafe impl Send for ObjectBuffer {}
// SAFETY: as above; all mutable state is behind a Mutex or atomic.
unsafe impl Sync for ObjectBuffer {}

impl ObjectBuffer {
    /// # Errors
    /// `FencedError` if the client was declared dead by the end of the metadata copy.
    pub fn new(buffer: interface::ObjectBuffer) -> PyResult<ObjectBuffer> {
        let data_len = buffer.data().len();
        let metadata = buffer
            .copy_checked(data_len..usize::MAX)
            .ok_or_else(errors::fenced)?;
        Ok(ObjectBuffer {
            id: *buffer.id(),
            data: buffer.as_ptr(),
            data_len,
            metadata,
            buffer: Mutex::new(Some(buffer)),
            exports: AtomicUsize::new(0),
        })
    }

    /// The data copied out, checked after the copy: never bytes that may have been reused.
    fn copy_data(&self) -> PyResult<Vec<u8>> {
        let held = lock(&self.buffer);
        let Some(buffer) = held.as_ref() else {
            return Err(PyBufferError::new_err("the object buffer was released"));
        };
        buffer
            .copy_checked(0..self.data_len)
            .ok_or_else(errors::fenced)
    }
}

#[pymethods]
impl ObjectBuffer {
    /// # Safety
    /// Called by CPython with a valid `Py_buffer`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a sealed GISMO object is read-only"));
        }
        let this = slf.get();
        let held = lock(&this.buffer);
        if held.is_none() {
            return Err(PyBufferError::new_err("the object buffer was released"));
        }
        // Counted while `buffer` is locked, so `release` sees it.
        this.exports.fetch_add(1, Ordering::SeqCst);
        let (data, len) = (this.data.cast_mut(), this.data_len);
        drop(held);
        // SAFETY: CPython's view; the bytes stay valid while the export is counted (release
        // refuses) and `view.obj` keeps this object (and its store reference) alive.
        let filled = unsafe { fill_view(view, flags, data, len, true, slf.clone().into_any()) };
        if filled.is_err() {
            this.exports.fetch_sub(1, Ordering::SeqCst);
        }
        filled
    }

    /// # Safety
    /// Called by CPython for a view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::SeqCst);
    }

    /// The object id (28 bytes).
    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        crate::id::to_py(py, &self.id)
    }

    /// `bytes(buf)`: a copy of the data. Raises `FencedError` instead of returning bytes if this
    /// client was declared dead (paused past its lease) by the end of the copy, since the
    /// object's memory may have been reused by then. (A copy made through `memoryview(buf)` is
    /// not checked: see docs/python.md.)
    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let v = self.copy_data()?;
        Ok(PyBytes::new(py, &v))
    }

    /// The data as `bytes`, as `bytes(buf)`.
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.__bytes__(py)
    }

    /// Whether the bytes are still guaranteed to be this object's (false once the client was
    /// declared dead: views may then show reused memory after the grace period).
    #[getter]
    fn valid(&self) -> bool {
        lock(&self.buffer)
            .as_ref()
            .is_some_and(interface::ObjectBuffer::still_valid)
    }

    /// The object's metadata (a copy; metadata is small).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.metadata)
    }

    /// The size of the data in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.data_len
    }

    fn __len__(&self) -> usize {
        self.data_len
    }

    /// Views (memoryviews, arrays) currently exporting this buffer.
    #[getter]
    fn exports(&self) -> usize {
        self.exports.load(Ordering::SeqCst)
    }

    /// Whether the store reference was given back.
    #[getter]
    fn released(&self) -> bool {
        lock(&self.buffer).is_none()
    }

    /// Gives the store reference back now. Idempotent.
    ///
    /// Raises `BufferError` while views still export the buffer (release them first, as with
    /// `memoryview.release()`).
    fn release(&self) -> PyResult<()> {
        let mut held = lock(&self.buffer);
        let n = self.exports.load(Ordering::SeqCst);
        if n > 0 {
            return Err(PyBufferError::new_err(format!(
                "{n} view(s) of the object still exist; release them first"
            )));
        }
        drop(held.take());
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<gismo.ObjectBuffer id={} nbytes={} released={}>",
            self.id,
            self.data_len,
            self.released()
        )
    }
}

/// The state of one object being created; shared between its [`WritableBuffer`] and the client
/// (so that `Client.seal(id)` can finish it).
pub struct Creation {
    client: GismoClient,
    id: ObjectId,
    data: *mut u8,
    len: usize,
    buffer: Mutex<Option<interface::WritableBuffer>>,
    exports: AtomicUsize,
}

// SAFETY: `data` is the unsealed payload, exclusively ours while `buffer` holds the creation
// reference; it is only handed out (to views) while `buffer` is `Some`, checked under its lock.
unsafe impl Send for Creation {}
// SAFETY: as above; mutable state is behind a Mutex or atomic.
unsafe impl Sync for Creation {}

impl Creation {
    pub fn new(client: GismoClient, mut buffer: interface::WritableBuffer) -> Arc<Creation> {
        Arc::new(Creation {
            client,
            id: *buffer.id(),
            data: buffer.as_mut_ptr(),
            len: buffer.len(),
            buffer: Mutex::new(Some(buffer)),
            exports: AtomicUsize::new(0),
        })
    }

    /// Takes the creation buffer out, provided no view exports it.
    fn finish(&self, what: &str) -> PyResult<interface::WritableBuffer> {
        let mut held = lock(&self.buffer);
        let n = self.exports.load(Ordering::SeqCst);
        if n > 0 {
            return Err(PyBufferError::new_err(format!(
                "cannot {what}: {n} writable view(s) of the object still exist; release them first"
            )));
        }
        held.take()
            .ok_or_else(|| errors::not_found(format!("{} was already sealed or aborted", self.id)))
    }

    /// Seals the object and returns it as an [`ObjectBuffer`] (taking a reference before the
    /// creation reference is dropped, so it is never unreferenced in between).
    pub fn seal(&self, py: Python<'_>) -> PyResult<ObjectBuffer> {
        let writable = self.finish("seal")?;
        let (client, id) = (&self.client, self.id);
        let sealed = py.detach(|| -> Result<_, gismo_plugin::interface::Status> {
            client.seal(&id)?;
            let mut got = client.get(&[id], 0)?;
            drop(writable);
            Ok(got.pop().flatten())
        });
        match sealed.map_err(errors::to_py)? {
            Some(buffer) => ObjectBuffer::new(buffer),
            None => Err(errors::not_found(format!("{id} vanished after its seal"))),
        }
    }

    pub fn abort(&self) -> PyResult<()> {
        let writable = self.finish("abort")?;
        let result = self.client.abort(&self.id);
        drop(writable);
        result.map_err(errors::to_py)
    }

    pub fn is_open(&self) -> bool {
        lock(&self.buffer).is_some()
    }
}

/// An object being created: write its bytes through the buffer protocol (writable), then
/// `seal()`. As a context manager it seals on a normal exit and aborts on an exception.
#[pyclass(frozen, module = "gismo._native")]
pub struct WritableBuffer {
    creation: Arc<Creation>,
}

impl WritableBuffer {
    pub fn new(creation: Arc<Creation>) -> WritableBuffer {
        WritableBuffer { creation }
    }
}

#[pymethods]
impl WritableBuffer {
    /// # Safety
    /// Called by CPython with a valid `Py_buffer`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let c = Arc::clone(&slf.get().creation);
        let held = lock(&c.buffer);
        if held.is_none() {
            return Err(PyBufferError::new_err(
                "the object was sealed or aborted; it can no longer be written",
            ));
        }
        c.exports.fetch_add(1, Ordering::SeqCst);
        drop(held);
        // SAFETY: CPython's view; the payload stays ours and valid while the export is counted
        // (seal and abort refuse), and `view.obj` keeps this object alive.
        let filled = unsafe { fill_view(view, flags, c.data, c.len, false, slf.into_any()) };
        if filled.is_err() {
            c.exports.fetch_sub(1, Ordering::SeqCst);
        }
        filled
    }

    /// # Safety
    /// Called by CPython for a view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.creation.exports.fetch_sub(1, Ordering::SeqCst);
    }

    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        crate::id::to_py(py, &self.creation.id)
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.creation.len
    }

    fn __len__(&self) -> usize {
        self.creation.len
    }

    /// Whether it can still be written (not sealed, not aborted).
    #[getter]
    fn writable(&self) -> bool {
        self.creation.is_open()
    }

    /// Seals the object (publishing it to every client of the region) and returns it as a
    /// read-only [`ObjectBuffer`] holding a reference (drop it if you do not need it).
    ///
    /// Raises `BufferError` while writable views still exist.
    fn seal(&self, py: Python<'_>) -> PyResult<ObjectBuffer> {
        self.creation.seal(py)
    }

    /// Aborts the creation: afterwards it is as if the object never existed.
    fn abort(&self) -> PyResult<()> {
        self.creation.abort()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.creation.is_open() {
            return Ok(false);
        }
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.creation.abort()?;
        } else {
            drop(self.creation.seal(py)?);
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<gismo.WritableBuffer id={} nbytes={} writable={}>",
            self.creation.id,
            self.creation.len,
            self.creation.is_open()
        )
    }
}

impl Drop for Creation {
    fn drop(&mut self) {
        // Never sealed: abort, so the payload does not stay allocated until disconnect.
        if let Some(writable) = lock(&self.buffer).take() {
            let _ = self.client.abort(&self.id);
            drop(writable);
        }
    }
}
