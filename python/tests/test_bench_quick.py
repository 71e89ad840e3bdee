"""The Ray workload benchmark's quick run as a correctness check: W1 (shuffle) and W3
(broadcast) at small sizes in plain Ray, the explicit gismo.ray API and transparent mode, on its
own four-raylet cluster (``bench/bench_ray_workloads.py --quick``, a process of its own: each
mode is a Ray job with its own setup hook). Asserts what must hold at any speed: the checksums,
the region back to its baseline after every cell, and that through the region the data does not
travel between the raylets' object stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")

MiB = 1 << 20
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def test_quick_w1_and_w3_are_correct_and_leave_the_region_as_they_found_it(tmp_path):
    out = tmp_path / "quick.json"
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "bench_ray_workloads.py"),
            "--quick",
            "--only",
            "w1,w3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a watchdog against a hang, not a performance bound
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["quick"]
    for workload, size_key, data_bytes in (("w1", "partition_mib", 1 * MiB), ("w3", "mib", 16 * MiB)):
        rows = result[workload]
        assert sorted(r["mode"] for r in rows) == ["gismo", "ray", "transparent"]
        for r in rows:
            assert r["checksums_ok"], (workload, r["mode"])
            assert r["region_after"] == r["region_baseline"], (workload, r["mode"], r)
        # The moved bytes are counted where iproute2's ss exists: through the region only RPCs
        # (KiBs) reach the raylets; through Ray the partitions or the broadcast array do.
        moved = {r["mode"]: r["moved_bytes"] for r in rows}
        if moved["ray"] is not None:
            assert moved["ray"] >= data_bytes, (workload, moved)
            assert moved["gismo"] < data_bytes and moved["transparent"] < data_bytes, moved
        assert all(r[size_key] for r in rows)
