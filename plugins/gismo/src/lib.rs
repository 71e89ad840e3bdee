//! The GISMO plugin: [`GismoClient`] and [`GismoRunner`] over a shared (CXL) region, and their C
//! ABI exports (`CreateClient` / `CreateRunner`) — the `libgismo.so` a raylet loads.
//!
//! Only the store core (`gismo-core`, `gismo-platform`) and the plugin layer (`gismo-plugin`) are
//! underneath: a raylet that loads this library links no other plugin.
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::BTreeMap;
use std::sync::Arc;

use gismo_plugin::interface::Status;
use gismo_plugin::Builtin;

// The lower layers' modules this crate's code names as `crate::store`, `crate::region`, ...
// Not re-exported.
use gismo_core::{format, store};
use gismo_platform::{clock, coherence, region};
use gismo_plugin::interface;

mod ffi;
mod gismo;
mod written;

pub use gismo::{
    default_max_clients, open_store, GismoClient, GismoRunner, MIN_DEFAULT_CLIENTS,
    RAY_NODE_CLIENTS,
};

/// Keys the GISMO plugin accepts (runner and client; meanings: [`open_store`]).
pub const GISMO_KEYS: &[&str] = &[
    "region",
    "size",
    "format",
    "coherence",
    "client_name",
    "max_clients",
    "refs_per_client",
    "dir_capacity",
];

/// The GISMO plugin's entry in a program's table of built-ins.
pub const BUILTIN: Builtin = Builtin {
    name: "gismo",
    keys: GISMO_KEYS,
    make_runner: |params| Ok(Box::new(runner_from_config(params)?)),
    make_client: |params| Ok(Arc::new(GismoClient::from_config(params)?)),
};

/// The runner a configuration names: the store is opened (or created) now, through a client
/// named `client_name` (default `gismo-runner`) that is disconnected at once — so a bad
/// configuration fails here, not at `start`. The runner keeps the store.
///
/// # Errors
/// As [`GismoClient::from_config`].
pub fn runner_from_config(params: &BTreeMap<String, String>) -> Result<GismoRunner, Status> {
    let mut params = params.clone();
    params
        .entry("client_name".to_string())
        .or_insert_with(|| "gismo-runner".to_string());
    let store = GismoClient::from_config(&params)?.store().clone();
    Ok(GismoRunner::with_store(store))
}
