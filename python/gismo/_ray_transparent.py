"""Transparent mode of ``gismo.ray``: NumPy arrays and Arrow data that Ray serializes travel through
the region.

``install()`` registers a serializer for ``numpy.ndarray`` with ``ray.util.register_serializer``
(exact type, process-wide). Ray calls it whenever it pickles an array — ``ray.put``, task
arguments and return values, actor calls, arrays nested in containers — inside its
serialization context: for an array without Python objects of at least the threshold it returns
a ``GismoRef`` (``gismo.ray.put``), whose anchor ``ObjectRef`` Ray then records as contained in the
outer object, so the region object lives as long as Ray's object does; for anything else it
returns the array's own protocol-5 reduction, which Ray keeps out of band as before. The
deserializer, in the receiving process, turns a ``GismoRef`` into a read-only array over the
region.

When pyarrow is importable, ``install()`` does the same for ``pyarrow.Table``, ``RecordBatch``,
``ChunkedArray`` and every concrete ``pyarrow.Array`` class, measured by ``nbytes`` (the bytes of
the buffer ranges the value references): the region object is an Arrow IPC stream (``_codec``),
read back as the same type whose buffers are immutable slices of the region. Below the threshold
the value keeps the reducer Ray had for its class (for ``pyarrow.Table`` Ray's own, which sends
only a slice's range), and ``uninstall()`` puts those back. Without pyarrow only NumPy is
registered.

Exposed as ``gismo.ray.install`` (the ``worker_process_setup_hook``), ``uninstall`` and
``DEFAULT_THRESHOLD_BYTES``. See ``docs/python.md``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    warning). When pyarrow is importable, the same holds for ``pyarrow.Table``, ``RecordBatch``,
    ``ChunkedArray`` and ``Array`` values whose ``nbytes`` reach the threshold: the receiver gets
    the same type, its buffers read-only views of the region.

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
    _install_arrow()


def uninstall() -> None:
    """Ends transparent mode in this process (arrays already in the region stay readable); Ray's
    own Arrow reducers are put back."""
    import numpy as np
    import ray.util

    global _threshold
    _threshold = None
    ray.util.deregister_serializer(np.ndarray)
    context = ray._private.worker.global_worker.get_serialization_context()
    for cls, previous in _arrow_previous.items():
        if previous is None:
            ray.util.deregister_serializer(cls)
        else:
            context._register_cloudpickle_reducer(cls, previous)
    _arrow_previous.clear()


# The reducer each Arrow class had in Ray's pickler before install() (None: none, pyarrow's own
# ``__reduce_ex__``): the path below the threshold, and what uninstall() puts back.
_arrow_previous: Dict[type, Optional[Callable[[Any], Any]]] = {}


def _arrow_classes() -> List[type]:
    """The pyarrow classes transparent mode serializes (empty if pyarrow is not importable). Ray's
    pickler dispatches on the exact class, so every concrete array class is listed; extension
    arrays are not (their types may not exist in the reader: they keep Ray's path)."""
    try:
        import pyarrow as pa
    except ImportError:
        return []
    arrays = [
        c
        for c in vars(pa).values()
        if isinstance(c, type)
        and issubclass(c, pa.Array)
        and c is not pa.Array
        and not issubclass(c, pa.ExtensionArray)
    ]
    return [pa.Table, pa.RecordBatch, pa.ChunkedArray, *arrays]


def _install_arrow() -> None:
    import ray.cloudpickle
    import ray.util

    # Ray registers its own reducers (pyarrow.Table's) when it makes the serialization context:
    # make sure it exists before reading them.
    ray._private.worker.global_worker.get_serialization_context()
    dispatch = ray.cloudpickle.CloudPickler.dispatch
    for cls in _arrow_classes():
        if cls not in _arrow_previous:  # a second install() must not take ours for Ray's
            _arrow_previous[cls] = dispatch.get(cls)
        ray.util.register_serializer(
            cls, serializer=_serialize_arrow, deserializer=_deserialize_arrow
        )


def _via_region(value: Any, nbytes: int) -> Optional[Any]:
    """A ``GismoRef`` of ``value`` put into the region, or ``None`` for Ray's own path (below the
    threshold, inside a ``gismo.ray.put`` — the value goes into that object —, or no room)."""
    from gismo import ray as gr

    global _fallback_warned
    if _threshold is None or nbytes < _threshold or getattr(gr._pickling, "depth", 0):
        return None
    try:
        return gr.put(value)
    except gismo.GismoError as e:  # ObjectStoreFullError, no region attached, ...
        if not _fallback_warned:
            _fallback_warned = True
            _log.warning(
                "gismo.ray transparent mode: %s; this and later values that do not fit go "
                "through Ray's object store (warned once)",
                e,
            )
    return None


def _serialize_ndarray(arr: Any) -> Tuple[int, Any]:
    ref = None if arr.dtype.hasobject else _via_region(arr, arr.nbytes)
    if ref is not None:
        return (_VIA_GISMO, ref)
    # Ray's own reduction: a contiguous array is a PickleBuffer that Ray keeps out of band.
    return (_VIA_RAY, arr.__reduce_ex__(5))


def _deserialize_ndarray(payload: Tuple[int, Any]) -> Any:
    return _deserialize(payload)


def _serialize_arrow(value: Any) -> Tuple[int, Any]:
    ref = _via_region(value, value.nbytes)
    if ref is not None:
        return (_VIA_GISMO, ref)
    # Ray's own reduction: its reducer if it has one (pyarrow.Table), else pyarrow's; either
    # keeps the buffers out of band as pickle-5 buffers.
    previous = _arrow_previous.get(type(value))
    return (_VIA_RAY, previous(value) if previous is not None else value.__reduce_ex__(5))


def _deserialize_arrow(payload: Tuple[int, Any]) -> Any:
    return _deserialize(payload)


def _deserialize(payload: Tuple[int, Any]) -> Any:
    """The value a transparent serializer's payload stands for: read from the region, or rebuilt
    from Ray's reduction of it."""
    kind, value = payload
    if kind == _VIA_GISMO:
        from gismo import ray as gr

        return gr.get(value)
    rebuild, args, *rest = value
    obj = rebuild(*args)
    if rest and rest[0] is not None:
        obj.__setstate__(rest[0])
    return obj
