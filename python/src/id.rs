//! Object ids at the Python boundary: `bytes` of exactly 28 bytes (Ray's `ObjectID` size).

use gismo_core::store::object_id::OBJECT_ID_LEN;
use gismo_core::store::ObjectId;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Parses a Python `bytes` id.
///
/// # Errors
/// `ValueError` unless it is exactly [`OBJECT_ID_LEN`] bytes.
pub fn parse(id: &[u8]) -> PyResult<ObjectId> {
    let bytes: [u8; OBJECT_ID_LEN] = id.try_into().map_err(|_| {
        PyValueError::new_err(format!(
            "an object id is {OBJECT_ID_LEN} bytes, got {}",
            id.len()
        ))
    })?;
    Ok(ObjectId::from_bytes(bytes))
}

/// The id as Python `bytes`.
pub fn to_py<'py>(py: Python<'py>, id: &ObjectId) -> Bound<'py, PyBytes> {
    PyBytes::new(py, id.as_bytes())
}

/// A fresh random object id (28 bytes from the OS's random source).
#[pyfunction]
pub fn random_id(py: Python<'_>) -> Bound<'_, PyBytes> {
    to_py(py, &ObjectId::random())
}
