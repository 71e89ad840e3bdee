"""Fixtures: a fresh region per test module, and a two-raylet Ray cluster on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid

import pytest

# Every Ray process the tests start listens on loopback only (Ray then uses 127.0.0.1 for every
# node, driver and worker). Set before `import ray` anywhere in the session.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# No usage reports: Ray's own (to the network) and Ray Data's collector (a detached actor querying
# a Prometheus on localhost that is not there).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")

import gismo  # noqa: E402

LOOPBACK = "127.0.0.1"


def fresh_region(size: int) -> str:
    """A region spec for a new file in /dev/shm (removed by the caller)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return f"file:{base}/gismo-pytest-{uuid.uuid4().hex[:12]}"


def in_region_mapping(arr, region: str | None = None) -> bool:
    """Whether the array's bytes lie in this process's mapping of the region file (`region`, a
    `file:` spec; default: this process's `GISMO_REGION`)."""
    return range_in_region_mapping(arr.__array_interface__["data"][0], arr.nbytes, region)


def range_in_region_mapping(start: int, nbytes: int, region: str | None = None) -> bool:
    """Whether the bytes [start, start + nbytes) lie in this process's mapping of the region file
    (as `in_region_mapping`)."""
    path = (region or os.environ[gismo.REGION_ENV]).split(":", 1)[1]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= start and start + nbytes <= hi:
                    return True
    return False


def arrow_buffers(value) -> list:
    """Every buffer (children's too) of a pyarrow Table, RecordBatch, ChunkedArray or Array."""
    if hasattr(value, "columns"):  # Table, RecordBatch
        return [b for column in value.columns for b in arrow_buffers(column)]
    if hasattr(value, "chunks"):  # ChunkedArray
        return [b for chunk in value.chunks for b in arrow_buffers(chunk)]
    return [b for b in value.buffers() if b is not None]


def arrow_in_region_mapping(value, region: str | None = None) -> bool:
    """Whether every buffer of an Arrow value lies in this process's mapping of the region (and
    is immutable): read in place, read-only."""
    buffers = [b for b in arrow_buffers(value) if b.size]
    return bool(buffers) and all(
        not b.is_mutable and range_in_region_mapping(b.address, b.size, region) for b in buffers
    )


def remove_region(spec: str) -> None:
    try:
        os.unlink(spec.split(":", 1)[1])
    except FileNotFoundError:
        pass


@pytest.fixture
def region():
    spec = fresh_region(64 << 20)
    yield spec
    gismo.disconnect()
    remove_region(spec)


@pytest.fixture
def client(region):
    with gismo.connect(region, size=64 << 20) as c:
        yield c


@pytest.fixture(scope="module")
def ray_cluster():
    """Two raylets (nodes "A" and "B", each with its own object store) and a driver connected to
    them, all attached to one region in /dev/shm, on loopback. Yields (cluster, driver client,
    region). Everything it makes (region, Ray session, temp dir) is removed on the way out, also
    when setting up fails half-way."""
    with two_raylet_cluster() as started:
        yield started


def get_failure(ref):
    """Resolves a `GismoRef` with `gismo.ray.get` and reports how it failed: (the exception's
    type names, its message, seconds taken), or (None, "", seconds). For tasks and actors that
    report a failure to the test rather than raise it through Ray's wrappers."""
    import time

    import gismo.ray as gr

    start = time.monotonic()
    try:
        gr.get(ref)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return [t.__name__ for t in type(e).__mro__], str(e), time.monotonic() - start
    return None, "", time.monotonic() - start


def ray_scratch():
    """A private Ray temp root for a test cluster, and the environment it changes: returns
    (root, temp_dir for the head node, the saved values of GISMO_REGION and RAY_TMPDIR). `Cluster`
    writes its address file under the *default* Ray temp dir (RAY_TMPDIR/ray) even when the head
    has its own temp_dir, so both point into it. Short, so that Ray's socket paths fit
    sockaddr_un. Undone by `teardown_cluster`."""
    ray_root = tempfile.mkdtemp(prefix="ray")
    saved_env = {k: os.environ.get(k) for k in (gismo.REGION_ENV, "RAY_TMPDIR")}
    os.environ["RAY_TMPDIR"] = ray_root
    temp_dir = os.path.join(ray_root, "ray")
    os.makedirs(temp_dir, exist_ok=True)
    return ray_root, temp_dir, saved_env


def teardown_cluster(cluster, spec: str, ray_root: str, saved_env: dict) -> None:
    """Everything a test cluster's fixture made goes: the driver's Ray connection, the cluster
    (if it started), the driver's region client, the environment (`ray_scratch`), the region and
    the Ray temp root."""
    import ray

    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    gismo.disconnect()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    remove_region(spec)
    shutil.rmtree(ray_root, ignore_errors=True)


@contextlib.contextmanager
def two_raylet_cluster(
    region_size: int = 256 << 20, runtime_env: dict | None = None, env_vars: dict | None = None
):
    """The cluster of `ray_cluster`, with a region of `region_size` bytes, and `runtime_env`
    (such as a `worker_process_setup_hook`) and `env_vars` added to the job's runtime env."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    spec = fresh_region(region_size)
    ray_root, temp_dir, saved_env = ray_scratch()
    os.environ[gismo.REGION_ENV] = spec
    cluster = None
    try:
        driver = gismo.connect(spec, size=region_size, client_name="pytest-driver")
        store = 128 << 20
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "resources": {"A": 2},
                "object_store_memory": store,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "node_ip_address": LOOPBACK,
            },
        )
        cluster.add_node(
            num_cpus=2, resources={"B": 2}, object_store_memory=store, node_ip_address=LOOPBACK
        )
        cluster.wait_for_nodes()
        # Workers import the test modules by name (Ray pickles their functions by reference).
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        env = {gismo.REGION_ENV: spec, "PYTHONPATH": path, **(env_vars or {})}
        ray.init(address=cluster.address, runtime_env={**(runtime_env or {}), "env_vars": env})
        yield cluster, driver, spec
    finally:
        teardown_cluster(cluster, spec, ray_root, saved_env)
