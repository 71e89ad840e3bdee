"""gismo.ray in a real Ray cluster: two raylets on this machine (nodes "A" and "B", each with its
own object store), tasks pinned to a node by custom resources, one region both can map."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402

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


def in_region_mapping(arr: np.ndarray) -> bool:
    """Whether the array's bytes lie in this process's mapping of the region file."""
    path = os.environ[gismo.REGION_ENV].split(":", 1)[1]
    start = arr.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= start and start + arr.nbytes <= hi:
                    return True
    return False


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
    reaped = []
    wait_until(lambda: reaped.extend(driver.reap_dead()) or pid in reaped, "the reaper")
    assert driver.refcount(gref.id) == 1
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
