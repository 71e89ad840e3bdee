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
import os
import shutil
import statistics
import tempfile
import time
import uuid

# Loopback only: Ray then uses 127.0.0.1 for every node, driver and worker (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
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
    region = f"file:/dev/shm/gismo-bench-{uuid.uuid4().hex[:10]}"
    ray_root = tempfile.mkdtemp(prefix="ray")
    os.environ["RAY_TMPDIR"] = ray_root
    temp_dir = os.path.join(ray_root, "ray")
    os.makedirs(temp_dir, exist_ok=True)
    cluster = None
    rows = []
    try:
        gismo.connect(region, size=512 * MiB, client_name="bench")
        store = 256 * MiB
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {"A": 1},
                "object_store_memory": store,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "node_ip_address": "127.0.0.1",
            },
        )
        cluster.add_node(
            num_cpus=1, resources={"B": 1}, object_store_memory=store, node_ip_address="127.0.0.1"
        )
        cluster.wait_for_nodes()
        env = {gismo.REGION_ENV: region}
        ray.init(
            address=cluster.address,
            runtime_env={"worker_process_setup_hook": "gismo.ray.install", "env_vars": env},
        )
        gr.install()
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
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        gismo.disconnect()
        try:
            os.unlink(region.split(":", 1)[1])
        except FileNotFoundError:
            pass
        shutil.rmtree(ray_root, ignore_errors=True)
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
