//! The runner interface: the store-side object a raylet starts once per node.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::interface::Status;
use gismo_core::store::ObjectId;

/// Ray's `ObjectInfo`, passed to `add_object_callback`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub object_id: ObjectId,
    pub is_mutable: bool,
    pub data_size: i64,
    pub metadata_size: i64,
    pub owner_raylet_id: [u8; 28],
    pub owner_ip_address: String,
    pub owner_port: i32,
    pub owner_worker_id: [u8; 28],
}

/// The four callbacks `Start` receives (Ray's `SpillObjectsCallback`, the full callback,
/// `AddObjectCallback`, `DeleteObjectCallback`). They may be called from the runner's threads.
#[derive(Clone)]
pub struct RunnerCallbacks {
    /// Asks the raylet to spill; returns whether spilling is in progress.
    pub spill_objects: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The store is full (the raylet triggers a global GC).
    pub object_store_full: Arc<dyn Fn() + Send + Sync>,
    pub add_object: Arc<dyn Fn(&ObjectInfo) + Send + Sync>,
    pub delete_object: Arc<dyn Fn(&ObjectId) + Send + Sync>,
}

impl RunnerCallbacks {
    /// Callbacks that do nothing (tools, tests).
    pub fn none() -> RunnerCallbacks {
        RunnerCallbacks {
            spill_objects: Arc::new(|| false),
            object_store_full: Arc::new(|| {}),
            add_object: Arc::new(|_| {}),
            delete_object: Arc::new(|_| {}),
        }
    }
}

/// `ObjectStoreRunnerInterface`.
pub trait ObjectStoreRunner: Send + Sync {
    /// Starts the store with `params` (plugin configuration) and the raylet's callbacks. Returns
    /// once the store is ready; background work runs on the runner's own threads.
    fn start(
        &self,
        params: &BTreeMap<String, String>,
        callbacks: RunnerCallbacks,
    ) -> Result<(), Status>;
    /// Stops background work; idempotent.
    fn stop(&self);
    /// Sealed and referenced only by the raylet's pin (count 1): a primary copy that may be
    /// spilled.
    fn is_object_spillable(&self, id: &ObjectId) -> bool;
    /// Cumulative bytes of objects created in the store.
    fn consumed_bytes(&self) -> i64;
    /// Bytes in file-backed fallback allocations (0 when the plugin has none).
    fn fallback_allocated(&self) -> i64;
    /// Bytes that can still be allocated.
    fn available_memory(&self) -> i64;
    fn total_memory_size(&self) -> i64;
    /// May exceed the total if the memory can grow.
    fn max_memory_size(&self) -> i64;
}
