//! One client connection: read a request, act on the state under the lock, reply, and send the
//! segment descriptors the client has not seen yet. Runs on its own thread; a read error or EOF
//! is the client's disconnect.

use std::collections::HashSet;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fd::send_fd;
use crate::protocol::{
    decode_empty, encode_connect_reply, encode_debug_string, read_frame, write_frame, CreateReply,
    CreateRequest, CreateRetryRequest, DeleteMessage, GetReply, GetRequest, IdMessage, MessageType,
    ObjectSpec, PlasmaError, ProtocolError, ReleaseReply,
};
use gismo_core::store::ObjectId;

use super::state::{ClientId, CreateOutcome, Effects, SegmentRef};
use super::Server;

/// How often a held get checks that its client is still there.
const PEER_CHECK: Duration = Duration::from_millis(100);

pub(super) struct Connection {
    server: Arc<Server>,
    stream: UnixStream,
    client: ClientId,
    /// Segments whose descriptor this client already has.
    sent: HashSet<i64>,
}

impl Connection {
    pub fn new(server: Arc<Server>, stream: UnixStream, client: ClientId) -> Connection {
        Connection {
            server,
            stream,
            client,
            sent: HashSet::new(),
        }
    }

    /// Serves until the client hangs up (or breaks the protocol), then cleans up after it.
    pub fn run(mut self) {
        let mut body = Vec::new();
        loop {
            let kind = match read_frame(&mut self.stream, &mut body) {
                Ok(k) => k,
                Err(ProtocolError::Io(_)) => break,
                Err(e) => {
                    self.server
                        .log(&format!("client {}: {e}; closing", self.client));
                    break;
                }
            };
            if kind == MessageType::DisconnectClient {
                break;
            }
            if let Err(e) = self.handle(kind, &body) {
                if !matches!(e, ProtocolError::Io(_)) {
                    self.server
                        .log(&format!("client {}: {e}; closing", self.client));
                }
                break;
            }
        }
        let mut fx = Effects::default();
        self.server.lock().disconnect(self.client, &mut fx);
        self.server.after(fx);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn reply(&mut self, kind: MessageType, body: &[u8]) -> Result<(), ProtocolError> {
        write_frame(&mut self.stream, kind, body)?;
        Ok(())
    }

    /// Sends the descriptors of `segs` this client has not had yet, in order.
    fn send_segments(&mut self, segs: &[SegmentRef]) -> Result<(), ProtocolError> {
        for s in segs {
            if self.sent.insert(s.unique_id) {
                send_fd(&self.stream, s.fd)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, kind: MessageType, body: &[u8]) -> Result<(), ProtocolError> {
        match kind {
            MessageType::ConnectRequest => {
                decode_empty(kind, body)?;
                let cap = self.server.lock().capacity() as i64;
                self.reply(MessageType::ConnectReply, &encode_connect_reply(cap))
            }
            MessageType::CreateRequest => {
                let req = CreateRequest::decode(body)?;
                let id = req.object_id;
                let mut fx = Effects::default();
                let outcome = self.server.lock().create(
                    self.client,
                    req,
                    &self.server.settings.fallback_directory,
                    &mut fx,
                );
                self.server.after(fx);
                self.send_create(id, outcome)
            }
            MessageType::CreateRetryRequest => {
                let req = CreateRetryRequest::decode(body)?;
                // Ask the raylet about spilling outside the lock (its callback may call back).
                let spilling = self.server.lock().has_queue() && self.server.spill();
                let mut fx = Effects::default();
                let outcome = self.server.lock().retry(
                    self.client,
                    req.request_id,
                    spilling,
                    self.server.settings.oom_grace_period,
                    &self.server.settings.fallback_directory,
                    &mut fx,
                );
                fx.spill = false; // asked above
                self.server.after(fx);
                self.send_create(req.object_id, outcome)
            }
            MessageType::SealRequest => {
                let m = IdMessage::decode(kind, body)?;
                let mut fx = Effects::default();
                let err = self.server.lock().seal(&m.object_id, &mut fx);
                if err == PlasmaError::Ok {
                    self.server.sealed.notify_all();
                }
                self.server.after(fx);
                self.reply(
                    MessageType::SealReply,
                    &IdMessage::new(m.object_id, err as i32).encode(MessageType::SealReply),
                )
            }
            MessageType::AbortRequest => {
                let m = IdMessage::decode(kind, body)?;
                let mut fx = Effects::default();
                let err = self.server.lock().abort(self.client, &m.object_id, &mut fx);
                self.server.after(fx);
                // Ray's abort reply has no error field; a refused abort closes nothing but is
                // reported as a reply whose id is all zeros.
                let id = if err == PlasmaError::Ok {
                    m.object_id
                } else {
                    ObjectId::default()
                };
                self.reply(
                    MessageType::AbortReply,
                    &IdMessage::new(id, 0).encode(MessageType::AbortReply),
                )
            }
            MessageType::GetRequest => {
                let req = GetRequest::decode(body)?;
                self.get(req)
            }
            MessageType::ReleaseRequest => {
                let m = IdMessage::decode(kind, body)?;
                let mut fx = Effects::default();
                let r = self
                    .server
                    .lock()
                    .release(self.client, &m.object_id, &mut fx);
                self.server.after(fx);
                if m.value != 0 {
                    let reply = ReleaseReply {
                        object_id: m.object_id,
                        should_unmap: r == Some(true),
                        error: if r.is_some() {
                            PlasmaError::Ok as i32
                        } else {
                            PlasmaError::ObjectNonexistent as i32
                        },
                    };
                    self.reply(MessageType::ReleaseReply, &reply.encode())?;
                }
                Ok(())
            }
            MessageType::DeleteRequest => {
                let m = DeleteMessage::decode(kind, body)?;
                let mut fx = Effects::default();
                let errors: Vec<i32> = {
                    let mut st = self.server.lock();
                    m.object_ids
                        .iter()
                        .map(|id| st.delete(id, &mut fx) as i32)
                        .collect()
                };
                self.server.after(fx);
                let reply = DeleteMessage {
                    object_ids: m.object_ids,
                    errors,
                };
                self.reply(
                    MessageType::DeleteReply,
                    &reply.encode(MessageType::DeleteReply),
                )
            }
            MessageType::ContainsRequest => {
                let m = IdMessage::decode(kind, body)?;
                let has = self.server.lock().contains(&m.object_id);
                self.reply(
                    MessageType::ContainsReply,
                    &IdMessage::new(m.object_id, i32::from(has)).encode(MessageType::ContainsReply),
                )
            }
            MessageType::GetDebugStringRequest => {
                decode_empty(kind, body)?;
                let s = self.server.lock().debug_string();
                self.reply(MessageType::GetDebugStringReply, &encode_debug_string(&s))
            }
            other => Err(ProtocolError::Malformed(
                other,
                "not a request a client sends".into(),
            )),
        }
    }

    fn send_create(&mut self, id: ObjectId, outcome: CreateOutcome) -> Result<(), ProtocolError> {
        match outcome {
            CreateOutcome::Done(spec, seg) => {
                let reply = CreateReply {
                    object_id: id,
                    object: spec,
                    store_fd: seg.fd,
                    unique_fd_id: seg.unique_id,
                    mmap_size: seg.size as i64,
                    ..CreateReply::default()
                };
                self.reply(MessageType::CreateReply, &reply.encode())?;
                self.send_segments(&[seg])
            }
            CreateOutcome::Retry(rid) => {
                let reply = CreateReply {
                    object_id: id,
                    retry_with_request_id: rid,
                    ..CreateReply::default()
                };
                self.reply(MessageType::CreateReply, &reply.encode())
            }
            CreateOutcome::Failed(err) => {
                let reply = CreateReply {
                    object_id: id,
                    error: err as i32,
                    store_fd: -1,
                    ..CreateReply::default()
                };
                self.reply(MessageType::CreateReply, &reply.encode())
            }
        }
    }

    /// Holds the request until every object is sealed or the timeout passes (checking that the
    /// client is still there), then answers with what is there.
    fn get(&mut self, req: GetRequest) -> Result<(), ProtocolError> {
        let deadline = (req.timeout_ms >= 0)
            .then(|| Instant::now() + Duration::from_millis(req.timeout_ms as u64));
        let server = self.server.clone();
        let mut st = server.lock();
        while !st.all_sealed(&req.object_ids) {
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if d <= now => break,
                Some(d) => (d - now).min(PEER_CHECK),
                None => PEER_CHECK,
            };
            st = server
                .sealed
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if self.stopping_or_gone() {
                return Err(ProtocolError::Io(std::io::ErrorKind::BrokenPipe.into()));
            }
        }
        let mut fx = Effects::default();
        let found = st.get(self.client, &req.object_ids, &mut fx);
        drop(st);
        self.server.after(fx);
        let mut reply = GetReply::default();
        let mut segs: Vec<SegmentRef> = Vec::new();
        for (id, f) in req.object_ids.iter().zip(found) {
            reply.object_ids.push(*id);
            match f {
                Some((spec, seg)) => {
                    reply.objects.push(spec);
                    if !segs.iter().any(|s| s.unique_id == seg.unique_id) {
                        segs.push(seg);
                    }
                }
                None => reply.objects.push(ObjectSpec {
                    data_size: u64::MAX,
                    metadata_size: u64::MAX,
                    ..ObjectSpec::default()
                }),
            }
        }
        segs.retain(|s| !self.sent.contains(&s.unique_id));
        reply.store_fds = segs.iter().map(|s| s.fd).collect();
        reply.unique_fd_ids = segs.iter().map(|s| s.unique_id).collect();
        reply.mmap_sizes = segs.iter().map(|s| s.size as i64).collect();
        self.reply(MessageType::GetReply, &reply.encode())?;
        self.send_segments(&segs)
    }

    /// Whether the server is stopping or the client hung up (checked while a get is held).
    fn stopping_or_gone(&self) -> bool {
        if self.server.stopping() {
            return true;
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.stream),
            rdhup(),
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0].revents().is_some_and(|r| {
                r.intersects(
                    rdhup() | nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR,
                )
            }),
            _ => false,
        }
    }
}

/// `POLLRDHUP` (the peer closed its end), which nix does not name.
fn rdhup() -> nix::poll::PollFlags {
    nix::poll::PollFlags::from_bits_retain(libc::POLLRDHUP)
}
