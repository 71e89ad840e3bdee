//! What the server prints on standard output once it serves: where the region is and how to use
//! it from a shell.

use gismo_core::store::{ObjectId, Store};
use gismo_platform::region::{Region, RegionSpec};
use gismo_platform::units::ByteSize;

/// The spec other processes on this host use to reach the region. A memfd has no name in the
/// filesystem, but `/proc/<pid>/fd/<n>` opens the same memory while this server runs.
pub fn public_spec(spec: &RegionSpec, region: &Region) -> String {
    match (spec, region.raw_fd()) {
        (RegionSpec::Memfd { .. }, Some(fd)) => {
            format!("file:/proc/{}/fd/{fd}", std::process::id())
        }
        _ => spec.to_string(),
    }
}

pub fn text(public: &str, store: &Store) -> String {
    let s = store.stats();
    let id = ObjectId::from_bytes([0x11; 28]);
    format!(
        "gismo-server: serving {public}\n\
         \x20 region {}, heap {}, {} directory slots, {} clients max, {} coherence, uuid {}\n\
         \n\
         Use it from this host:\n\
         \x20 export GISMO_REGION={public}\n\
         \x20 echo hello | gismoctl put {id} -\n\
         \x20 gismoctl get {id}\n\
         \x20 gismoctl ls; gismoctl stat\n\
         \n\
         Stop with Ctrl-C or SIGTERM. The region and its objects stay after the server stops.\n",
        ByteSize(s.region_bytes),
        ByteSize(s.heap_bytes),
        s.dir_capacity,
        s.max_clients,
        s.coherence,
        s.uuid,
    )
}
