"""gismo.ray in one process, without a Ray cluster (``lifetime="explicit"`` needs no Ray call):
the typed failures — a lost object, a handle of another region, a full region."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("ray")

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
from gismo import _ray_transparent as transparent  # noqa: E402
from conftest import fresh_region, in_region_mapping, remove_region  # noqa: E402

MiB = 1 << 20


def returns_within(fn, limit_s: float = 10.0):
    """Runs ``fn`` in a thread and returns what it returned or raised; fails if it is still
    running after ``limit_s`` (a bound that proves "no hang", not a performance assertion)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"still waiting after {limit_s}s"
    return out


def test_a_deleted_object_raises_object_lost_at_once(client):
    import ray

    ref = gr.put(np.arange(1000), lifetime="explicit")
    assert ref.region == client.stats()["uuid"]
    gr.free(ref)
    assert not client.contains(ref.id)
    out = returns_within(lambda: gr.get(ref))
    err = out.get("error")
    assert isinstance(err, gr.ObjectLostError), out
    # Ray's own type, so code written for Ray's failures handles it.
    assert isinstance(err, ray.exceptions.ObjectLostError)
    assert isinstance(err, gismo.GismoError)
    assert err.object_ref_hex == ref.id.hex() and ref.id.hex() in str(err)
    with pytest.raises(gr.ObjectLostError):
        gr.get_buffer(ref)


def test_a_handle_of_another_region_fails_naming_both(client, monkeypatch):
    ref = gr.put(b"x" * 100, lifetime="explicit")
    mine = client.stats()["uuid"]
    other_spec = fresh_region(16 * MiB)
    try:
        other = gismo.Client(other_spec, size=16 * MiB)
        monkeypatch.setattr(gr, "_client", other)  # this process is attached to another region
        theirs = other.stats()["uuid"]
        assert theirs != mine
        out = returns_within(lambda: gr.get(ref))
        err = out.get("error")
        assert isinstance(err, gr.RegionMismatchError), out
        assert err.handle_region == mine and err.attached_region == theirs
        assert mine in str(err) and theirs in str(err)
        other.close()
    finally:
        remove_region(other_spec)
    monkeypatch.setattr(gr, "_client", client)
    assert bytes(gr.get(ref)) == b"x" * 100
    gr.free(ref)


def test_a_full_region_raises_store_full_not_a_hang(client):
    import ray

    # Larger than the whole region.
    with pytest.raises(gr.ObjectStoreFullError) as info:
        gr.put(np.zeros(128 * MiB, dtype=np.uint8), lifetime="explicit")
    assert isinstance(info.value, gismo.StoreFullError)
    assert isinstance(info.value, ray.exceptions.ObjectStoreFullError)
    # Filled with objects nobody may evict (explicit lifetime holds them): the next put fails.
    held = []
    full = None
    for _ in range(64):
        out = returns_within(lambda: gr.put(np.ones(4 * MiB, dtype=np.uint8), lifetime="explicit"))
        if "error" in out:
            full = out["error"]
            break
        held.append(out["value"])
    assert isinstance(full, gr.ObjectStoreFullError), full
    assert held, "not even one object fitted"
    assert all(int(gr.get(r)[0]) == 1 for r in held)  # what was stored is intact
    for r in held:
        gr.free(r)
    # Room again once they are freed.
    r = gr.put(np.ones(4 * MiB, dtype=np.uint8), lifetime="explicit")
    gr.free(r)


def test_transparent_mode_falls_back_to_rays_path_when_the_region_is_full(client, monkeypatch):
    # As after install(1 MiB). No Ray here: nothing may reach ray.put (it would start Ray).
    monkeypatch.setattr(transparent, "_threshold", MiB)
    big = np.arange(16 * MiB, dtype=np.uint64)  # 128 MiB: more than the whole region
    kind, reduced = transparent._serialize_ndarray(big)
    assert kind == transparent._VIA_RAY  # not an error: Ray's own store takes it
    back = transparent._deserialize_ndarray((kind, reduced))
    assert back.dtype == big.dtype and (back == big).all()
    # Object arrays and arrays under the threshold keep Ray's path too, and round-trip.
    for arr in (np.array([{"a": 1}, None], dtype=object), np.arange(100)[::3]):
        kind, reduced = transparent._serialize_ndarray(arr)
        assert kind == transparent._VIA_RAY
        assert list(transparent._deserialize_ndarray((kind, reduced))) == list(arr)


def test_a_failing_keeper_pass_is_logged_once_not_every_period(monkeypatch, caplog):
    keeper = gr._Keeper()
    failure = [RuntimeError("region detached")]

    def collect():
        if failure[0] is not None:
            raise failure[0]
        return 0

    monkeypatch.setattr(keeper, "collect", collect)
    with caplog.at_level("WARNING", logger="gismo.ray"):
        for _ in range(5):
            keeper.background_pass()
        assert len(caplog.records) == 1
        failure[0] = RuntimeError("another cause")  # a different failure is news
        keeper.background_pass()
        keeper.background_pass()
        assert len(caplog.records) == 2
        failure[0] = None  # recovered; the same failure again is logged again
        keeper.background_pass()
        failure[0] = RuntimeError("another cause")
        keeper.background_pass()
        assert len(caplog.records) == 3


def test_the_keepers_period_grows_with_the_cost_of_a_pass_to_keep_its_cpu_share():
    keeper = gr._Keeper()
    keeper._adapt(0.0001)  # a cheap pass (few handles): the base period
    assert keeper.period_s == gr.KEEPER_PERIOD_S
    # 25 ms of CPU a pass (about 10,000 handles, bench/bench_keeper.py): passes at most every
    # 25 ms / 1% with the headroom, so their CPU stays under KEEPER_MAX_CPU_SHARE.
    keeper._adapt(0.025)
    assert 0.025 / (keeper.period_s + 0.025) <= gr.KEEPER_MAX_CPU_SHARE
    assert keeper.period_s <= 1.25 * 0.025 / gr.KEEPER_MAX_CPU_SHARE
    keeper._adapt(0.0001)  # the handles went: back to the base period
    assert keeper.period_s == gr.KEEPER_PERIOD_S


def test_empty_allocates_in_place_and_seals_to_a_handle(client):
    pending = gr.empty((256, 1024), np.float32, lifetime="explicit")
    assert pending.array.flags.writeable and in_region_mapping(pending.array, client.region)
    pending.array[:] = 2.5
    view = pending.array[0]  # a view still alive: sealing must refuse (nobody writes a sealed object)
    with pytest.raises(BufferError):
        pending.seal()
    assert pending.array.flags.writeable and float(pending.array[3, 5]) == 2.5
    del view
    ref = pending.seal()
    assert ref.nbytes == 256 * 1024 * 4 and not pending.array.flags.writeable
    got = gr.get(ref)
    assert got.shape == (256, 1024) and got.dtype == np.float32 and float(got.sum()) == 2.5 * 256 * 1024
    del got
    pending.array = None
    gr.free(ref)
    # Aborted on an exception: nothing stays.
    with pytest.raises(RuntimeError):
        with gr.empty(10, np.int64, lifetime="explicit") as p:
            oid = p._oid
            raise RuntimeError("producer failed")
    assert not client.contains(oid)
    with pytest.raises(gr.ObjectStoreFullError):
        gr.empty((128 * MiB,), np.uint8, lifetime="explicit")


def test_install_before_ray_init_says_so():
    import ray

    assert not ray.is_initialized()
    with pytest.raises(gismo.GismoError, match="after ray.init"):
        gr.install()
