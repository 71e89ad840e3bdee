//! [`RedisClient`]: the [`ObjectStoreClient`] of the redis plugin.
//!
//! - `create` reserves the id in Redis (`state=created`, `refs=1` for the creation reference; a
//!   taken id is `ObjectExists` for every client) and returns a private local buffer.
//! - `seal` sends the buffer, the metadata and Ray's object info to Redis in one Lua script that
//!   also publishes the id (atomic: a reader sees nothing or the whole sealed object).
//! - `get` takes a reference (`refs += 1`, only on a sealed object) and reads data and metadata in
//!   the same pipelined round trip, into local memory: the client library parses the reply into
//!   one heap buffer per field; metadata, when there is any, is appended after the data (glibc
//!   grows large blocks with `mremap`, without copying). Waiting for an unsealed object:
//!   [`waiter`](crate::waiter).
//! - `release` (or dropping the buffer) frees the local copy and gives the reference back; the last
//!   release of a deleted object removes its key. `delete` removes an unreferenced sealed object at
//!   once and otherwise marks it `delete_pending` (Plasma's deferred delete).
//! - Each client keeps a ledger of the references it holds and the objects it is creating, so
//!   `disconnect` (and dropping the client) gives every reference back and aborts every unsealed
//!   creation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::buffer::LocalBuffer;
use crate::interface::{
    ObjectBuffer, ObjectInfo, ObjectStoreClient, ReleaseObject, Status, WritableBuffer,
};
use crate::node::Node;
use crate::schema::{hex, MAX_VALUE_BYTES, STATE_SEALED};
use crate::settings::RedisSettings;
use crate::store::{ObjectId, ObjectSource, OwnerAddress};
use crate::RedisStoreError;

/// A client of one Redis store. Cheap to make: the pool and subscriber are the node's, shared
/// by every client of the same `(url, prefix)` in the process, and connect lazily.
pub struct RedisClient {
    inner: Arc<ClientInner>,
}

pub(super) struct ClientInner {
    pub(super) node: Arc<Node>,
    /// This client's id: the `creator` field of the objects it is creating, and the name of
    /// its `held` hash and lease in Redis.
    pub(super) me: String,
    /// This client's `wait_recheck_ms` (the node's other settings are the first client's).
    pub(super) wait_recheck: std::time::Duration,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
pub(super) struct Ledger {
    /// Created by this client and not yet sealed or aborted.
    creating: HashMap<ObjectId, Creating>,
    /// Creation references not yet given back (the `WritableBuffer` is alive, or was forgotten).
    creation_refs: HashSet<ObjectId>,
    /// References taken by `get`.
    pub(super) refs: HashMap<ObjectId, u32>,
}

struct Creating {
    handle: Arc<CreationHandle>,
    metadata: Vec<u8>,
    owner: OwnerAddress,
    is_mutable: bool,
}

/// Owns a creation's local buffer; the `WritableBuffer`'s release handle.
struct CreationHandle {
    buffer: LocalBuffer,
    client: Weak<ClientInner>,
}

impl ReleaseObject for CreationHandle {
    fn release_object(&self, id: &ObjectId) {
        if let Some(client) = self.client.upgrade() {
            client.release_creation(id);
        }
    }
}

impl ReleaseObject for ClientInner {
    fn release_object(&self, id: &ObjectId) {
        // A buffer's drop cannot report; a failed release stays in the ledger for `disconnect`.
        let _ = self.release(id);
    }
}

fn unique_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{n}-{salt:016x}", std::process::id())
}

impl RedisClient {
    /// A client for `settings` (see [`RedisSettings`]); connects nothing yet.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a URL the client library refuses.
    pub fn new(settings: &RedisSettings) -> Result<RedisClient, RedisStoreError> {
        let node = Node::get(settings)?;
        let me = unique_client_id();
        node.leases.register(&me);
        Ok(RedisClient {
            inner: Arc::new(ClientInner {
                node,
                me,
                wait_recheck: settings.wait_recheck,
                ledger: Mutex::new(Ledger::default()),
            }),
        })
    }

    /// A client from the plugin configuration (`url=`, `prefix=`, ...; `docs/redis.md`).
    ///
    /// # Errors
    /// `Invalid` for a value that does not parse.
    pub fn from_config(params: &BTreeMap<String, String>) -> Result<RedisClient, Status> {
        Ok(RedisClient::new(&RedisSettings::from_params(params)?)?)
    }

    /// The node this client reports to.
    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }
}

impl ClientInner {
    pub(super) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status for `e`, calling the full callback when Redis is out of memory.
    pub(super) fn fail(&self, e: RedisStoreError) -> Status {
        if matches!(e, RedisStoreError::ServerFull { .. }) {
            self.node.report_full();
        }
        e.into()
    }

    fn create(
        self: &Arc<Self>,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
    ) -> Result<WritableBuffer, Status> {
        let too_large = |what, size| RedisStoreError::TooLarge {
            id: *id,
            what,
            size,
            limit: MAX_VALUE_BYTES,
        };
        if data_size > MAX_VALUE_BYTES {
            return Err(too_large("data", data_size).into());
        }
        if metadata.len() as u64 > MAX_VALUE_BYTES {
            return Err(too_large("metadata", metadata.len() as u64).into());
        }
        if self.ledger().creating.contains_key(id) {
            return Err(RedisStoreError::ObjectExists(*id).into());
        }
        let alloc_failed = || RedisStoreError::LocalAllocation {
            id: *id,
            size: data_size,
        };
        let len = usize::try_from(data_size).map_err(|_| alloc_failed())?;
        let buffer = LocalBuffer::zeroed(len).ok_or_else(alloc_failed)?;
        let node = &self.node;
        let key = node.keys.object(id);
        let mut call = node.scripts.create.prepare_invoke();
        call.key(&key)
            .key(node.keys.held(&self.me))
            .key(node.keys.live(&self.me))
            .arg(&self.me)
            .arg(id.to_string())
            .arg(node.lease_ms());
        let reserved: i64 = node
            .pool
            .run(|c| call.invoke(c))
            .map_err(|e| self.fail(e))?;
        if reserved == 0 {
            return Err(RedisStoreError::ObjectExists(*id).into());
        }
        node.counters
            .created_bytes
            .fetch_add(data_size + metadata.len() as u64, Ordering::Relaxed);
        let handle = Arc::new(CreationHandle {
            buffer,
            client: Arc::downgrade(self),
        });
        let ptr = handle.buffer.as_mut_ptr();
        {
            let mut ledger = self.ledger();
            ledger.creating.insert(
                *id,
                Creating {
                    handle: handle.clone(),
                    metadata: metadata.to_vec(),
                    owner: owner.clone(),
                    is_mutable,
                },
            );
            ledger.creation_refs.insert(*id);
        }
        // SAFETY: `ptr..ptr+len` is the handle's buffer, which lives as long as the handle; the
        // WritableBuffer holds the handle, so the memory outlives the WritableBuffer. Only the
        // creator writes it (the seal reads it after the creator is done, by contract).
        // Dropping the WritableBuffer calls `release_creation` through the handle.
        Ok(unsafe { WritableBuffer::from_raw(*id, ptr, len, handle) })
    }

    /// Why `id` is not one of our creations: already sealed, someone else's, or absent.
    fn not_ours(&self, id: &ObjectId) -> Status {
        let node = &self.node;
        let key = node.keys.object(id);
        match node.pool.run(|c| {
            redis::cmd("HGET")
                .arg(&key)
                .arg("state")
                .query::<Option<String>>(c)
        }) {
            Ok(Some(s)) if s == STATE_SEALED => RedisStoreError::ObjectAlreadySealed(*id).into(),
            Ok(Some(_)) => RedisStoreError::NotCreator(*id).into(),
            Ok(None) => RedisStoreError::ObjectNotFound(*id).into(),
            Err(e) => self.fail(e),
        }
    }

    fn seal(&self, id: &ObjectId) -> Result<(), Status> {
        let Some(creating) = self.ledger().creating.remove(id) else {
            return Err(self.not_ours(id));
        };
        let node = &self.node;
        let key = node.keys.object(id);
        let o = &creating.owner;
        // SAFETY: the creator has finished writing before it seals (the interface's contract);
        // the slice is dropped before this function returns.
        let data = unsafe { creating.handle.buffer.read() };
        let mut call = node.scripts.seal.prepare_invoke();
        call.key(&key)
            .key(node.keys.held(&self.me))
            .arg(&self.me)
            .arg(node.keys.sealed_channel())
            .arg(id.to_string())
            .arg(data)
            .arg(&creating.metadata[..])
            .arg(u8::from(creating.is_mutable))
            .arg(&o.ip)
            .arg(o.port)
            .arg(hex(&o.raylet_id))
            .arg(hex(&o.worker_id));
        let sealed: i64 = match node.pool.run(|c| call.invoke(c)) {
            Ok(r) => r,
            Err(e) => {
                // Not sealed: the creator may retry or abort.
                self.ledger().creating.insert(*id, creating);
                return Err(self.fail(e));
            }
        };
        match sealed {
            1 | 2 => {
                node.report_sealed(&ObjectInfo {
                    object_id: *id,
                    is_mutable: creating.is_mutable,
                    data_size: data.len() as i64,
                    metadata_size: creating.metadata.len() as i64,
                    owner_raylet_id: o.raylet_id,
                    owner_ip_address: o.ip.clone(),
                    owner_port: i32::from(o.port),
                    owner_worker_id: o.worker_id,
                });
                if sealed == 2 {
                    node.report_deleted(id);
                }
                Ok(())
            }
            -1 => Err(RedisStoreError::ObjectAlreadySealed(*id).into()),
            -2 => Err(RedisStoreError::NotCreator(*id).into()),
            _ => {
                // The reservation vanished (removed outside the plugin): nothing to release.
                self.ledger().creation_refs.remove(id);
                Err(RedisStoreError::ObjectNotFound(*id).into())
            }
        }
    }

    fn abort(&self, id: &ObjectId) -> Result<(), Status> {
        let Some(creating) = self.ledger().creating.remove(id) else {
            return Err(match self.not_ours(id) {
                s if s.code == crate::interface::StatusCode::ObjectNotFound => s,
                s if s.code == crate::interface::StatusCode::ObjectAlreadySealed => s,
                _ => RedisStoreError::NotCreator(*id).into(),
            });
        };
        let node = &self.node;
        let key = node.keys.object(id);
        let mut call = node.scripts.abort.prepare_invoke();
        call.key(&key)
            .key(node.keys.held(&self.me))
            .arg(&self.me)
            .arg(id.to_string());
        match node.pool.run(|c| call.invoke::<i64>(c)) {
            Ok(_) => {
                // The creation reference goes with the object; our share of the buffer is freed
                // here (the memory itself once the WritableBuffer, if still alive, is dropped).
                self.ledger().creation_refs.remove(id);
                drop(creating);
                Ok(())
            }
            Err(e) => {
                self.ledger().creating.insert(*id, creating);
                Err(self.fail(e))
            }
        }
    }

    /// `refs -= count` in Redis; reports the delete when it was the last reference of a pending
    /// delete.
    fn release_in_redis(&self, id: &ObjectId, count: u32) -> Result<(), RedisStoreError> {
        let node = &self.node;
        let key = node.keys.object(id);
        let mut call = node.scripts.release.prepare_invoke();
        call.key(&key)
            .key(node.keys.held(&self.me))
            .arg(count)
            .arg(id.to_string());
        if node.pool.run(|c| call.invoke::<i64>(c))? == 2 {
            node.report_deleted(id);
        }
        Ok(())
    }

    fn release(&self, id: &ObjectId) -> Result<(), Status> {
        {
            let mut ledger = self.ledger();
            match ledger.refs.get_mut(id) {
                None => return Err(RedisStoreError::NoReference(*id).into()),
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    ledger.refs.remove(id);
                }
            }
        }
        self.release_in_redis(id, 1).map_err(|e| {
            *self.ledger().refs.entry(*id).or_insert(0) += 1;
            self.fail(e)
        })
    }

    /// The `WritableBuffer` was dropped: give the creation reference back (unless aborted).
    fn release_creation(&self, id: &ObjectId) {
        if !self.ledger().creation_refs.remove(id) {
            return;
        }
        if self.release_in_redis(id, 1).is_err() {
            self.ledger().creation_refs.insert(*id);
        }
    }

    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status> {
        let node = &self.node;
        for id in ids {
            let key = node.keys.object(id);
            let mut call = node.scripts.delete.prepare_invoke();
            call.key(&key);
            let r: i64 = node
                .pool
                .run(|c| call.invoke(c))
                .map_err(|e| self.fail(e))?;
            if r == 1 {
                node.report_deleted(id);
            }
        }
        Ok(())
    }

    /// Gives back every reference and aborts every unsealed creation; what fails stays in the
    /// ledger (for a later `disconnect`) and the first failure is returned.
    fn disconnect(&self) -> Result<(), Status> {
        let ledger = std::mem::take(&mut *self.ledger());
        let mut first: Option<Status> = None;
        let mut keep = Ledger::default();
        let node = &self.node;
        let mut creation_refs = ledger.creation_refs;
        for (id, creating) in ledger.creating {
            let key = node.keys.object(&id);
            let mut call = node.scripts.abort.prepare_invoke();
            call.key(&key)
                .key(node.keys.held(&self.me))
                .arg(&self.me)
                .arg(id.to_string());
            match node.pool.run(|c| call.invoke::<i64>(c)) {
                Ok(_) => {
                    creation_refs.remove(&id);
                }
                Err(e) => {
                    first.get_or_insert_with(|| self.fail(e));
                    keep.creating.insert(id, creating);
                }
            }
        }
        for id in creation_refs {
            if let Err(e) = self.release_in_redis(&id, 1) {
                first.get_or_insert_with(|| self.fail(e));
                keep.creation_refs.insert(id);
            }
        }
        for (id, n) in ledger.refs {
            if let Err(e) = self.release_in_redis(&id, n) {
                first.get_or_insert_with(|| self.fail(e));
                keep.refs.insert(id, n);
            }
        }
        let mut ledger = self.ledger();
        ledger.creating.extend(keep.creating);
        ledger.creation_refs.extend(keep.creation_refs);
        for (id, n) in keep.refs {
            *ledger.refs.entry(id).or_insert(0) += n;
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let ledger = self.ledger();
        let idle =
            ledger.creating.is_empty() && ledger.creation_refs.is_empty() && ledger.refs.is_empty();
        drop(ledger);
        if !idle {
            // Best effort: a client dropped without `disconnect` still gives its references back.
            let _ = self.disconnect();
        }
        // Whatever the disconnect could not give back is reaped once the lease runs out.
        self.node.leases.unregister(&self.me);
    }
}

impl ObjectStoreClient for RedisClient {
    fn create(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        _source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.inner
            .create(id, owner, is_mutable, data_size, metadata)
    }

    /// Redis has no eviction to wait for: the same as `create`.
    fn try_create_immediately(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        data_size: u64,
        metadata: &[u8],
        _source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.inner.create(id, owner, false, data_size, metadata)
    }

    fn seal(&self, id: &ObjectId) -> Result<(), Status> {
        self.inner.seal(id)
    }

    fn abort(&self, id: &ObjectId) -> Result<(), Status> {
        self.inner.abort(id)
    }

    fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        self.inner.get(ids, timeout_ms)
    }

    fn release(&self, id: &ObjectId) -> Result<(), Status> {
        self.inner.release(id)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Status> {
        self.inner.contains(id)
    }

    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status> {
        self.inner.delete(ids)
    }

    fn disconnect(&self) -> Result<(), Status> {
        self.inner.disconnect()
    }

    fn get_memory_usage(&self) -> Result<String, Status> {
        let node = &self.inner.node;
        let mem = node.memory_info().map_err(|e| self.inner.fail(e))?;
        let objects = node.count_objects().map_err(|e| self.inner.fail(e))?;
        let (refs, creating) = {
            let l = self.inner.ledger();
            (
                l.refs.values().map(|&n| u64::from(n)).sum::<u64>(),
                l.creating.len(),
            )
        };
        let c = &node.counters;
        Ok(format!(
            "Redis {} (prefix {:?}): used_memory {} bytes, maxmemory {}; {} objects under {}; \
             this process: {} sealed, {} deleted, {} bytes created; this client: {} references \
             held, {} objects being created",
            node.pool.url(),
            node.settings.prefix,
            mem.used_memory,
            if mem.maxmemory == 0 {
                "unlimited".to_string()
            } else {
                format!("{} bytes", mem.maxmemory)
            },
            objects,
            node.keys.object_pattern(),
            c.sealed.load(Ordering::Relaxed),
            c.deleted.load(Ordering::Relaxed),
            c.created_bytes.load(Ordering::Relaxed),
            refs,
            creating
        ))
    }

    unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: the caller guarantees `src` readable, `dst` writable for `len`, no overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }

    /// True: every node that talks to this Redis sees every sealed object, so no raylet-to-raylet
    /// pull is needed. A `get` still copies the object into local memory (it is not zero copy).
    fn is_global(&self) -> bool {
        true
    }
}
