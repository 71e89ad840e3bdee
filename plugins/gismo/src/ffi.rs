//! The GISMO plugin's side of the C ABI: `CreateClient` and `CreateRunner`, exported by
//! `libgismo.so` (the crate built as a cdylib), over [`GismoClient`] and [`GismoRunner`].
//!
//! Every exported function catches panics (a panic never unwinds into C) and reports them as
//! `UnknownError`. References the C caller holds (from `create` and `get`) are the Rust buffers,
//! kept in the handle until `release` drops one of them.
//!
//! The safety contract of every `unsafe extern "C"` function here is the ABI's
//! (`docs/plugin-abi.md`): live handles, ids of 28 bytes, arrays of the stated lengths, valid out
//! pointers, error buffers valid or null.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::interface::{
    ObjectBuffer, ObjectInfo, ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, Status,
    StatusCode, WritableBuffer,
};
use crate::store::{ObjectId, ObjectSource, OwnerAddress};
use crate::{runner_from_config, GismoClient, GismoRunner, GISMO_KEYS};
use gismo_plugin::abi::{
    GismoClientApi, GismoClientHandle, GismoError, GismoObjectBuffer, GismoObjectInfo, GismoOwner,
    GismoRunnerApi, GismoRunnerCallbacks, GismoRunnerHandle, StatusRaw, ABI_VERSION, ID_LEN,
};
use gismo_plugin::config::check_keys;

/// Runs `f`, writing its error (or a panic) to `err`.
fn guard(err: *mut GismoError, f: impl FnOnce() -> Result<(), Status>) -> StatusRaw {
    let status = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return StatusCode::Ok as StatusRaw,
        Ok(Err(s)) => s,
        Err(_) => Status::new(StatusCode::UnknownError, "gismo plugin: panic"),
    };
    if !err.is_null() {
        // SAFETY: the caller passes a valid `GismoError` or null (ABI contract).
        unsafe { (*err).set(&status.message) };
    }
    status.code as StatusRaw
}

/// Reads `n` key/value C strings into a map.
///
/// # Safety
/// `keys` and `values` point to `n` NUL-terminated strings each (or `n` is 0).
unsafe fn read_params(
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
) -> Result<BTreeMap<String, String>, Status> {
    let mut out = BTreeMap::new();
    for i in 0..n as usize {
        // SAFETY: caller's contract: `i < n` entries, each a valid C string.
        let (k, v) = unsafe { (CStr::from_ptr(*keys.add(i)), CStr::from_ptr(*values.add(i))) };
        let (k, v) = (
            k.to_str()
                .map_err(|_| Status::invalid("key is not UTF-8"))?,
            v.to_str()
                .map_err(|_| Status::invalid("value is not UTF-8"))?,
        );
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// # Safety
/// `p` points to 28 readable bytes.
unsafe fn read_id(p: *const u8) -> ObjectId {
    let mut id = [0u8; ID_LEN];
    // SAFETY: caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(p, id.as_mut_ptr(), ID_LEN) };
    ObjectId(id)
}

/// # Safety
/// `p` points to `n` consecutive 28-byte ids.
unsafe fn read_ids(p: *const u8, n: u64) -> Vec<ObjectId> {
    // SAFETY: caller's contract: id `i` lies at `p + 28 i`.
    (0..n as usize)
        .map(|i| unsafe { read_id(p.add(i * ID_LEN)) })
        .collect()
}

enum Held {
    Created(#[allow(dead_code)] WritableBuffer),
    Got(#[allow(dead_code)] ObjectBuffer),
}

struct ClientState {
    client: GismoClient,
    held: Mutex<HashMap<ObjectId, Vec<Held>>>,
}

impl ClientState {
    fn held(&self) -> MutexGuard<'_, HashMap<ObjectId, Vec<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// # Safety
/// `h` came from `CreateClient` and is not destroyed.
unsafe fn client<'a>(h: *mut GismoClientHandle) -> &'a ClientState {
    // SAFETY: the handle is a leaked `Box<ClientState>` (caller's contract).
    unsafe { &*(h as *const ClientState) }
}

/// # Safety
/// `owner` null or valid, with `ip` null or a C string.
unsafe fn read_owner(owner: *const GismoOwner) -> OwnerAddress {
    if owner.is_null() {
        return OwnerAddress::default();
    }
    // SAFETY: non-null and valid (caller's contract).
    let o = unsafe { &*owner };
    let ip = if o.ip.is_null() {
        String::new()
    } else {
        // SAFETY: a C string (caller's contract).
        unsafe { CStr::from_ptr(o.ip) }
            .to_string_lossy()
            .into_owned()
    };
    OwnerAddress {
        raylet_id: o.raylet_id,
        ip,
        port: u16::try_from(o.port).unwrap_or(0),
        worker_id: o.worker_id,
    }
}

/// `create` and `try_create_immediately` (`is_mutable` `None`).
///
/// # Safety
/// The ABI's contract for `create`: a live handle, a 28-byte id, `owner` null or valid,
/// `metadata_len` readable bytes at `metadata`, `data` and `err` valid (`err` may be null).
#[allow(clippy::too_many_arguments)]
unsafe fn c_create_common(
    h: *mut GismoClientHandle,
    id: *const u8,
    owner: *const GismoOwner,
    is_mutable: Option<u8>,
    data_size: u64,
    metadata: *const u8,
    metadata_len: u64,
    source: u8,
    data: *mut *mut u8,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract: valid handle, id, owner, metadata of `metadata_len` bytes.
        let (c, id, owner) = unsafe { (client(h), read_id(id), read_owner(owner)) };
        let md: &[u8] = if metadata_len == 0 {
            &[]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(metadata, metadata_len as usize) }
        };
        let source = ObjectSource::from_u8(source);
        let mut buf = match is_mutable {
            Some(m) => c
                .client
                .create(&id, &owner, m != 0, data_size, md, source)?,
            None => c
                .client
                .try_create_immediately(&id, &owner, data_size, md, source)?,
        };
        // SAFETY: `data` is a valid out pointer (ABI contract).
        unsafe { *data = buf.as_mut_ptr() };
        c.held().entry(id).or_default().push(Held::Created(buf));
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn c_create(
    h: *mut GismoClientHandle,
    id: *const u8,
    owner: *const GismoOwner,
    is_mutable: u8,
    data_size: u64,
    metadata: *const u8,
    metadata_len: u64,
    source: u8,
    data: *mut *mut u8,
    err: *mut GismoError,
) -> StatusRaw {
    // SAFETY: forwarded contract.
    unsafe {
        c_create_common(
            h,
            id,
            owner,
            Some(is_mutable),
            data_size,
            metadata,
            metadata_len,
            source,
            data,
            err,
        )
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn c_try_create(
    h: *mut GismoClientHandle,
    id: *const u8,
    owner: *const GismoOwner,
    data_size: u64,
    metadata: *const u8,
    metadata_len: u64,
    source: u8,
    data: *mut *mut u8,
    err: *mut GismoError,
) -> StatusRaw {
    // SAFETY: forwarded contract.
    unsafe {
        c_create_common(
            h,
            id,
            owner,
            None,
            data_size,
            metadata,
            metadata_len,
            source,
            data,
            err,
        )
    }
}

unsafe extern "C" fn c_seal(
    h: *mut GismoClientHandle,
    id: *const u8,
    err: *mut GismoError,
) -> StatusRaw {
    // SAFETY: ABI contract: valid handle and id.
    guard(err, || unsafe { client(h).client.seal(&read_id(id)) })
}

unsafe extern "C" fn c_abort(
    h: *mut GismoClientHandle,
    id: *const u8,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract: valid handle and id.
        let (c, id) = unsafe { (client(h), read_id(id)) };
        c.client.abort(&id)?;
        // The creation reference went with the object.
        let mut held = c.held();
        if let Some(v) = held.get_mut(&id) {
            v.retain(|b| !matches!(b, Held::Created(_)));
            if v.is_empty() {
                held.remove(&id);
            }
        }
        Ok(())
    })
}

unsafe extern "C" fn c_get(
    h: *mut GismoClientHandle,
    ids: *const u8,
    n: u64,
    timeout_ms: i64,
    out: *mut GismoObjectBuffer,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract: valid handle, `n` ids.
        let (c, ids) = unsafe { (client(h), read_ids(ids, n)) };
        let got = c.client.get(&ids, timeout_ms)?;
        let mut held = c.held();
        for (i, (id, b)) in ids.iter().zip(got).enumerate() {
            let entry = match &b {
                Some(b) => GismoObjectBuffer {
                    data: b.data().as_ptr(),
                    data_len: b.data().len() as u64,
                    metadata: b.metadata().as_ptr(),
                    metadata_len: b.metadata().len() as u64,
                },
                None => GismoObjectBuffer {
                    data: std::ptr::null(),
                    data_len: 0,
                    metadata: std::ptr::null(),
                    metadata_len: 0,
                },
            };
            // SAFETY: `out` has room for `n` entries (ABI contract).
            unsafe { *out.add(i) = entry };
            if let Some(b) = b {
                held.entry(*id).or_default().push(Held::Got(b));
            }
        }
        Ok(())
    })
}

unsafe extern "C" fn c_release(
    h: *mut GismoClientHandle,
    id: *const u8,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract.
        let (c, id) = unsafe { (client(h), read_id(id)) };
        let popped = {
            let mut held = c.held();
            let b = held.get_mut(&id).and_then(Vec::pop);
            if held.get(&id).is_some_and(Vec::is_empty) {
                held.remove(&id);
            }
            b
        };
        match popped {
            // Dropping the buffer releases its reference (outside the map's lock).
            Some(b) => {
                drop(b);
                Ok(())
            }
            None => c.client.release(&id),
        }
    })
}

unsafe extern "C" fn c_contains(
    h: *mut GismoClientHandle,
    id: *const u8,
    out: *mut u8,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract.
        let found = unsafe { client(h).client.contains(&read_id(id))? };
        // SAFETY: valid out pointer (ABI contract).
        unsafe { *out = u8::from(found) };
        Ok(())
    })
}

unsafe extern "C" fn c_delete(
    h: *mut GismoClientHandle,
    ids: *const u8,
    n: u64,
    err: *mut GismoError,
) -> StatusRaw {
    // SAFETY: ABI contract.
    guard(err, || unsafe {
        client(h).client.delete(&read_ids(ids, n))
    })
}

fn disconnect_state(c: &ClientState) -> Result<(), Status> {
    let held: Vec<Held> = c.held().drain().flat_map(|(_, v)| v).collect();
    drop(held);
    c.client.disconnect()
}

unsafe extern "C" fn c_disconnect(h: *mut GismoClientHandle, err: *mut GismoError) -> StatusRaw {
    // SAFETY: ABI contract.
    guard(err, || disconnect_state(unsafe { client(h) }))
}

unsafe extern "C" fn c_get_memory_usage(
    h: *mut GismoClientHandle,
    out: *mut *mut c_char,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract.
        let s = unsafe { client(h).client.get_memory_usage()? };
        let s = CString::new(s.replace('\0', " ")).map_err(|e| Status::invalid(e.to_string()))?;
        // SAFETY: valid out pointer (ABI contract).
        unsafe { *out = s.into_raw() };
        Ok(())
    })
}

unsafe extern "C" fn c_free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from `CString::into_raw` in `c_get_memory_usage` (ABI contract).
        drop(unsafe { CString::from_raw(s) });
    }
}

unsafe extern "C" fn c_memory_copy(
    h: *mut GismoClientHandle,
    dst: *mut c_void,
    src: *const c_void,
    len: u64,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ABI contract: valid handle; ranges as `ObjectStoreClient::memory_copy` requires.
        unsafe {
            client(h)
                .client
                .memory_copy(dst.cast(), src.cast(), len as usize)
        }
    }));
}

unsafe extern "C" fn c_is_global(h: *mut GismoClientHandle) -> u8 {
    // SAFETY: ABI contract.
    u8::from(unsafe { client(h) }.client.is_global())
}

unsafe extern "C" fn c_client_destroy(h: *mut GismoClientHandle) {
    if h.is_null() {
        return;
    }
    // SAFETY: the handle is a leaked `Box<ClientState>`, destroyed once (ABI contract).
    let state = unsafe { Box::from_raw(h as *mut ClientState) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _ = disconnect_state(&state);
        drop(state);
    }));
}

static CLIENT_API: GismoClientApi = GismoClientApi {
    abi_version: ABI_VERSION,
    struct_size: std::mem::size_of::<GismoClientApi>() as u32,
    create: Some(c_create),
    try_create_immediately: Some(c_try_create),
    seal: Some(c_seal),
    abort: Some(c_abort),
    get: Some(c_get),
    release: Some(c_release),
    contains: Some(c_contains),
    delete_objects: Some(c_delete),
    disconnect: Some(c_disconnect),
    get_memory_usage: Some(c_get_memory_usage),
    free_string: Some(c_free_string),
    memory_copy: Some(c_memory_copy),
    is_global: Some(c_is_global),
    destroy: Some(c_client_destroy),
};

/// The GISMO plugin's client factory (see `include/gismo_plugin.h`). Config keys:
/// `region,size,format,coherence,client_name,max_clients,refs_per_client,dir_capacity` (see
/// [`GismoClient::from_config`] and [`open_store`](crate::open_store)).
///
/// # Safety
/// As the ABI specifies: `n` key and value C strings, valid `api` out pointer, `err` valid or
/// null.
#[no_mangle]
pub unsafe extern "C" fn CreateClient(
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
    api: *mut *const GismoClientApi,
    err: *mut GismoError,
) -> *mut GismoClientHandle {
    let mut handle: *mut GismoClientHandle = std::ptr::null_mut();
    guard(err, || {
        // SAFETY: ABI contract.
        let params = unsafe { read_params(keys, values, n)? };
        check_keys("gismo", &params, GISMO_KEYS).map_err(|e| Status::invalid(e.to_string()))?;
        let client = GismoClient::from_config(&params)?;
        let state = Box::new(ClientState {
            client,
            held: Mutex::new(HashMap::new()),
        });
        handle = Box::into_raw(state) as *mut GismoClientHandle;
        if !api.is_null() {
            // SAFETY: valid out pointer (ABI contract).
            unsafe { *api = &CLIENT_API };
        }
        Ok(())
    });
    handle
}

// ---- runner ---------------------------------------------------------------------------------

struct RunnerState {
    runner: GismoRunner,
}

/// # Safety
/// `h` came from `CreateRunner` and is not destroyed.
unsafe fn runner<'a>(h: *mut GismoRunnerHandle) -> &'a RunnerState {
    // SAFETY: the handle is a leaked `Box<RunnerState>` (caller's contract).
    unsafe { &*(h as *const RunnerState) }
}

/// The C callbacks, callable from the runner's thread.
struct CCallbacks(GismoRunnerCallbacks);
// SAFETY: the ABI requires the callbacks and `user_data` to be usable from any thread until
// `stop` returns.
unsafe impl Send for CCallbacks {}
// SAFETY: as above.
unsafe impl Sync for CCallbacks {}

fn rust_callbacks(c: GismoRunnerCallbacks) -> RunnerCallbacks {
    let c = Arc::new(CCallbacks(c));
    let (c1, c2, c3, c4) = (c.clone(), c.clone(), c.clone(), c);
    RunnerCallbacks {
        spill_objects: Arc::new(move || match c1.0.spill_objects {
            // SAFETY: a valid callback with its user data (ABI contract).
            Some(f) => unsafe { f(c1.0.user_data) != 0 },
            None => false,
        }),
        object_store_full: Arc::new(move || {
            if let Some(f) = c2.0.object_store_full {
                // SAFETY: as above.
                unsafe { f(c2.0.user_data) }
            }
        }),
        add_object: Arc::new(move |info: &ObjectInfo| {
            if let Some(f) = c3.0.add_object {
                let ip = CString::new(info.owner_ip_address.replace('\0', "")).unwrap_or_default();
                let ci = GismoObjectInfo {
                    object_id: info.object_id.0,
                    is_mutable: u8::from(info.is_mutable),
                    data_size: info.data_size,
                    metadata_size: info.metadata_size,
                    owner_raylet_id: info.owner_raylet_id,
                    owner_ip_address: ip.as_ptr(),
                    owner_port: info.owner_port,
                    owner_worker_id: info.owner_worker_id,
                };
                // SAFETY: as above; `ci` and `ip` outlive the call.
                unsafe { f(c3.0.user_data, &ci) }
            }
        }),
        delete_object: Arc::new(move |id: &ObjectId| {
            if let Some(f) = c4.0.delete_object {
                // SAFETY: as above; the id outlives the call.
                unsafe { f(c4.0.user_data, id.0.as_ptr()) }
            }
        }),
    }
}

unsafe extern "C" fn r_start(
    h: *mut GismoRunnerHandle,
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
    callbacks: *const GismoRunnerCallbacks,
    err: *mut GismoError,
) -> StatusRaw {
    guard(err, || {
        // SAFETY: ABI contract.
        let (r, params) = unsafe { (runner(h), read_params(keys, values, n)?) };
        if callbacks.is_null() {
            return Err(Status::invalid("start: callbacks is null"));
        }
        // SAFETY: non-null and valid for the call (ABI contract); copied.
        let cb = rust_callbacks(unsafe { *callbacks });
        r.runner.start(&params, cb)
    })
}

macro_rules! runner_query {
    ($name:ident, $method:ident) => {
        unsafe extern "C" fn $name(h: *mut GismoRunnerHandle) -> i64 {
            // SAFETY: ABI contract: valid handle.
            catch_unwind(AssertUnwindSafe(|| unsafe { runner(h) }.runner.$method())).unwrap_or(0)
        }
    };
}
runner_query!(r_consumed_bytes, consumed_bytes);
runner_query!(r_fallback_allocated, fallback_allocated);
runner_query!(r_available_memory, available_memory);
runner_query!(r_total_memory_size, total_memory_size);
runner_query!(r_max_memory_size, max_memory_size);

unsafe extern "C" fn r_stop(h: *mut GismoRunnerHandle) {
    // SAFETY: ABI contract.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { runner(h) }.runner.stop()));
}

unsafe extern "C" fn r_is_object_spillable(h: *mut GismoRunnerHandle, id: *const u8) -> u8 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ABI contract.
        u8::from(unsafe { runner(h).runner.is_object_spillable(&read_id(id)) })
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn r_destroy(h: *mut GismoRunnerHandle) {
    if h.is_null() {
        return;
    }
    // SAFETY: a leaked `Box<RunnerState>`, destroyed once (ABI contract). Dropping stops it.
    let state = unsafe { Box::from_raw(h as *mut RunnerState) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(state)));
}

static RUNNER_API: GismoRunnerApi = GismoRunnerApi {
    abi_version: ABI_VERSION,
    struct_size: std::mem::size_of::<GismoRunnerApi>() as u32,
    start: Some(r_start),
    stop: Some(r_stop),
    is_object_spillable: Some(r_is_object_spillable),
    consumed_bytes: Some(r_consumed_bytes),
    fallback_allocated: Some(r_fallback_allocated),
    available_memory: Some(r_available_memory),
    total_memory_size: Some(r_total_memory_size),
    max_memory_size: Some(r_max_memory_size),
    destroy: Some(r_destroy),
};

/// The GISMO plugin's runner factory: opens (or creates) the region the config names; `start`
/// then takes the raylet's parameters (`object_spilling_threshold`) and callbacks.
///
/// # Safety
/// As [`CreateClient`].
#[no_mangle]
pub unsafe extern "C" fn CreateRunner(
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
    api: *mut *const GismoRunnerApi,
    err: *mut GismoError,
) -> *mut GismoRunnerHandle {
    let mut handle: *mut GismoRunnerHandle = std::ptr::null_mut();
    guard(err, || {
        // SAFETY: ABI contract.
        let params = unsafe { read_params(keys, values, n)? };
        check_keys("gismo", &params, GISMO_KEYS).map_err(|e| Status::invalid(e.to_string()))?;
        let state = Box::new(RunnerState {
            runner: runner_from_config(&params)?,
        });
        handle = Box::into_raw(state) as *mut GismoRunnerHandle;
        if !api.is_null() {
            // SAFETY: valid out pointer (ABI contract).
            unsafe { *api = &RUNNER_API };
        }
        Ok(())
    });
    handle
}
