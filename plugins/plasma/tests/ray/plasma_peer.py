"""A Ray head node for plugins/plasma/tests/ray_plasma.rs: puts a NumPy array with a known pattern, prints the
raylet's plasma socket and the object's id, then serves commands on stdin:

  check ID_HEX   -> prints whether the raylet's store has the object and its memory summary
  quit
"""
import os
import sys

# Loopback only: Ray then uses 127.0.0.1 for the node, driver and workers (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402

ray.init(address="local", num_cpus=1, object_store_memory=256 * 1024 * 1024,
         include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1",
         _temp_dir=os.environ.get("GISMO_RAY_TEMP", "/tmp/gismo-ray"))
node = ray._private.worker.global_worker.node
size = 8 * 1024 * 1024
pattern = (np.arange(size, dtype=np.uint64) * 2654435761) % 251
arr = pattern.astype(np.uint8)
ref = ray.put(arr)
print(f"socket {node.plasma_store_socket_name}", flush=True)
print(f"object {ref.binary().hex()} {size}", flush=True)
print(f"ray {ray.__version__}", flush=True)

for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "quit":
        break
    if cmd[0] == "check":
        oid = ray.ObjectRef(bytes.fromhex(cmd[1]))
        # The core worker asks its raylet: the object is local if the store has it sealed.
        ready, _ = ray.wait([oid], timeout=5, fetch_local=False)
        from ray._private.internal_api import memory_summary
        summary = memory_summary(stats_only=True)
        print(f"ready {len(ready)}", flush=True)
        print("summary " + summary.replace("\n", " | "), flush=True)
ray.shutdown()
