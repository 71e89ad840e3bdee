//! Ray-shaped interfaces: the object-store client and runner the raylet and core workers talk
//! to (`ObjectStoreClientInterface` / `ObjectStoreRunnerInterface` of the object-store plugin
//! proposal), Ray's status codes, and a store provider shaped like Ray's
//! `CoreWorkerPlasmaStoreProvider::Get`.
//!
//! Every plugin (GISMO, the plasma fallback, redis, shared libraries) implements
//! [`ObjectStoreClient`] and [`ObjectStoreRunner`]; the conformance suite
//! (`plugin/tests/support/conformance_suite.rs`) checks Plasma's lifecycle rules against each.

pub mod client;
mod provider;
mod runner;
mod status;

pub use client::{ObjectBuffer, ObjectStoreClient, ReleaseObject, WritableBuffer};
pub use provider::{PullHook, StoreProvider};
pub use runner::{ObjectInfo, ObjectStoreRunner, RunnerCallbacks};
pub use status::{Status, StatusCode};
