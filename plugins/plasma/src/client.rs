//! [`PlasmaClient`]: a client of a plasma store — ours, or a Ray raylet's — over its Unix socket.
//!
//! Every lifecycle call is a message to the store, as in Ray's `PlasmaClient`; payloads are read
//! and written in place in the store's segments, which the client maps from the descriptors the
//! store sends (once per segment per connection). The client counts its own references: repeated
//! gets of an object it already holds are served locally, and only the last release of an
//! object sends a message (one-way, except for fallback segments, which may be unmapped).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::fd::recv_fd;
use crate::interface::ReleaseObject;
use crate::interface::{ObjectBuffer, ObjectStoreClient, Status, StatusCode, WritableBuffer};
use crate::protocol::{
    decode_connect_reply, decode_debug_string, encode_empty, read_frame, write_frame, CreateReply,
    CreateRequest, CreateRetryRequest, DeleteMessage, GetReply, GetRequest, IdMessage, MessageType,
    ObjectSpec, PlasmaError, ProtocolError, ReleaseReply,
};
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};

type SegmentKey = (i32, i64);

struct InUse {
    spec: ObjectSpec,
    segment: SegmentKey,
    count: u32,
    sealed: bool,
}

struct Conn {
    stream: UnixStream,
    body: Vec<u8>,
    in_use: HashMap<ObjectId, InUse>,
    segments: HashMap<SegmentKey, Arc<MmapRaw>>,
    /// Deletes asked while this client still used the object: sent on its last release.
    deletion_cache: HashSet<ObjectId>,
    closed: bool,
}

struct Inner {
    conn: Mutex<Conn>,
    capacity: i64,
    full_delay: Duration,
}

/// A plasma client; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct PlasmaClient {
    inner: Arc<Inner>,
}

fn io_status(e: ProtocolError) -> Status {
    Status::new(StatusCode::IOError, format!("plasma: {e}"))
}

fn plasma_status(e: PlasmaError, what: &str, id: &ObjectId) -> Status {
    let code = match e {
        PlasmaError::Ok => StatusCode::Ok,
        PlasmaError::ObjectExists => StatusCode::ObjectExists,
        PlasmaError::ObjectNonexistent => StatusCode::ObjectNotFound,
        PlasmaError::OutOfMemory => StatusCode::ObjectStoreFull,
        PlasmaError::OutOfDisk => StatusCode::OutOfDisk,
        PlasmaError::ObjectSealed => StatusCode::ObjectAlreadySealed,
        PlasmaError::ObjectNotSealed | PlasmaError::ObjectInUse => StatusCode::Invalid,
        PlasmaError::UnexpectedError => StatusCode::UnknownError,
    };
    Status::new(code, format!("plasma {what} {id}: {e:?}"))
}

impl Conn {
    fn call(&mut self, kind: MessageType, body: &[u8], expect: MessageType) -> Result<(), Status> {
        self.send(kind, body)?;
        self.recv(expect)
    }

    fn send(&mut self, kind: MessageType, body: &[u8]) -> Result<(), Status> {
        if self.closed {
            return Err(Status::new(StatusCode::IOError, "plasma: disconnected"));
        }
        write_frame(&mut self.stream, kind, body).map_err(|e| io_status(e.into()))
    }

    fn recv(&mut self, expect: MessageType) -> Result<(), Status> {
        let got = read_frame(&mut self.stream, &mut self.body).map_err(io_status)?;
        if got != expect {
            return Err(io_status(ProtocolError::Unexpected {
                expected: expect,
                got,
            }));
        }
        Ok(())
    }

    /// The mapping of a segment, receiving its descriptor if this is its first use.
    fn segment(&mut self, key: SegmentKey, size: i64) -> Result<Arc<MmapRaw>, Status> {
        if let Some(m) = self.segments.get(&key) {
            return Ok(m.clone());
        }
        let fd = recv_fd(&self.stream).map_err(|e| io_status(e.into()))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                Status::new(StatusCode::IOError, format!("plasma: segment size {size}"))
            })?;
        let file = File::from(fd);
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|e| Status::new(StatusCode::IOError, format!("plasma: mmap segment: {e}")))?;
        let map = Arc::new(map);
        self.segments.insert(key, map.clone());
        Ok(map)
    }

    /// Where an object's data is in this process, after checking that the spec lies inside its
    /// segment (a store's reply is input like any other).
    fn locate(&self, spec: &ObjectSpec, key: SegmentKey) -> Result<*mut u8, Status> {
        let map = self.segments.get(&key).ok_or_else(|| {
            Status::new(StatusCode::IOError, "plasma: object in an unknown segment")
        })?;
        let end = spec
            .data_offset
            .checked_add(spec.data_size)
            .and_then(|e| e.checked_add(spec.metadata_size));
        let fits = spec.metadata_offset == spec.data_offset + spec.data_size
            && end.is_some_and(|e| e <= map.len() as u64);
        if !fits {
            return Err(Status::new(
                StatusCode::IOError,
                format!(
                    "plasma: object at {}+{}+{} lies outside its {}-byte segment",
                    spec.data_offset,
                    spec.data_size,
                    spec.metadata_size,
                    map.len()
                ),
            ));
        }
        // SAFETY: `data_offset` is within the mapping (checked above).
        Ok(unsafe { map.as_mut_ptr().add(spec.data_offset as usize) })
    }
}

impl PlasmaClient {
    /// Connects to the store at `socket`, retrying until `timeout` while it is not there yet
    /// (a raylet starts its store concurrently with its workers).
    ///
    /// # Errors
    /// `IOError` naming the socket when nothing answers in time or the peer is not a plasma
    /// store.
    pub fn connect(
        socket: &Path,
        timeout: Duration,
        full_delay: Duration,
    ) -> Result<PlasmaClient, Status> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Status::new(
                        StatusCode::IOError,
                        format!("plasma: cannot connect to {}: {e}", socket.display()),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut conn = Conn {
            stream,
            body: Vec::new(),
            in_use: HashMap::new(),
            segments: HashMap::new(),
            deletion_cache: HashSet::new(),
            closed: false,
        };
        conn.call(
            MessageType::ConnectRequest,
            &encode_empty(),
            MessageType::ConnectReply,
        )?;
        let capacity = decode_connect_reply(&conn.body).map_err(io_status)?;
        Ok(PlasmaClient {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                capacity,
                full_delay,
            }),
        })
    }

    /// Connects as the plugin configuration says (`store_socket_name`, `connect_timeout_ms`,
    /// `object_store_full_delay_ms`).
    ///
    /// # Errors
    /// As [`PlasmaClient::connect`]; `Invalid` for a bad configuration.
    pub fn from_config(
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<PlasmaClient, Status> {
        let s = crate::PlasmaSettings::from_params(params)?;
        PlasmaClient::connect(&s.socket, s.connect_timeout, s.full_delay)
    }

    /// The store's capacity, as its connect reply said.
    pub fn capacity(&self) -> i64 {
        self.inner.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_inner(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
        try_immediately: bool,
    ) -> Result<WritableBuffer, Status> {
        let req = CreateRequest {
            object_id: *id,
            owner_node_id: owner.raylet_id.to_vec(),
            owner_ip_address: owner.ip.clone(),
            owner_port: i32::from(owner.port),
            owner_worker_id: owner.worker_id.to_vec(),
            is_mutable,
            data_size,
            metadata_size: metadata.len() as u64,
            source: source as i32,
            device_num: 0,
            try_immediately,
        };
        let mut conn = self.lock();
        conn.call(
            MessageType::CreateRequest,
            &req.encode(),
            MessageType::CreateReply,
        )?;
        let mut reply = CreateReply::decode(&conn.body).map_err(io_status)?;
        while reply.retry_with_request_id > 0 {
            // Queued behind memory pressure: wait and retry, as Ray's client does (the lock is
            // released meanwhile so other threads' calls go on).
            drop(conn);
            std::thread::sleep(self.inner.full_delay);
            conn = self.lock();
            let retry = CreateRetryRequest {
                object_id: *id,
                request_id: reply.retry_with_request_id,
            };
            conn.call(
                MessageType::CreateRetryRequest,
                &retry.encode(),
                MessageType::CreateReply,
            )?;
            reply = CreateReply::decode(&conn.body).map_err(io_status)?;
        }
        let err = PlasmaError::from_i32(reply.error);
        if err != PlasmaError::Ok {
            return Err(plasma_status(err, "create", id));
        }
        let key = (reply.store_fd, reply.unique_fd_id);
        conn.segment(key, reply.mmap_size)?;
        let spec = reply.object;
        if spec.data_size != data_size || spec.metadata_size != metadata.len() as u64 {
            return Err(Status::new(
                StatusCode::IOError,
                format!("plasma create {id}: the store answered for other sizes"),
            ));
        }
        let ptr = conn.locate(&spec, key)?;
        // SAFETY: `ptr..ptr + data + metadata` lies in the mapped segment (`locate`); the object
        // is ours alone until sealed; `metadata` is a distinct allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                metadata.as_ptr(),
                ptr.add(data_size as usize),
                metadata.len(),
            )
        };
        conn.in_use.insert(
            *id,
            InUse {
                spec,
                segment: key,
                count: 1,
                sealed: false,
            },
        );
        drop(conn);
        let owner: Arc<dyn ReleaseObject> = Arc::new(self.clone());
        // SAFETY: the payload stays mapped while the client lives (the buffer holds it through
        // `owner`) and is ours alone until sealed; the buffer's drop releases the reference.
        Ok(unsafe { WritableBuffer::from_raw(*id, ptr, data_size as usize, owner) })
    }

    /// Drops one local reference; the last one tells the store.
    fn release_local(&self, conn: &mut Conn, id: &ObjectId) -> Result<(), Status> {
        let entry = conn.in_use.get_mut(id).ok_or_else(|| {
            Status::new(
                StatusCode::ObjectNotFound,
                format!("plasma release {id}: not held"),
            )
        })?;
        entry.count -= 1;
        if entry.count > 0 {
            return Ok(());
        }
        let fallback = entry.spec.fallback_allocated;
        let key = entry.segment;
        conn.in_use.remove(id);
        let req = IdMessage::new(*id, i32::from(fallback));
        if fallback {
            conn.call(
                MessageType::ReleaseRequest,
                &req.encode(MessageType::ReleaseRequest),
                MessageType::ReleaseReply,
            )?;
            let reply = ReleaseReply::decode(&conn.body).map_err(io_status)?;
            let still_used = conn.in_use.values().any(|u| u.segment == key);
            if reply.should_unmap && !still_used {
                // Buffers still alive keep their own `Arc` of the mapping.
                conn.segments.remove(&key);
            }
        } else {
            conn.send(
                MessageType::ReleaseRequest,
                &req.encode(MessageType::ReleaseRequest),
            )?;
        }
        if conn.deletion_cache.remove(id) {
            Self::send_delete(conn, &[*id])?;
        }
        Ok(())
    }

    fn send_delete(conn: &mut Conn, ids: &[ObjectId]) -> Result<(), Status> {
        let msg = DeleteMessage {
            object_ids: ids.to_vec(),
            errors: Vec::new(),
        };
        conn.call(
            MessageType::DeleteRequest,
            &msg.encode(MessageType::DeleteRequest),
            MessageType::DeleteReply,
        )?;
        DeleteMessage::decode(MessageType::DeleteReply, &conn.body).map_err(io_status)?;
        Ok(())
    }

    fn buffer(&self, conn: &Conn, id: &ObjectId) -> Result<ObjectBuffer, Status> {
        let u = &conn.in_use[id];
        let ptr = conn.locate(&u.spec, u.segment)?;
        let owner: Arc<dyn ReleaseObject> = Arc::new(self.clone());
        // SAFETY: the object is sealed (immutable) and referenced by this client until the
        // buffer's drop releases it; its segment stays mapped while the client lives.
        Ok(unsafe {
            ObjectBuffer::from_raw(
                *id,
                ptr,
                u.spec.data_size as usize,
                u.spec.metadata_size as usize,
                owner,
            )
        })
    }
}

impl ReleaseObject for PlasmaClient {
    fn release_object(&self, id: &ObjectId) {
        let mut conn = self.lock();
        let _ = self.release_local(&mut conn, id);
    }
}

impl ObjectStoreClient for PlasmaClient {
    fn create(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_inner(id, owner, is_mutable, data_size, metadata, source, false)
    }

    fn try_create_immediately(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_inner(id, owner, false, data_size, metadata, source, true)
    }

    fn seal(&self, id: &ObjectId) -> Result<(), Status> {
        let mut conn = self.lock();
        // Unknown here (e.g. the creation buffer is already dropped): the store decides.
        if conn.in_use.get(id).is_some_and(|u| u.sealed) {
            return Err(Status::new(
                StatusCode::ObjectAlreadySealed,
                format!("plasma seal {id}: already sealed"),
            ));
        }
        let msg = IdMessage::new(*id, 0);
        conn.call(
            MessageType::SealRequest,
            &msg.encode(MessageType::SealRequest),
            MessageType::SealReply,
        )?;
        let reply = IdMessage::decode(MessageType::SealReply, &conn.body).map_err(io_status)?;
        let err = PlasmaError::from_i32(reply.value);
        if err != PlasmaError::Ok {
            return Err(plasma_status(err, "seal", id));
        }
        if let Some(u) = conn.in_use.get_mut(id) {
            u.sealed = true;
        }
        Ok(())
    }

    fn abort(&self, id: &ObjectId) -> Result<(), Status> {
        let mut conn = self.lock();
        if conn.in_use.get(id).is_some_and(|u| u.sealed || u.count > 1) {
            return Err(Status::invalid(format!(
                "plasma abort {id}: sealed or still in use by this client"
            )));
        }
        let msg = IdMessage::new(*id, 0);
        conn.call(
            MessageType::AbortRequest,
            &msg.encode(MessageType::AbortRequest),
            MessageType::AbortReply,
        )?;
        let reply = IdMessage::decode(MessageType::AbortReply, &conn.body).map_err(io_status)?;
        // Our store echoes the id of an abort it performed and a zero id for one it refused
        // (Ray's reply has no error field).
        if reply.object_id != *id {
            return Err(Status::invalid(format!(
                "plasma abort {id}: refused (not the creator, or sealed)"
            )));
        }
        conn.in_use.remove(id);
        Ok(())
    }

    fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        let mut conn = self.lock();
        let local = ids
            .iter()
            .all(|id| conn.in_use.get(id).is_some_and(|u| u.sealed));
        if !local {
            let req = GetRequest {
                object_ids: ids.to_vec(),
                timeout_ms,
            };
            conn.call(
                MessageType::GetRequest,
                &req.encode(),
                MessageType::GetReply,
            )?;
            let reply = GetReply::decode(&conn.body).map_err(io_status)?;
            if reply.object_ids.len() != ids.len() {
                return Err(Status::new(
                    StatusCode::IOError,
                    "plasma get: the reply does not match the request",
                ));
            }
            for i in 0..reply.store_fds.len() {
                conn.segment(
                    (reply.store_fds[i], reply.unique_fd_ids[i]),
                    reply.mmap_sizes[i],
                )?;
            }
            // Every object the store returned took one store reference for this client; the
            // client counts the gets itself.
            for (id, spec) in ids.iter().zip(&reply.objects) {
                if spec.data_size == u64::MAX {
                    continue;
                }
                let key = (spec.segment_index, spec.unique_fd_id);
                conn.locate(spec, key)?;
                match conn.in_use.get_mut(id) {
                    Some(u) => {
                        // Already held (e.g. created here and sealed since): the store counted
                        // this client once.
                        u.sealed = true;
                        u.count += 1;
                    }
                    None => {
                        conn.in_use.insert(
                            *id,
                            InUse {
                                spec: *spec,
                                segment: key,
                                count: 1,
                                sealed: true,
                            },
                        );
                    }
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for (id, spec) in ids.iter().zip(&reply.objects) {
                out.push(if spec.data_size == u64::MAX {
                    None
                } else {
                    Some(self.buffer(&conn, id)?)
                });
            }
            return Ok(out);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(u) = conn.in_use.get_mut(id) {
                u.count += 1;
            }
            out.push(Some(self.buffer(&conn, id)?));
        }
        Ok(out)
    }

    fn release(&self, id: &ObjectId) -> Result<(), Status> {
        let mut conn = self.lock();
        self.release_local(&mut conn, id)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Status> {
        let mut conn = self.lock();
        if conn.in_use.get(id).is_some_and(|u| u.sealed) {
            return Ok(true);
        }
        let msg = IdMessage::new(*id, 0);
        conn.call(
            MessageType::ContainsRequest,
            &msg.encode(MessageType::ContainsRequest),
            MessageType::ContainsReply,
        )?;
        let reply = IdMessage::decode(MessageType::ContainsReply, &conn.body).map_err(io_status)?;
        Ok(reply.value != 0)
    }

    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status> {
        let mut conn = self.lock();
        let mut now = Vec::new();
        for id in ids {
            if conn.in_use.contains_key(id) {
                conn.deletion_cache.insert(*id);
            } else {
                now.push(*id);
            }
        }
        if now.is_empty() {
            return Ok(());
        }
        Self::send_delete(&mut conn, &now)
    }

    fn disconnect(&self) -> Result<(), Status> {
        let mut conn = self.lock();
        if !conn.closed {
            // Deletes waiting for this client's last release: the store remembers them (the
            // objects are in use) and acts when the disconnect drops our references.
            let cached: Vec<ObjectId> = conn.deletion_cache.drain().collect();
            if !cached.is_empty() {
                let _ = Self::send_delete(&mut conn, &cached);
            }
            // The store releases everything this client held and aborts its unsealed objects
            // when the connection closes. Close our side and wait (bounded) for the store to
            // close its own, which it does after that clean-up: when `disconnect` returns, the
            // references are gone.
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 64];
            while matches!(std::io::Read::read(&mut conn.stream, &mut sink), Ok(n) if n > 0) {}
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            conn.closed = true;
            conn.in_use.clear();
            conn.deletion_cache.clear();
        }
        Ok(())
    }

    fn get_memory_usage(&self) -> Result<String, Status> {
        let mut conn = self.lock();
        conn.call(
            MessageType::GetDebugStringRequest,
            &encode_empty(),
            MessageType::GetDebugStringReply,
        )?;
        decode_debug_string(&conn.body).map_err(io_status)
    }

    unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the caller's contract; node-local memory is coherent.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }

    fn is_global(&self) -> bool {
        false
    }
}
