//! The stable C ABI between a raylet (or any host) and an object-store plugin, mirrored by
//! `include/gismo_plugin.h`. Specified in `docs/plugin-abi.md`.
//!
//! A plugin exports two functions:
//!
//! ```c
//! GismoRunnerHandle *CreateRunner(const char *const *keys, const char *const *values,
//!                                 size_t n, const GismoRunnerApi **api, GismoError *err);
//! GismoClientHandle *CreateClient(const char *const *keys, const char *const *values,
//!                                 size_t n, const GismoClientApi **api, GismoError *err);
//! ```
//!
//! Each returns an opaque handle (null on failure, with `err` filled) and points `*api` at a
//! static, versioned table of functions taking that handle. The host checks `abi_version` and
//! `struct_size` before calling anything else in the table.
//!
//! Ownership: strings and arrays passed *to* the plugin are borrowed for the call only (except
//! the callbacks' `user_data`, valid until `stop` returns). Object memory returned by `create`
//! and `get` stays valid until the matching `release` (or `disconnect`/`destroy`). Strings the
//! plugin returns (`get_memory_usage`) are freed with the table's `free_string`.

use std::ffi::c_char;
use std::os::raw::c_void;

/// The ABI version this crate implements and accepts.
pub const ABI_VERSION: u32 = 2;
/// Bytes of an object id.
pub const ID_LEN: usize = 28;
/// Bytes of [`GismoError::message`], including the terminating NUL.
pub const ERROR_MESSAGE_LEN: usize = 256;

/// Ray's status numbering (`interface::StatusCode`); 0 is OK.
pub type StatusRaw = i32;

/// Opaque client handle.
#[repr(C)]
pub struct GismoClientHandle {
    _private: [u8; 0],
}

/// Opaque runner handle.
#[repr(C)]
pub struct GismoRunnerHandle {
    _private: [u8; 0],
}

/// An error message a plugin writes (NUL-terminated, truncated to fit).
#[repr(C)]
pub struct GismoError {
    pub message: [c_char; ERROR_MESSAGE_LEN],
}

impl Default for GismoError {
    fn default() -> Self {
        GismoError {
            message: [0; ERROR_MESSAGE_LEN],
        }
    }
}

impl GismoError {
    /// The message up to its NUL (lossy UTF-8).
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self
            .message
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Writes `msg`, truncated, NUL-terminated.
    pub fn set(&mut self, msg: &str) {
        let n = msg.len().min(ERROR_MESSAGE_LEN - 1);
        for (d, s) in self.message.iter_mut().zip(msg.as_bytes()[..n].iter()) {
            *d = *s as c_char;
        }
        self.message[n] = 0;
    }
}

/// The object's owner (Ray's `rpc::Address`).
#[repr(C)]
pub struct GismoOwner {
    pub raylet_id: [u8; ID_LEN],
    /// NUL-terminated; may be null for "".
    pub ip: *const c_char,
    pub port: i32,
    pub worker_id: [u8; ID_LEN],
}

/// One entry of `get`'s output. `data` is null for a missing object (no reference taken).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GismoObjectBuffer {
    pub data: *const u8,
    pub data_len: u64,
    pub metadata: *const u8,
    pub metadata_len: u64,
}

/// Ray's `ObjectInfo`, passed to `add_object`; valid during the call.
#[repr(C)]
pub struct GismoObjectInfo {
    pub object_id: [u8; ID_LEN],
    pub is_mutable: u8,
    pub data_size: i64,
    pub metadata_size: i64,
    pub owner_raylet_id: [u8; ID_LEN],
    /// NUL-terminated, valid during the call.
    pub owner_ip_address: *const c_char,
    pub owner_port: i32,
    pub owner_worker_id: [u8; ID_LEN],
}

/// The raylet's four callbacks. All receive `user_data`; they may be called from any of the
/// plugin's threads, between `start` and the return of `stop`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GismoRunnerCallbacks {
    pub user_data: *mut c_void,
    /// Returns nonzero when spilling is in progress.
    pub spill_objects: Option<unsafe extern "C" fn(user_data: *mut c_void) -> u8>,
    pub object_store_full: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    pub add_object:
        Option<unsafe extern "C" fn(user_data: *mut c_void, info: *const GismoObjectInfo)>,
    pub delete_object: Option<unsafe extern "C" fn(user_data: *mut c_void, id: *const u8)>,
}

type C = GismoClientHandle;
type R = GismoRunnerHandle;

/// The client function table (version 1). Every pointer must be non-null.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GismoClientApi {
    pub abi_version: u32,
    pub struct_size: u32,
    /// `CreateAndSpillIfNeeded`. On success `*data` is the writable payload (`data_size` bytes)
    /// and the caller holds one reference on the object.
    pub create: Option<
        unsafe extern "C" fn(
            h: *mut C,
            id: *const u8,
            owner: *const GismoOwner,
            is_mutable: u8,
            data_size: u64,
            metadata: *const u8,
            metadata_len: u64,
            source: u8,
            data: *mut *mut u8,
            err: *mut GismoError,
        ) -> StatusRaw,
    >,
    /// As `create` without eviction or waiting.
    pub try_create_immediately: Option<
        unsafe extern "C" fn(
            h: *mut C,
            id: *const u8,
            owner: *const GismoOwner,
            data_size: u64,
            metadata: *const u8,
            metadata_len: u64,
            source: u8,
            data: *mut *mut u8,
            err: *mut GismoError,
        ) -> StatusRaw,
    >,
    pub seal:
        Option<unsafe extern "C" fn(h: *mut C, id: *const u8, err: *mut GismoError) -> StatusRaw>,
    pub abort:
        Option<unsafe extern "C" fn(h: *mut C, id: *const u8, err: *mut GismoError) -> StatusRaw>,
    /// `ids` is `n` consecutive 28-byte ids; `out` has room for `n` entries. Each present entry
    /// holds one reference.
    pub get: Option<
        unsafe extern "C" fn(
            h: *mut C,
            ids: *const u8,
            n: u64,
            timeout_ms: i64,
            out: *mut GismoObjectBuffer,
            err: *mut GismoError,
        ) -> StatusRaw,
    >,
    pub release:
        Option<unsafe extern "C" fn(h: *mut C, id: *const u8, err: *mut GismoError) -> StatusRaw>,
    pub contains: Option<
        unsafe extern "C" fn(
            h: *mut C,
            id: *const u8,
            out: *mut u8,
            err: *mut GismoError,
        ) -> StatusRaw,
    >,
    pub delete_objects: Option<
        unsafe extern "C" fn(h: *mut C, ids: *const u8, n: u64, err: *mut GismoError) -> StatusRaw,
    >,
    pub disconnect: Option<unsafe extern "C" fn(h: *mut C, err: *mut GismoError) -> StatusRaw>,
    /// `*out` is a NUL-terminated string for `free_string`.
    pub get_memory_usage: Option<
        unsafe extern "C" fn(h: *mut C, out: *mut *mut c_char, err: *mut GismoError) -> StatusRaw,
    >,
    pub free_string: Option<unsafe extern "C" fn(s: *mut c_char)>,
    pub memory_copy:
        Option<unsafe extern "C" fn(h: *mut C, dst: *mut c_void, src: *const c_void, len: u64)>,
    pub is_global: Option<unsafe extern "C" fn(h: *mut C) -> u8>,
    /// Disconnects (if not yet) and frees the handle.
    pub destroy: Option<unsafe extern "C" fn(h: *mut C)>,
}

/// The runner function table (version 1). Every pointer must be non-null.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GismoRunnerApi {
    pub abi_version: u32,
    pub struct_size: u32,
    pub start: Option<
        unsafe extern "C" fn(
            h: *mut R,
            keys: *const *const c_char,
            values: *const *const c_char,
            n: u64,
            callbacks: *const GismoRunnerCallbacks,
            err: *mut GismoError,
        ) -> StatusRaw,
    >,
    pub stop: Option<unsafe extern "C" fn(h: *mut R)>,
    pub is_object_spillable: Option<unsafe extern "C" fn(h: *mut R, id: *const u8) -> u8>,
    pub consumed_bytes: Option<unsafe extern "C" fn(h: *mut R) -> i64>,
    pub fallback_allocated: Option<unsafe extern "C" fn(h: *mut R) -> i64>,
    pub available_memory: Option<unsafe extern "C" fn(h: *mut R) -> i64>,
    pub total_memory_size: Option<unsafe extern "C" fn(h: *mut R) -> i64>,
    pub max_memory_size: Option<unsafe extern "C" fn(h: *mut R) -> i64>,
    /// Stops (if not yet) and frees the handle.
    pub destroy: Option<unsafe extern "C" fn(h: *mut R)>,
}

/// `CreateClient`'s type.
pub type CreateClientFn = unsafe extern "C" fn(
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
    api: *mut *const GismoClientApi,
    err: *mut GismoError,
) -> *mut GismoClientHandle;

/// `CreateRunner`'s type.
pub type CreateRunnerFn = unsafe extern "C" fn(
    keys: *const *const c_char,
    values: *const *const c_char,
    n: u64,
    api: *mut *const GismoRunnerApi,
    err: *mut GismoError,
) -> *mut GismoRunnerHandle;

/// Exported symbol names.
pub const CREATE_CLIENT_SYMBOL: &[u8] = b"CreateClient\0";
pub const CREATE_RUNNER_SYMBOL: &[u8] = b"CreateRunner\0";

#[cfg(target_pointer_width = "64")]
static_assertions::const_assert_eq!(std::mem::size_of::<GismoObjectBuffer>(), 32);
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert_eq!(std::mem::size_of::<GismoClientApi>(), 8 + 14 * 8);
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert_eq!(std::mem::size_of::<GismoRunnerApi>(), 8 + 9 * 8);
