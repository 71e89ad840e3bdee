#!/usr/bin/env python3
"""Cross-node get in a Ray cluster: Ray's object transfer versus gismo.ray (run by hand).

Starts two raylets on this machine (nodes "A" and "B", each with its own object store) and a
region in /dev/shm both map. For each size, a producer actor pinned to A makes an array of random
bytes and puts it (a) with ``ray.put`` — into A's store — and (b) with ``gismo.ray.put`` — into
the region; a consumer actor pinned to B gets it and reads one byte per 4 KiB page. Reported, as
medians over ``--reps`` runs with a fresh object each:

* ``get``: the consumer's wall time of ``ray.get`` / ``gismo.ray.get``;
* ``get+touch``: the same plus reading one byte per page; for GISMO also the first run's, whose
  pages the consumer process had never mapped (its page faults included; later runs reuse the
  same region pages, already mapped);
* ``bytes moved``: bytes received on the loopback interface (``/proc/net/dev``) during the
  consume — both raylets talk over it, so this is what Ray moved from A's object manager to B's,
  plus a few kilobytes of RPCs (anything else running on the machine adds to it: run it on a
  quiet machine);
* the same-node ``ray.get`` (consumer on A) as the baseline GISMO aims at;
* separately, the one-time cost of a worker's first ``gismo.ray`` call (attaching the region).

Checksums of producer and consumer are compared on every run. Usage::

    tools/ray-venv.sh                      # once; prints the venv
    (cd python && maturin develop --release)
    python python/bench/bench_ray_cluster.py --sizes 1,4,16,64,256,1024 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _cluster  # noqa: E402 - first: it sets Ray's loopback-only switch before Ray is imported
import numpy as np  # noqa: E402
import ray  # noqa: E402

import gismo.ray as gr  # noqa: E402
from _cluster import checksum, loopback_rx_bytes, wait_region_empty  # noqa: E402

MiB = 1 << 20
PAGE = 4096


def touch(arr: np.ndarray) -> int:
    return int(arr.reshape(-1).view(np.uint8)[::PAGE].sum())


@ray.remote(num_cpus=0, resources={"A": 0.01})
class Producer:
    def make(self, nbytes: int, via_gismo: bool, seed: int):
        arr = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
        start = time.perf_counter()
        ref = gr.put(arr) if via_gismo else ray.put(arr)
        put_s = time.perf_counter() - start
        return [ref], checksum(arr), put_s


@ray.remote(num_cpus=0)
class Consumer:
    def attach(self):
        gr.client()
        return gr.attach_seconds()

    def consume(self, boxed):
        value = boxed[0]
        start = time.perf_counter()
        arr = gr.get(value) if isinstance(value, gr.GismoRef) else ray.get(value)
        got = time.perf_counter()
        touch(arr)
        touched = time.perf_counter()
        return got - start, touched - start, checksum(arr)


def run(sizes_mib, reps: int) -> dict:
    biggest = max(sizes_mib) * MiB
    store = int(biggest * 1.5) + 256 * MiB
    nodes = [{"A": 1}, {"B": 1}]
    with _cluster.cluster(nodes, object_store_bytes=store, region_bytes=store) as setup:
        c, driver, region = setup
        with _cluster.job(c.address, region):
            return measure(driver, sizes_mib, reps)


def measure(driver, sizes_mib, reps: int) -> dict:
    """Runs the sizes on the connected cluster (see the module doc)."""
    # One-time attach per worker: fresh actor processes on B.
    attach = [
        ray.get(Consumer.options(resources={"B": 0.01}).remote().attach.remote())
        for _ in range(3)
    ]
    producer = Producer.remote()
    on_b = Consumer.options(resources={"B": 0.01}).remote()
    on_a = Consumer.options(resources={"A": 0.01}).remote()
    ray.get([on_b.attach.remote(), on_a.attach.remote()])
    rows = []
    for mib in sizes_mib:
        n = mib * MiB
        samples = {k: [] for k in ("ray_get", "ray_touch", "ray_bytes", "ray_put",
                                   "gismo_get", "gismo_touch", "gismo_bytes", "gismo_put",
                                   "local_get", "local_touch")}
        for rep in range(reps):
            for mode in ("ray", "gismo", "local"):
                boxed, want, put_s = ray.get(
                    producer.make.remote(n, mode == "gismo", seed=rep)
                )
                consumer = on_a if mode == "local" else on_b
                before = loopback_rx_bytes()
                get_s, touch_s, got = ray.get(consumer.consume.remote(boxed))
                moved = loopback_rx_bytes() - before
                if got != want:
                    raise SystemExit(f"checksum mismatch: {mode} {mib} MiB")
                samples[f"{mode}_get"].append(get_s)
                samples[f"{mode}_touch"].append(touch_s)
                if mode != "local":
                    samples[f"{mode}_bytes"].append(moved)
                    samples[f"{mode}_put"].append(put_s)
                del boxed
                if mode == "gismo":
                    wait_region_empty(driver)
        row = {"mib": mib, **{k: statistics.median(v) for k, v in samples.items()}}
        # The first run's pages were never mapped in B's worker: page faults included.
        row["gismo_touch_first"] = samples["gismo_touch"][0]
        rows.append(row)
        print(format_row(row), flush=True)
    return {"attach_s": attach, "rows": rows, "reps": reps, "ray": ray.__version__}


HEADER = (
    "| size | Ray cross-node get | + touch | bytes moved | GISMO get | + touch | + touch, 1st run "
    "| bytes moved | Ray same-node get | get speed-up |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"


def human(b: float) -> str:
    if b >= MiB:
        return f"{b / MiB:.1f} MiB"
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b:.0f} B"


def format_row(r: dict) -> str:
    size = f"{r['mib']} MiB" if r["mib"] < 1024 else f"{r['mib'] // 1024} GiB"
    return (
        f"| {size} | {ms(r['ray_get'])} | {ms(r['ray_touch'])} | {human(r['ray_bytes'])} "
        f"| {ms(r['gismo_get'])} | {ms(r['gismo_touch'])} | {ms(r['gismo_touch_first'])} "
        f"| {human(r['gismo_bytes'])} "
        f"| {ms(r['local_get'])} | {r['ray_get'] / r['gismo_get']:.0f}× |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,4,16,64,256,1024", help="MiB, comma separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(HEADER, flush=True)
    result = run(sizes, args.reps)
    a = result["attach_s"]
    print(f"\none-time attach per worker (first gismo.ray call): "
          f"{', '.join(ms(s) for s in a)} (median {ms(statistics.median(a))})")
    print(f"Ray {result['ray']}, {args.reps} runs per cell (medians), {os.cpu_count()} CPUs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
