"""Transparent mode for Arrow data in a real Ray cluster: the two raylets of `ray_cluster` (nodes
"A" and "B"), a job whose workers run `gismo.ray.install` as their setup hook, and this driver
in transparent mode too. Plain Ray calls move `pyarrow` tables, record batches and arrays; those
at or above the threshold arrive as read-only views of the region."""

from __future__ import annotations

import gc
import logging
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")

import gismo.ray as gr  # noqa: E402
from conftest import (  # noqa: E402
    arrow_in_region_mapping,
    in_region_mapping,
    two_raylet_cluster,
)
from gismo import _ray_transparent as transparent  # noqa: E402
from test_ray_cluster import wait_until  # noqa: E402

MiB = 1 << 20
THRESHOLD = 256 * 1024


@pytest.fixture(scope="module")
def arrow_cluster():
    """`ray_cluster`'s two raylets, with a 128 MiB region and a job in transparent mode (setup
    hook in every worker, `install` here); transparent mode is ended again on the way out, so
    that later modules see Ray's own serializers."""
    with two_raylet_cluster(
        region_size=128 * MiB,
        runtime_env={"worker_process_setup_hook": "gismo.ray.install"},
        env_vars={gr.THRESHOLD_ENV: str(THRESHOLD)},
    ) as started:
        gr.install(THRESHOLD)
        try:
            yield started
        finally:
            gr.uninstall()


def make_table(nbytes: int, seed: int) -> "pa.Table":
    """About `nbytes` of int64 values, with a string column and a few nulls."""
    rows = max(1, nbytes // 16)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << 40, rows, dtype=np.int64)
    strings = pa.array([f"s{i % 1000}" for i in range(rows)])
    y = pa.array(rng.random(rows), mask=(np.arange(rows) % 97 == 0))
    return pa.table({"x": x, "s": strings, "y": y})


def digest(value) -> tuple:
    """What a receiver reports of an Arrow value: type, rows, a checksum of its columns."""
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        rows, columns = value.num_rows, value.columns
    else:
        rows, columns = len(value), [value]
    sums = []
    for column in columns:
        if pa.types.is_string(column.type):
            sums.append(int(pc.sum(pc.utf8_length(column)).as_py() or 0))
        else:
            sums.append(float(pc.sum(column).as_py() or 0))
    return type(value).__name__, rows, sums


@ray.remote(resources={"A": 1})
def produce_table(nbytes: int, seed: int):
    return make_table(nbytes, seed)  # a plain return value: Ray serializes it


@ray.remote(resources={"B": 1})
def consume(value):
    """Ray resolved the argument on node B; reports what arrived and where its bytes lie."""
    return digest(value), arrow_in_region_mapping(value), ray.get_runtime_context().get_node_id()


@ray.remote(resources={"B": 1})
def consume_nested(nested):
    batch, array, chunked = nested["batch"][0], nested["array"], nested["chunked"]
    return {
        "digests": [digest(batch), digest(array), digest(chunked)],
        "in_region": [arrow_in_region_mapping(v) for v in (batch, array, chunked)],
        "n": nested["n"],
    }


def test_a_table_returned_on_a_is_read_from_the_region_on_b(arrow_cluster):
    n = 4 * MiB
    expected = make_table(n, 1)
    produced = produce_table.remote(n, 1)
    got, in_region, node_b = ray.get(consume.remote(produced), timeout=120)
    assert got == digest(expected)
    assert in_region  # every buffer an immutable slice of B's mapping of the region
    # The driver's own get of the same return value: a view of its mapping, equal, read-only.
    table = ray.get(produced, timeout=60)
    assert table.equals(expected) and arrow_in_region_mapping(table)
    x = table.column("x").chunk(0).to_numpy()
    assert in_region_mapping(x) and not x.flags.writeable
    with pytest.raises(ValueError):
        x[0] = 1
    assert node_b != ray.get_runtime_context().get_node_id()  # the driver is on A, the head


def test_a_record_batch_nested_in_a_dict_argument_is_read_from_the_region(arrow_cluster):
    table = make_table(2 * MiB, 2)
    batch = table.combine_chunks().to_batches()[0]
    array = pa.array(np.arange(MiB // 8, dtype=np.int64))  # 1 MiB
    chunked = pa.chunked_array([np.full(MiB // 16, 3, dtype=np.int64)] * 2)
    nested = {"batch": [batch], "array": array, "chunked": chunked, "n": 3}
    got = ray.get(consume_nested.remote(nested), timeout=120)
    assert got["digests"] == [digest(batch), digest(array), digest(chunked)]
    assert got["in_region"] == [True, True, True] and got["n"] == 3
    # The receiver gets the type that was sent.
    assert [d[0] for d in got["digests"]] == ["RecordBatch", "Int64Array", "ChunkedArray"]


def test_a_table_below_the_threshold_keeps_rays_path(arrow_cluster):
    n = 64 * 1024
    got, in_region, _ = ray.get(consume.remote(produce_table.remote(n, 3)), timeout=120)
    assert got == digest(make_table(n, 3)) and not in_region
    # A slice of a large table counts its own bytes: below the threshold, Ray's path (Ray's own
    # Table reducer, which sends only the slice).
    small = make_table(4 * MiB, 4).slice(10, 1000)
    got, in_region, _ = ray.get(consume.remote(small), timeout=120)
    assert got == digest(small) and not in_region
    assert not arrow_in_region_mapping(ray.get(ray.put(small)))


@ray.remote(resources={"A": 1}, num_cpus=0)
class Owner:
    """Puts a table with plain `ray.put` (transparent mode puts it into the region) and says which
    region object that made."""

    def put(self, nbytes: int):
        tracked = set(gr._keeper._ray)
        ref = ray.put(make_table(nbytes, 5))
        made = [gr._keeper._ray[a][0] for a in set(gr._keeper._ray) - tracked]
        self.ref = ref
        return [ref], made

    def drop(self):
        del self.ref
        return True


@ray.remote(resources={"B": 1}, num_cpus=0)
class Holder:
    """Keeps a table it was given (its zero-copy views) until told to drop it."""

    def hold(self, table):
        self.table = table
        return arrow_in_region_mapping(table)

    def drop(self):
        del self.table
        gc.collect()
        return True


def test_the_region_object_follows_rays_references_and_the_last_view(arrow_cluster):
    _, driver, _ = arrow_cluster
    owner = Owner.remote()
    boxed, made = ray.get(owner.put.remote(4 * MiB), timeout=120)
    assert len(made) == 1, made  # one region object for the table
    oid = made[0]
    assert driver.contains(oid)
    holder = Holder.remote()
    assert ray.get(holder.hold.remote(boxed[0]), timeout=120)  # resolved on B: in the region
    assert ray.get(owner.drop.remote())  # the owner's own handle goes; the driver's stays
    gc.collect()
    assert driver.contains(oid) and not driver.delete_pending(oid)
    del boxed  # the last ObjectRef: the owner's keeper deletes it, B's views defer the delete
    wait_until(lambda: driver.delete_pending(oid), "the owner to delete the region object")
    assert driver.contains(oid), "deleted under a live zero-copy view"
    assert ray.get(holder.drop.remote())
    wait_until(lambda: not driver.contains(oid), "the deferred delete after the last view")
    # The same in the driver: a ray.put table read back here, then its ObjectRef dropped.
    tracked = set(gr._keeper._ray)
    ref = ray.put(make_table(2 * MiB, 6))
    made = [gr._keeper._ray[a][0] for a in set(gr._keeper._ray) - tracked]
    assert len(made) == 1 and driver.contains(made[0])
    table = ray.get(ref)
    column = table.column("x")
    del ref, table  # a column (a view) still lives
    wait_until(lambda: driver.delete_pending(made[0]), "the keeper to delete")
    assert driver.contains(made[0]) and column.equals(make_table(2 * MiB, 6).column("x"))
    del column
    wait_until(lambda: not driver.contains(made[0]), "the delete after the last view")
    ray.kill(owner)
    ray.kill(holder)


def test_a_full_region_falls_back_to_rays_path_with_one_warning(arrow_cluster, monkeypatch, caplog):
    monkeypatch.setattr(transparent, "_fallback_warned", False)
    fillers = []
    try:
        for size in (4 * MiB, 256 * 1024):  # until not even 256 KiB fit
            while True:
                try:
                    fillers.append(gr.put(np.zeros(size, np.uint8), lifetime="explicit"))
                except gr.ObjectStoreFullError:
                    break
                assert len(fillers) < 1024, "the region never filled"
        table = make_table(2 * MiB, 7)
        with caplog.at_level(logging.WARNING, logger="gismo.ray"):
            first = ray.get(ray.put(table))
            second = ray.get(ray.put(table.slice(1)))
        assert first.equals(table) and second.equals(table.slice(1))
        assert not arrow_in_region_mapping(first) and not arrow_in_region_mapping(second)
        warned = [r for r in caplog.records if "transparent mode" in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        # A worker on A whose return does not fit either: Ray's path to B.
        got, in_region, _ = ray.get(consume.remote(produce_table.remote(2 * MiB, 8)), timeout=120)
        assert got == digest(make_table(2 * MiB, 8)) and not in_region
    finally:
        for f in fillers:
            gr.free(f)
    # Room again: the region's path is back.
    assert arrow_in_region_mapping(ray.get(ray.put(make_table(2 * MiB, 9))))


def test_without_pyarrow_install_still_moves_numpy_arrays(arrow_cluster, monkeypatch):
    import ray.cloudpickle

    dispatch = ray.cloudpickle.CloudPickler.dispatch
    gr.uninstall()
    rays_table_reducer = dispatch.get(pa.Table)  # Ray's own, put back by uninstall
    try:
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` fails
        gr.install(THRESHOLD)
        assert transparent._arrow_previous == {}
        assert dispatch.get(pa.Table) is rays_table_reducer
        assert in_region_mapping(ray.get(ray.put(np.ones(MiB, np.uint8))))
        gr.uninstall()
    finally:
        monkeypatch.setitem(sys.modules, "pyarrow", pa)
        gr.install(THRESHOLD)  # as the module's fixture left it
    assert dispatch.get(pa.Table) is not rays_table_reducer
    assert arrow_in_region_mapping(ray.get(ray.put(make_table(MiB, 10))))


def with_payload(batch: "pa.Table") -> "pa.Table":
    """Ray Data map_batches function: each `id` gets a 1 KiB payload of its own byte."""
    ids = batch.column("id").to_numpy()
    payload = np.repeat((ids % 251).astype(np.uint8), 1024)
    data = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(1024), len(ids), [None, pa.py_buffer(payload)]
    )
    return pa.table({"id": ids, "payload": data})


def test_ray_data_random_shuffle_moves_its_blocks_through_the_region(arrow_cluster):
    """The W2 shape at toy size: Ray Data's blocks, its shuffle's slices (separate return values
    of the map tasks) and its output blocks are Arrow tables Ray serializes; in transparent mode
    the output blocks the driver reads are views of the region, and nothing was lost."""
    data = pytest.importorskip("ray.data")
    data.DataContext.get_current().enable_progress_bars = False
    rows = 4 * 4096  # 4 blocks of 4 MiB; each map task cuts 4 slices of 1 MiB
    ds = (
        data.range(rows, override_num_blocks=4)
        .map_batches(with_payload, batch_format="pyarrow", batch_size=None)
        .materialize()
    )
    shuffled = ds.random_shuffle(seed=7).materialize()
    blocks = ray.get(shuffled.to_arrow_refs(), timeout=120)
    assert len(blocks) == 4 and all(arrow_in_region_mapping(b) for b in blocks)
    ids = np.sort(np.concatenate([b.column("id").to_numpy() for b in blocks]))
    assert (ids == np.arange(rows)).all()
    first = np.concatenate([b.column("id").to_numpy()[:64] for b in blocks])
    assert not (first == np.arange(len(first))).all()  # shuffled
    for b in blocks:  # every row kept its own payload
        payload = np.frombuffer(b.column("payload").chunk(0).buffers()[1], np.uint8)
        own = (b.column("id").to_numpy() % 251).astype(np.uint8)
        assert (payload[: b.num_rows * 1024 : 1024] == own).all()
