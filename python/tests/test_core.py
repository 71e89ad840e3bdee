"""The core API in one process (and a second process for sharing), without Ray."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import gismo
from conftest import remove_region


def test_connect_needs_a_region(monkeypatch):
    monkeypatch.delenv(gismo.REGION_ENV, raising=False)
    with pytest.raises(gismo.GismoError, match="GISMO_REGION"):
        gismo.connect()


def test_connect_from_environment(region, monkeypatch):
    gismo.Client(region, size=64 << 20).close()  # create and format it
    monkeypatch.setenv(gismo.REGION_ENV, region)
    c = gismo.connect()
    assert c.region == region
    assert gismo.connected() is c


def test_missing_region_without_size_is_an_error():
    with pytest.raises(gismo.GismoError):
        gismo.Client("file:/dev/shm/gismo-pytest-does-not-exist")


@pytest.mark.parametrize(
    "value",
    [
        np.arange(100_000, dtype=np.float64).reshape(100, 1000),
        np.arange(24, dtype=np.int16).reshape(2, 3, 4)[:, ::2, :],  # not contiguous
        np.zeros((0, 3), dtype=np.int32),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        np.array(7.5),
    ],
)
def test_numpy_round_trip_is_a_read_only_view(client, value):
    ref = gismo.put(value)
    got = gismo.get(ref)
    assert got.dtype == value.dtype and got.shape == value.shape
    np.testing.assert_array_equal(got, value)
    if value.size:
        assert not got.flags.writeable
        with pytest.raises(ValueError):
            got.flat[0] = got.flat[0]


def test_get_is_zero_copy_two_gets_share_memory(client):
    ref = gismo.put(np.arange(1 << 16, dtype=np.uint64))
    a, b = gismo.get(ref), gismo.get(ref)
    # Both views point at the same bytes of the mapping: nothing was copied.
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    assert np.shares_memory(a, b)


def test_bytes_and_buffers(client):
    assert gismo.get(gismo.put(b"hello")).tobytes() == b"hello"
    assert gismo.get(gismo.put(bytearray(b"xyz"))).tobytes() == b"xyz"
    mv = gismo.get(gismo.put(memoryview(np.arange(4, dtype=np.int32))))
    assert mv.readonly and mv.nbytes == 16
    assert gismo.get(gismo.put(b"")).nbytes == 0


def test_arbitrary_values_pickle_with_arrays_out_of_band(client):
    value = {"weights": np.ones((64, 64)), "name": "layer", "n": [1, 2]}
    got = gismo.get(gismo.put(value))
    assert got["name"] == "layer" and got["n"] == [1, 2]
    np.testing.assert_array_equal(got["weights"], value["weights"])
    assert not got["weights"].flags.writeable  # a view of the region, not a copy


def test_views_keep_the_object_referenced_until_the_last_one_goes(client):
    ref = gismo.put(np.arange(1000))
    assert client.refcount(ref.id) == 1  # put's own reference
    arr = gismo.get(ref)
    part = arr[10:20]
    assert client.refcount(ref.id) == 2
    del arr
    gc.collect()
    assert client.refcount(ref.id) == 2  # `part` still views it
    del part
    gc.collect()
    assert client.refcount(ref.id) == 1
    ref.release()
    assert client.refcount(ref.id) == 0


def test_release_refuses_while_views_exist(client):
    ref = gismo.put(b"abcdef")
    buf = gismo.get_buffer(ref)
    view = memoryview(buf)
    with pytest.raises(BufferError):
        buf.release()
    view.release()
    with buf:
        pass
    assert buf.released
    with pytest.raises(BufferError):
        memoryview(buf)


def test_with_forms_release_on_exit(client):
    with gismo.put(b"x" * 100) as ref:
        assert client.refcount(ref.id) == 1
    assert client.refcount(ref.id) == 0
    assert gismo.contains(ref)  # unreferenced, not deleted
    with gismo.get_buffer(ref) as buf:
        assert client.refcount(ref.id) == 1
        assert bytes(memoryview(buf)[:1]) == b"x"
    assert client.refcount(ref.id) == 0


def test_delete_is_deferred_while_read(client):
    ref = gismo.put(np.arange(10))
    arr = gismo.get(ref)
    ref.release()
    gismo.delete(ref)
    assert client.delete_pending(ref.id)
    assert arr[9] == 9  # still readable
    del arr
    gc.collect()
    assert not gismo.contains(ref)
    assert client.refcount(ref.id) is None


def test_pending_deletes_names_exactly_the_objects_whose_delete_waits(client):
    refs = [gismo.put(np.arange(i + 1)) for i in range(5)]
    held = [gismo.get(refs[i]) for i in (1, 3)]
    for r in refs:
        r.release()
    for i in (1, 3, 4):
        gismo.delete(refs[i])  # 1 and 3 are read: pending; 4 goes at once
    ids = [r.id for r in refs] + [gismo.random_id()]  # plus one that never existed
    assert client.pending_deletes(ids) == [1, 3]
    assert [client.delete_pending(i) for i in ids] == [False, True, False, True, False, False]
    del held
    gc.collect()
    assert client.pending_deletes(ids) == []
    for i in (0, 2):
        gismo.delete(refs[i])


def test_create_seal_and_writable_buffer_rules(client):
    oid = gismo.random_id()
    wb = gismo.create(oid, 4, b"meta")
    view = memoryview(wb)
    view[:] = b"abcd"
    assert not gismo.contains(oid)
    with pytest.raises(BufferError):
        gismo.seal(oid)  # a writable view still exists
    view.release()
    gismo.seal(oid)
    assert not wb.writable
    with pytest.raises(BufferError):
        memoryview(wb)  # sealed: no more writing
    buf = gismo.get_buffer(oid)
    assert bytes(memoryview(buf)) == b"abcd" and buf.metadata == b"meta"
    with pytest.raises(gismo.ObjectExistsError):
        gismo.create(oid, 4)


def test_create_context_manager_seals_or_aborts(client):
    ok, bad = gismo.random_id(), gismo.random_id()
    with gismo.create(ok, 3) as wb:
        memoryview(wb)[:] = b"abc"
    assert gismo.contains(ok)
    with pytest.raises(RuntimeError):
        with gismo.create(bad, 3):
            raise RuntimeError("boom")
    assert not gismo.contains(bad)
    assert client.refcount(bad) is None


def test_dropped_unsealed_buffer_is_aborted(client):
    oid = gismo.random_id()
    gismo.create(oid, 1 << 20)
    gc.collect()
    assert client.refcount(oid) is None
    assert client.stats()["used_bytes"] == 0


def test_errors(client):
    with pytest.raises(TimeoutError):
        gismo.get(gismo.random_id(), timeout=0.05)
    with pytest.raises(ValueError):
        gismo.get(b"short")
    with pytest.raises(gismo.ObjectNotFoundError):
        gismo.seal(gismo.random_id())
    assert issubclass(gismo.ObjectNotFoundError, KeyError)
    with pytest.raises(gismo.StoreFullError):
        gismo.create(gismo.random_id(), 1 << 40)


def test_closed_client(region):
    c = gismo.Client(region, size=64 << 20)
    ref = gismo.put(b"still here", client=c)
    mv = gismo.get(ref, client=c)
    c.close()
    assert c.closed
    with pytest.raises(gismo.GismoError):
        c.contains(ref.id)
    assert mv.tobytes() == b"still here"  # views outlive the handle


def test_object_ref_pickles_to_its_id(client):
    ref = gismo.put(b"p")
    back = pickle.loads(pickle.dumps(ref))
    assert back == ref and back._pin is None


CHILD = """
import sys, gismo
gismo.connect(sys.argv[1])
ref = gismo.put(bytes(range(256)) * 4)
ref.release()
sys.stdout.write(ref.id.hex())
"""


def test_another_process_sees_the_object(client, region):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, region], check=True, capture_output=True, text=True
    )
    oid = bytes.fromhex(out.stdout)
    assert gismo.get(oid, timeout=5).tobytes() == bytes(range(256)) * 4


def test_unreferenced_objects_are_evicted_for_room_referenced_ones_are_not(client):
    n = int(client.stats()["heap_bytes"] * 0.4)
    first = gismo.put(np.zeros(n, np.uint8))
    second = gismo.put(np.ones(n, np.uint8))
    with pytest.raises(gismo.StoreFullError):
        gismo.put(np.zeros(n, np.uint8))  # both are referenced: nothing may go
    first.release()
    third = gismo.put(np.full(n, 3, np.uint8))  # evicts the unreferenced one
    assert not gismo.contains(first)
    assert gismo.contains(second) and gismo.contains(third)
    assert gismo.get(second)[-1] == 1


def test_arrow_buffers_round_trip_in_place(client):
    pa = pytest.importorskip("pyarrow")
    got = gismo.get(gismo.put(pa.py_buffer(b"arrow bytes")))
    assert isinstance(got, pa.Buffer) and got.to_pybytes() == b"arrow bytes"


def test_arrow_tables_batches_and_arrays_are_ipc_streams_read_in_place(client):
    pa = pytest.importorskip("pyarrow")
    from conftest import arrow_in_region_mapping

    table = pa.table(
        {
            "x": np.arange(100_000, dtype=np.int64),
            "s": pa.array([f"v{i}" for i in range(100_000)]),
            "d": pa.array(["a", "b", None, "a"] * 25_000).dictionary_encode(),
        }
    )
    values = [
        table,
        table.combine_chunks().to_batches()[0],
        table.column("x"),
        table.column("s").chunk(0),
        pa.table({"empty": pa.array([], pa.int32())}),
    ]
    for value in values:
        ref = gismo.put(value)
        with gismo.get_buffer(ref) as buf:
            assert buf.metadata.startswith(b'GSMO1{"kind":"arrow_ipc"')
        got = gismo.get(ref)
        assert type(got) is type(value) and got.equals(value)
        if len(got):
            assert arrow_in_region_mapping(got, client.region)
        del got
        gismo.delete(ref)


def test_a_sliced_arrow_table_stores_only_its_slice(client):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": np.arange(1 << 20, dtype=np.int64)})  # 8 MiB
    piece = table.slice(1000, 1000)
    ref = gismo.put(piece)
    with gismo.get_buffer(ref) as buf:
        assert buf.nbytes < 16 * 1024  # 8,000 bytes of values and the stream's framing
    assert gismo.get(ref).equals(piece)


def test_an_arrow_view_keeps_its_object_until_the_last_buffer_goes(client):
    pa = pytest.importorskip("pyarrow")
    ref = gismo.put(pa.table({"x": np.arange(10_000, dtype=np.int64)}))
    column = gismo.get(ref).column("x")  # the table goes, one column stays
    gc.collect()
    assert client.refcount(ref.id) == 2  # put's own reference and the column's
    ref.release()
    gismo.delete(ref)
    assert gismo.contains(ref) and client.delete_pending(ref.id)
    assert column.to_pylist()[-1] == 9_999
    del column
    gc.collect()
    assert not gismo.contains(ref)


def test_arrow_extension_types_are_pickled_not_ipc(client):
    pa = pytest.importorskip("pyarrow")
    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ones((4, 2, 2), np.float32))
    ref = gismo.put(pa.table({"t": tensors}))
    with gismo.get_buffer(ref) as buf:
        assert buf.metadata.startswith(b'GSMO1{"kind":"pickle"')
    got = gismo.get(ref)
    assert isinstance(got.column("t").type, pa.FixedShapeTensorType)
    assert got.column("t").equals(pa.chunked_array([tensors]))


def test_ndarray_subclasses_keep_their_type(client):
    masked = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    got = gismo.get(gismo.put(masked))
    assert isinstance(got, np.ma.MaskedArray)
    assert got.mask.tolist() == [False, True, False]


PAUSED_READER = """
import os, sys
import gismo
c = gismo.Client(sys.argv[1])
buf = c.get(bytes.fromhex(sys.argv[2]), 5)
assert bytes(buf) == b"q" * 100_000 and buf.valid
print("READY", flush=True)
sys.stdin.readline()
# Resumed after being fenced: the view still shows the object (grace period), a copy refuses.
view_ok = bytes(memoryview(buf)) == b"q" * 100_000
try:
    bytes(buf)
    copy = "returned"
except gismo.FencedError:
    copy = "fenced"
print("RESULT", "old" if view_ok else "changed", copy, buf.valid, flush=True)
"""


def test_a_paused_reader_on_another_host_is_fenced_and_its_copies_refuse(client, region):
    import os
    import signal
    import time

    oid = gismo.put(b"q" * 100_000, client=client).id
    env = dict(os.environ, GISMO_HOST="pytest-other-host")
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_READER, region, oid.hex()],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "READY"
        os.kill(child.pid, signal.SIGSTOP)
        # Its heartbeat thread is stopped too: this process watches it unchanged for the lease,
        # fences (quarantines) it, and reaps it after the grace period (2 x lease).
        reaped = []
        deadline = time.monotonic() + 60
        while child.pid not in reaped:
            reaped.extend(client.reap_dead(lease_ms=50))
            assert time.monotonic() < deadline, "never reaped"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write("\n")
        child.stdin.flush()
        # Nothing reused its block yet (nothing was deleted): the view shows the old bytes.
        assert child.stdout.readline().split() == ["RESULT", "old", "fenced", "False"]
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()


def test_format_table_sizes_from_connect(region):
    with gismo.connect(
        region, size=64 << 20, max_clients=2000, refs_per_client=256, dir_capacity=4096
    ) as c:
        s = c.stats()
        assert (s["max_clients"], s["refs_per_client"], s["dir_capacity"]) == (2000, 256, 4096)
    # An existing region keeps its own.
    with gismo.connect(region, size=64 << 20, max_clients=16) as c:
        assert c.stats()["max_clients"] == 2000


def test_a_region_formatted_from_python_fits_a_ray_node(region):
    with gismo.connect(region, size=256 << 20) as c:
        s = c.stats()
        assert s["max_clients"] >= 1024 and s["refs_per_client"] == 2048


def test_bad_table_sizes_are_refused(region):
    for kwargs in ({"max_clients": 0}, {"refs_per_client": 1000}, {"dir_capacity": 1000}):
        with pytest.raises(gismo.GismoError):
            gismo.Client(region, size=64 << 20, **kwargs)
        remove_region(region)


def test_references_per_client_bound_the_objects_one_process_holds(region):
    with gismo.connect(region, size=64 << 20, refs_per_client=16) as c:
        held = []
        with pytest.raises(gismo.StoreFullError):
            for _ in range(17):
                held.append(gismo.put(b"x" * 100))
        assert 0 < len(held) <= 16
        for ref in held:
            ref.release()
            gismo.delete(ref)
        with gismo.put(b"y") as ref:  # room again
            assert bytes(gismo.get(ref)) == b"y"
        c.close()


def test_a_maintaining_client_reaps_a_killed_process_without_a_server(client, region):
    assert client.start_maintenance() and client.maintaining
    assert not client.start_maintenance()  # one per client
    with gismo.put(b"z" * 1000) as ref:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time, gismo\n"
                f"c = gismo.Client({region!r})\n"
                f"view = gismo.get({ref.id!r}, client=c)\n"
                "print('holding', flush=True)\n"
                "time.sleep(600)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "holding"
            assert client.refcount(ref.id) == 2
            child.kill()  # SIGKILL: no clean disconnect
            child.wait()
            deadline = time.monotonic() + 60  # a bound on waiting, not a performance assertion
            while client.refcount(ref.id) != 1:
                assert time.monotonic() < deadline, "the dead process's reference stayed"
                time.sleep(0.05)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    client.stop_maintenance()
    assert not client.maintaining
    with pytest.raises(ValueError):
        client.start_maintenance(lease_ms=0)
