"""Ray's own C++ plasma client against the GISMO plasma fallback store, for
plugins/plasma/tests/ray_plasma.rs (`rays_client_speaks_to_our_plasma_store`).

  plasma_client.py head
      starts a Ray head node (loopback), prints "gcs ADDRESS" and "ray VERSION", then waits for
      "quit" on stdin.
  plasma_client.py driver GCS_ADDRESS PLASMA_SOCKET
      a driver whose core worker connects to PLASMA_SOCKET (our store) instead of the raylet's
      store: `Node.plasma_store_socket_name` is overridden before `ray.init`, and
      `_private/worker.py` hands that name to `CoreWorker(...)`. Then serves commands on stdin,
      one reply line each ("ok ..." or "error ..."):

        put           ray.put a 4 MiB NumPy array and a small bytes object -> "ok ID_HEX ID_HEX"
        get           ray.get both, checks them against what was put       -> "ok SUM LEN"
        mutable       creates an experimental mutable object     -> "ok refused ERROR"
        release       drops the values ray.get returned (PlasmaBuffer release)
        free          drops the refs (out of scope at their owner: Ray frees them)
        quit

The raylet's pin of a put fails (the object is not in the raylet's store), so the test checks
wire-level outcomes: the bytes, our store's counters, and that this process is still alive.
"""
import gc
import os
import sys
import traceback
import zlib

# Loopback only: Ray then uses 127.0.0.1 for the node, driver and workers (set before import).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import numpy as np  # noqa: E402
import ray  # noqa: E402

SIZE = 4 * 1024 * 1024
SMALL = b"gismo plasma fallback " * 10


def pattern():
    return ((np.arange(SIZE, dtype=np.uint64) * 2654435761) % 251).astype(np.uint8)


def reply(line):
    print(line, flush=True)


def head():
    ray.init(address="local", num_cpus=1, object_store_memory=128 * 1024 * 1024,
             include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1",
             _temp_dir=os.environ["GISMO_RAY_TEMP"])
    reply(f"gcs {ray.get_runtime_context().gcs_address}")
    reply(f"ray {ray.__version__}")
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    ray.shutdown()


def driver(gcs, socket):
    from ray._private import node

    # The driver's core worker gets its plasma socket from this property (worker.py connect()).
    node.Node.plasma_store_socket_name = property(lambda self: socket)
    ray.init(address=gcs, logging_level="ERROR", _node_ip_address="127.0.0.1")
    worker = ray._private.worker.global_worker
    reply(f"ready {worker.node.plasma_store_socket_name}")
    refs = []
    values = []
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "quit":
                break
            elif cmd == "put":
                refs = [ray.put(pattern()), ray.put(SMALL)]
                reply("ok " + " ".join(r.binary().hex() for r in refs))
            elif cmd == "get":
                values = ray.get(refs, timeout=30)
                arr, small = values
                want = pattern()
                if arr.dtype != want.dtype or arr.shape != want.shape:
                    raise AssertionError(f"array {arr.dtype} {arr.shape}")
                if not np.array_equal(arr, want):
                    raise AssertionError("array bytes differ")
                if small != SMALL:
                    raise AssertionError(f"bytes object differs: {small[:40]!r}")
                reply(f"ok {zlib.crc32(arr.tobytes())} {len(small)}")
            elif cmd == "mutable":
                # An experimental mutable object (what a compiled graph's shared-memory channel
                # is made of): our store refuses it; the driver must get an error, not crash.
                try:
                    ref = worker.put_object(b"0" * 1000, _is_experimental_channel=True)
                except Exception as e:  # noqa: BLE001 - the refusal, reported
                    reply(f"ok refused {type(e).__name__}: {e}".replace("\n", " | "))
                else:
                    reply(f"error a mutable object was created: {ref.hex()}")
            elif cmd == "release":
                values = []
                arr = small = None
                reply("ok")
            elif cmd == "free":
                # 2.60 has no `internal_api.free`: the refs go out of scope at their owner,
                # this driver, which then frees the objects (through the raylet).
                refs = []
                gc.collect()
                reply("ok")
            else:
                reply(f"error unknown command {cmd!r}")
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails
            traceback.print_exc()
            reply(f"error {type(e).__name__}: {e}".replace("\n", " | "))
    ray.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "head":
        head()
    else:
        driver(sys.argv[2], sys.argv[3])
