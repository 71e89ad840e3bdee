//! Python exceptions for the store's status codes.
//!
//! `GismoError` is the base; the codes a caller handles get their own subclass. A timed-out get
//! raises the built-in `TimeoutError`, a missing object `ObjectNotFoundError` (also a `KeyError`).

use gismo_plugin::interface::{Status, StatusCode};
use pyo3::exceptions::{PyException, PyKeyError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

pyo3::create_exception!(gismo, GismoError, PyException, "A GISMO store call failed.");
pyo3::create_exception!(
    gismo,
    ObjectExistsError,
    GismoError,
    "An object with this id already exists (or is already sealed)."
);
pyo3::create_exception!(
    gismo,
    StoreFullError,
    GismoError,
    "The region has no room for the object, even after evicting unreferenced objects."
);

pyo3::create_exception!(
    gismo,
    FencedError,
    GismoError,
    "This client was declared dead (paused past its lease) and fenced: what it read after that \
     may not be the object's bytes. Reconnect."
);

/// A `FencedError` for a copy that was made after the client was fenced.
pub fn fenced() -> PyErr {
    FencedError::new_err(
        "this client was declared dead (paused past its lease?): the copy may hold reused \
         memory and was discarded; reconnect",
    )
}

/// `ObjectNotFoundError(GismoError, KeyError)`, built at module initialisation (two bases).
static NOT_FOUND: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();

fn not_found_type(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    NOT_FOUND
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [py.get_type::<GismoError>(), py.get_type::<PyKeyError>()],
            )?;
            let namespace = pyo3::types::PyDict::new(py);
            namespace.set_item("__module__", "gismo")?;
            namespace.set_item("__doc__", "No sealed object has this id.")?;
            let ty = py.get_type::<pyo3::types::PyType>().call1((
                "ObjectNotFoundError",
                bases,
                namespace,
            ))?;
            Ok::<_, PyErr>(ty.cast_into::<pyo3::types::PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// Adds the exception types to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("GismoError", py.get_type::<GismoError>())?;
    m.add("ObjectExistsError", py.get_type::<ObjectExistsError>())?;
    m.add("StoreFullError", py.get_type::<StoreFullError>())?;
    m.add("FencedError", py.get_type::<FencedError>())?;
    m.add("ObjectNotFoundError", not_found_type(py)?)?;
    Ok(())
}

/// The Python exception for a failed store call.
pub fn to_py(status: Status) -> PyErr {
    let msg = format!("{:?}: {}", status.code, status.message);
    match status.code {
        StatusCode::ObjectExists | StatusCode::ObjectAlreadySealed => {
            ObjectExistsError::new_err(msg)
        }
        StatusCode::ObjectStoreFull
        | StatusCode::TransientObjectStoreFull
        | StatusCode::OutOfMemory => StoreFullError::new_err(msg),
        StatusCode::TimedOut => PyTimeoutError::new_err(msg),
        StatusCode::ObjectNotFound => not_found(msg),
        _ => GismoError::new_err(msg),
    }
}

/// `ObjectNotFoundError(msg)`.
pub fn not_found(msg: String) -> PyErr {
    Python::attach(|py| match not_found_type(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    })
}
