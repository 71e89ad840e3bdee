"""Mixed clusters: a Ray node that cannot map the region still gets GISMO values, through Ray.

A real ``ray.cluster_utils.Cluster`` on this machine: node "A" (the head) is started with
``GISMO_REGION`` naming the region, node "B" with ``GISMO_REGION`` naming a file that does not
exist, so every worker B's raylet starts inherits a spec it cannot map — as on a real node without
the CXL device. The job's ``runtime_env`` does not set ``GISMO_REGION`` (it would override both);
it runs transparent mode (``worker_process_setup_hook``). A third node "C", which maps the
region, is added for the dead-producer test and removed in it."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
from conftest import (  # noqa: E402
    LOOPBACK,
    fresh_region,
    get_failure,
    in_region_mapping,
    ray_scratch,
    teardown_cluster,
)

MiB = 1 << 20
THRESHOLD = 256 * 1024


def checksum(arr: np.ndarray) -> int:
    return int(np.bitwise_xor.reduce(np.ascontiguousarray(arr).view(np.uint64)))


def random_bytes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8)


def maps_file(path: str) -> bool:
    """Whether this process maps ``path`` at all."""
    with open("/proc/self/maps") as maps:
        return any(line.split()[5:6] == [path] for line in maps)


def test_without_the_region_and_without_ray_get_raises_region_unavailable(monkeypatch):
    """Outside Ray there is no node to fetch from: the attach error itself, typed, and the same
    spec is not tried again at every call. (First in the module: Ray is not up yet.)"""
    if ray.is_initialized():
        pytest.skip("Ray is up in this process")
    gismo.disconnect()
    missing = fresh_region(0)
    monkeypatch.setenv(gismo.REGION_ENV, missing)
    monkeypatch.setattr(gr, "_client", None)
    monkeypatch.setattr(gr, "_attach_failure", None)
    ref = gr.GismoRef(gismo.random_id(), 8, None, "some-region-uuid")
    with pytest.raises(gr.RegionUnavailableError) as first:
        gr.get(ref)
    assert isinstance(first.value, gismo.GismoError) and missing in str(first.value)
    assert gr._attach_failure is not None and gr._attach_failure[0] == missing
    with pytest.raises(gr.RegionUnavailableError):
        gr.get_buffer(ref)
    monkeypatch.delenv(gismo.REGION_ENV)  # another value of the variable is tried afresh
    with pytest.raises(gr.RegionUnavailableError, match=gismo.REGION_ENV):
        gr.client()


@pytest.fixture(scope="module")
def mixed_cluster():
    """Yields (cluster, driver client, region spec, path B cannot map). Everything it makes is
    removed on the way out."""
    from ray.cluster_utils import Cluster

    spec = fresh_region(128 * MiB)
    missing = fresh_region(0)  # never created: node B's spec
    ray_root, temp_dir, saved_env = ray_scratch()
    cluster = None
    try:
        driver = gismo.connect(spec, size=128 * MiB, client_name="pytest-mixed-driver")
        # Each raylet passes its own environment on to the workers it starts.
        os.environ[gismo.REGION_ENV] = spec
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {"A": 1},
                "object_store_memory": 96 * MiB,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "node_ip_address": LOOPBACK,
            },
        )
        os.environ[gismo.REGION_ENV] = missing
        cluster.add_node(
            num_cpus=1, resources={"B": 1}, object_store_memory=96 * MiB, node_ip_address=LOOPBACK
        )
        os.environ[gismo.REGION_ENV] = spec
        cluster.wait_for_nodes()
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        env = {"PYTHONPATH": path, gr.THRESHOLD_ENV: str(THRESHOLD)}
        ray.init(
            address=cluster.address,
            runtime_env={"worker_process_setup_hook": "gismo.ray.install", "env_vars": env},
        )
        yield cluster, driver, spec, missing
    finally:
        teardown_cluster(cluster, spec, ray_root, saved_env)


def node_of(resource: str) -> str:
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"])


@ray.remote(resources={"A": 1})
def produce(nbytes: int, seed: int, lifetime: str = "ray"):
    arr = random_bytes(nbytes, seed)
    return [gr.put(arr, lifetime=lifetime)], checksum(arr)


@ray.remote(resources={"A": 1})
def produce_plain(nbytes: int, seed: int):
    return random_bytes(nbytes, seed)  # transparent mode: through the region


@ray.remote(num_cpus=0)
class Reader:
    """A fresh worker process on the node it is placed on (one-time warnings are per process)."""

    def cannot_attach(self):
        try:
            gr.client()
        except gr.RegionUnavailableError as e:
            return str(e)
        return None

    def read(self, boxed, spec: str):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = gr.get(boxed[0])
            second = gr.get(boxed[0])
        ours = [str(w.message) for w in caught if "fetched through Ray" in str(w.message)]
        path = spec.split(":", 1)[1]
        return {
            "sums": [checksum(first), checksum(second)],
            "nbytes": int(first.nbytes),
            "type": type(first).__name__,
            "writeable": bool(first.flags.writeable),
            "in_region": in_region_mapping(first, spec) or maps_file(path),
            "warnings": ours,
            "node": ray.get_runtime_context().get_node_id(),
        }

    def try_get(self, boxed):
        return get_failure(boxed[0])

    def fetched_yet(self):
        from gismo import _ray_fetch

        return _ray_fetch._warned

    def take(self, arr, spec: str):
        # Ray resolved the argument before the call: the deserializer fetched it through Ray.
        from gismo import _ray_fetch

        return {
            "sum": checksum(arr),
            "nbytes": int(arr.nbytes),
            "writeable": bool(arr.flags.writeable),
            "in_region": maps_file(spec.split(":", 1)[1]),
            "fetched": _ray_fetch._warned,
            "served_by": dict(_ray_fetch._served_by),
        }


def on(resource: str):
    return Reader.options(resources={resource: 0.01}).remote()


def test_a_node_without_the_region_gets_the_value_through_ray(mixed_cluster):
    _, driver, spec, missing = mixed_cluster
    n = 4 * MiB
    boxed, expected = ray.get(produce.remote(n, 1), timeout=120)
    assert boxed[0].node == node_of("A")
    reader = on("B")
    reason = ray.get(reader.cannot_attach.remote(), timeout=120)
    assert reason is not None and missing.split(":", 1)[1] in reason
    got = ray.get(reader.read.remote(boxed, spec), timeout=120)
    assert got["node"] == node_of("B")
    assert got["sums"] == [expected, expected] and got["nbytes"] == n
    assert got["type"] == "ndarray"
    # A copy in B's Ray object store: read-only as Ray's own arrays, not in a region mapping.
    assert not got["writeable"] and not got["in_region"]
    # One warning for the process, naming the region and the serving node.
    assert len(got["warnings"]) == 1, got["warnings"]
    assert boxed[0].region in got["warnings"][0] and node_of("A") in got["warnings"][0]
    # The producer's pin alone holds the object: the fetch released its reference.
    assert driver.refcount(boxed[0].id) == 1
    ray.kill(reader)


@ray.remote(resources={"A": 1})
def produce_values():
    inner = gr.put(np.full(1000, 7, dtype=np.uint8))  # a GismoRef inside a value
    return [
        gr.put(b"hello"),  # inlined by Ray: far under 100 KiB
        gr.put({"a": np.arange(1 << 16, dtype=np.uint64), "s": "x", "inner": inner}),
    ]


@ray.remote(resources={"B": 1})
def read_values(refs):
    small, value = (gr.get(r) for r in refs)
    return bytes(small), int(value["a"].sum()), value["s"], int(gr.get(value["inner"]).sum())


def test_small_and_pickled_values_reach_a_node_without_the_region(mixed_cluster):
    refs = ray.get(produce_values.remote(), timeout=120)
    got = ray.get(read_values.remote(refs), timeout=120)
    assert got == (b"hello", sum(range(1 << 16)), "x", 7000)


def test_a_lost_object_raises_object_lost_on_a_node_without_the_region(mixed_cluster):
    _, driver, _, _ = mixed_cluster
    boxed, _ = ray.get(produce.remote(MiB, 2, "explicit"), timeout=120)
    gr.free(boxed[0])
    deadline = time.monotonic() + 30
    while driver.contains(boxed[0].id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not driver.contains(boxed[0].id)
    reader = on("B")
    # Bounded so that a hang fails the test (not a performance assertion).
    types, message, seconds = ray.get(reader.try_get.remote(boxed), timeout=60)
    print(f"ObjectLostError on B after {seconds * 1e3:.1f} ms")  # reported, not asserted
    assert types is not None, "resolved a deleted object"
    assert "ObjectLostError" in types and "RayError" in types
    assert boxed[0].id.hex() in message
    ray.kill(reader)


def test_transparent_mode_deserializes_through_ray_on_a_node_without_the_region(mixed_cluster):
    _, _, spec, _ = mixed_cluster
    n = 4 * MiB
    reader = on("B")
    assert ray.get(reader.fetched_yet.remote(), timeout=120) is False
    got = ray.get(reader.take.remote(produce_plain.remote(n, 3), spec), timeout=120)
    assert got["sum"] == checksum(random_bytes(n, 3)) and got["nbytes"] == n
    # The array went through the region (A's transparent serializer) and B's deserializer
    # fetched it through Ray from A.
    assert got["fetched"] and list(got["served_by"].values()) == [node_of("A")]
    assert not got["writeable"] and not got["in_region"]
    ray.kill(reader)


def test_when_the_producers_node_is_gone_another_node_that_maps_the_region_serves(mixed_cluster):
    cluster, driver, spec, _ = mixed_cluster
    node_c = cluster.add_node(
        num_cpus=1, resources={"C": 1}, object_store_memory=96 * MiB, node_ip_address=LOOPBACK
    )
    cluster.wait_for_nodes()
    c_id = node_of("C")

    @ray.remote(resources={"C": 1})
    def produce_on_c(nbytes: int):
        arr = random_bytes(nbytes, 4)
        return [gr.put(arr, lifetime="explicit")], checksum(arr)

    boxed, expected = ray.get(produce_on_c.remote(2 * MiB), timeout=120)
    assert boxed[0].node == c_id
    cluster.remove_node(node_c)
    deadline = time.monotonic() + 60
    while any(n["NodeID"] == c_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "node C never left"
        time.sleep(0.1)
    reader = on("B")
    got = ray.get(reader.read.remote(boxed, spec), timeout=120)
    assert got["sums"] == [expected, expected]
    assert len(got["warnings"]) == 1 and node_of("A") in got["warnings"][0]
    gr.free(boxed[0])
    ray.kill(reader)
