//! Plugins loaded from real shared libraries through the [`PluginManager`]: `libgismo.so` (the
//! `gismo` crate built as a cdylib) and `plugins/builtins/tests/plugins/memstore.c` (a C in-memory store
//! compiled here), each run through the conformance suite.

#[path = "../../../plugin/tests/support/conformance_suite.rs"]
#[macro_use]
mod conformance_suite;
#[path = "support/plugin_paths.rs"]
mod plugin_paths;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance_suite::{put, Plugin};
use gismo_builtins::plugin_manager;
use gismo_core::store::ObjectId;
use gismo_plugin::interface::{ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks};

struct LoadedPlugin {
    name: String,
    path: PathBuf,
    config: BTreeMap<String, String>,
    /// What the store lives in (region file, compiled library); removed on drop.
    _dir: tempfile::TempDir,
}

impl LoadedPlugin {
    /// `libgismo.so` with a fresh 64 MiB region file in a new temp dir.
    fn libgismo() -> LoadedPlugin {
        let dir = tempfile::tempdir().unwrap();
        LoadedPlugin {
            name: "gismo".into(),
            path: plugin_paths::libgismo(),
            config: gismo_config(dir.path()),
            _dir: dir,
        }
    }

    /// `memstore.c` compiled into a new temp dir, with an 8 MiB store of its own (stores are
    /// shared by name within the process: each instance gets a new name).
    fn memstore() -> LoadedPlugin {
        static STORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::tempdir().unwrap();
        let so = plugin_paths::compile_c("memstore.c", &[], dir.path());
        LoadedPlugin {
            name: "memstore".into(),
            path: so,
            config: [
                ("capacity".to_string(), "8388608".to_string()),
                ("store".to_string(), format!("conformance-{n}")),
            ]
            .into(),
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 path")
    }
}

impl Plugin for LoadedPlugin {
    fn name(&self) -> &str {
        &self.name
    }
    fn client(&self) -> Arc<dyn ObjectStoreClient> {
        plugin_manager()
            .create_client(&self.name, self.path(), &self.config)
            .unwrap()
    }
    fn runner(&self) -> Box<dyn ObjectStoreRunner> {
        plugin_manager()
            .create_runner(&self.name, self.path(), &self.config)
            .unwrap()
    }
    fn capacity(&self) -> u64 {
        self.runner().total_memory_size() as u64
    }
}

fn gismo_config(dir: &Path) -> BTreeMap<String, String> {
    [
        (
            "region".to_string(),
            format!("file:{}", dir.join("region").display()),
        ),
        ("size".to_string(), "64MiB".to_string()),
    ]
    .into()
}

mod conformance {
    use super::*;
    instantiate_conformance_tests_with_module!(libgismo_so, LoadedPlugin::libgismo());
    instantiate_conformance_tests_with_module!(memstore_c, LoadedPlugin::memstore());
}

#[test]
fn libgismo_so_is_global_and_reports_its_region() {
    let plugin = LoadedPlugin::libgismo();
    let c = plugin.client();
    assert!(c.is_global());
    assert!(c.get_memory_usage().unwrap().contains("GISMO region"));
}

#[test]
fn libgismo_so_is_zero_copy_and_shares_the_region_with_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let config = gismo_config(dir.path());
    let lib = plugin_paths::libgismo();
    let m = plugin_manager();
    let loaded = m
        .create_client("gismo", lib.to_str().unwrap(), &config)
        .unwrap();
    let builtin = m.create_client("gismo", "", &config).unwrap();
    let id = ObjectId::random();
    put(&*loaded, &id, b"through the C ABI", b"md");
    let a = loaded.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    let b = loaded.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    // Two gets through the ABI see the same bytes in place (no copy).
    assert_eq!(a.as_ptr(), b.as_ptr());
    // The built-in client maps the same region file and sees the object.
    let c = builtin.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(c.data(), b"through the C ABI");
    assert_eq!(c.metadata(), b"md");
}

#[test]
fn the_library_stays_loaded_while_buffers_live() {
    let dir = tempfile::tempdir().unwrap();
    let config = gismo_config(dir.path());
    let lib = plugin_paths::libgismo();
    let c = plugin_manager()
        .create_client("gismo", lib.to_str().unwrap(), &config)
        .unwrap();
    let id = ObjectId::random();
    put(&*c, &id, b"alive", b"");
    let buf = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    drop(c);
    // The buffer holds the client, which holds the library: still readable, and its drop
    // releases through the plugin's table.
    assert_eq!(buf.data(), b"alive");
    drop(buf);
}

#[test]
fn runner_callbacks_cross_the_abi() {
    use std::sync::Mutex;
    let plugin = LoadedPlugin::libgismo();
    let runner = plugin.runner();
    let added: Arc<Mutex<Vec<ObjectId>>> = Arc::default();
    let a2 = added.clone();
    runner
        .start(
            &BTreeMap::new(),
            RunnerCallbacks {
                add_object: Arc::new(move |i| a2.lock().unwrap().push(i.object_id)),
                ..RunnerCallbacks::none()
            },
        )
        .unwrap();
    assert!(
        runner
            .start(&BTreeMap::new(), RunnerCallbacks::none())
            .is_err(),
        "a second start is refused"
    );
    let c = plugin.client();
    let id = ObjectId::random();
    put(&*c, &id, b"x", b"");
    conformance_suite::wait_until("add_object through C", || {
        added.lock().unwrap().contains(&id)
    });
    runner.stop();
    runner.stop();
    drop(runner);
}

#[test]
fn memstore_c_plugin_is_not_global() {
    let plugin = LoadedPlugin::memstore();
    assert!(!plugin.client().is_global());
}

#[test]
fn two_libraries_loaded_at_once_keep_their_own_stores() {
    let dir = tempfile::tempdir().unwrap();
    let memstore = plugin_paths::compile_c("memstore.c", &[], dir.path());
    let m = plugin_manager();
    let mem_cfg: BTreeMap<String, String> =
        [("store".to_string(), "side-by-side".to_string())].into();
    let mem = m
        .create_client("memstore", memstore.to_str().unwrap(), &mem_cfg)
        .unwrap();
    let lib = plugin_paths::libgismo();
    let gis = m
        .create_client("gismo", lib.to_str().unwrap(), &gismo_config(dir.path()))
        .unwrap();
    let (a, b) = (ObjectId::random(), ObjectId::random());
    put(&*mem, &a, b"in memstore", b"");
    put(&*gis, &b, b"in gismo", b"");
    assert!(mem.contains(&a).unwrap() && !mem.contains(&b).unwrap());
    assert!(gis.contains(&b).unwrap() && !gis.contains(&a).unwrap());
    assert!(!mem.is_global() && gis.is_global());
    // A second client of the same library path shares the loaded library and the store.
    let mem2 = m
        .create_client("memstore", memstore.to_str().unwrap(), &mem_cfg)
        .unwrap();
    assert_eq!(
        mem2.get(&[a], 0).unwrap()[0].as_ref().unwrap().data(),
        b"in memstore"
    );
}
