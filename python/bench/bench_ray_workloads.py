#!/usr/bin/env python3
"""Ray workloads through Ray's object stores and through a GISMO region (issue 17 §5; by hand).

A ``ray.cluster_utils.Cluster`` of four raylets on loopback (one CPU each, nodes ``N0``..``N3``,
each its own object store) and one region in ``/dev/shm`` they all map. Each workload runs in
three modes, each a Ray job of its own:

* ``ray`` — plain Ray code: values through Ray's object stores;
* ``gismo`` — the same workload written with the explicit API (``gismo.ray.put`` / ``get``,
  ``gismo.ray.empty`` in W4's stages): handles through Ray, bytes through the region;
* ``transparent`` — the plain Ray code again, in transparent mode (``gismo.ray.install`` as the
  job's ``worker_process_setup_hook``, and in the driver): arrays ≥ 128 KiB through the region.

Workloads:

* **W1, shuffle**: 4 map tasks (one per node) × 4 partitions (multiple return values) of
  8 / 32 / 64 MiB; reducer ``r`` (on node ``r``) reads partition ``r`` of every map in full.
  The explicit mode makes each partition in the region (``gismo.ray.empty``); the others make
  it in the map's memory, and Ray (or transparent mode's serializer) copies it into its store.
  Wall-clock from the first map's submission to the last reducer's result, median of ``--reps``.
* **W3, broadcast**: the driver puts one 512 MiB array (``ray.put`` / ``gismo.ray.put``); 12
  tasks, 3 per node, read it in full. Wall-clock of put + reads, median of ``--reps``.
* **W4, pipeline**: for ``--w4-seconds``, a source actor (N0) makes 16 MiB arrays, two stage
  actors (N1, N2) each XOR every byte into a new array, a sink actor (N3) checksums it; 4 items in
  flight. Reports items/s and the region's used bytes sampled after each item, and what is left
  in the region after the drain (must be the baseline: nothing leaked).

Every result is checksummed against what the producer made (W1, W3: computed by the driver; W4:
returned by the source); a mismatch stops the run. *Bytes moved between object stores* are the
bytes this cluster's raylets received on their TCP sockets during a round (the kernel's
``tcp_info`` counters, ``ss -tinp``, summed over the raylets' pids): an object manager pulls a
remote object as chunks pushed by the other raylet over TCP, while workers write into their own
node's store through shared memory and talk to their raylet over a Unix socket; so this is the
pulled bytes plus a few KiB of RPCs. (Ray's own ``cumulative_created_bytes`` store stats need the
``grpcio`` package, which Ray's minimal install — this venv — lacks.) Also reported: bytes
received on the loopback interface during a round — everything on the machine, this cluster's
worker-to-worker RPCs and other programs included.

    tools/ray-venv.sh                      # once; prints the venv
    (cd python && maturin develop --release)
    python python/bench/bench_ray_workloads.py --json ray-workloads.json
    python python/bench/bench_ray_workloads.py --quick          # small sizes: a correctness check

Prints a table; ``--json`` writes every number (W4's region usage over time too); ``--plot``
draws W4's region usage if matplotlib is installed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import _cluster  # noqa: E402 - first: it sets Ray's loopback-only switch before Ray is imported
import numpy as np  # noqa: E402
import ray  # noqa: E402

import gismo.ray as gr  # noqa: E402
from _cluster import MiB, checksum, loopback_rx_bytes, raylet_rx_bytes  # noqa: E402

NODES = 4
PARTS = 4  # W1: one partition per reducer, a reducer per node
W3_READERS = 12
W4_DEPTH = 4  # W4: items in flight
MODES = ("ray", "gismo", "transparent")
W4_MASK = 0x5A  # each stage XORs every byte with it: two stages give the source's bytes back


def node(i: int) -> Dict[str, float]:
    """Pins a task or actor to node ``N{i % NODES}`` (a sliver of its custom resource)."""
    return {f"N{i % NODES}": 0.01}


def partition(map_index: int, part: int, nbytes: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """W1's partition ``part`` of map ``map_index``: cheap to make, different for every pair;
    written into ``out`` when given (the explicit mode's array in the region)."""
    k = np.uint64(2 * (map_index * 64 + part) + 1)
    return np.multiply(np.arange(nbytes // 8, dtype=np.uint64), k, out=out)


def partition_in_region(map_index: int, part: int, nbytes: int) -> "gr.GismoRef":
    """The explicit mode's partition, made where it is kept (``gismo.ray.empty``, the
    zero-extra-copy producer API): no copy into a store at all."""
    pending = gr.empty(nbytes // 8, np.uint64)
    partition(map_index, part, nbytes, out=pending.array)
    return pending.seal()


def value_of(value: Any) -> Any:
    return gr.get(value) if isinstance(value, gr.GismoRef) else value


# --- W1 ---------------------------------------------------------------------------------------


@ray.remote(num_cpus=1)
def w1_map(index: int, nbytes: int, explicit: bool):
    if explicit:
        return tuple(partition_in_region(index, p, nbytes) for p in range(PARTS))
    return tuple(partition(index, p, nbytes) for p in range(PARTS))


@ray.remote(num_cpus=1)
def w1_reduce(*parts):
    total, nbytes = 0, 0
    for p in parts:
        arr = value_of(p)
        total ^= checksum(arr)
        nbytes += arr.nbytes
    return total, nbytes


def w1_expected(nbytes: int) -> List[int]:
    out = []
    for r in range(PARTS):
        x = 0
        for m in range(NODES):
            x ^= checksum(partition(m, r, nbytes))
        out.append(x)
    return out


def w1_round(nbytes: int, explicit: bool, expected: List[int]) -> Dict[str, Any]:
    start = time.perf_counter()
    maps = [
        w1_map.options(num_returns=PARTS, resources=node(m)).remote(m, nbytes, explicit)
        for m in range(NODES)
    ]
    reducers = [
        w1_reduce.options(resources=node(r)).remote(*[maps[m][r] for m in range(NODES)])
        for r in range(PARTS)
    ]
    got = ray.get(reducers)
    wall = time.perf_counter() - start
    for r, (total, n) in enumerate(got):
        if total != expected[r] or n != NODES * nbytes:
            raise SystemExit(f"W1 checksum mismatch: reducer {r}, {nbytes // MiB} MiB partitions")
    return {"wall_s": wall}


# --- W3 ---------------------------------------------------------------------------------------


@ray.remote(num_cpus=1)
def w3_read(value):
    arr = value_of(value)
    return checksum(arr), arr.nbytes


def w3_round(arr: np.ndarray, explicit: bool, expected: int) -> Dict[str, Any]:
    start = time.perf_counter()
    ref = gr.put(arr) if explicit else ray.put(arr)
    put_s = time.perf_counter() - start
    got = ray.get([w3_read.options(resources=node(i)).remote(ref) for i in range(W3_READERS)])
    wall = time.perf_counter() - start
    if any(s != expected or n != arr.nbytes for s, n in got):
        raise SystemExit(f"W3 checksum mismatch ({arr.nbytes // MiB} MiB)")
    del ref
    return {"wall_s": wall, "put_s": put_s}


def measured(pids: List[int], round_fn) -> Dict[str, Any]:
    """One round, with the bytes the raylets and the loopback interface received during it."""
    raylets, wire = raylet_rx_bytes(pids), loopback_rx_bytes()
    r = round_fn()
    r["moved_bytes"] = None if raylets is None else raylet_rx_bytes(pids) - raylets
    r["loopback_bytes"] = loopback_rx_bytes() - wire
    return r


# --- W4 ---------------------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class Source:
    def make(self, i: int, nbytes: int, explicit: bool):
        arr = (np.arange(nbytes // 8, dtype=np.uint64) * np.uint64(2 * i + 1)).view(np.uint8)
        return (gr.put(arr) if explicit else arr), checksum(arr)


@ray.remote(num_cpus=0)
class Stage:
    def step(self, value):
        arr = value_of(value)
        if isinstance(value, gr.GismoRef):  # written straight into the region
            pending = gr.empty(arr.shape, arr.dtype)
            np.bitwise_xor(arr, W4_MASK, out=pending.array)
            return pending.seal()
        return np.bitwise_xor(arr, W4_MASK)


@ray.remote(num_cpus=0)
class Sink:
    def take(self, value):
        return checksum(value_of(value))


def w4_run(driver, pids: List[int], nbytes: int, seconds: float, explicit: bool) -> Dict[str, Any]:
    source = Source.options(resources=node(0)).remote()
    stages = [Stage.options(resources=node(i)).remote() for i in (1, 2)]
    sink = Sink.options(resources=node(3)).remote()
    # Warm up (actor processes started, region attached) before the clock and the baseline.
    warm, _ = source.make.options(num_returns=2).remote(0, 4096, explicit)
    ray.get(sink.take.remote(stages[1].step.remote(stages[0].step.remote(warm))))
    del warm
    baseline = _cluster.wait_region_empty(driver)
    raylets = raylet_rx_bytes(pids)
    samples: List[List[float]] = []
    in_flight: collections.deque = collections.deque()
    done, i = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        now = time.perf_counter()
        while now < deadline and len(in_flight) < W4_DEPTH:
            value, want = source.make.options(num_returns=2).remote(i, nbytes, explicit)
            out = sink.take.remote(stages[1].step.remote(stages[0].step.remote(value)))
            in_flight.append((out, want))
            del value
            i += 1
        if not in_flight:
            break
        out, want = in_flight.popleft()
        got, expected = ray.get([out, want])
        if got != expected:
            raise SystemExit(f"W4 checksum mismatch at item {done}")
        done += 1
        del out, want
        samples.append([time.perf_counter() - start, driver.stats()["used_bytes"]])
    elapsed = time.perf_counter() - start
    moved = None if raylets is None else raylet_rx_bytes(pids) - raylets
    left = _cluster.wait_region_empty(driver, baseline)
    for actor in [source, *stages, sink]:
        ray.kill(actor)
    used = [u for _, u in samples] or [0]
    step = max(1, len(samples) // 240)
    return {
        "items": done,
        "seconds": elapsed,
        "items_per_s": done / elapsed,
        "mib_per_s": done * nbytes / MiB / elapsed,
        "moved_bytes": moved,
        "region_baseline": baseline,
        "region_peak": max(used),
        "region_median": statistics.median(used),
        "region_after": left,
        "leaked_bytes": left - baseline,
        "region_over_time": samples[::step],
    }


# --- the run ----------------------------------------------------------------------------------


def run_mode(mode: str, c, driver, region: str, cfg: argparse.Namespace) -> Dict[str, list]:
    explicit = mode == "gismo"
    pids = _cluster.raylet_pids(c)
    out: Dict[str, list] = {"w1": [], "w3": [], "w4": []}
    with _cluster.job(c.address, region, transparent=mode == "transparent"):
        # Start every node's worker (and its attach) before measuring.
        warm = np.zeros(8, np.uint8)
        ray.get([w3_read.options(resources=node(i)).remote(warm) for i in range(NODES)])
        if "w1" in cfg.only:
            for mib in cfg.w1_mib:
                n = mib * MiB
                expected = w1_expected(n)
                baseline = _cluster.wait_region_empty(driver)
                rounds = []
                for _ in range(cfg.reps):
                    rounds.append(measured(pids, lambda: w1_round(n, explicit, expected)))
                    _cluster.wait_region_empty(driver, baseline)
                row = summary(mode, rounds, driver, baseline, partition_mib=mib)
                out["w1"].append(row)
                print(format_w1(row), file=sys.stderr, flush=True)
        if "w3" in cfg.only:
            n = cfg.w3_mib * MiB
            arr = np.arange(n // 8, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            expected = checksum(arr)
            baseline = _cluster.wait_region_empty(driver)
            rounds = []
            for _ in range(cfg.reps):
                rounds.append(measured(pids, lambda: w3_round(arr, explicit, expected)))
                _cluster.wait_region_empty(driver, baseline)
            del arr
            row = summary(mode, rounds, driver, baseline, mib=cfg.w3_mib)
            row["put_s"] = statistics.median(r["put_s"] for r in rounds)
            out["w3"].append(row)
            print(format_w3(row), file=sys.stderr, flush=True)
        if "w4" in cfg.only:
            row = {"mode": mode, "mib": cfg.w4_mib}
            row.update(w4_run(driver, pids, cfg.w4_mib * MiB, cfg.w4_seconds, explicit))
            row["checksums_ok"] = True
            out["w4"].append(row)
            print(format_w4(row), file=sys.stderr, flush=True)
    return out


def summary(mode: str, rounds: List[dict], driver, baseline: int, **size: int) -> Dict[str, Any]:
    """A W1/W3 cell: medians of its rounds, and the region after them (against ``baseline``)."""
    return {
        "mode": mode,
        **size,
        "wall_s": statistics.median(r["wall_s"] for r in rounds),
        "walls_s": [r["wall_s"] for r in rounds],
        "moved_bytes": None if rounds[0]["moved_bytes"] is None else statistics.median(
            r["moved_bytes"] for r in rounds
        ),
        "loopback_bytes": statistics.median(r["loopback_bytes"] for r in rounds),
        "region_baseline": baseline,
        "region_after": _cluster.wait_region_empty(driver, baseline),
        "checksums_ok": True,  # a mismatch stops the run
    }


def run(cfg: argparse.Namespace) -> Dict[str, Any]:
    biggest_part = max(cfg.w1_mib) * MiB if "w1" in cfg.only else 0
    broadcast = cfg.w3_mib * MiB if "w3" in cfg.only else 0
    pipeline = 3 * W4_DEPTH * cfg.w4_mib * MiB if "w4" in cfg.only else 0
    # A node's store holds its maps' partitions and the ones it pulls (W1), or the broadcast
    # array and its copy (W3, on the head).
    store = max(2 * PARTS * biggest_part, 2 * broadcast, 2 * pipeline) + 128 * MiB
    region = int(max(NODES * PARTS * biggest_part, broadcast, pipeline) * 1.5) + 128 * MiB
    nodes = [{f"N{i}": 1} for i in range(NODES)]
    result: Dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "ray": ray.__version__,
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": cfg.quick,
        "reps": cfg.reps,
        "w1": [],
        "w3": [],
        "w4": [],
    }
    with _cluster.cluster(nodes, object_store_bytes=store, region_bytes=region) as setup:
        c, driver, region_spec = setup
        for mode in cfg.modes:
            got = run_mode(mode, c, driver, region_spec, cfg)
            for key in ("w1", "w3", "w4"):
                result[key].extend(got[key])
    return result


# --- output -----------------------------------------------------------------------------------


def human(b: Optional[float]) -> str:
    if b is None:
        return "-"
    if b >= MiB:
        return f"{b / MiB:.1f} MiB"
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b:.0f} B"


def ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"


W1_HEADER = (
    "| W1 shuffle | mode | wall (median) | moved between stores | loopback | region after |\n"
    "|---|---|---:|---:|---:|---:|"
)
W3_HEADER = (
    "| W3 broadcast | mode | wall (median) | of which put | moved between stores | loopback "
    "| region after |\n|---|---|---:|---:|---:|---:|---:|"
)
W4_HEADER = (
    "| W4 pipeline | mode | items | items/s | MiB/s | moved between stores | region peak "
    "| region median | leaked |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


def format_w1(r: dict) -> str:
    return (
        f"| 4×4 × {r['partition_mib']} MiB | {r['mode']} | {ms(r['wall_s'])} "
        f"| {human(r['moved_bytes'])} | {human(r['loopback_bytes'])} "
        f"| {human(r['region_after'] - r['region_baseline'])} |"
    )


def format_w3(r: dict) -> str:
    return (
        f"| {r['mib']} MiB × {W3_READERS} | {r['mode']} | {ms(r['wall_s'])} | {ms(r['put_s'])} "
        f"| {human(r['moved_bytes'])} | {human(r['loopback_bytes'])} "
        f"| {human(r['region_after'] - r['region_baseline'])} |"
    )


def format_w4(r: dict) -> str:
    return (
        f"| {r['mib']} MiB, {r['seconds']:.0f} s | {r['mode']} | {r['items']} "
        f"| {r['items_per_s']:.1f} | {r['mib_per_s']:.0f} | {human(r['moved_bytes'])} "
        f"| {human(r['region_peak'])} "
        f"| {human(r['region_median'])} | {human(r['leaked_bytes'])} |"
    )


def print_tables(result: Dict[str, Any]) -> None:
    for key, header, fmt in (
        ("w1", W1_HEADER, format_w1),
        ("w3", W3_HEADER, format_w3),
        ("w4", W4_HEADER, format_w4),
    ):
        if result[key]:
            print()
            print(header)
            for row in result[key]:
                print(fmt(row))
    m = result["machine"]
    print(
        f"\n{result['date']}, {m['cpus']} CPUs, {m['processor']}, {m['platform']}, Ray {m['ray']},"
        f" {result['reps']} timed rounds per W1/W3 cell (medians)"
        + (" — quick sizes" if result["quick"] else "")
    )


def plot(result: Dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed; no plot written to {path}", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for row in result["w4"]:
        t = [s[0] for s in row["region_over_time"]]
        u = [s[1] / MiB for s in row["region_over_time"]]
        ax.plot(t, u, label=row["mode"])
    ax.set_xlabel("s")
    ax.set_ylabel("region used (MiB)")
    ax.set_title("W4: region usage during the actor pipeline")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: a check")
    ap.add_argument("--only", default="w1,w3,w4", help="workloads, comma separated")
    ap.add_argument("--modes", default=",".join(MODES), help="modes, comma separated")
    ap.add_argument("--w1-mib", help="W1 partition sizes (MiB, comma separated; 8,32,64)")
    ap.add_argument("--w3-mib", type=int, help="W3 array size (MiB; 512)")
    ap.add_argument("--w4-mib", type=int, help="W4 array size (MiB; 16)")
    ap.add_argument("--w4-seconds", type=float, help="W4 duration (s; 60)")
    ap.add_argument("--reps", type=int, help="timed rounds per W1/W3 cell (5)")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--plot", help="draw W4's region usage here (needs matplotlib)")
    cfg = ap.parse_args(argv)
    quick = cfg.quick
    cfg.w1_mib = [int(x) for x in (cfg.w1_mib or ("1" if quick else "8,32,64")).split(",")]
    cfg.w3_mib = cfg.w3_mib or (16 if quick else 512)
    cfg.w4_mib = cfg.w4_mib or (4 if quick else 16)
    cfg.w4_seconds = cfg.w4_seconds or (5.0 if quick else 60.0)
    cfg.reps = cfg.reps or (1 if quick else 5)
    cfg.only = [x.strip().lower() for x in cfg.only.split(",") if x.strip()]
    cfg.modes = [x.strip() for x in cfg.modes.split(",") if x.strip()]
    for m in cfg.modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (expected {', '.join(MODES)})")
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    cfg = parse(argv)
    result = run(cfg)
    print_tables(result)
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(result, f, indent=1)
    if cfg.plot:
        plot(result, cfg.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
