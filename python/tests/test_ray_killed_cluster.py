"""A whole Ray cluster killed with SIGKILL — driver, raylet, GCS, every worker — leaves nothing in
the region once another process attaches: no gismo-server runs, the newcomer's maintenance roles
(``gismo.ray``'s client runs them) reap the dead clients, and the objects they owned through
``gismo.ray.put`` (Ray's lifetime: lost with their owner) are deleted with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("ray")

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402
from conftest import fresh_region, remove_region  # noqa: E402

MiB = 1 << 20
#: The bound documented in docs/python.md: the dead maintainer's lease (3 s) runs out, then one
#: pass reaps every dead client of this host by pid. The test waits longer (a watchdog) and
#: reports the time it took.
WATCHDOG_S = 60.0


def tagged_pids(tag: str) -> list:
    """Every process whose environment carries ``GISMO_KILL_TAG=tag`` (Ray passes the driver's
    environment to the raylet and GCS, and the job's env_vars to every worker)."""
    pids = []
    needle = f"GISMO_KILL_TAG={tag}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(d))
        except OSError:
            continue
    return pids


def test_a_killed_clusters_objects_and_clients_are_gone_once_another_process_attaches():
    spec = fresh_region(256 * MiB)
    # The baseline: the region as one attached gismo.ray process (its client and maintainer)
    # sees it before any cluster ran.
    gismo.connect(spec, size=256 * MiB, client_name="newcomer")
    baseline = gr.client().stats()
    gr.client().close()
    tag = uuid.uuid4().hex
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GISMO_REGION=spec, GISMO_KILL_TAG=tag)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    driver = subprocess.Popen(
        [sys.executable, os.path.join(here, "killed_cluster_driver.py")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = ""
        while not line.startswith("READY"):
            line = driver.stdout.readline()
            assert line, "the driver exited before READY"
        ready = json.loads(line.split(" ", 1)[1])
        assert ready["allocations"] >= 6, ready  # 2 + 3 + 1 objects put
        victims = tagged_pids(tag)
        assert len(victims) >= 4, victims  # driver, GCS, raylet, workers
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        driver.wait(timeout=30)

        # A new process attaches (here: this one, through gismo.ray, which runs maintenance).
        gismo.connect(spec, client_name="newcomer")
        c = gr.client()
        while True:
            s = c.stats()
            if all(s[k] == baseline[k] for k in ("used_bytes", "allocations", "clients_active")):
                break
            assert time.monotonic() - killed_at < WATCHDOG_S, (
                f"region still holds {s['allocations'] - baseline['allocations']} objects "
                f"({s['used_bytes'] - baseline['used_bytes']} bytes) and "
                f"{s['clients_active'] - baseline['clients_active']} clients of the killed "
                f"cluster: {s}"
            )
            time.sleep(0.1)
        print(f"back to baseline {time.monotonic() - killed_at:.1f} s after the kill")
    finally:
        for pid in tagged_pids(tag):
            os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
        c = gismo.connected()
        if c is not None:
            c.close()  # also stops its maintenance and gives the lease up
        remove_region(spec)
