"""Fixtures: a fresh region per test module, and a two-raylet Ray cluster on this machine."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

import gismo


def fresh_region(size: int) -> str:
    """A region spec for a new file in /dev/shm (removed by the caller)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return f"file:{base}/gismo-pytest-{uuid.uuid4().hex[:12]}"


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
    them, all attached to one region in /dev/shm. Yields (cluster, driver client, region)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    spec = fresh_region(256 << 20)
    os.environ[gismo.REGION_ENV] = spec
    driver = gismo.connect(spec, size=256 << 20, client_name="pytest-driver")
    temp_dir = tempfile.mkdtemp(prefix="gismo-py-ray-")
    store = 128 << 20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"A": 2},
            "object_store_memory": store,
            "temp_dir": temp_dir,
            "include_dashboard": False,
        },
    )
    cluster.add_node(num_cpus=2, resources={"B": 2}, object_store_memory=store)
    cluster.wait_for_nodes()
    # Workers import the test modules by name (Ray pickles their functions by reference).
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {gismo.REGION_ENV: spec, "PYTHONPATH": path}
    ray.init(address=cluster.address, runtime_env={"env_vars": env})
    try:
        yield cluster, driver, spec
    finally:
        ray.shutdown()
        cluster.shutdown()
        gismo.disconnect()
        os.environ.pop(gismo.REGION_ENV, None)
        remove_region(spec)
        shutil.rmtree(temp_dir, ignore_errors=True)
