#!/usr/bin/env python3
"""W2: Ray Data ``random_shuffle`` over Arrow blocks, plain Ray versus transparent mode (run by
hand).

Starts a ``ray.cluster_utils.Cluster`` of ``--nodes`` raylets (1 CPU and its own object store
each) on loopback, and a region in /dev/shm all of them map. For each mode it connects a job:

* ``ray``: plain Ray, blocks through the object stores (Ray's object manager moves every block a
  task on another node reads);
* ``transparent``: the same code, with ``worker_process_setup_hook="gismo.ray.install"`` in the
  job and ``gismo.ray.install()`` in the driver: every Arrow block (and shuffle partition) of at
  least the threshold that Ray serializes goes into the region; Ray carries ~200-byte handles.

(The explicit ``gismo.ray.put``/``get`` mode is not meaningful here: Ray Data's operators make and
pass the blocks themselves; user code never sees them.)

The dataset — ``--blocks`` blocks of ``--block-mib`` MiB, rows of an ``id`` (int64), a ``v``
(float64) and a fixed-size binary payload filling the row to ``--row-bytes`` — is made by Ray
Data tasks and materialized first; then ``random_shuffle().materialize()`` is timed ``--reps``
times (a new seed each) and the median reported. After every run the shuffled dataset's row
count and the sums of ``id`` and ``v`` are compared with the input's (outside the timing). Also
reported per mode: the bytes received on the loopback interface during the timed shuffles
(``/proc/net/dev``; the raylets' object managers move blocks over it, plus RPCs — anything else
on the machine adds to it), divided by the runs, and the most of the region in use right after
a run (in transparent mode: the input and output blocks, and any slices not yet freed).

    tools/ray-venv.sh                      # once; prints the venv (pyarrow, pandas for Ray Data)
    (cd python && maturin develop --release)
    python python/bench/bench_ray_data.py --blocks 16 --block-mib 16 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid

# Loopback only: Ray then uses 127.0.0.1 for every node, driver and worker (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# No usage reports (Ray's, and Ray Data's collector actor querying a Prometheus on localhost).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute  # noqa: E402,F401
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402

MiB = 1 << 20
LOOPBACK = "127.0.0.1"


def loopback_rx_bytes() -> int:
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    return 0


def add_payload(row_bytes: int):
    """The map_batches function that gives each ``id`` a ``v`` and a payload of random bytes."""
    width = max(1, row_bytes - 16)

    def fn(batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_numpy()
        rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
        payload = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), len(ids), [None, pa.py_buffer(rng.bytes(width * len(ids)))]
        )
        return pa.table({"id": ids, "v": (ids % 1000).astype(np.float64), "payload": payload})

    return fn


@ray.remote(num_cpus=0)
def block_sums(block: pa.Table) -> tuple:
    ids, vs = pa.compute.sum(block["id"]).as_py(), pa.compute.sum(block["v"]).as_py()
    return block.num_rows, ids or 0, vs or 0.0


def checksums(ds) -> tuple:
    """Rows and the sums of ``id`` and ``v`` of a materialized dataset: one small task per block
    (on whichever node), rather than Ray Data aggregations (each an all-to-all of its own)."""
    parts = ray.get([block_sums.remote(ref) for ref in ds.to_arrow_refs()])
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def run_mode(cluster, mode: str, region: str, args) -> dict:
    env = {gismo.REGION_ENV: region, gr.THRESHOLD_ENV: str(args.threshold)}
    runtime_env: dict = {"env_vars": env}
    if mode == "transparent":
        runtime_env["worker_process_setup_hook"] = "gismo.ray.install"
    ray.init(address=cluster.address, runtime_env=runtime_env, log_to_driver=False)
    try:
        if mode == "transparent":
            gr.install(args.threshold)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        rows_per_block = args.block_mib * MiB // args.row_bytes
        rows = rows_per_block * args.blocks
        ds = (
            ray.data.range(rows, override_num_blocks=args.blocks)
            .map_batches(add_payload(args.row_bytes), batch_format="pyarrow", batch_size=None)
            .materialize()
        )
        expected = checksums(ds)
        assert expected == (rows, rows * (rows - 1) // 2, float(sum((np.arange(rows) % 1000)))), (
            expected
        )
        # One untimed run: starts and warms the workers of every node.
        checksums(ds.random_shuffle(seed=1000).materialize())
        times, moved, region_used = [], 0, 0
        for rep in range(args.reps):
            rx = loopback_rx_bytes()
            start = time.perf_counter()
            out = ds.random_shuffle(seed=rep).materialize()
            times.append(time.perf_counter() - start)
            moved += loopback_rx_bytes() - rx
            region_used = max(region_used, gr.client().stats()["used_bytes"])
            if args.stats and rep == args.reps - 1:
                print(f"--- {mode}, run {rep}: Ray Data stats\n{out.stats()}", flush=True)
            got = checksums(out)
            assert got == expected, (mode, rep, got, expected)
            del out
        row = {
            "mode": mode,
            "median_s": statistics.median(times),
            "times_s": times,
            "loopback_bytes_per_run": moved / args.reps,
            "dataset_bytes": ds.size_bytes(),
            "region_used_bytes_max": region_used,
            "checksums": list(expected),
        }
        if mode == "transparent":
            gr.uninstall()
        del ds
        return row
    finally:
        ray.shutdown()


def run(args) -> list:
    region = f"file:/dev/shm/gismo-bench-{uuid.uuid4().hex[:10]}"
    ray_root = tempfile.mkdtemp(prefix="ray")
    os.environ["RAY_TMPDIR"] = ray_root
    temp_dir = os.path.join(ray_root, "ray")
    os.makedirs(temp_dir, exist_ok=True)
    data = args.blocks * args.block_mib * MiB
    region_size = args.region_mib * MiB if args.region_mib else 4 * data + 256 * MiB
    store = args.store_mib * MiB
    cluster = None
    rows = []
    try:
        gismo.connect(region, size=region_size, client_name="bench")
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "object_store_memory": store,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "node_ip_address": LOOPBACK,
            },
        )
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=store, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        for mode in args.modes.split(","):
            row = run_mode(cluster, mode, region, args)
            rows.append(row)
            print(
                f"{mode:>12}: median {row['median_s']:.3f} s of "
                f"{', '.join(f'{t:.3f}' for t in row['times_s'])}; loopback "
                f"{row['loopback_bytes_per_run'] / MiB:.1f} MiB/run; dataset "
                f"{row['dataset_bytes'] / MiB:.1f} MiB; region in use after a run ≤ "
                f"{row['region_used_bytes_max'] / MiB:.1f} MiB; checksums ok",
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
    by_mode = {r["mode"]: r for r in rows}
    if "ray" in by_mode and "transparent" in by_mode:
        speedup = by_mode["ray"]["median_s"] / by_mode["transparent"]["median_s"]
        print(f"transparent speed-up over plain Ray: x{speedup:.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=4, help="raylets, 1 CPU each")
    parser.add_argument("--blocks", type=int, default=16, help="input blocks (= output blocks)")
    parser.add_argument("--block-mib", type=int, default=16, help="MiB per input block")
    parser.add_argument("--row-bytes", type=int, default=1024, help="bytes per row")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--modes", default="ray,transparent")
    parser.add_argument("--threshold", type=int, default=gr.DEFAULT_THRESHOLD_BYTES)
    parser.add_argument("--store-mib", type=int, default=1024, help="object store per raylet")
    parser.add_argument("--region-mib", type=int, default=0, help="default: 4 x data + 256")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--stats", action="store_true", help="print Ray Data's stats of a run")
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Ray {ray.__version__}, "
        f"pyarrow {pa.__version__}; {args.nodes} raylets x 1 CPU, {args.blocks} blocks x "
        f"{args.block_mib} MiB, {args.row_bytes}-byte rows, threshold {args.threshold} B",
        flush=True,
    )
    rows = run(args)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
