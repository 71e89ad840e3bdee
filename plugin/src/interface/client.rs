//! The client interface every object store plugin implements.

use std::sync::Arc;

use crate::interface::Status;
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};

/// Gives a reference back; implemented by each plugin's client.
pub trait ReleaseObject: Send + Sync {
    fn release_object(&self, id: &ObjectId);

    /// Whether the references this owner handed out still guarantee their bytes: false once
    /// its client was declared dead (fenced), after which a zero-copy buffer's memory may be
    /// reused. Owners of private copies never change their bytes (the default).
    fn still_valid(&self) -> bool {
        true
    }
}

/// A sealed object returned by `get`: its data and metadata, valid while the buffer lives.
/// Dropping it releases the reference (Plasma's `PlasmaBuffer`).
pub struct ObjectBuffer {
    id: ObjectId,
    data: *const u8,
    data_len: usize,
    metadata_len: usize,
    owner: Option<Arc<dyn ReleaseObject>>,
    /// Keeps a plugin-owned copy alive (plugins that are not zero copy).
    _storage: Option<Box<[u8]>>,
}

// SAFETY: the buffer points to immutable bytes (a sealed object, or `_storage`) that stay valid
// until `Drop` releases them; reading them from any thread is safe.
unsafe impl Send for ObjectBuffer {}
// SAFETY: as above; `&ObjectBuffer` only gives out shared slices.
unsafe impl Sync for ObjectBuffer {}

impl ObjectBuffer {
    /// A buffer over `data_len + metadata_len` bytes at `data`, released through `owner`.
    ///
    /// # Safety
    /// The bytes must stay valid and unmodified until `owner.release_object(id)` is called (by
    /// this buffer's `Drop`).
    pub unsafe fn from_raw(
        id: ObjectId,
        data: *const u8,
        data_len: usize,
        metadata_len: usize,
        owner: Arc<dyn ReleaseObject>,
    ) -> ObjectBuffer {
        ObjectBuffer {
            id,
            data,
            data_len,
            metadata_len,
            owner: Some(owner),
            _storage: None,
        }
    }

    /// A buffer that owns a copy of the object (data then metadata) and releases through `owner`.
    pub fn from_copy(
        id: ObjectId,
        bytes: Box<[u8]>,
        data_len: usize,
        owner: Option<Arc<dyn ReleaseObject>>,
    ) -> Self {
        assert!(data_len <= bytes.len());
        ObjectBuffer {
            id,
            data: bytes.as_ptr(),
            data_len,
            metadata_len: bytes.len() - data_len,
            owner,
            _storage: Some(bytes),
        }
    }

    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    pub fn data(&self) -> &[u8] {
        // SAFETY: valid until drop (contract of `from_raw`, or owned storage).
        unsafe { std::slice::from_raw_parts(self.data, self.data_len) }
    }

    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as in `data`; metadata follows the data.
        unsafe { std::slice::from_raw_parts(self.data.add(self.data_len), self.metadata_len) }
    }

    /// Where the data is in this process.
    pub fn as_ptr(&self) -> *const u8 {
        self.data
    }

    /// Whether the bytes are still guaranteed to be this object's (see
    /// [`ReleaseObject::still_valid`]). A copying reader calls it **after** its copy and drops
    /// the copy if it is false; [`ObjectBuffer::copy_checked`] does both.
    pub fn still_valid(&self) -> bool {
        self.owner.as_ref().is_none_or(|o| o.still_valid())
    }

    /// `range` of the buffer (data then metadata) copied out, or `None` if the client was fenced
    /// by the end of the copy (the copy may then hold another object's bytes).
    pub fn copy_checked(&self, range: std::ops::Range<usize>) -> Option<Vec<u8>> {
        let all = self.data_len + self.metadata_len;
        let range = range.start.min(all)..range.end.min(all);
        // SAFETY: as in `data`; the range is clamped to the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(self.data, all) };
        let v = bytes.get(range).unwrap_or_default().to_vec();
        self.still_valid().then_some(v)
    }
}

impl Drop for ObjectBuffer {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.release_object(&self.id);
        }
    }
}

impl std::fmt::Debug for ObjectBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBuffer")
            .field("id", &self.id)
            .field("data_len", &self.data_len)
            .field("metadata_len", &self.metadata_len)
            .finish()
    }
}

/// The writable buffer `create` returns. Write the data, then `seal` the id. Dropping the buffer
/// drops the creation reference (as Plasma's buffer destructor does); it does not abort.
pub struct WritableBuffer {
    id: ObjectId,
    data: *mut u8,
    len: usize,
    owner: Option<Arc<dyn ReleaseObject>>,
}

// SAFETY: the creator exclusively owns the unsealed payload; moving the handle between threads is
// fine, and `&mut self` is needed to write.
unsafe impl Send for WritableBuffer {}

impl WritableBuffer {
    /// # Safety
    /// `data..data+len` must stay valid and exclusively writable by this buffer until the object
    /// is sealed or aborted; `owner.release_object(id)` must drop the creation reference.
    pub unsafe fn from_raw(
        id: ObjectId,
        data: *mut u8,
        len: usize,
        owner: Arc<dyn ReleaseObject>,
    ) -> WritableBuffer {
        WritableBuffer {
            id,
            data,
            len,
            owner: Some(owner),
        }
    }

    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: exclusive and valid (contract of `from_raw`); `&mut self` prevents aliasing.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data
    }
}

impl std::fmt::Debug for WritableBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritableBuffer")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for WritableBuffer {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.release_object(&self.id);
        }
    }
}

/// `ObjectStoreClientInterface`: the calls a Ray worker or raylet makes on its object store.
///
/// Semantics follow Plasma (see `docs/store.md` and the conformance suite): references go up only
/// in `create`/`get` and down only in `release`/`disconnect`; `get` with `timeout_ms = -1` waits
/// forever, `0` returns at once, and a missing object is a `None` entry with an `Ok` status.
pub trait ObjectStoreClient: Send + Sync {
    /// `CreateAndSpillIfNeeded`: may evict (and wait) to make room.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status>;

    /// `TryCreateImmediately`: no eviction, no waiting.
    fn try_create_immediately(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status>;

    fn seal(&self, id: &ObjectId) -> Result<(), Status>;
    fn abort(&self, id: &ObjectId) -> Result<(), Status>;
    fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>, Status>;
    fn release(&self, id: &ObjectId) -> Result<(), Status>;
    fn contains(&self, id: &ObjectId) -> Result<bool, Status>;
    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status>;
    fn disconnect(&self) -> Result<(), Status>;
    fn get_memory_usage(&self) -> Result<String, Status>;

    /// Copies into an object's payload so that other hosts see it (the proposal's `MemoryCopy`).
    ///
    /// Bytes of an object under creation written this way are visible to other hosts when the
    /// call returns, and a Flush-mode seal does not write them back again (GISMO: it writes back
    /// only the payload's other bytes). So do not overwrite them through the buffer afterwards:
    /// copy them again with `memory_copy`.
    ///
    /// # Safety
    /// `src..src+len` readable, `dst..dst+len` writable, not overlapping.
    unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize);

    /// Whether every node attached to the store sees every object (no raylet-to-raylet pull).
    fn is_global(&self) -> bool;
}
