//! `gismo._native.Client`: one registered client of a region.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use gismo::GismoClient;
use gismo_core::store::maintenance::{Maintainer, MaintainerConfig, MaintainerThread};
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plugin::interface::ObjectStoreClient;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::buffer::{Creation, ObjectBuffer, WritableBuffer};
use crate::{errors, id};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long one blocking slice of a `get` waits before checking for signals (Ctrl-C).
const GET_SLICE: Duration = Duration::from_millis(50);

/// A client of a GISMO region (`gismo.connect()` returns one).
///
/// Opening attaches the region (maps it) and registers a client entry. When `size` is given and
/// the region does not exist (or is not formatted), it is created and formatted with that many
/// bytes, and with `max_clients` client-table entries (default: 1024, a Ray node's worth, fewer
/// in a region under 129 MiB, see `gismo::default_max_clients`), `refs_per_client` references
/// per client (a power of two, default 2048) and `dir_capacity` directory slots (a power of two,
/// default one per 32 KiB of heap); a region that is already formatted keeps its own. Closing (or garbage collection) drops this handle; the client entry is released once
/// the last `ObjectBuffer` of it is gone too, since those hold references through it.
#[pyclass(frozen, module = "gismo._native")]
pub struct Client {
    region: String,
    inner: Mutex<Option<GismoClient>>,
    /// Objects created through this client and not yet sealed or aborted.
    creations: Mutex<HashMap<ObjectId, Weak<Creation>>>,
    /// The region maintainer this client started (`start_maintenance`), if any.
    maintainer: Mutex<Option<MaintainerThread>>,
}

/// The client name of a maintainer started from Python.
const MAINTAINER_NAME: &str = "gismo-python-maintainer";

impl Client {
    fn client(&self) -> PyResult<GismoClient> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| errors::GismoError::new_err("the client is closed"))
    }
}

#[pymethods]
impl Client {
    /// Attaches `region` (a region spec such as `file:/dev/shm/gismo` or `/dev/dax0.0`).
    #[new]
    #[pyo3(signature = (
        region, *, size=None, client_name="gismo-python", max_clients=None, refs_per_client=None,
        dir_capacity=None
    ))]
    fn new(
        py: Python<'_>,
        region: &str,
        size: Option<u64>,
        client_name: &str,
        max_clients: Option<u32>,
        refs_per_client: Option<u32>,
        dir_capacity: Option<u64>,
    ) -> PyResult<Self> {
        let mut params = BTreeMap::new();
        params.insert("region".to_string(), region.to_string());
        params.insert("client_name".to_string(), client_name.to_string());
        let limits = [
            ("max_clients", max_clients.map(u64::from)),
            ("refs_per_client", refs_per_client.map(u64::from)),
            ("dir_capacity", dir_capacity),
        ];
        for (key, value) in limits {
            if let Some(v) = value {
                params.insert(key.to_string(), v.to_string());
            }
        }
        match size {
            Some(size) => {
                params.insert("size".to_string(), size.to_string());
            }
            None => {
                params.insert("format".to_string(), "false".to_string());
            }
        }
        let client = py
            .detach(|| GismoClient::from_config(&params))
            .map_err(errors::to_py)?;
        // Liveness: the store's per-process heartbeat thread keeps the entry fresh without this
        // client's lock (gismo_core::store::heartbeat), also while another thread waits in a get.
        Ok(Client {
            region: region.to_string(),
            inner: Mutex::new(Some(client)),
            creations: Mutex::new(HashMap::new()),
            maintainer: Mutex::new(None),
        })
    }

    /// The region spec this client attached.
    #[getter]
    fn region(&self) -> &str {
        &self.region
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// Creates object `id` with `size` data bytes (and `metadata` stored after them) and returns
    /// a writable buffer. Evicts unreferenced objects if the region is full. With
    /// `dies_with_creator`, the object is deleted when this process dies and its client is reaped
    /// (Ray's rule for an object whose owner died; readers holding it keep it until they let go).
    #[pyo3(signature = (id, size, metadata=b"".as_slice(), dies_with_creator=false))]
    fn create(
        &self,
        py: Python<'_>,
        id: &[u8],
        size: u64,
        metadata: &[u8],
        dies_with_creator: bool,
    ) -> PyResult<WritableBuffer> {
        let oid = id::parse(id)?;
        let client = self.client()?;
        let buffer = py
            .detach(|| {
                if dies_with_creator {
                    client.create_dying_with_client(&oid, size, metadata)
                } else {
                    client.create(
                        &oid,
                        &OwnerAddress::default(),
                        false,
                        size,
                        metadata,
                        ObjectSource::CreatedByWorker,
                    )
                }
            })
            .map_err(errors::to_py)?;
        let creation = Creation::new(client, buffer);
        let mut open = lock(&self.creations);
        open.retain(|_, c| c.strong_count() > 0);
        open.insert(oid, Arc::downgrade(&creation));
        Ok(WritableBuffer::new(creation))
    }

    /// Seals `id` (created by this client). If its `WritableBuffer` is still alive this is its
    /// `seal()` (refused while writable views exist); returns nothing.
    fn seal(&self, py: Python<'_>, id: &[u8]) -> PyResult<()> {
        let oid = id::parse(id)?;
        let open = lock(&self.creations).get(&oid).and_then(Weak::upgrade);
        match open {
            Some(creation) if creation.is_open() => {
                creation.seal(py)?;
                lock(&self.creations).remove(&oid);
                Ok(())
            }
            _ => {
                let client = self.client()?;
                py.detach(|| client.seal(&oid)).map_err(errors::to_py)
            }
        }
    }

    /// Aborts `id` (created by this client, not sealed).
    fn abort(&self, py: Python<'_>, id: &[u8]) -> PyResult<()> {
        let oid = id::parse(id)?;
        let open = lock(&self.creations).get(&oid).and_then(Weak::upgrade);
        match open {
            Some(creation) if creation.is_open() => {
                creation.abort()?;
                lock(&self.creations).remove(&oid);
                Ok(())
            }
            _ => {
                let client = self.client()?;
                py.detach(|| client.abort(&oid)).map_err(errors::to_py)
            }
        }
    }

    /// The sealed object `id`, read in place; waits up to `timeout` seconds for it to be sealed
    /// (`None`: forever, `0`: not at all). Raises `TimeoutError` when it does not appear.
    #[pyo3(signature = (id, timeout=None))]
    fn get(&self, py: Python<'_>, id: &[u8], timeout: Option<f64>) -> PyResult<ObjectBuffer> {
        let oid = id::parse(id)?;
        let deadline = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(t))
            }
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout={t}: expected seconds >= 0 or None"
                )))
            }
        };
        let client = self.client()?;
        loop {
            // Wait in slices with the GIL released, so other threads run and Ctrl-C is seen.
            let slice = deadline.map_or(GET_SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(GET_SLICE)
            });
            let got = py
                .detach(|| client.get(&[oid], slice.as_millis() as i64))
                .map_err(errors::to_py)?;
            if let Some(buffer) = got.into_iter().next().flatten() {
                return ObjectBuffer::new(buffer);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                    "object {oid} was not sealed within {}s",
                    timeout.unwrap_or_default()
                )));
            }
            py.check_signals()?;
        }
    }

    /// Whether `id` exists and is sealed.
    fn contains(&self, py: Python<'_>, id: &[u8]) -> PyResult<bool> {
        let oid = id::parse(id)?;
        let client = self.client()?;
        py.detach(|| client.contains(&oid)).map_err(errors::to_py)
    }

    /// Deletes `id`: now if nobody holds it, else when the last reference goes. A missing id is
    /// not an error.
    fn delete(&self, py: Python<'_>, id: &[u8]) -> PyResult<()> {
        let oid = id::parse(id)?;
        let client = self.client()?;
        py.detach(|| client.delete(&[oid])).map_err(errors::to_py)
    }

    /// References held on `id` by all clients together (`None` if it does not exist). For tests
    /// and diagnostics.
    fn refcount(&self, id: &[u8]) -> PyResult<Option<u32>> {
        let oid = id::parse(id)?;
        Ok(self
            .client()?
            .store()
            .lookup_summary(&oid)
            .map(|s| s.refcount))
    }

    /// Whether `id` was deleted while referenced and waits for its last reference to go.
    fn delete_pending(&self, id: &[u8]) -> PyResult<bool> {
        let oid = id::parse(id)?;
        Ok(self.client()?.store().delete_pending(&oid))
    }

    /// The positions in `ids` of the objects whose delete is pending ([`delete_pending`] of
    /// each, in one call: the keeper asks it for every object it holds on every pass).
    fn pending_deletes(&self, py: Python<'_>, ids: Vec<Vec<u8>>) -> PyResult<Vec<usize>> {
        let oids = ids
            .iter()
            .map(|id| id::parse(id))
            .collect::<PyResult<Vec<_>>>()?;
        let client = self.client()?;
        let store = client.store();
        Ok(py.detach(|| {
            oids.iter()
                .enumerate()
                .filter(|(_, oid)| store.delete_pending(oid))
                .map(|(i, _)| i)
                .collect()
        }))
    }

    /// Reclaims what dead clients held (see `docs/operations.md`): on this host, clients whose
    /// process is gone; elsewhere, clients whose heartbeat is older than `lease_ms`. Returns the
    /// pids reaped. `gismo-server` (or a raylet with the GISMO plugin) does this continuously.
    #[pyo3(signature = (lease_ms=5000))]
    fn reap_dead(&self, py: Python<'_>, lease_ms: u64) -> PyResult<Vec<u32>> {
        let client = self.client()?;
        let reports = py
            .detach(|| client.reap_dead(lease_ms))
            .map_err(|e| errors::to_py(e.into()))?;
        Ok(reports.iter().map(|r| r.pid).collect())
    }

    /// Starts the region's maintenance roles in this process, on a thread of their own (the
    /// store core's `Maintainer`, as `gismo-server` and the GISMO raylet runner run it): a
    /// client entry of its own, its heartbeat, and the region's leader lease; while this process
    /// holds the lease it reaps dead clients every 100 ms (on this host at once, elsewhere after
    /// `lease_ms` without a heartbeat), finishing their deletes and collecting orphaned blocks.
    /// Every process may start one: one of them leads, the others take over within the lease
    /// when it exits. Returns false if this client runs one already. Stopped by
    /// `stop_maintenance()` or `close()` (which give the lease up).
    #[pyo3(signature = (lease_ms=5000))]
    fn start_maintenance(&self, py: Python<'_>, lease_ms: u64) -> PyResult<bool> {
        if lease_ms == 0 {
            return Err(PyValueError::new_err(
                "lease_ms=0: expected milliseconds >= 1",
            ));
        }
        let mut slot = lock(&self.maintainer);
        if slot.is_some() {
            return Ok(false);
        }
        let store = Arc::clone(self.client()?.store());
        let config = MaintainerConfig::new(MAINTAINER_NAME, lease_ms);
        let maintainer = py
            .detach(|| Maintainer::new(&store, config))
            .map_err(|e| errors::to_py(e.into()))?;
        let thread = maintainer
            .spawn("gismo-maintainer", |_| {})
            .map_err(|e| errors::GismoError::new_err(format!("cannot start a thread: {e}")))?;
        *slot = Some(thread);
        Ok(true)
    }

    /// Stops the maintainer `start_maintenance` started (after its current step), giving the
    /// leader lease up; nothing if none runs.
    fn stop_maintenance(&self, py: Python<'_>) {
        let thread = lock(&self.maintainer).take();
        if let Some(thread) = thread {
            py.detach(move || drop(thread.stop()));
        }
    }

    /// Whether this client runs a maintainer (`start_maintenance`).
    #[getter]
    fn maintaining(&self) -> bool {
        lock(&self.maintainer).is_some()
    }

    /// Region usage: heap size, bytes used, objects, clients.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.client()?.store().stats();
        let d = PyDict::new(py);
        d.set_item("uuid", &s.uuid)?;
        d.set_item("region_bytes", s.region_bytes)?;
        d.set_item("heap_bytes", s.heap_bytes)?;
        d.set_item("used_bytes", s.used_bytes)?;
        d.set_item("allocations", s.allocations)?;
        d.set_item("clients_active", s.clients_active)?;
        d.set_item("max_clients", s.max_clients)?;
        d.set_item("refs_per_client", s.refs_per_client)?;
        d.set_item("metadata_ratio", s.metadata_ratio)?;
        d.set_item("dir_capacity", s.dir_capacity)?;
        d.set_item("coherence", s.coherence.to_string())?;
        Ok(d)
    }

    /// Drops this handle: no more calls through it. Objects already read stay readable; the
    /// client entry is released with the last of them.
    fn close(&self, py: Python<'_>) {
        self.stop_maintenance(py);
        lock(&self.inner).take();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<gismo.Client region={:?} closed={}>",
            self.region,
            self.closed()
        )
    }
}
