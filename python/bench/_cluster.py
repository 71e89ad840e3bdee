"""The Ray cluster the Python benchmarks run on: raylets on this machine, one region they all map.

``cluster(nodes, ...)`` starts a ``ray.cluster_utils.Cluster`` of ``len(nodes)`` raylets on
loopback (the first is the head), each with the given custom resources, CPUs and its own object
store, and creates a region in ``/dev/shm`` that the driver attaches; ``job(...)`` connects a Ray
driver to it with ``GISMO_REGION`` in every worker's environment (and, for transparent mode, the
setup hook ``gismo.ray.install``). Everything either makes is removed on the way out, also when
setting up fails half-way. Also here: the counters the benchmarks report (bytes received on the
loopback interface; bytes the raylets received over TCP, i.e. pulled from each other's object
stores) and the checksum they verify.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# Loopback only: Ray then uses 127.0.0.1 for every node, driver and worker (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import gismo  # noqa: E402
import gismo.ray as gr  # noqa: E402

MiB = 1 << 20
LOOPBACK = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def cluster(
    nodes: Sequence[Dict[str, float]],
    *,
    object_store_bytes: int,
    region_bytes: int,
    num_cpus: int = 1,
) -> Iterator[Tuple[Cluster, gismo.Client, str]]:
    """Raylets with the custom resources ``nodes`` (the first is the head), ``num_cpus`` each,
    and a region of ``region_bytes`` the driver attaches. Yields (cluster, driver client, region
    spec)."""
    region = f"file:/dev/shm/gismo-bench-{uuid.uuid4().hex[:10]}"
    # A private Ray temp root: `Cluster` writes its address file under the default Ray temp dir
    # (RAY_TMPDIR/ray) even when the head has its own temp_dir, so both point into it. Short, so
    # that Ray's socket paths fit sockaddr_un.
    ray_root = tempfile.mkdtemp(prefix="ray")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_root
    temp_dir = os.path.join(ray_root, "ray")
    os.makedirs(temp_dir, exist_ok=True)
    c = None
    try:
        driver = gismo.connect(region, size=region_bytes, client_name="bench")
        c = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": num_cpus,
                "resources": dict(nodes[0]),
                "object_store_memory": object_store_bytes,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "node_ip_address": LOOPBACK,
            },
        )
        for resources in nodes[1:]:
            c.add_node(
                num_cpus=num_cpus,
                resources=dict(resources),
                object_store_memory=object_store_bytes,
                node_ip_address=LOOPBACK,
            )
        c.wait_for_nodes()
        yield c, driver, region
    finally:
        ray.shutdown()
        if c is not None:
            c.shutdown()
        gismo.disconnect()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(region.split(":", 1)[1])
        shutil.rmtree(ray_root, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


@contextlib.contextmanager
def job(
    address: str,
    region: str,
    *,
    transparent: bool = False,
    threshold_bytes: Optional[int] = None,
    env: Optional[Dict[str, str]] = None,
) -> Iterator[None]:
    """A Ray driver connected to the cluster: ``GISMO_REGION`` (and this directory on
    ``PYTHONPATH``, so workers import the benchmark's helpers) in every worker; with
    ``transparent``, transparent mode in the workers (setup hook) and in the driver."""
    env_vars = {gismo.REGION_ENV: region, "PYTHONPATH": HERE, **(env or {})}
    runtime_env: Dict[str, object] = {"env_vars": env_vars}
    if transparent:
        runtime_env["worker_process_setup_hook"] = "gismo.ray.install"
        if threshold_bytes is not None:
            env_vars[gr.THRESHOLD_ENV] = str(threshold_bytes)
    ray.init(address=address, runtime_env=runtime_env)
    try:
        if transparent:
            gr.install(threshold_bytes)
        yield
    finally:
        if transparent:
            gr.uninstall()
        ray.shutdown()


def loopback_rx_bytes() -> int:
    """Bytes received on the loopback interface so far (every raylet talks over it; so does
    anything else running on the machine)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def raylet_pids(c: Cluster) -> List[int]:
    """The process ids of the cluster's raylets."""
    return [n.all_processes["raylet"][0].process.pid for n in c.list_all_nodes()]


def raylet_rx_bytes(pids: Sequence[int]) -> Optional[int]:
    """Bytes the raylets ``pids`` have received on their open TCP sockets (the kernel's
    ``tcp_info`` counters, read with ``ss -tinp``). Between raylets on one machine that is
    what their object managers pull from each other (Ray's chunked ``Push``) plus a few kilobytes
    of RPCs; workers write their results into their own node's store through shared memory, and
    reach their raylet over a Unix socket, so neither counts. A socket closed between two readings
    takes its count with it (Ray keeps its connections between raylets open). ``None`` where
    ``ss`` (iproute2) is not installed."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True).stdout
    wanted = {f"pid={p}," for p in pids}
    total, ours = 0, False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):  # a socket's first line: its owners
            ours = any(w in line for w in wanted)
            continue
        if ours:
            for field in line.split():
                if field.startswith("bytes_received:"):
                    total += int(field.split(":", 1)[1])
    return total


def wait_region_empty(client: gismo.Client, baseline: int = 0, limit_s: float = 30.0) -> int:
    """Waits (bounded) until the region's used bytes are back to ``baseline``; returns them."""
    deadline = time.monotonic() + limit_s
    used = client.stats()["used_bytes"]
    while used > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        used = client.stats()["used_bytes"]
    return used


def checksum(arr: np.ndarray) -> int:
    """XOR of the array's bytes as 64-bit words (the tail bytes summed): reads every byte."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    head = flat[: flat.size // 8 * 8].view(np.uint64)
    return int(np.bitwise_xor.reduce(head)) ^ int(flat[head.size * 8 :].sum())
