//! `gismo._native`: the Rust half of the `gismo` Python package.
//!
//! Three classes over the store's [`gismo::GismoClient`]:
//!
//! * [`Client`] — one registered client of a shared region (per process, usually);
//! * [`ObjectBuffer`] — a sealed object, exported read-only through the buffer protocol, that
//!   holds one store reference until it is released *and* no `memoryview`/NumPy array exports it;
//! * [`WritableBuffer`] — an object being created, exported writable until it is sealed.
//!
//! Everything Python-shaped (encoding NumPy arrays, the Ray helper, the lifetime policy) lives in
//! the pure-Python package `python/gismo/`; see `docs/python.md` for the design.

mod buffer;
mod client;
mod errors;
mod id;

use pyo3::prelude::*;

/// The module `gismo._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<buffer::ObjectBuffer>()?;
    m.add_class::<buffer::WritableBuffer>()?;
    errors::register(m)?;
    m.add("OBJECT_ID_LEN", gismo_core::store::object_id::OBJECT_ID_LEN)?;
    m.add_function(wrap_pyfunction!(id::random_id, m)?)?;
    Ok(())
}
