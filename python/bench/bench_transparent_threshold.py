#!/usr/bin/env python3
"""Where transparent mode starts to pay: a task on node A returns an array, a task on node B
takes it as an argument and reads one byte per 4 KiB page — plain Ray code, once with the
array through Ray's object stores and once through the region (``gismo.ray.install``), in a
two-raylet cluster on this machine (run by hand). Reports the median wall time of the task pair
per size and the ratio; the crossover is the smallest size from which the region is faster.

    tools/ray-venv.sh                      # once; prints the venv
    (cd python && maturin develop --release)
    python python/bench/bench_transparent_threshold.py --sizes-kib 64,128,256,512,1024,4096 --reps 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _cluster  # noqa: E402 - first: it sets Ray's loopback-only switch before Ray is imported
import numpy as np  # noqa: E402
import ray  # noqa: E402

from gismo import _ray_transparent as transparent  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4096
OFF = 1 << 62  # a threshold no array reaches: Ray's own path


@ray.remote(resources={"A": 1})
def produce(nbytes: int, threshold: int, seed: int):
    transparent._threshold = threshold  # this worker's transparent-mode threshold, this run
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


@ray.remote(resources={"B": 1})
def consume(arr):
    return int(arr[::PAGE].sum()), arr.nbytes


def run(sizes, reps: int) -> list:
    rows = []
    nodes = [{"A": 1}, {"B": 1}]
    with _cluster.cluster(nodes, object_store_bytes=256 * MiB, region_bytes=512 * MiB) as setup:
        c, _, region = setup
        with _cluster.job(c.address, region, transparent=True):
            ray.get(consume.remote(produce.remote(MiB, 0, 0)))  # warm up both workers
            for n in sizes:
                row = {"bytes": n}
                for name, threshold in (("ray", OFF), ("gismo", 0)):
                    times = []
                    for rep in range(reps):
                        start = time.perf_counter()
                        total, size = ray.get(consume.remote(produce.remote(n, threshold, rep)))
                        times.append(time.perf_counter() - start)
                        assert size == n
                    row[name] = statistics.median(times)
                row["speedup"] = row["ray"] / row["gismo"]
                rows.append(row)
                print(
                    f"{n // KiB:>7} KiB  ray {row['ray'] * 1e3:7.2f} ms  gismo "
                    f"{row['gismo'] * 1e3:7.2f} ms  x{row['speedup']:.2f}",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-kib", default="64,128,256,512,1024,4096")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    rows = run([int(s) * KiB for s in args.sizes_kib.split(",")], args.reps)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
