//! A store provider shaped like Ray's `CoreWorkerPlasmaStoreProvider::Get`: a store whose client
//! `is_global()` is read directly, without asking the raylet to pull anything; otherwise the pull
//! hook runs first (the raylet's `AsyncGetObjects`), as Ray does today.

use std::sync::Arc;

use crate::interface::{ObjectBuffer, ObjectStoreClient, Status};
use gismo_core::store::ObjectId;

/// Asks the local raylet to bring objects to this node.
pub trait PullHook: Send + Sync {
    fn pull(&self, ids: &[ObjectId]);
}

/// The core worker's view of its object store.
pub struct StoreProvider {
    client: Arc<dyn ObjectStoreClient>,
    pull: Arc<dyn PullHook>,
}

impl StoreProvider {
    pub fn new(client: Arc<dyn ObjectStoreClient>, pull: Arc<dyn PullHook>) -> StoreProvider {
        StoreProvider { client, pull }
    }

    /// Gets `ids`, waiting up to `timeout_ms` (−1 forever).
    ///
    /// # Errors
    /// The client's status.
    pub fn get(
        &self,
        ids: &[ObjectId],
        timeout_ms: i64,
    ) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        if !self.client.is_global() {
            self.pull.pull(ids);
        }
        self.client.get(ids, timeout_ms)
    }
}
