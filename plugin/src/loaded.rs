//! Rust adapters over a shared-library plugin's C tables: [`LoadedClient`] and [`LoadedRunner`]
//! implement [`ObjectStoreClient`] and [`ObjectStoreRunner`]. Each holds an `Arc<Library>`, so
//! the library stays loaded while anything made from it lives (buffers included: they hold the
//! client).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex};

use libloading::Library;

use crate::abi::{
    GismoClientApi, GismoClientHandle, GismoError, GismoObjectBuffer, GismoObjectInfo, GismoOwner,
    GismoRunnerApi, GismoRunnerCallbacks, GismoRunnerHandle, StatusRaw, ID_LEN,
};
use crate::interface::ReleaseObject;
use crate::interface::{
    ObjectBuffer, ObjectInfo, ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, Status,
    StatusCode, WritableBuffer,
};
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};

/// Maps a raw status to `Ok` or a [`Status`] with the plugin's message.
pub(crate) fn status(code: StatusRaw, err: &GismoError) -> Result<(), Status> {
    let code = match code {
        0 => return Ok(()),
        1 => StatusCode::OutOfMemory,
        2 => StatusCode::KeyError,
        3 => StatusCode::TypeError,
        4 => StatusCode::Invalid,
        5 => StatusCode::IOError,
        10 => StatusCode::NotImplemented,
        21 => StatusCode::ObjectExists,
        22 => StatusCode::ObjectNotFound,
        23 => StatusCode::ObjectAlreadySealed,
        24 => StatusCode::ObjectStoreFull,
        25 => StatusCode::TransientObjectStoreFull,
        12 => StatusCode::TimedOut,
        28 => StatusCode::OutOfDisk,
        _ => StatusCode::UnknownError,
    };
    Ok(()).and(Err(Status::new(code, err.text())))
}

/// Key and value C strings for a parameter map (kept alive with their pointer arrays).
pub(crate) struct CParams {
    _keys: Vec<CString>,
    _values: Vec<CString>,
    pub keys: Vec<*const c_char>,
    pub values: Vec<*const c_char>,
}

impl CParams {
    pub(crate) fn new(params: &BTreeMap<String, String>) -> Result<CParams, Status> {
        let nul = |_| Status::invalid("plugin parameter contains a NUL byte");
        let keys: Vec<CString> = params
            .keys()
            .map(|k| CString::new(k.as_str()).map_err(nul))
            .collect::<Result<_, _>>()?;
        let values: Vec<CString> = params
            .values()
            .map(|v| CString::new(v.as_str()).map_err(nul))
            .collect::<Result<_, _>>()?;
        Ok(CParams {
            keys: keys.iter().map(|k| k.as_ptr()).collect(),
            values: values.iter().map(|v| v.as_ptr()).collect(),
            _keys: keys,
            _values: values,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.keys.len() as u64
    }
}

/// Calls a table entry checked non-null at load.
macro_rules! call {
    ($api:expr, $f:ident ( $($arg:expr),* )) => {
        match $api.$f {
            Some(f) => f($($arg),*),
            None => unreachable!(concat!(stringify!($f), " was checked non-null at load")),
        }
    };
}

struct ClientInner {
    api: GismoClientApi,
    handle: *mut GismoClientHandle,
    /// Declared last: dropped after `Drop` has destroyed the handle.
    _library: Arc<Library>,
}

// SAFETY: the ABI requires every table function to be callable from any thread on one handle.
unsafe impl Send for ClientInner {}
// SAFETY: as above.
unsafe impl Sync for ClientInner {}

impl ClientInner {
    fn release_raw(&self, id: &ObjectId) -> Result<(), Status> {
        let mut err = GismoError::default();
        // SAFETY: live handle, a 28-byte id, a valid error buffer.
        let code = unsafe { call!(self.api, release(self.handle, id.0.as_ptr(), &mut err)) };
        status(code, &err)
    }
}

impl ReleaseObject for ClientInner {
    fn release_object(&self, id: &ObjectId) {
        let _ = self.release_raw(id);
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // SAFETY: the handle is live and destroyed exactly once, here.
        unsafe { call!(self.api, destroy(self.handle)) }
    }
}

/// A client made by a shared library's `CreateClient`.
pub struct LoadedClient {
    inner: Arc<ClientInner>,
}

impl LoadedClient {
    /// # Safety
    /// `handle` came from the `CreateClient` of `library`, `api` is its table (copied, checked:
    /// version, size, no null entries).
    pub(crate) unsafe fn new(
        library: Arc<Library>,
        api: GismoClientApi,
        handle: *mut GismoClientHandle,
    ) -> LoadedClient {
        LoadedClient {
            inner: Arc::new(ClientInner {
                api,
                handle,
                _library: library,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_common(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: Option<bool>,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        let ip = CString::new(owner.ip.replace('\0', "")).unwrap_or_default();
        let o = GismoOwner {
            raylet_id: owner.raylet_id,
            ip: ip.as_ptr(),
            port: i32::from(owner.port),
            worker_id: owner.worker_id,
        };
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut err = GismoError::default();
        let h = self.inner.handle;
        let (md, md_len) = (metadata.as_ptr(), metadata.len() as u64);
        let code = match is_mutable {
            // SAFETY: live handle; every pointer valid for the call.
            Some(m) => unsafe {
                call!(
                    self.inner.api,
                    create(
                        h,
                        id.0.as_ptr(),
                        &o,
                        u8::from(m),
                        data_size,
                        md,
                        md_len,
                        source as u8,
                        &mut data,
                        &mut err
                    )
                )
            },
            // SAFETY: as above.
            None => unsafe {
                call!(
                    self.inner.api,
                    try_create_immediately(
                        h,
                        id.0.as_ptr(),
                        &o,
                        data_size,
                        md,
                        md_len,
                        source as u8,
                        &mut data,
                        &mut err
                    )
                )
            },
        };
        status(code, &err)?;
        if data.is_null() && data_size > 0 {
            let _ = self.inner.release_raw(id);
            return Err(Status::new(
                StatusCode::UnknownError,
                "plugin create returned no payload",
            ));
        }
        let data = if data.is_null() {
            std::ptr::NonNull::dangling().as_ptr()
        } else {
            data
        };
        let owner: Arc<dyn ReleaseObject> = self.inner.clone();
        // SAFETY: the ABI keeps the payload valid and ours until released; the buffer's drop
        // releases the creation reference through `owner`.
        Ok(unsafe { WritableBuffer::from_raw(*id, data, data_size as usize, owner) })
    }
}

fn ids_bytes(ids: &[ObjectId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0).collect()
}

impl ObjectStoreClient for LoadedClient {
    fn create(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_common(id, owner, Some(is_mutable), data_size, metadata, source)
    }

    fn try_create_immediately(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_common(id, owner, None, data_size, metadata, source)
    }

    fn seal(&self, id: &ObjectId) -> Result<(), Status> {
        let mut err = GismoError::default();
        // SAFETY: live handle, valid id and error buffer.
        let code = unsafe {
            call!(
                self.inner.api,
                seal(self.inner.handle, id.0.as_ptr(), &mut err)
            )
        };
        status(code, &err)
    }

    fn abort(&self, id: &ObjectId) -> Result<(), Status> {
        let mut err = GismoError::default();
        // SAFETY: as in `seal`.
        let code = unsafe {
            call!(
                self.inner.api,
                abort(self.inner.handle, id.0.as_ptr(), &mut err)
            )
        };
        status(code, &err)
    }

    fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        let empty = GismoObjectBuffer {
            data: std::ptr::null(),
            data_len: 0,
            metadata: std::ptr::null(),
            metadata_len: 0,
        };
        let mut out = vec![empty; ids.len()];
        let bytes = ids_bytes(ids);
        let mut err = GismoError::default();
        // SAFETY: live handle; `ids.len()` ids and as many output entries.
        let code = unsafe {
            call!(
                self.inner.api,
                get(
                    self.inner.handle,
                    bytes.as_ptr(),
                    ids.len() as u64,
                    timeout_ms,
                    out.as_mut_ptr(),
                    &mut err
                )
            )
        };
        status(code, &err)?;
        let present = |b: &GismoObjectBuffer| !(b.data.is_null() && b.metadata.is_null());
        let broken = |b: &GismoObjectBuffer| {
            (b.data.is_null() && b.data_len > 0) || (b.metadata.is_null() && b.metadata_len > 0)
        };
        if out.iter().any(broken) {
            // A plugin bug (a length without memory): give every reference back and fail.
            for (id, b) in ids.iter().zip(&out) {
                if present(b) {
                    let _ = self.inner.release_raw(id);
                }
            }
            return Err(Status::new(
                StatusCode::UnknownError,
                "plugin get returned a length without a pointer",
            ));
        }
        let mut result = Vec::with_capacity(ids.len());
        for (id, b) in ids.iter().zip(out) {
            if !present(&b) {
                result.push(None);
                continue;
            }
            let owner: Arc<dyn ReleaseObject> = self.inner.clone();
            let contiguous =
                b.metadata_len == 0 || b.data.wrapping_add(b.data_len as usize) == b.metadata;
            if contiguous && !b.data.is_null() {
                // SAFETY: the ABI keeps data and metadata valid until released; the buffer's
                // drop releases through `owner`. Metadata follows the data (checked).
                result.push(Some(unsafe {
                    ObjectBuffer::from_raw(
                        *id,
                        b.data,
                        b.data_len as usize,
                        b.metadata_len as usize,
                        owner,
                    )
                }));
            } else {
                // Metadata elsewhere: one copy of both, and the reference still held until drop.
                let mut bytes = Vec::with_capacity((b.data_len + b.metadata_len) as usize);
                // SAFETY: valid for their lengths until released (ABI contract).
                unsafe {
                    if b.data_len > 0 {
                        bytes.extend_from_slice(std::slice::from_raw_parts(
                            b.data,
                            b.data_len as usize,
                        ));
                    }
                    if b.metadata_len > 0 {
                        bytes.extend_from_slice(std::slice::from_raw_parts(
                            b.metadata,
                            b.metadata_len as usize,
                        ));
                    }
                }
                result.push(Some(ObjectBuffer::from_copy(
                    *id,
                    bytes.into_boxed_slice(),
                    b.data_len as usize,
                    Some(owner),
                )));
            }
        }
        Ok(result)
    }

    fn release(&self, id: &ObjectId) -> Result<(), Status> {
        self.inner.release_raw(id)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Status> {
        let mut found = 0u8;
        let mut err = GismoError::default();
        // SAFETY: live handle, valid id, out pointer and error buffer.
        let code = unsafe {
            call!(
                self.inner.api,
                contains(self.inner.handle, id.0.as_ptr(), &mut found, &mut err)
            )
        };
        status(code, &err)?;
        Ok(found != 0)
    }

    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status> {
        let bytes = ids_bytes(ids);
        let mut err = GismoError::default();
        // SAFETY: live handle, `ids.len()` ids.
        let code = unsafe {
            call!(
                self.inner.api,
                delete_objects(
                    self.inner.handle,
                    bytes.as_ptr(),
                    ids.len() as u64,
                    &mut err
                )
            )
        };
        status(code, &err)
    }

    fn disconnect(&self) -> Result<(), Status> {
        let mut err = GismoError::default();
        // SAFETY: live handle, valid error buffer.
        let code = unsafe { call!(self.inner.api, disconnect(self.inner.handle, &mut err)) };
        status(code, &err)
    }

    fn get_memory_usage(&self) -> Result<String, Status> {
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut err = GismoError::default();
        // SAFETY: live handle, valid out pointer and error buffer.
        let code = unsafe {
            call!(
                self.inner.api,
                get_memory_usage(self.inner.handle, &mut out, &mut err)
            )
        };
        status(code, &err)?;
        if out.is_null() {
            return Ok(String::new());
        }
        // SAFETY: a NUL-terminated string from the plugin, freed with its own free_string.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; freed once.
        unsafe { call!(self.inner.api, free_string(out)) };
        Ok(s)
    }

    unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the caller's contract; live handle.
        unsafe {
            call!(
                self.inner.api,
                memory_copy(
                    self.inner.handle,
                    dst.cast::<c_void>(),
                    src.cast::<c_void>(),
                    len as u64
                )
            )
        }
    }

    fn is_global(&self) -> bool {
        // SAFETY: live handle.
        unsafe { call!(self.inner.api, is_global(self.inner.handle)) != 0 }
    }
}

// ---- runner ---------------------------------------------------------------------------------

/// A runner made by a shared library's `CreateRunner`.
pub struct LoadedRunner {
    api: GismoRunnerApi,
    handle: *mut GismoRunnerHandle,
    /// The callbacks `user_data` points to; kept until `stop` (or drop) has returned.
    callbacks: Mutex<Option<Box<RunnerCallbacks>>>,
    /// Declared last: dropped after `Drop` has destroyed the handle.
    _library: Arc<Library>,
}

// SAFETY: the ABI requires every table function to be callable from any thread on one handle.
unsafe impl Send for LoadedRunner {}
// SAFETY: as above.
unsafe impl Sync for LoadedRunner {}

impl LoadedRunner {
    /// # Safety
    /// As [`LoadedClient::new`], for `CreateRunner`.
    pub(crate) unsafe fn new(
        library: Arc<Library>,
        api: GismoRunnerApi,
        handle: *mut GismoRunnerHandle,
    ) -> LoadedRunner {
        LoadedRunner {
            api,
            handle,
            callbacks: Mutex::new(None),
            _library: library,
        }
    }
}

unsafe extern "C" fn tramp_spill(user: *mut c_void) -> u8 {
    // SAFETY: `user` is the `RunnerCallbacks` box this runner keeps alive until stop returns.
    let cb = unsafe { &*(user as *const RunnerCallbacks) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (cb.spill_objects)()))
        .map_or(0, u8::from)
}

unsafe extern "C" fn tramp_full(user: *mut c_void) {
    // SAFETY: as in `tramp_spill`.
    let cb = unsafe { &*(user as *const RunnerCallbacks) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (cb.object_store_full)()));
}

unsafe extern "C" fn tramp_add(user: *mut c_void, info: *const GismoObjectInfo) {
    // SAFETY: as in `tramp_spill`; `info` valid during the call (ABI contract).
    let (cb, i) = unsafe { (&*(user as *const RunnerCallbacks), &*info) };
    let ip = if i.owner_ip_address.is_null() {
        String::new()
    } else {
        // SAFETY: a C string valid during the call.
        unsafe { CStr::from_ptr(i.owner_ip_address) }
            .to_string_lossy()
            .into_owned()
    };
    let info = ObjectInfo {
        object_id: ObjectId(i.object_id),
        is_mutable: i.is_mutable != 0,
        data_size: i.data_size,
        metadata_size: i.metadata_size,
        owner_raylet_id: i.owner_raylet_id,
        owner_ip_address: ip,
        owner_port: i.owner_port,
        owner_worker_id: i.owner_worker_id,
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (cb.add_object)(&info)));
}

unsafe extern "C" fn tramp_delete(user: *mut c_void, id: *const u8) {
    // SAFETY: as in `tramp_spill`; `id` is 28 bytes valid during the call.
    let (cb, id) = unsafe {
        (
            &*(user as *const RunnerCallbacks),
            ObjectId(*(id as *const [u8; ID_LEN])),
        )
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (cb.delete_object)(&id)));
}

impl ObjectStoreRunner for LoadedRunner {
    fn start(
        &self,
        params: &BTreeMap<String, String>,
        callbacks: RunnerCallbacks,
    ) -> Result<(), Status> {
        let mut slot = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(Status::invalid("runner already started"));
        }
        let boxed = Box::new(callbacks);
        let c = GismoRunnerCallbacks {
            user_data: &*boxed as *const RunnerCallbacks as *mut c_void,
            spill_objects: Some(tramp_spill),
            object_store_full: Some(tramp_full),
            add_object: Some(tramp_add),
            delete_object: Some(tramp_delete),
        };
        let p = CParams::new(params)?;
        let mut err = GismoError::default();
        // SAFETY: live handle; parameter arrays of `p.len()` strings; `boxed` outlives the
        // runner's use of it (kept in `self.callbacks` until stop returns).
        let code = unsafe {
            call!(
                self.api,
                start(
                    self.handle,
                    p.keys.as_ptr(),
                    p.values.as_ptr(),
                    p.len(),
                    &c,
                    &mut err
                )
            )
        };
        status(code, &err)?;
        *slot = Some(boxed);
        Ok(())
    }

    fn stop(&self) {
        let mut slot = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: live handle.
        unsafe { call!(self.api, stop(self.handle)) };
        // The plugin no longer calls back: the callbacks can go.
        *slot = None;
    }

    fn is_object_spillable(&self, id: &ObjectId) -> bool {
        // SAFETY: live handle, 28-byte id.
        unsafe { call!(self.api, is_object_spillable(self.handle, id.0.as_ptr())) != 0 }
    }

    fn consumed_bytes(&self) -> i64 {
        // SAFETY: live handle.
        unsafe { call!(self.api, consumed_bytes(self.handle)) }
    }

    fn fallback_allocated(&self) -> i64 {
        // SAFETY: live handle.
        unsafe { call!(self.api, fallback_allocated(self.handle)) }
    }

    fn available_memory(&self) -> i64 {
        // SAFETY: live handle.
        unsafe { call!(self.api, available_memory(self.handle)) }
    }

    fn total_memory_size(&self) -> i64 {
        // SAFETY: live handle.
        unsafe { call!(self.api, total_memory_size(self.handle)) }
    }

    fn max_memory_size(&self) -> i64 {
        // SAFETY: live handle.
        unsafe { call!(self.api, max_memory_size(self.handle)) }
    }
}

impl Drop for LoadedRunner {
    fn drop(&mut self) {
        // SAFETY: the handle is live and destroyed exactly once, here; destroy stops the runner
        // before the callbacks box (dropped after this) goes.
        unsafe { call!(self.api, destroy(self.handle)) }
    }
}
