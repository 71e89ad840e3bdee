#!/usr/bin/env python3
"""Ray's own numbers on this machine, for docs/benchmarks.md (opt-in: tools/bench-ray.sh).

Measures, in a fresh single-node Ray (from the Python registry, in the private venv):
  - ray.put and ray.get (from Python) of NumPy arrays of 1 KiB ... 256 MiB: mean, p50, p99;
  - Ray's plasma microbenchmark: the loops of ray/_private/ray_perf.py ("single client get calls
    (Plasma Store)", "single client put calls (Plasma Store)", "single client put gigabytes"),
    timed by Ray's own `timeit` helper.
Writes JSON to the path given as the first argument.
"""
import json
import os
import sys
import time

# Loopback only: Ray then uses 127.0.0.1 for the node, driver and workers (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray._private.ray_microbenchmark_helpers import timeit  # noqa: E402

SIZES = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]


def summary(samples_ns, nbytes):
    s = sorted(samples_ns)
    pct = lambda p: s[min(len(s) - 1, max(0, int(np.ceil(p * len(s))) - 1))]
    return {
        "count": len(s),
        "mean_ns": float(np.mean(s)),
        "p50_ns": float(pct(0.50)),
        "p99_ns": float(pct(0.99)),
        "p999_ns": float(pct(0.999)),
        "bytes": nbytes,
    }


def measure(fn, budget_s, minimum):
    samples = []
    start = time.perf_counter()
    while len(samples) < minimum or (time.perf_counter() - start < budget_s and len(samples) < 200000):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return samples


def main():
    out = sys.argv[1]
    budget = float(os.environ.get("GISMO_RAY_BENCH_SECONDS", "2"))
    ray.init(address="local", num_cpus=2, object_store_memory=2 << 30, include_dashboard=False,
             logging_level="ERROR", _node_ip_address="127.0.0.1", _temp_dir=os.environ.get("GISMO_RAY_TEMP", "/tmp/gismo-ray-bench"))
    result = {"ray_version": ray.__version__, "put": {}, "get": {}, "microbenchmark": {}}
    for size in SIZES:
        arr = np.full(size, 7, dtype=np.uint8)
        minimum = 3 if size >= 64 << 20 else 20
        refs = []

        def put():
            # Keep only the newest object: the store reuses the memory of the one before (a
            # steady state, as in Ray's own put benchmark), instead of faulting in new pages.
            refs.append(ray.put(arr))
            if len(refs) > 1:
                refs.pop(0)

        for _ in range(3):
            put()

        result["put"][str(size)] = summary(measure(put, budget, minimum), size)
        refs.clear()
        ref = ray.put(arr)
        ray.get(ref)
        result["get"][str(size)] = summary(measure(lambda: ray.get(ref), budget, minimum), size)
        del ref
        print(f"size {size}: put {result['put'][str(size)]['mean_ns'] / 1e3:.1f} us, "
              f"get {result['get'][str(size)]['mean_ns'] / 1e3:.1f} us", flush=True)

    # ray_perf.py's plasma loops, with Ray's timeit (10 s settle, 1 s warm-up, 4 x 2 s).
    value = ray.put(0)
    arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
    for name, fn, mult in [
        ("single client get calls (Plasma Store)", lambda: ray.get(value), 1),
        ("single client put calls (Plasma Store)", lambda: ray.put(0), 1),
        ("single client put gigabytes", lambda: ray.put(arr), 8 * 0.1),
    ]:
        r = timeit(name, fn, mult)
        if r and r[0]:
            result["microbenchmark"][name] = {"per_second": r[0][1], "sd": r[0][2]}
    ray.shutdown()
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
