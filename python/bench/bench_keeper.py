"""Keeper cost: CPU of the ``gismo-keeper`` thread of one driver that holds N live handles
(``gismo.ray.put`` with ``lifetime="ray"``), measured from the thread's own CPU clock
(``/proc/self/task/<tid>/stat``) over a window. Issue 17 §3: ≤ 1% of a core at 10,000 handles.

    python bench/bench_keeper.py [--handles 10000] [--window-s 20]

Prints one line per run and a JSON summary. A one-node local Ray (loopback only); the region is a
fresh file in /dev/shm, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402


def thread_cpu_s(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is [0]; utime [11], stime [12] (in clock ticks).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keeper_thread() -> threading.Thread:
    for t in threading.enumerate():
        if t.name == "gismo-keeper":
            return t
    raise RuntimeError("no gismo-keeper thread (nothing put with lifetime='ray'?)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handles", type=int, default=10_000)
    ap.add_argument("--window-s", type=float, default=20.0)
    args = ap.parse_args()

    region_path = tempfile.mktemp(prefix="gismo-keeper-bench-", dir="/dev/shm")
    region = f"file:{region_path}"
    refs = max(2048, 1 << (2 * args.handles - 1).bit_length())
    gismo.connect(region, size=512 << 20, refs_per_client=refs, dir_capacity=refs)
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"GISMO_REGION": region}},
    )
    try:
        t0 = time.perf_counter()
        handles = [gr.put(np.full(8, i, dtype=np.int64)) for i in range(args.handles)]
        put_s = time.perf_counter() - t0
        k = keeper_thread()
        time.sleep(1.0)  # past the first passes over the new handles
        cpu0, wall0 = thread_cpu_s(k.native_id), time.monotonic()
        time.sleep(args.window_s)
        cpu1, wall1 = thread_cpu_s(k.native_id), time.monotonic()
        share = (cpu1 - cpu0) / (wall1 - wall0)
        alive = len(handles)
        del handles
        t1 = time.monotonic()
        while gr.collect() == 0 and time.monotonic() - t1 < 60:
            time.sleep(0.05)
        result = {
            "handles": alive,
            "window_s": round(wall1 - wall0, 2),
            "keeper_cpu_s": round(cpu1 - cpu0, 3),
            "keeper_core_share": round(share, 5),
            "put_s": round(put_s, 2),
            "keeper_period_s": gr.keeper_period_s(),
        }
        print(
            f"{alive} handles: keeper used {100 * share:.2f}% of a core "
            f"({cpu1 - cpu0:.2f} s CPU in {wall1 - wall0:.1f} s; period now "
            f"{result['keeper_period_s']:.2f} s)"
        )
        print(json.dumps(result))
    finally:
        ray.shutdown()
        c = gismo.connected()
        if c is not None:
            c.close()
        os.unlink(region_path)


if __name__ == "__main__":
    main()
