"""Transparent mode of ``gismo.ray``: NumPy arrays that Ray serializes travel through the region.

``install()`` registers a serializer for ``numpy.ndarray`` with ``ray.util.register_serializer``
(exact type, process-wide). Ray calls it whenever it pickles an array — ``ray.put``, task
arguments and return values, actor calls, arrays nested in containers — inside its
serialization context: for an array without Python objects of at least the threshold it returns
a ``GismoRef`` (``gismo.ray.put``), whose anchor ``ObjectRef`` Ray then records as contained in the
outer object, so the region object lives as long as Ray's object does; for anything else it
returns the array's own protocol-5 reduction, which Ray keeps out of band as before. The
deserializer, in the receiving process, turns a ``GismoRef`` into a read-only array over the
region. Exposed as ``gismo.ray.install`` (the ``worker_process_setup_hook``), ``uninstall`` and
``DEFAULT_THRESHOLD_BYTES``. See ``docs/python.md``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Tuple

import gismo

_log = logging.getLogger("gismo.ray")

#: Arrays at least this large go through the region in transparent mode (``install``): the
#: measured crossover (``bench/bench_transparent_threshold.py``). Below Ray's inlining limit
#: (100 KiB) Ray returns the array inside its reply, which the region's handle cannot beat.
DEFAULT_THRESHOLD_BYTES = 128 << 10

#: The environment variable that sets the threshold in processes that call ``install()`` without
#: one (workers started with the setup hook).
THRESHOLD_ENV = "GISMO_RAY_THRESHOLD_BYTES"

_threshold: Optional[int] = None
_fallback_warned = False

# Tags of what the serializer produced: Ray's own reduction of the array, or a GismoRef.
_VIA_RAY = 0
_VIA_GISMO = 1


def install(threshold_bytes: Optional[int] = None) -> None:
    """Transparent mode: from now on, whenever Ray serializes an exact ``numpy.ndarray`` (no
    Python objects in it) of at least ``threshold_bytes`` in this process — ``ray.put``, task
    arguments and return values, actor calls, arrays nested in containers — it goes into the
    region, and Ray carries only a ``GismoRef``; the receiver gets a read-only array over the
    region. Smaller arrays keep Ray's own path. A full region falls back to Ray's path (one
    warning).

    Call it after ``ray.init`` in the driver, and in every worker with
    ``ray.init(runtime_env={"worker_process_setup_hook": "gismo.ray.install", "env_vars":
    {"GISMO_REGION": ...}})``. ``threshold_bytes`` defaults to ``$GISMO_RAY_THRESHOLD_BYTES``,
    else :data:`DEFAULT_THRESHOLD_BYTES`. The region object lives as long as Ray holds the outer
    object (its anchor is contained in it)."""
    import numpy as np
    import ray.util

    global _threshold
    if not ray.is_initialized():
        raise gismo.GismoError(
            "gismo.ray.install(): call it after ray.init() (Ray's serializers belong to the "
            "connected worker; in workers the setup hook runs after it connected)"
        )
    if threshold_bytes is None:
        threshold_bytes = int(os.environ.get(THRESHOLD_ENV, DEFAULT_THRESHOLD_BYTES))
    if threshold_bytes < 0:
        raise ValueError(f"threshold_bytes={threshold_bytes}: expected >= 0")
    _threshold = threshold_bytes
    ray.util.register_serializer(
        np.ndarray, serializer=_serialize_ndarray, deserializer=_deserialize_ndarray
    )


def uninstall() -> None:
    """Ends transparent mode in this process (arrays already in the region stay readable)."""
    import numpy as np
    import ray.util

    global _threshold
    _threshold = None
    ray.util.deregister_serializer(np.ndarray)


def _serialize_ndarray(arr: Any) -> Tuple[int, Any]:
    from gismo import ray as gr

    global _fallback_warned
    if (
        _threshold is not None
        and arr.nbytes >= _threshold
        and not arr.dtype.hasobject
        and not getattr(gr._pickling, "depth", 0)
    ):
        try:
            return (_VIA_GISMO, gr.put(arr))
        except gismo.GismoError as e:  # ObjectStoreFullError, no region attached, ...
            if not _fallback_warned:
                _fallback_warned = True
                _log.warning(
                    "gismo.ray transparent mode: %s; this and later arrays that do not fit go "
                    "through Ray's object store (warned once)",
                    e,
                )
    # Ray's own reduction: a contiguous array is a PickleBuffer that Ray keeps out of band.
    return (_VIA_RAY, arr.__reduce_ex__(5))


def _deserialize_ndarray(payload: Tuple[int, Any]) -> Any:
    kind, value = payload
    if kind == _VIA_GISMO:
        from gismo import ray as gr

        return gr.get(value)
    rebuild, args, *rest = value
    arr = rebuild(*args)
    if rest and rest[0] is not None:
        arr.__setstate__(rest[0])
    return arr
