//! The `redis` built-in plugin: objects in a real Redis server, shared with programs that are not
//! Ray (`redis-cli`, a Python script) through a documented key schema (`docs/redis.md`).
//!
//! It exists to prove that the plugin interface is not shaped around GISMO alone: nothing here
//! maps shared memory. A client keeps each object it creates in a private local buffer until
//! `seal`, which stores data, metadata and the object's info in one Redis hash atomically (a Lua
//! script) and publishes the id on the seal channel; `get` copies the object into local memory
//! (one copy from the socket, [`client`]); `is_global()` is true because every node that talks
//! to the same Redis sees every sealed object, so no raylet-to-raylet pull is needed — it does not
//! mean zero copy.
//!
//! # Layers
//!
//! - [`schema`]: key and field names and the Lua scripts — the on-Redis format, a spec other
//!   programs follow.
//! - [`settings`]: the plugin configuration (`url=`, `prefix=`, timeouts, pool size).
//! - [`pool`]: pooled connections (r2d2) with connect/read/write timeouts and a failure epoch that
//!   retires every pooled connection once one of them saw the server go away.
//! - [`node`]: the process-wide state shared by every client and the runner of one store
//!   (url + prefix): the pool, the seal waiter, the runner's callbacks, counters.
//! - [`lease`]: liveness leases of this process's clients, and reaping what dead clients held.
//! - [`waiter`]: wakes a `get` waiting for an unsealed object from a pub/sub subscription on the
//!   seal channel — no polling loop.
//! - [`client`] (with its read path in `read.rs`) / [`runner`]: the [`ObjectStoreClient`](crate::interface::ObjectStoreClient) and
//!   [`ObjectStoreRunner`](crate::interface::ObjectStoreRunner) implementations.
//!
//! # How a client finds its node's runner
//!
//! A raylet makes one runner and many clients with the same configuration. [`node::Node::get`]
//! keeps a process-wide registry of live nodes keyed by `(url, prefix)`; the runner's `start`
//! installs its callbacks in its node, and every client of the same `(url, prefix)` in the
//! process reports its seals (`add_object`) and the deletes it completes (`delete_object`) there.
//! Clients in other processes (core workers) report to their own process's runner, if any.

mod buffer;
pub mod client;
pub mod lease;
pub mod node;
pub mod pool;
mod read;
pub mod runner;
pub mod schema;
pub mod settings;
pub mod waiter;

pub use client::RedisClient;
pub use runner::RedisRunner;
pub use settings::{RedisSettings, REDIS_KEYS};

use std::sync::Arc;

use gismo_plugin::Builtin;

// The lower layers' modules this crate's code names as `crate::store`, `crate::interface`.
// Not re-exported.
use gismo_core::store;
use gismo_plugin::interface;

use crate::interface::{Status, StatusCode};
use crate::store::ObjectId;

/// The redis plugin's entry in a program's table of built-ins.
pub const BUILTIN: Builtin = Builtin {
    name: "redis",
    keys: REDIS_KEYS,
    make_runner: |params| Ok(Box::new(RedisRunner::from_config(params)?)),
    make_client: |params| Ok(Arc::new(RedisClient::from_config(params)?)),
};

/// Why a redis plugin operation failed. Mapped to Ray's status codes by `From<RedisStoreError>`.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("redis plugin config: {key}={value:?}: {reason}")]
    Config {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("redis at {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("redis at {url}: I/O failure: {message}")]
    Io { url: String, message: String },
    #[error("redis at {url}: no reply within {timeout_ms} ms: {message}")]
    Timeout {
        url: String,
        timeout_ms: u64,
        message: String,
    },
    #[error("redis at {url} is out of memory (maxmemory): {message}")]
    ServerFull { url: String, message: String },
    #[error("redis at {url}: server error: {message}")]
    Server { url: String, message: String },
    #[error("redis object {id}: malformed hash: {reason}")]
    Malformed { id: ObjectId, reason: String },
    #[error(
        "object {id}: {what} of {size} bytes exceeds Redis's {limit}-byte (512 MiB) value limit \
         (proto-max-bulk-len); this plugin does not split objects"
    )]
    TooLarge {
        id: ObjectId,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("object {id}: cannot allocate a {size}-byte local buffer")]
    LocalAllocation { id: ObjectId, size: u64 },
    #[error("object {0} already exists")]
    ObjectExists(ObjectId),
    #[error("object {0} not found")]
    ObjectNotFound(ObjectId),
    #[error("object {0} is already sealed")]
    ObjectAlreadySealed(ObjectId),
    #[error("object {0} was not created by this client")]
    NotCreator(ObjectId),
    #[error("object {0}: this client holds no reference to release")]
    NoReference(ObjectId),
    #[error("the client is disconnected")]
    Disconnected,
}

impl From<RedisStoreError> for Status {
    fn from(e: RedisStoreError) -> Status {
        use RedisStoreError as E;
        let code = match &e {
            E::Config { .. } | E::TooLarge { .. } | E::NotCreator(_) | E::NoReference(_) => {
                StatusCode::Invalid
            }
            E::Disconnected => StatusCode::Invalid,
            E::Unreachable { .. } | E::Io { .. } | E::Server { .. } | E::Malformed { .. } => {
                StatusCode::IOError
            }
            E::Timeout { .. } => StatusCode::TimedOut,
            E::ServerFull { .. } => StatusCode::ObjectStoreFull,
            E::LocalAllocation { .. } => StatusCode::OutOfMemory,
            E::ObjectExists(_) => StatusCode::ObjectExists,
            E::ObjectNotFound(_) => StatusCode::ObjectNotFound,
            E::ObjectAlreadySealed(_) => StatusCode::ObjectAlreadySealed,
        };
        Status::new(code, e.to_string())
    }
}
