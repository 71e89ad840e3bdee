//! The conformance suite (`support/conformance_suite.rs`) for the built-in GISMO plugin, in both
//! coherence modes, and the store provider's pull rule.

#[path = "../../../plugin/tests/support/conformance_suite.rs"]
#[macro_use]
mod conformance_suite;

use std::sync::Arc;

use conformance_suite::{put, Plugin};
use gismo::{GismoClient, GismoRunner};
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress, Store};
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use gismo_plugin::interface::{ObjectStoreClient, ObjectStoreRunner};

// ---- GISMO ---------------------------------------------------------------------------------

struct GismoPlugin {
    store: Arc<Store>,
}

impl Plugin for GismoPlugin {
    fn name(&self) -> &str {
        "gismo"
    }
    fn client(&self) -> Arc<dyn ObjectStoreClient> {
        Arc::new(GismoClient::connect(&self.store, "conformance").unwrap())
    }
    fn runner(&self) -> Box<dyn ObjectStoreRunner> {
        Box::new(GismoRunner::with_store(self.store.clone()))
    }
    fn capacity(&self) -> u64 {
        self.store.stats().heap_bytes
    }
}

impl GismoPlugin {
    /// A fresh store in a 64 MiB memfd region, in coherence mode `coherence`.
    fn memfd(coherence: CoherenceMode) -> GismoPlugin {
        let region = Region::create(
            &RegionSpec::Memfd {
                name: "gismo-conformance".into(),
                huge_pages: false,
            },
            64 << 20,
            &RegionOptions::default(),
        )
        .unwrap();
        let opts = gismo_core::format::FormatOptions {
            coherence,
            ..Default::default()
        };
        GismoPlugin {
            store: Store::format(region, &opts).unwrap(),
        }
    }
}

mod conformance {
    use super::*;
    instantiate_conformance_tests_with_module!(gismo, GismoPlugin::memfd(CoherenceMode::Hardware));
    instantiate_conformance_tests_with_module!(
        gismo_flush,
        GismoPlugin::memfd(CoherenceMode::Flush)
    );
}

#[test]
fn gismo_clients_are_global() {
    let p = GismoPlugin::memfd(CoherenceMode::Hardware);
    let gc = GismoClient::connect(&p.store, "check").unwrap();
    assert!(gc.is_global());
}

/// A client that delegates to another but is not global (stands in for a node-local store).
struct NodeLocal(Arc<dyn ObjectStoreClient>);

impl ObjectStoreClient for NodeLocal {
    fn create(
        &self,
        id: &ObjectId,
        o: &OwnerAddress,
        m: bool,
        n: u64,
        md: &[u8],
        s: ObjectSource,
    ) -> Result<gismo_plugin::interface::WritableBuffer, gismo_plugin::interface::Status> {
        self.0.create(id, o, m, n, md, s)
    }
    fn try_create_immediately(
        &self,
        id: &ObjectId,
        o: &OwnerAddress,
        n: u64,
        md: &[u8],
        s: ObjectSource,
    ) -> Result<gismo_plugin::interface::WritableBuffer, gismo_plugin::interface::Status> {
        self.0.try_create_immediately(id, o, n, md, s)
    }
    fn seal(&self, id: &ObjectId) -> Result<(), gismo_plugin::interface::Status> {
        self.0.seal(id)
    }
    fn abort(&self, id: &ObjectId) -> Result<(), gismo_plugin::interface::Status> {
        self.0.abort(id)
    }
    fn get(
        &self,
        ids: &[ObjectId],
        t: i64,
    ) -> Result<Vec<Option<gismo_plugin::interface::ObjectBuffer>>, gismo_plugin::interface::Status>
    {
        self.0.get(ids, t)
    }
    fn release(&self, id: &ObjectId) -> Result<(), gismo_plugin::interface::Status> {
        self.0.release(id)
    }
    fn contains(&self, id: &ObjectId) -> Result<bool, gismo_plugin::interface::Status> {
        self.0.contains(id)
    }
    fn delete(&self, ids: &[ObjectId]) -> Result<(), gismo_plugin::interface::Status> {
        self.0.delete(ids)
    }
    fn disconnect(&self) -> Result<(), gismo_plugin::interface::Status> {
        self.0.disconnect()
    }
    fn get_memory_usage(&self) -> Result<String, gismo_plugin::interface::Status> {
        self.0.get_memory_usage()
    }
    unsafe fn memory_copy(&self, d: *mut u8, s: *const u8, n: usize) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.0.memory_copy(d, s, n) }
    }
    fn is_global(&self) -> bool {
        false
    }
}

#[derive(Default)]
struct CountingPull(std::sync::atomic::AtomicUsize);

impl gismo_plugin::interface::PullHook for CountingPull {
    fn pull(&self, ids: &[ObjectId]) {
        self.0
            .fetch_add(ids.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn store_provider_skips_the_pull_only_for_global_stores() {
    use gismo_plugin::interface::StoreProvider;
    let region = Region::create(
        &RegionSpec::Memfd {
            name: "gismo-provider".into(),
            huge_pages: false,
        },
        16 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    let store = Store::format(region, &Default::default()).unwrap();
    let gismo: Arc<dyn ObjectStoreClient> =
        Arc::new(GismoClient::connect(&store, "provider").unwrap());
    let id = ObjectId::random();
    put(&*gismo, &id, b"global", b"");

    let pulls = Arc::new(CountingPull::default());
    let global = StoreProvider::new(gismo.clone(), pulls.clone());
    assert_eq!(
        global.get(&[id], 0).unwrap()[0].as_ref().unwrap().data(),
        b"global"
    );
    assert_eq!(
        pulls.0.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a global store never pulls"
    );

    let local = StoreProvider::new(Arc::new(NodeLocal(gismo)), pulls.clone());
    assert_eq!(
        local.get(&[id], 0).unwrap()[0].as_ref().unwrap().data(),
        b"global"
    );
    assert_eq!(
        pulls.0.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a node-local store pulls first"
    );
}
