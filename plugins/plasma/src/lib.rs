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

pub mod client;
pub mod fd;
pub mod protocol;
pub mod store;

pub use client::PlasmaClient;
pub use store::{PlasmaRunner, PlasmaSettings, Server, PLASMA_KEYS};
