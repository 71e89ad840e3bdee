"""A Ray cluster to be killed (run by test_ray_killed_cluster.py as its own process): starts a
local Ray instance attached to the region ``$GISMO_REGION``, fills the region through
``gismo.ray`` — the driver's puts, an actor's puts, a task's returned handle, an actor holding a
view of the driver's object — prints ``READY <json>`` and waits to be SIGKILLed along with every
process Ray started."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402

import gismo.ray as gr  # noqa: E402

MiB = 1 << 20


@ray.remote(num_cpus=0)
class Holder:
    def put_some(self, n: int):
        self.refs = [gr.put(np.full(2 * MiB, i, dtype=np.uint8)) for i in range(n)]
        return os.getpid()

    def hold(self, boxed):
        self.view = gr.get(boxed[0])
        return int(self.view[0])


@ray.remote
def make(i: int):
    return gr.put(np.full(3 * MiB, i, dtype=np.uint8))


def main() -> None:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {k: os.environ[k] for k in ("GISMO_REGION", "GISMO_KILL_TAG")}},
    )
    mine = [gr.put(np.full(1 * MiB, 7, dtype=np.uint8)) for _ in range(2)]
    holder = Holder.remote()
    actor_pid = ray.get(holder.put_some.remote(3))
    assert ray.get(holder.hold.remote([mine[0]])) == 7
    returned = ray.get(make.remote(5))  # a handle the task's worker owns, held here
    stats = gr.client().stats()
    print("READY " + json.dumps({
        "allocations": stats["allocations"],
        "actor_pid": actor_pid,
        "returned_region": returned.region,
    }), flush=True)
    time.sleep(600)
    sys.exit(1)  # never reached: the test kills this process


if __name__ == "__main__":
    main()
