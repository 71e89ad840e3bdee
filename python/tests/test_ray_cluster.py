"""gismo.ray in a real Ray cluster: two raylets on this machine (nodes "A" and "B", each with its
own object store), tasks pinned to a node by custom resources, one region both can map."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
from conftest import fresh_region, get_failure, in_region_mapping, remove_region  # noqa: E402

MiB = 1 << 20


def wait_until(predicate, what: str, limit_s: float = 60.0):
    """Polls a liveness condition (a bound on waiting, not a performance assertion)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def checksum(arr: np.ndarray) -> int:
    return int(np.bitwise_xor.reduce(arr.view(np.uint64)))


@ray.remote(resources={"A": 1})
def produce(nbytes: int, via_gismo: bool):
    arr = np.random.default_rng(nbytes).integers(0, 255, nbytes, dtype=np.uint8)
    value = gr.put(arr) if via_gismo else ray.put(arr)  # in node A's object store
    return value, checksum(arr), ray.get_runtime_context().get_node_id()


@ray.remote(resources={"B": 1})
def consume(boxed):
    value = boxed[0]
    arr = gr.get(value) if isinstance(value, gr.GismoRef) else ray.get(value)
    in_region = in_region_mapping(arr) and not arr.flags.writeable
    return checksum(arr), in_region, ray.get_runtime_context().get_node_id(), arr.nbytes


@ray.remote(resources={"B": 1}, num_cpus=0)
class Reader:
    """Holds a view of an object (as a long-lived consumer would)."""

    def hold(self, boxed):
        self.arr = gr.get(boxed[0])
        return os.getpid(), int(self.arr[0])

    def drop(self):
        del self.arr
        return True


def test_cross_node_through_ray_and_through_gismo(ray_cluster):
    _, driver, _ = ray_cluster
    n = 4 * MiB
    plain, plain_sum, node_a = ray.get(produce.remote(n, False))
    gref, gismo_sum, node_a2 = ray.get(produce.remote(n, True))
    assert isinstance(gref, gr.GismoRef) and gref.nbytes == n
    got_plain, plain_in_region, node_b, size_plain = ray.get(consume.remote([plain]))
    got_gismo, in_region, node_b2, size_gismo = ray.get(consume.remote([gref]))
    assert node_a == node_a2 and node_b == node_b2 and node_a != node_b
    assert got_plain == plain_sum and got_gismo == gismo_sum
    assert size_plain == size_gismo == n
    # GISMO's array is a read-only view of B's mapping of the region; Ray's is B's own copy.
    assert in_region and not plain_in_region
    # The producer's reference (its owner pin) is all that holds it now.
    assert driver.refcount(gref.id) == 1


def test_object_lives_while_ray_holds_a_handle_then_is_deleted(ray_cluster):
    _, driver, _ = ray_cluster
    gref, _, _ = ray.get(produce.remote(64 * 1024, True))
    oid = gref.id
    # The producing task is over; only pickled copies and the driver's handle remain.
    time.sleep(1.0)  # several keeper periods
    assert driver.contains(oid)
    nested = ray.put({"inner": gref})  # a copy inside another Ray object
    del gref
    time.sleep(1.0)
    assert driver.contains(oid), "deleted while a Ray object still contains a handle"
    got = ray.get(consume.remote([ray.get(nested)["inner"]]))
    assert got[1]  # read in place
    del nested, got
    wait_until(lambda: not driver.contains(oid), "the object to be deleted after its last handle")


def test_explicit_lifetime_and_free_from_another_node(ray_cluster):
    _, driver, _ = ray_cluster

    @ray.remote(resources={"A": 1})
    def put_explicit():
        return gr.put(np.arange(1000), lifetime="explicit")

    @ray.remote(resources={"B": 1})
    def read_and_free(boxed):
        total = int(gr.get(boxed[0]).sum())
        gr.free(boxed[0])
        return total

    gref = ray.get(put_explicit.remote())
    time.sleep(0.5)
    assert driver.contains(gref.id)
    assert ray.get(read_and_free.remote([gref])) == sum(range(1000))
    wait_until(lambda: not driver.contains(gref.id), "free() to delete the object")


def test_a_killed_reader_is_reaped_and_its_reference_reclaimed(ray_cluster):
    _, driver, _ = ray_cluster
    gref, _, _ = ray.get(produce.remote(1 * MiB, True))
    reader = Reader.remote()
    pid, _ = ray.get(reader.hold.remote([gref]))
    assert driver.refcount(gref.id) == 2  # the owner's pin and the reader's view
    os.kill(pid, signal.SIGKILL)  # a worker dies holding a view
    # No gismo-server runs and nobody calls reap_dead(): the maintainer gismo.ray runs in its
    # processes (the lease picks one) reaps the dead worker's client.
    wait_until(lambda: driver.refcount(gref.id) == 1, "the dead reader's reference to go")
    # A pending delete the dead reader was blocking completes at the reap.
    gr.free(gref)
    wait_until(lambda: not driver.contains(gref.id), "the freed object to go")


def test_a_live_reader_defers_the_delete(ray_cluster):
    _, driver, _ = ray_cluster
    gref, _, _ = ray.get(produce.remote(1 * MiB, True))
    reader = Reader.remote()
    ray.get(reader.hold.remote([gref]))
    oid = gref.id
    del gref  # the last handle: the owner lets go, but the reader's view holds the bytes
    wait_until(lambda: driver.delete_pending(oid), "the owner to delete")
    assert driver.contains(oid)
    assert ray.get(reader.drop.remote())
    wait_until(lambda: not driver.contains(oid), "the deferred delete")
    ray.kill(reader)


def test_workers_attach_lazily_and_once(ray_cluster):
    @ray.remote(resources={"B": 1})
    def attach():
        gr.client()
        return os.getpid(), gr.attach_seconds()

    pid, seconds = ray.get(attach.remote())
    assert seconds is not None and seconds >= 0


@ray.remote(resources={"B": 1})
def try_get(boxed):
    """Resolves a handle on node B and reports how it failed (type names, message, seconds)."""
    return get_failure(boxed[0])


def test_a_lost_object_raises_object_lost_on_a_worker_at_once(ray_cluster):
    _, driver, _ = ray_cluster
    gref = gr.put(np.arange(1000), lifetime="explicit")
    gr.free(gref)
    wait_until(lambda: not driver.contains(gref.id), "free() to delete the object")
    # Bounded so a hang fails the test instead of stalling it (not a performance assertion).
    types, message, _ = ray.get(try_get.remote([gref]), timeout=60)
    assert types is not None, "resolved a deleted object"
    assert "ObjectLostError" in types and "RayError" in types and "GismoError" in types
    assert gref.id.hex() in message


def test_an_object_of_a_dead_owner_is_deleted_with_it_and_raises_object_lost(ray_cluster):
    _, driver, _ = ray_cluster

    @ray.remote(resources={"A": 1}, num_cpus=0)
    class Owner:
        def make(self):
            return (
                os.getpid(),
                gr.put(np.full(16 * MiB, 5, dtype=np.uint8)),
                gr.put(np.full(16 * MiB, 6, dtype=np.uint8), lifetime="explicit"),
            )

    owner = Owner.remote()
    pid, gref, kept = ray.get(owner.make.remote())
    assert int(gr.get(gref)[0]) == 5
    os.kill(pid, signal.SIGKILL)  # the owner dies: Ray loses the anchor (OwnerDiedError)
    # gismo.ray's own maintainer (no server, no reap_dead call) reaps it, and the object of Ray's
    # lifetime goes with it, as in Ray.
    wait_until(lambda: not driver.contains(gref.id), "the dead owner's object to be deleted")
    types, message, _ = ray.get(try_get.remote([gref]), timeout=60)
    assert types is not None and "ObjectLostError" in types, message
    # An explicit-lifetime object outlives its creator, unreferenced, until freed.
    assert driver.contains(kept.id) and driver.refcount(kept.id) == 0
    assert int(gr.get(kept)[0]) == 6
    gr.free(kept)


@ray.remote(resources={"B": 1})
class OtherRegionReader:
    """A worker whose GISMO_REGION names another region (set per actor)."""

    def attached(self):
        return gr.client().stats()["uuid"]

    def read(self, boxed):
        try:
            gr.get(boxed[0])
        except gr.RegionMismatchError as e:
            return e.handle_region, e.attached_region, str(e)
        return None


def test_a_handle_resolved_on_a_worker_of_another_region_fails_naming_both(ray_cluster):
    _, driver, spec = ray_cluster
    other_spec = fresh_region(16 * MiB)
    other = gismo.Client(other_spec, size=16 * MiB)
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        env = {gismo.REGION_ENV: other_spec, "PYTHONPATH": here}
        reader = OtherRegionReader.options(runtime_env={"env_vars": env}).remote()
        theirs = ray.get(reader.attached.remote(), timeout=120)
        assert theirs == other.stats()["uuid"]
        gref = gr.put(b"y" * 1000, lifetime="explicit")
        mine = driver.stats()["uuid"]
        assert gref.region == mine != theirs
        got = ray.get(reader.read.remote([gref]), timeout=60)
        assert got is not None, "no RegionMismatchError"
        handle_region, attached_region, message = got
        assert (handle_region, attached_region) == (mine, theirs)
        assert mine in message and theirs in message
        gr.free(gref)
        ray.kill(reader)
    finally:
        other.close()
        remove_region(other_spec)


@ray.remote(resources={"B": 1})
def read_batch(boxed):
    batch = gr.get(boxed[0])
    return type(batch).__name__, batch.name, int(batch.data.sum()), in_region_mapping(batch.data)


def test_a_class_of_the_drivers_main_round_trips_on_a_worker(ray_cluster):
    @dataclasses.dataclass
    class Batch:
        name: str
        data: np.ndarray

    # As if defined in the driver's script: workers cannot import it by name.
    Batch.__module__ = "__main__"
    Batch.__qualname__ = "Batch"
    gref = gr.put(Batch("b1", np.arange(1 << 16, dtype=np.uint64)))
    kind, name, total, in_region = ray.get(read_batch.remote([gref]), timeout=60)
    assert (kind, name, total) == ("Batch", "b1", sum(range(1 << 16)))
    assert in_region  # the array inside the dataclass is still read in place


@ray.remote(resources={"B": 1})
def read_inner(boxed):
    value = gr.get(boxed[0])
    plain = ray.get(value["ray"], timeout=30)
    inner = gr.get(value["gismo"])
    return int(plain[0]), int(inner[0]), value["n"]


def test_refs_inside_a_value_stay_alive_while_its_handle_does(ray_cluster):
    _, driver, _ = ray_cluster
    plain = ray.put(np.full(MiB, 7, dtype=np.uint8))  # in Ray's object store
    inner = gr.put(np.full(64 * 1024, 9, dtype=np.uint8))
    inner_id = inner.id
    outer = gr.put({"ray": plain, "gismo": inner, "n": 3})
    outer_id = outer.id
    del plain, inner  # the owner drops its direct handles: only the outer value holds them
    time.sleep(1.0)  # several keeper periods
    assert driver.contains(inner_id), "the inner object went with its direct handle"
    assert ray.get(read_inner.remote([outer]), timeout=60) == (7, 9, 3)
    del outer
    wait_until(lambda: not driver.contains(outer_id), "the outer object to be deleted")
    wait_until(lambda: not driver.contains(inner_id), "the inner object to follow it")


def test_transparent_mode_moves_large_arrays_through_the_region(ray_cluster):
    """A driver of its own (the setup hook is per job) in transparent mode: plain Ray calls; large
    arrays arrive as read-only views of the region, small ones through Ray."""
    import json
    import subprocess
    import sys

    cluster, driver, spec = ray_cluster
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env[gismo.REGION_ENV] = spec
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    clients_before = driver.stats()["clients_active"]
    run = subprocess.run(
        [sys.executable, os.path.join(here, "transparent_driver.py"), cluster.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    large, small = out["large"], out["small"]
    assert large["sum"] == large["expected"] and large["nested_sum"] == large["nested_expected"]
    assert small["sum"] == small["expected"] and small["nested_sum"] == small["nested_expected"]
    # At or above the threshold: a view of the region, read-only; below: Ray's path.
    assert large["in_region"] and not large["writeable"] and large["nested_in_region"]
    assert large["driver_in_region"] and large["driver_ok"]
    assert not small["in_region"] and not small["nested_in_region"]
    assert not small["driver_in_region"] and small["driver_ok"]
    assert out["put_allocated"] and out["released"]
    assert out["one_object_for_a_value"] and out["value_in_region"] and out["value_ok"]
    shuffled = out["shuffle"]
    assert shuffled["sum"] == shuffled["expected"] and shuffled["in_region"]
    # A lost region object: Ray wraps every deserializer error as a RaySystemError; its message
    # is gismo.ray's ObjectLostError.
    assert out["lost"] is not None, "resolved a deleted object"
    lost_types, lost_message = out["lost"]
    assert "RaySystemError" in lost_types and "is not in the region" in lost_message
    # The job is over: its workers' clients (and their maintainers) are reaped with no server.
    wait_until(
        lambda: driver.stats()["clients_active"] <= clients_before,
        "the job's clients to be reaped",
    )


@ray.remote(resources={"A": 1})
def produce_in_place(n: int):
    pending = gr.empty((n // 8,), np.uint64)
    pending.array[:] = np.arange(n // 8, dtype=np.uint64)  # written straight into the region
    ref = pending.seal()
    return ref, checksum(pending.array)


def test_an_array_made_in_place_with_empty_is_read_on_another_node(ray_cluster):
    _, driver, _ = ray_cluster
    gref, expected = ray.get(produce_in_place.remote(2 * MiB))
    got, in_region, _, nbytes = ray.get(consume.remote([gref]), timeout=60)
    assert (got, nbytes) == (expected, 2 * MiB) and in_region
    oid = gref.id
    del gref
    wait_until(lambda: not driver.contains(oid), "the object to go with its last handle")


class _WithoutReferenceCounts:
    """A core worker without the private reference-count API (as a future Ray might have)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name == "get_all_reference_counts":
            raise AttributeError(name)
        return getattr(self._real, name)


def test_without_rays_reference_table_it_warns_once_and_keeps_objects_until_free(
    ray_cluster, monkeypatch
):
    # Last in the module: from here on, this driver's objects have explicit lifetime.
    _, driver, _ = ray_cluster
    before = gr.put(np.arange(10))  # tracked by Ray's table while it still works
    before_id = before.id
    monkeypatch.setattr(gr, "_ray_lifetime", None)  # as in a fresh process
    worker = ray._private.worker.global_worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(worker, "core_worker", _WithoutReferenceCounts(worker.core_worker))
        refs = [gr.put(np.arange(100)) for _ in range(3)]
        ids = [r.id for r in refs]
        del refs, before
        time.sleep(1.0)  # several keeper passes
        for _ in range(3):
            gr.collect()
    ours = [w for w in caught if "get_all_reference_counts" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert issubclass(ours[0].category, RuntimeWarning)
    assert not gr.ray_lifetime_available()
    # Explicit lifetime: nothing is freed behind the user's back, free() still works.
    assert all(driver.contains(i) for i in ids + [before_id])
    for i in ids + [before_id]:
        gr.free(gr.GismoRef(i, 0))
    wait_until(lambda: not any(driver.contains(i) for i in ids + [before_id]), "free()")
