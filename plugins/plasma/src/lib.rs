//! The `plasma` built-in plugin: a node-local object store with Plasma's semantics that speaks
//! Ray's plasma protocol, and a client for it (or for a Ray raylet's own store).
//!
//! - [`protocol`]: framing and the flatbuffers messages (`plasma.fbs` in this folder is the
//!   schema, written from the protocol's facts).
//! - [`fd`]: passing segment descriptors with `SCM_RIGHTS`.
//! - [`store`]: the store server and [`PlasmaRunner`].
//! - [`client`]: the client, [`PlasmaClient`].
//!
//! `is_global()` is false: another node's objects must be pulled into this store by the raylet.
//! See `docs/plasma.md`.

#![deny(unsafe_op_in_unsafe_fn)]

use std::sync::Arc;

use gismo_plugin::Builtin;

// The lower layers' modules this crate's code names as `crate::format`, `crate::region`, ...
// Not re-exported.
use gismo_core::format;
use gismo_platform::region;
use gismo_plugin::interface;

pub mod client;
pub mod fd;
pub mod protocol;
pub mod store;

pub use client::PlasmaClient;
pub use store::{Counters, PlasmaRunner, PlasmaSettings, Server, PLASMA_KEYS};

/// The plasma plugin's entry in a program's table of built-ins (also the fallback's).
pub const BUILTIN: Builtin = Builtin {
    name: "plasma",
    keys: PLASMA_KEYS,
    make_runner: |params| Ok(Box::new(PlasmaRunner::new(params)?)),
    make_client: |params| Ok(Arc::new(PlasmaClient::from_config(params)?)),
};
