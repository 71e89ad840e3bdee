//! One benchmark harness over every object store (issue 9): the stores behind
//! [`ObjectStoreClient`](gismo_plugin::interface::ObjectStoreClient) ([`stores`]), the same operations
//! over each ([`ops`]), the physical limits measured in the same run ([`limits`]), latency
//! summaries ([`stats`]) and the report (`gismo-bench report`, which rewrites
//! `docs/benchmarks.md`). The criterion micro-benchmarks in `benches/stores.rs` use the same
//! stores and operations; the multi-process runs are `gismoctl bench`'s. `gismo-bench scale`
//! ([`scale`]) measures maintenance and large puts on a big, full region.

pub mod limits;
pub mod ops;
pub mod scale;
pub mod stats;
pub mod stores;
