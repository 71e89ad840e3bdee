//! Ray's plasma wire protocol: framing and the flatbuffers messages of `plasma.fbs`.
//!
//! # Framing
//!
//! Every message is `i64 cookie | i64 type | u64 length | length bytes of flatbuffer`, all
//! little-endian. The cookie is Ray's `ray_cookie` (`0x5241590000000000`, "RAY\0…"); a frame with
//! another cookie, an unknown type or a length over [`MAX_MESSAGE`] is refused with a typed
//! [`ProtocolError`] before anything is allocated for it.
//!
//! # Messages
//!
//! The schema is `plugins/plasma/src/plasma.fbs`, written from the protocol's facts (field order
//! decides the wire layout: field *i* lives in vtable slot `4 + 2i`). Object ids travel as
//! flatbuffers strings holding Ray's 28 raw id bytes — not UTF-8 — so they are read here as byte
//! vectors. Every received buffer goes through the flatbuffers verifier (bounds, alignment,
//! offsets) with the message's field kinds before a field is read; a malformed message is an error,
//! never a read outside the buffer.

use std::io::{Read, Write};

use flatbuffers::{
    FlatBufferBuilder, ForwardsUOffset, InvalidFlatbuffer, Push, PushAlignment,
    SimpleToVerifyInSlice, Table, Vector, Verifiable, Verifier, VerifierOptions, WIPOffset,
};

use gismo_core::store::object_id::OBJECT_ID_LEN;
use gismo_core::store::ObjectId;

/// Ray's `ray_cookie`.
pub const RAY_COOKIE: i64 = 0x5241_5900_0000_0000;
/// The largest message accepted (a Get reply for 10,000 objects is under 2 MiB).
pub const MAX_MESSAGE: u64 = 64 << 20;

/// Why a frame or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad cookie {0:#x} (not a Ray plasma peer?)")]
    Cookie(i64),
    #[error("unknown message type {0}")]
    UnknownType(i64),
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLong(u64),
    #[error("expected a {expected:?}, got a {got:?}")]
    Unexpected {
        expected: MessageType,
        got: MessageType,
    },
    #[error("malformed {0:?}: {1}")]
    Malformed(MessageType, String),
}

/// `enum MessageType:long`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum MessageType {
    DisconnectClient = 0,
    CreateRequest,
    CreateRetryRequest,
    CreateReply,
    AbortRequest,
    AbortReply,
    SealRequest,
    SealReply,
    GetRequest,
    GetReply,
    ReleaseRequest,
    ReleaseReply,
    DeleteRequest,
    DeleteReply,
    ContainsRequest,
    ContainsReply,
    ConnectRequest,
    ConnectReply,
    GetDebugStringRequest,
    GetDebugStringReply,
}

impl MessageType {
    const ALL: [MessageType; 20] = [
        MessageType::DisconnectClient,
        MessageType::CreateRequest,
        MessageType::CreateRetryRequest,
        MessageType::CreateReply,
        MessageType::AbortRequest,
        MessageType::AbortReply,
        MessageType::SealRequest,
        MessageType::SealReply,
        MessageType::GetRequest,
        MessageType::GetReply,
        MessageType::ReleaseRequest,
        MessageType::ReleaseReply,
        MessageType::DeleteRequest,
        MessageType::DeleteReply,
        MessageType::ContainsRequest,
        MessageType::ContainsReply,
        MessageType::ConnectRequest,
        MessageType::ConnectReply,
        MessageType::GetDebugStringRequest,
        MessageType::GetDebugStringReply,
    ];

    pub fn from_i64(v: i64) -> Option<MessageType> {
        usize::try_from(v)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// `enum PlasmaError:int`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum PlasmaError {
    Ok = 0,
    ObjectExists,
    ObjectNonexistent,
    OutOfMemory,
    ObjectNotSealed,
    ObjectInUse,
    UnexpectedError,
    ObjectSealed,
    OutOfDisk,
}

impl PlasmaError {
    pub fn from_i32(v: i32) -> PlasmaError {
        use PlasmaError::*;
        match v {
            0 => Ok,
            1 => ObjectExists,
            2 => ObjectNonexistent,
            3 => OutOfMemory,
            4 => ObjectNotSealed,
            5 => ObjectInUse,
            7 => ObjectSealed,
            8 => OutOfDisk,
            _ => UnexpectedError,
        }
    }
}

// ---- framing -------------------------------------------------------------------------------

/// Writes one frame (header and body in one `write_all`, so concurrent writers never interleave
/// within a frame when each holds the connection's lock).
pub fn write_frame(w: &mut impl Write, kind: MessageType, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(24 + body.len());
    buf.extend_from_slice(&RAY_COOKIE.to_le_bytes());
    buf.extend_from_slice(&(kind as i64).to_le_bytes());
    buf.extend_from_slice(&(body.len() as u64).to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Reads one frame into `body` (reused between calls). Reads exactly the frame's bytes: a file
/// descriptor sent right after it stays in the socket for `recv_fd`.
///
/// # Errors
/// `Io` (an `UnexpectedEof` for a peer that hung up), `Cookie`, `UnknownType`, `TooLong`.
pub fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> Result<MessageType, ProtocolError> {
    let mut header = [0u8; 24];
    r.read_exact(&mut header)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i * 8..i * 8 + 8]);
        b
    };
    let cookie = i64::from_le_bytes(word(0));
    if cookie != RAY_COOKIE {
        return Err(ProtocolError::Cookie(cookie));
    }
    let raw_type = i64::from_le_bytes(word(1));
    let kind = MessageType::from_i64(raw_type).ok_or(ProtocolError::UnknownType(raw_type))?;
    let len = u64::from_le_bytes(word(2));
    if len > MAX_MESSAGE {
        return Err(ProtocolError::TooLong(len));
    }
    body.clear();
    body.resize(len as usize, 0);
    r.read_exact(body)?;
    Ok(kind)
}

// ---- PlasmaObjectSpec ----------------------------------------------------------------------

/// `struct PlasmaObjectSpec` (80 bytes, 8-aligned): where an object lives in a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectSpec {
    pub segment_index: i32,
    pub unique_fd_id: i64,
    pub header_offset: u64,
    pub data_offset: u64,
    pub data_size: u64,
    pub metadata_offset: u64,
    pub metadata_size: u64,
    pub allocated_size: u64,
    pub fallback_allocated: bool,
    pub device_num: i32,
    pub is_experimental_mutable_object: bool,
}

const SPEC_LEN: usize = 80;

/// The struct's wire bytes.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct SpecRaw([u8; SPEC_LEN]);

impl ObjectSpec {
    fn to_raw(self) -> SpecRaw {
        let mut b = [0u8; SPEC_LEN];
        b[0..4].copy_from_slice(&self.segment_index.to_le_bytes());
        b[8..16].copy_from_slice(&self.unique_fd_id.to_le_bytes());
        for (i, v) in [
            self.header_offset,
            self.data_offset,
            self.data_size,
            self.metadata_offset,
            self.metadata_size,
            self.allocated_size,
        ]
        .into_iter()
        .enumerate()
        {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[64] = u8::from(self.fallback_allocated);
        b[68..72].copy_from_slice(&self.device_num.to_le_bytes());
        b[72] = u8::from(self.is_experimental_mutable_object);
        SpecRaw(b)
    }

    fn from_bytes(b: &[u8]) -> ObjectSpec {
        let u = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let i4 = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[i..i + 4]);
            i32::from_le_bytes(w)
        };
        ObjectSpec {
            segment_index: i4(0),
            unique_fd_id: u(8) as i64,
            header_offset: u(16),
            data_offset: u(24),
            data_size: u(32),
            metadata_offset: u(40),
            metadata_size: u(48),
            allocated_size: u(56),
            fallback_allocated: b[64] != 0,
            device_num: i4(68),
            is_experimental_mutable_object: b[72] != 0,
        }
    }
}

impl<'a> flatbuffers::Follow<'a> for SpecRaw {
    type Inner = ObjectSpec;
    unsafe fn follow(buf: &'a [u8], loc: usize) -> ObjectSpec {
        ObjectSpec::from_bytes(&buf[loc..loc + SPEC_LEN])
    }
}

impl Verifiable for SpecRaw {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.range_in_buffer(pos, SPEC_LEN)
    }
}

impl SimpleToVerifyInSlice for SpecRaw {}

impl Push for SpecRaw {
    type Output = SpecRaw;
    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[..SPEC_LEN].copy_from_slice(&self.0);
    }
    fn alignment() -> PushAlignment {
        PushAlignment::new(8)
    }
}

// ---- verified tables -----------------------------------------------------------------------

/// What a field holds, for the verifier.
#[derive(Clone, Copy)]
enum Kind {
    Bytes,
    BytesList,
    Scalar(usize),
    Spec,
    SpecList,
    I32List,
    I64List,
    /// A field we never read (e.g. CUDA handles): skipped by the verifier and the reader.
    Ignored,
}

fn slot(field: usize) -> u16 {
    (4 + 2 * field) as u16
}

type ByteVec<'a> = ForwardsUOffset<Vector<'a, u8>>;

/// A message table whose fields have been verified against `schema`.
struct Msg<'a> {
    table: Table<'a>,
}

impl<'a> Msg<'a> {
    fn parse(kind: MessageType, buf: &'a [u8], schema: &[Kind]) -> Result<Msg<'a>, ProtocolError> {
        let bad = |e: InvalidFlatbuffer| ProtocolError::Malformed(kind, e.to_string());
        let opts = VerifierOptions::default();
        let mut v = Verifier::new(&opts, buf);
        let pos = v.get_uoffset(0).map_err(bad)? as usize;
        let mut t = v.visit_table(pos).map_err(bad)?;
        for (i, k) in schema.iter().enumerate() {
            let name = "field";
            let s = slot(i);
            t = match k {
                Kind::Bytes => t.visit_field::<ByteVec>(name, s, false),
                Kind::BytesList => {
                    t.visit_field::<ForwardsUOffset<Vector<ByteVec>>>(name, s, false)
                }
                Kind::Scalar(1) => t.visit_field::<u8>(name, s, false),
                Kind::Scalar(4) => t.visit_field::<i32>(name, s, false),
                Kind::Scalar(_) => t.visit_field::<i64>(name, s, false),
                Kind::Spec => t.visit_field::<SpecRaw>(name, s, false),
                Kind::SpecList => t.visit_field::<ForwardsUOffset<Vector<SpecRaw>>>(name, s, false),
                Kind::I32List => t.visit_field::<ForwardsUOffset<Vector<i32>>>(name, s, false),
                Kind::I64List => t.visit_field::<ForwardsUOffset<Vector<i64>>>(name, s, false),
                Kind::Ignored => Ok(t),
            }
            .map_err(bad)?;
        }
        t.finish();
        // SAFETY: the verifier accepted a table at `pos` whose every field we read was checked
        // with the type we read it as.
        let table = unsafe { Table::new(buf, pos) };
        Ok(Msg { table })
    }

    fn bytes(&self, field: usize) -> &'a [u8] {
        // SAFETY: verified as a byte vector in `parse` (schema kind `Bytes`).
        unsafe { self.table.get::<ByteVec>(slot(field), None) }.map_or(&[], |v| v.bytes())
    }

    fn bytes_list(&self, field: usize) -> Vec<&'a [u8]> {
        // SAFETY: verified as a vector of byte vectors (kind `BytesList`).
        let v = unsafe {
            self.table
                .get::<ForwardsUOffset<Vector<ByteVec>>>(slot(field), None)
        };
        v.map_or_else(Vec::new, |v| v.iter().map(|b| b.bytes()).collect())
    }

    fn u8(&self, field: usize) -> u8 {
        // SAFETY: verified as a 1-byte scalar (kind `Scalar(1)`).
        unsafe { self.table.get::<u8>(slot(field), Some(0)) }.unwrap_or(0)
    }

    fn i32(&self, field: usize) -> i32 {
        // SAFETY: verified as a 4-byte scalar (kind `Scalar(4)`).
        unsafe { self.table.get::<i32>(slot(field), Some(0)) }.unwrap_or(0)
    }

    fn i64(&self, field: usize) -> i64 {
        // SAFETY: verified as an 8-byte scalar (kind `Scalar(8)`).
        unsafe { self.table.get::<i64>(slot(field), Some(0)) }.unwrap_or(0)
    }

    fn spec(&self, field: usize) -> Option<ObjectSpec> {
        // SAFETY: verified as an 80-byte struct in the buffer (kind `Spec`).
        unsafe { self.table.get::<SpecRaw>(slot(field), None) }
    }

    fn specs(&self, field: usize) -> Vec<ObjectSpec> {
        // SAFETY: verified as a vector of 80-byte structs (kind `SpecList`).
        let v = unsafe {
            self.table
                .get::<ForwardsUOffset<Vector<SpecRaw>>>(slot(field), None)
        };
        v.map_or_else(Vec::new, |v| v.iter().collect())
    }

    fn i32s(&self, field: usize) -> Vec<i32> {
        // SAFETY: verified as a vector of i32 (kind `I32List`).
        let v = unsafe {
            self.table
                .get::<ForwardsUOffset<Vector<i32>>>(slot(field), None)
        };
        v.map_or_else(Vec::new, |v| v.iter().collect())
    }

    fn i64s(&self, field: usize) -> Vec<i64> {
        // SAFETY: verified as a vector of i64 (kind `I64List`).
        let v = unsafe {
            self.table
                .get::<ForwardsUOffset<Vector<i64>>>(slot(field), None)
        };
        v.map_or_else(Vec::new, |v| v.iter().collect())
    }
}

fn object_id(kind: MessageType, b: &[u8]) -> Result<ObjectId, ProtocolError> {
    let bytes: [u8; OBJECT_ID_LEN] = b.try_into().map_err(|_| {
        ProtocolError::Malformed(
            kind,
            format!("object id of {} bytes, not {OBJECT_ID_LEN}", b.len()),
        )
    })?;
    Ok(ObjectId::from_bytes(bytes))
}

fn object_ids(kind: MessageType, list: Vec<&[u8]>) -> Result<Vec<ObjectId>, ProtocolError> {
    list.into_iter().map(|b| object_id(kind, b)).collect()
}

// ---- building ------------------------------------------------------------------------------

/// A message under construction; fields are added in any order.
struct Builder {
    fbb: FlatBufferBuilder<'static>,
}

enum Field<'s> {
    Bytes(&'s [u8]),
    BytesList(&'s [&'s [u8]]),
    Bool(bool),
    I32(i32),
    I64(i64),
    U64(u64),
    Spec(ObjectSpec),
    Specs(&'s [ObjectSpec]),
    I32s(&'s [i32]),
    I64s(&'s [i64]),
}

impl Builder {
    /// Builds a table from `(field index, value)` pairs (defaults are omitted as flatbuffers
    /// does; readers treat a missing field as its default).
    fn table(fields: &[(usize, Field<'_>)]) -> Vec<u8> {
        let mut b = Builder {
            fbb: FlatBufferBuilder::with_capacity(256),
        };
        // Offsets (strings, vectors) must be created before the table starts.
        let mut offsets: Vec<Option<WIPOffset<flatbuffers::UnionWIPOffset>>> = Vec::new();
        for (_, f) in fields {
            let off = match f {
                Field::Bytes(v) => Some(b.fbb.create_byte_string(v).as_union_value()),
                Field::BytesList(list) => {
                    let items: Vec<_> = list.iter().map(|v| b.fbb.create_byte_string(v)).collect();
                    Some(b.fbb.create_vector(&items).as_union_value())
                }
                Field::Specs(specs) => {
                    let raw: Vec<SpecRaw> = specs.iter().map(|s| s.to_raw()).collect();
                    Some(b.fbb.create_vector(&raw).as_union_value())
                }
                Field::I32s(v) => Some(b.fbb.create_vector(v).as_union_value()),
                Field::I64s(v) => Some(b.fbb.create_vector(v).as_union_value()),
                _ => None,
            };
            offsets.push(off);
        }
        let start = b.fbb.start_table();
        for ((i, f), off) in fields.iter().zip(&offsets) {
            let s = slot(*i);
            match (f, off) {
                (_, Some(o)) => b.fbb.push_slot_always(s, *o),
                (Field::Bool(v), _) => b.fbb.push_slot(s, *v, false),
                (Field::I32(v), _) => b.fbb.push_slot(s, *v, 0),
                (Field::I64(v), _) => b.fbb.push_slot(s, *v, 0),
                (Field::U64(v), _) => b.fbb.push_slot(s, *v, 0),
                (Field::Spec(spec), _) => b.fbb.push_slot_always(s, spec.to_raw()),
                _ => {}
            }
        }
        let root = b.fbb.end_table(start);
        b.fbb.finish_minimal(root);
        b.fbb.finished_data().to_vec()
    }
}

// ---- the messages --------------------------------------------------------------------------

/// `PlasmaCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateRequest {
    pub object_id: ObjectId,
    pub owner_node_id: Vec<u8>,
    pub owner_ip_address: String,
    pub owner_port: i32,
    pub owner_worker_id: Vec<u8>,
    pub is_mutable: bool,
    pub data_size: u64,
    pub metadata_size: u64,
    pub source: i32,
    pub device_num: i32,
    pub try_immediately: bool,
}

const CREATE_REQUEST: &[Kind] = &[
    Kind::Bytes,
    Kind::Bytes,
    Kind::Bytes,
    Kind::Scalar(4),
    Kind::Bytes,
    Kind::Scalar(1),
    Kind::Scalar(8),
    Kind::Scalar(8),
    Kind::Scalar(4),
    Kind::Scalar(4),
    Kind::Scalar(1),
];

impl CreateRequest {
    pub fn encode(&self) -> Vec<u8> {
        Builder::table(&[
            (0, Field::Bytes(self.object_id.as_bytes())),
            (1, Field::Bytes(&self.owner_node_id)),
            (2, Field::Bytes(self.owner_ip_address.as_bytes())),
            (3, Field::I32(self.owner_port)),
            (4, Field::Bytes(&self.owner_worker_id)),
            (5, Field::Bool(self.is_mutable)),
            (6, Field::U64(self.data_size)),
            (7, Field::U64(self.metadata_size)),
            (8, Field::I32(self.source)),
            (9, Field::I32(self.device_num)),
            (10, Field::Bool(self.try_immediately)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<CreateRequest, ProtocolError> {
        let k = MessageType::CreateRequest;
        let m = Msg::parse(k, buf, CREATE_REQUEST)?;
        Ok(CreateRequest {
            object_id: object_id(k, m.bytes(0))?,
            owner_node_id: m.bytes(1).to_vec(),
            owner_ip_address: String::from_utf8_lossy(m.bytes(2)).into_owned(),
            owner_port: m.i32(3),
            owner_worker_id: m.bytes(4).to_vec(),
            is_mutable: m.u8(5) != 0,
            data_size: m.i64(6) as u64,
            metadata_size: m.i64(7) as u64,
            source: m.i32(8),
            device_num: m.i32(9),
            try_immediately: m.u8(10) != 0,
        })
    }
}

/// `PlasmaCreateRetryRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRetryRequest {
    pub object_id: ObjectId,
    pub request_id: u64,
}

impl CreateRetryRequest {
    pub fn encode(&self) -> Vec<u8> {
        Builder::table(&[
            (0, Field::Bytes(self.object_id.as_bytes())),
            (1, Field::U64(self.request_id)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<CreateRetryRequest, ProtocolError> {
        let k = MessageType::CreateRetryRequest;
        let m = Msg::parse(k, buf, &[Kind::Bytes, Kind::Scalar(8)])?;
        Ok(CreateRetryRequest {
            object_id: object_id(k, m.bytes(0))?,
            request_id: m.i64(1) as u64,
        })
    }
}

/// `PlasmaCreateReply`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateReply {
    pub object_id: ObjectId,
    pub retry_with_request_id: u64,
    pub object: ObjectSpec,
    pub error: i32,
    pub store_fd: i32,
    pub unique_fd_id: i64,
    pub mmap_size: i64,
}

impl CreateReply {
    pub fn encode(&self) -> Vec<u8> {
        if self.retry_with_request_id > 0 {
            // Ray's unfinished reply: the id and the request to retry, nothing else.
            return Builder::table(&[
                (0, Field::Bytes(self.object_id.as_bytes())),
                (1, Field::U64(self.retry_with_request_id)),
            ]);
        }
        Builder::table(&[
            (0, Field::Bytes(self.object_id.as_bytes())),
            (1, Field::U64(0)),
            (2, Field::Spec(self.object)),
            (3, Field::I32(self.error)),
            (4, Field::I32(self.store_fd)),
            (5, Field::I64(self.unique_fd_id)),
            (6, Field::I64(self.mmap_size)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<CreateReply, ProtocolError> {
        let k = MessageType::CreateReply;
        let m = Msg::parse(
            k,
            buf,
            &[
                Kind::Bytes,
                Kind::Scalar(8),
                Kind::Spec,
                Kind::Scalar(4),
                Kind::Scalar(4),
                Kind::Scalar(8),
                Kind::Scalar(8),
                Kind::Ignored,
            ],
        )?;
        Ok(CreateReply {
            object_id: object_id(k, m.bytes(0))?,
            retry_with_request_id: m.i64(1) as u64,
            object: m.spec(2).unwrap_or_default(),
            error: m.i32(3),
            store_fd: m.i32(4),
            unique_fd_id: m.i64(5),
            mmap_size: m.i64(6),
        })
    }
}

/// The requests and replies that carry one object id (abort, seal, contains), with at most one
/// scalar after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMessage {
    pub object_id: ObjectId,
    /// Seal reply: the error; contains reply: `has_object`; release request: `may_unmap`.
    pub value: i32,
}

impl IdMessage {
    pub fn new(object_id: ObjectId, value: i32) -> IdMessage {
        IdMessage { object_id, value }
    }

    /// Encodes for `kind`; `value` is written as the message's second field if it has one.
    pub fn encode(&self, kind: MessageType) -> Vec<u8> {
        let id = (0, Field::Bytes(self.object_id.as_bytes()));
        match kind {
            MessageType::ReleaseRequest => Builder::table(&[id, (1, Field::Bool(self.value != 0))]),
            MessageType::SealReply | MessageType::ContainsReply => {
                Builder::table(&[id, (1, Field::I32(self.value))])
            }
            _ => Builder::table(&[id]),
        }
    }

    pub fn decode(kind: MessageType, buf: &[u8]) -> Result<IdMessage, ProtocolError> {
        let second = match kind {
            MessageType::ReleaseRequest => Some(Kind::Scalar(1)),
            MessageType::SealReply | MessageType::ContainsReply => Some(Kind::Scalar(4)),
            _ => None,
        };
        let mut schema = vec![Kind::Bytes];
        schema.extend(second);
        let m = Msg::parse(kind, buf, &schema)?;
        let value = match second {
            Some(Kind::Scalar(1)) => i32::from(m.u8(1)),
            Some(_) => m.i32(1),
            None => 0,
        };
        Ok(IdMessage {
            object_id: object_id(kind, m.bytes(0))?,
            value,
        })
    }
}

/// `PlasmaReleaseReply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseReply {
    pub object_id: ObjectId,
    pub should_unmap: bool,
    pub error: i32,
}

impl ReleaseReply {
    pub fn encode(&self) -> Vec<u8> {
        Builder::table(&[
            (0, Field::Bytes(self.object_id.as_bytes())),
            (1, Field::Bool(self.should_unmap)),
            (2, Field::I32(self.error)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<ReleaseReply, ProtocolError> {
        let k = MessageType::ReleaseReply;
        let m = Msg::parse(k, buf, &[Kind::Bytes, Kind::Scalar(1), Kind::Scalar(4)])?;
        Ok(ReleaseReply {
            object_id: object_id(k, m.bytes(0))?,
            should_unmap: m.u8(1) != 0,
            error: m.i32(2),
        })
    }
}

/// `PlasmaGetRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetRequest {
    pub object_ids: Vec<ObjectId>,
    pub timeout_ms: i64,
}

impl GetRequest {
    pub fn encode(&self) -> Vec<u8> {
        let ids: Vec<&[u8]> = self.object_ids.iter().map(|i| &i.as_bytes()[..]).collect();
        Builder::table(&[
            (0, Field::BytesList(&ids)),
            (1, Field::I64(self.timeout_ms)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<GetRequest, ProtocolError> {
        let k = MessageType::GetRequest;
        let m = Msg::parse(k, buf, &[Kind::BytesList, Kind::Scalar(8)])?;
        Ok(GetRequest {
            object_ids: object_ids(k, m.bytes_list(0))?,
            timeout_ms: m.i64(1),
        })
    }
}

/// `PlasmaGetReply`: one spec per requested id (`data_size == u64::MAX`, i.e. -1, for an object
/// that is not there), then the segments whose descriptors follow the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetReply {
    pub object_ids: Vec<ObjectId>,
    pub objects: Vec<ObjectSpec>,
    pub store_fds: Vec<i32>,
    pub unique_fd_ids: Vec<i64>,
    pub mmap_sizes: Vec<i64>,
}

impl GetReply {
    pub fn encode(&self) -> Vec<u8> {
        let ids: Vec<&[u8]> = self.object_ids.iter().map(|i| &i.as_bytes()[..]).collect();
        Builder::table(&[
            (0, Field::BytesList(&ids)),
            (1, Field::Specs(&self.objects)),
            (2, Field::I32s(&self.store_fds)),
            (3, Field::I64s(&self.unique_fd_ids)),
            (4, Field::I64s(&self.mmap_sizes)),
        ])
    }

    pub fn decode(buf: &[u8]) -> Result<GetReply, ProtocolError> {
        let k = MessageType::GetReply;
        let m = Msg::parse(
            k,
            buf,
            &[
                Kind::BytesList,
                Kind::SpecList,
                Kind::I32List,
                Kind::I64List,
                Kind::I64List,
                Kind::Ignored,
            ],
        )?;
        let reply = GetReply {
            object_ids: object_ids(k, m.bytes_list(0))?,
            objects: m.specs(1),
            store_fds: m.i32s(2),
            unique_fd_ids: m.i64s(3),
            mmap_sizes: m.i64s(4),
        };
        if reply.objects.len() != reply.object_ids.len()
            || reply.unique_fd_ids.len() != reply.store_fds.len()
            || reply.mmap_sizes.len() != reply.store_fds.len()
        {
            return Err(ProtocolError::Malformed(k, "list lengths disagree".into()));
        }
        Ok(reply)
    }
}

/// `PlasmaDeleteRequest` / `PlasmaDeleteReply` (the reply carries one error per id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteMessage {
    pub object_ids: Vec<ObjectId>,
    pub errors: Vec<i32>,
}

impl DeleteMessage {
    pub fn encode(&self, kind: MessageType) -> Vec<u8> {
        let ids: Vec<&[u8]> = self.object_ids.iter().map(|i| &i.as_bytes()[..]).collect();
        let mut fields = vec![
            (0, Field::I32(ids.len() as i32)),
            (1, Field::BytesList(&ids)),
        ];
        if kind == MessageType::DeleteReply {
            fields.push((2, Field::I32s(&self.errors)));
        }
        Builder::table(&fields)
    }

    pub fn decode(kind: MessageType, buf: &[u8]) -> Result<DeleteMessage, ProtocolError> {
        let m = Msg::parse(
            kind,
            buf,
            &[Kind::Scalar(4), Kind::BytesList, Kind::I32List],
        )?;
        Ok(DeleteMessage {
            object_ids: object_ids(kind, m.bytes_list(1))?,
            errors: m.i32s(2),
        })
    }
}

/// `PlasmaConnectReply`.
pub fn encode_connect_reply(memory_capacity: i64) -> Vec<u8> {
    Builder::table(&[(0, Field::I64(memory_capacity))])
}

/// Reads a `PlasmaConnectReply`'s `memory_capacity`.
pub fn decode_connect_reply(buf: &[u8]) -> Result<i64, ProtocolError> {
    Ok(Msg::parse(MessageType::ConnectReply, buf, &[Kind::Scalar(8)])?.i64(0))
}

/// An empty table (`PlasmaConnectRequest`, `PlasmaGetDebugStringRequest`).
pub fn encode_empty() -> Vec<u8> {
    Builder::table(&[])
}

/// Checks that `buf` is a well-formed table (for the empty requests).
pub fn decode_empty(kind: MessageType, buf: &[u8]) -> Result<(), ProtocolError> {
    Msg::parse(kind, buf, &[]).map(|_| ())
}

/// `PlasmaGetDebugStringReply`.
pub fn encode_debug_string(s: &str) -> Vec<u8> {
    Builder::table(&[(0, Field::Bytes(s.as_bytes()))])
}

pub fn decode_debug_string(buf: &[u8]) -> Result<String, ProtocolError> {
    let m = Msg::parse(MessageType::GetDebugStringReply, buf, &[Kind::Bytes])?;
    Ok(String::from_utf8_lossy(m.bytes(0)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes([n; OBJECT_ID_LEN])
    }

    #[test]
    fn messages_round_trip() {
        let c = CreateRequest {
            object_id: id(1),
            owner_node_id: vec![7; 28],
            owner_ip_address: "10.0.0.1".into(),
            owner_port: 1234,
            owner_worker_id: vec![9; 28],
            is_mutable: true,
            data_size: 1 << 40,
            metadata_size: 17,
            source: 2,
            device_num: 0,
            try_immediately: true,
        };
        assert_eq!(CreateRequest::decode(&c.encode()).unwrap(), c);
        let spec = ObjectSpec {
            segment_index: 5,
            unique_fd_id: 77,
            header_offset: 1,
            data_offset: 4096,
            data_size: 100,
            metadata_offset: 4196,
            metadata_size: 3,
            allocated_size: 103,
            fallback_allocated: true,
            device_num: 0,
            is_experimental_mutable_object: false,
        };
        let r = CreateReply {
            object_id: id(2),
            object: spec,
            error: 3,
            store_fd: 5,
            unique_fd_id: 77,
            mmap_size: 1 << 30,
            ..CreateReply::default()
        };
        assert_eq!(CreateReply::decode(&r.encode()).unwrap(), r);
        let g = GetReply {
            object_ids: vec![id(1), id(2)],
            objects: vec![spec, ObjectSpec::default()],
            store_fds: vec![5],
            unique_fd_ids: vec![77],
            mmap_sizes: vec![1 << 30],
        };
        assert_eq!(GetReply::decode(&g.encode()).unwrap(), g);
        let d = DeleteMessage {
            object_ids: vec![id(3), id(4)],
            errors: vec![0, 2],
        };
        assert_eq!(
            DeleteMessage::decode(
                MessageType::DeleteReply,
                &d.encode(MessageType::DeleteReply)
            )
            .unwrap(),
            d
        );
        let s = IdMessage::new(id(5), 4);
        assert_eq!(
            IdMessage::decode(MessageType::SealReply, &s.encode(MessageType::SealReply)).unwrap(),
            s
        );
        assert_eq!(decode_connect_reply(&encode_connect_reply(99)).unwrap(), 99);
    }

    #[test]
    fn garbage_is_refused_not_read() {
        let good = GetRequest {
            object_ids: vec![id(1); 3],
            timeout_ms: -1,
        }
        .encode();
        // Every truncation and every single-byte corruption is either refused or decodes to
        // something; none reads out of bounds (the verifier runs before any field is read).
        for n in 0..good.len() {
            let _ = GetRequest::decode(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = GetRequest::decode(&b);
            }
        }
        assert!(GetRequest::decode(&[]).is_err());
        // A 3-byte id is a typed error.
        let short = Builder::table(&[(0, Field::Bytes(b"abc"))]);
        assert!(matches!(
            IdMessage::decode(MessageType::SealRequest, &short),
            Err(ProtocolError::Malformed(..))
        ));
    }

    #[test]
    fn frames_check_cookie_type_and_length() {
        let mut wire = Vec::new();
        write_frame(&mut wire, MessageType::SealRequest, b"abc").unwrap();
        let mut body = Vec::new();
        assert_eq!(
            read_frame(&mut &wire[..], &mut body).unwrap(),
            MessageType::SealRequest
        );
        assert_eq!(body, b"abc");
        let mut bad = wire.clone();
        bad[0] ^= 1;
        assert!(matches!(
            read_frame(&mut &bad[..], &mut body),
            Err(ProtocolError::Cookie(_))
        ));
        let mut bad = wire.clone();
        bad[8] = 99;
        assert!(matches!(
            read_frame(&mut &bad[..], &mut body),
            Err(ProtocolError::UnknownType(99))
        ));
        let mut bad = wire;
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &bad[..], &mut body),
            Err(ProtocolError::TooLong(_))
        ));
    }
}
