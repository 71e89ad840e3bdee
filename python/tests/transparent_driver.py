"""A Ray driver in transparent mode (run by test_ray_cluster.py as its own process, because the
setup hook is a job-level setting): connects to the test cluster at argv[1] with
``worker_process_setup_hook="gismo.ray.install"``, moves arrays between nodes A and B with plain
Ray calls, and prints what it saw as one JSON line."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
from test_ray_cluster import checksum, in_region_mapping  # noqa: E402

MiB = 1 << 20
THRESHOLD = 256 * 1024


@ray.remote(resources={"A": 1})
def produce(nbytes: int):
    # A plain return value: Ray serializes it, transparent mode puts it into the region.
    return np.random.default_rng(nbytes).integers(0, 255, nbytes, dtype=np.uint8)


@ray.remote(resources={"B": 1})
def consume(arr, nested):
    # Ray resolved the argument; the deserializer read it from the region (or Ray's store).
    inner = nested["inner"][0]
    return {
        "sum": checksum(arr) if arr.nbytes % 8 == 0 else int(arr.sum()),
        "in_region": in_region_mapping(arr),
        "writeable": bool(arr.flags.writeable),
        "nested_in_region": in_region_mapping(inner),
        "nested_sum": int(inner.sum()),
    }


@ray.remote(resources={"B": 1})
def consume_one(arr):
    return int(arr.sum())


PARTS = 2


@ray.remote(num_returns=PARTS)
def shuffle_map(seed: int, nbytes: int):
    data = np.random.default_rng(seed).integers(0, 1 << 62, nbytes // 8, dtype=np.uint64)
    return tuple(np.array_split(data, PARTS))  # one partition per reducer, each a return value


@ray.remote
def shuffle_reduce(*parts):
    return sum(checksum(p) for p in parts) & ((1 << 64) - 1), all(map(in_region_mapping, parts))


def shuffle(nbytes: int) -> dict:
    """A small all-to-all shuffle (the issue's W1 shape, 2 x 2 over the two nodes), plain Ray."""
    maps = [
        shuffle_map.options(resources={node: 1}).remote(seed, nbytes)
        for seed, node in enumerate("AB")
    ]
    reducers = [
        shuffle_reduce.options(resources={node: 1}).remote(*[m[r] for m in maps])
        for r, node in enumerate("BA")
    ]
    got = ray.get(reducers, timeout=120)
    expected = 0
    for seed in range(len(maps)):
        data = np.random.default_rng(seed).integers(0, 1 << 62, nbytes // 8, dtype=np.uint64)
        for part in np.array_split(data, PARTS):
            expected += checksum(part)
    return {
        "sum": sum(s for s, _ in got) & ((1 << 64) - 1),
        "expected": expected & ((1 << 64) - 1),
        "in_region": all(r for _, r in got),
    }


def main() -> None:
    address = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    env = {
        gismo.REGION_ENV: os.environ[gismo.REGION_ENV],
        gr.THRESHOLD_ENV: str(THRESHOLD),
        "PYTHONPATH": here,
    }
    ray.init(
        address=address,
        runtime_env={"worker_process_setup_hook": "gismo.ray.install", "env_vars": env},
    )
    gr.install(THRESHOLD)
    out = {}
    for name, n in (("large", 4 * MiB), ("small", 64 * 1024)):
        produced = produce.remote(n)
        expected = checksum(np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8))
        nested = {"inner": [np.full(n // 8, 3, dtype=np.uint64)]}  # from the driver
        got = ray.get(consume.remote(produced, nested), timeout=120)
        got["expected"] = expected
        got["nested_expected"] = 3 * (n // 8)
        # The driver's own ray.put / ray.get.
        local = ray.get(ray.put(np.arange(n // 8, dtype=np.uint64)))
        got["driver_in_region"] = in_region_mapping(local)
        got["driver_ok"] = bool((local == np.arange(n // 8, dtype=np.uint64)).all())
        out[name] = got
        del produced, local
    out["shuffle"] = shuffle(4 * MiB)
    # Lifetime follows Ray's: the region object of a ray.put goes when its ObjectRef does. (By
    # object id: counting the region's objects would race with other processes' keepers.)
    c = gr.client()
    tracked = set(gr._keeper._ray)
    ref = ray.put(np.ones(2 * MiB, dtype=np.uint8))
    made = [gr._keeper._ray[a][0] for a in set(gr._keeper._ray) - tracked]
    out["put_allocated"] = len(made) == 1 and c.contains(made[0])
    del ref
    deadline = time.monotonic() + 30
    while made and c.contains(made[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    out["released"] = bool(made) and not c.contains(made[0])
    # gismo.ray.put of a value holding large arrays: one region object, the arrays inside it
    # (their bytes lie in that object's buffer).
    value = {"a": np.ones(2 * MiB, dtype=np.uint8), "b": [np.zeros(MiB, dtype=np.uint8)]}
    tracked, tracked_ray = set(gr._keeper._explicit), set(gr._keeper._ray)
    g = gr.put(value, lifetime="explicit")
    out["one_object_for_a_value"] = (
        set(gr._keeper._explicit) - tracked == {g.id} and set(gr._keeper._ray) == tracked_ray
    )
    back = gr.get(g)
    with gr.get_buffer(g) as buf:
        with memoryview(buf) as raw:
            lo = np.frombuffer(raw, dtype=np.uint8).__array_interface__["data"][0]
        hi = lo + buf.nbytes

        def inside(arr):
            start = arr.__array_interface__["data"][0]
            return lo <= start and start + arr.nbytes <= hi

        out["value_in_region"] = inside(back["a"]) and inside(back["b"][0])
    out["value_ok"] = int(back["a"].sum()) == 2 * MiB and int(back["b"][0].sum()) == 0
    del back
    gr.free(g)
    # A region object lost behind Ray's back (as after its owner died and it was evicted): Ray's
    # get fails at once with the deserializer's error, it does not wait.
    tracked = set(gr._keeper._ray)
    ref = ray.put(np.ones(2 * MiB, dtype=np.uint8))
    for anchor in set(gr._keeper._ray) - tracked:  # the region object this put made
        oid, pin = gr._keeper._ray.pop(anchor)
        pin.release()
        c.delete(oid)
    try:
        ray.get(consume_one.remote(ref), timeout=60)
        out["lost"] = None
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["lost"] = [[t.__name__ for t in type(e).__mro__], str(e)]
    print(json.dumps(out), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
