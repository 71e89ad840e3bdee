"""Passing large objects between Ray tasks through a GISMO region instead of Ray's object store.

``gismo.ray.put(value)`` stores the value in the region and returns a :class:`GismoRef`, a small
picklable handle (the 28-byte object id, the size, and a tiny Ray ``ObjectRef`` used as a
lifetime anchor). Pass it to tasks and actors like any argument; ``gismo.ray.get(ref)`` in any
process attached to the region returns the value as read-only views of the region: no transfer
between Ray object stores, no copy. Each worker attaches the region lazily on first use, from the
``GISMO_REGION`` environment variable (set it in ``ray.init(runtime_env={"env_vars": ...})``).

Lifetime (``lifetime="ray"``, the default) follows Ray's own reference counting: the process that
called ``put`` owns the anchor ``ObjectRef``; Ray counts every copy of the handle — in variables,
task arguments and return values, inside other objects, on any node — as a reference to the
anchor. A keeper thread in the owning process watches its Ray reference table; once Ray has
dropped the anchor (no handle left anywhere), the keeper releases the owner's reference and
deletes the object. A reader that still holds a view keeps the bytes: the delete completes when
its view goes. With ``lifetime="explicit"`` the object lives until ``free(ref)`` is called in
any process attached to the region.

If the owning worker dies, Ray loses the anchor (and would raise ``OwnerDiedError`` for it, but
nothing fetches it); the GISMO object stays readable. The dead process's references are reclaimed
by the region's reaper (``gismo-server``, a raylet running the GISMO plugin, or
``Client.reap_dead()``), after which the object is unreferenced: it is evicted when the region
needs room, or deleted by ``free``. Nothing leaks for ever. See ``docs/python.md``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Dict, Optional, Tuple

import gismo
from gismo import _codec
from gismo._native import Client, ObjectBuffer

__all__ = ["GismoRef", "put", "get", "get_buffer", "free", "client", "attach_seconds", "collect"]

_log = logging.getLogger(__name__)

#: How often the keeper thread looks at Ray's reference table.
KEEPER_PERIOD_S = 0.1

_lock = threading.Lock()
_client: Optional[Client] = None
_attach_seconds: Optional[float] = None


def client() -> Client:
    """This process's client of the region, attached on first use (``GISMO_REGION``, or the
    region of an earlier ``gismo.connect()``)."""
    global _client, _attach_seconds
    c = _client
    if c is not None and not c.closed:
        return c
    with _lock:
        if _client is None or _client.closed:
            existing = gismo.connected()
            if existing is not None:
                _client = existing
            else:
                region = os.environ.get(gismo.REGION_ENV)
                if not region:
                    raise gismo.GismoError(
                        f"gismo.ray: set {gismo.REGION_ENV} in the workers' environment "
                        "(runtime_env={'env_vars': {...}}) or call gismo.connect() first"
                    )
                start = time.perf_counter()
                _client = Client(region, client_name=f"gismo-ray-{os.getpid()}")
                _attach_seconds = time.perf_counter() - start
        return _client


def attach_seconds() -> Optional[float]:
    """How long this process's lazy attach took (``None`` if it attached otherwise)."""
    return _attach_seconds


class GismoRef:
    """A picklable handle to an object in the region. Resolve it with :func:`get`."""

    __slots__ = ("id", "nbytes", "_anchor", "__weakref__")

    def __init__(self, id: bytes, nbytes: int, anchor: Any = None) -> None:
        self.id = id
        self.nbytes = nbytes
        self._anchor = anchor

    def __reduce__(self):
        # The anchor is a Ray ObjectRef: pickled inside a task argument or return value, Ray
        # records it as borrowed, which is what keeps the object alive.
        return (GismoRef, (self.id, self.nbytes, self._anchor))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GismoRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"GismoRef({self.id.hex()}, nbytes={self.nbytes})"


class _Keeper:
    """Holds the owner's reference on each object this process put, and lets go of it when Ray
    says no handle is left (``ray``) or when someone freed it (``explicit``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # anchor hex -> (object id, owner's reference)
        self._ray: Dict[str, Tuple[bytes, ObjectBuffer]] = {}
        # object id -> owner's reference
        self._explicit: Dict[bytes, ObjectBuffer] = {}
        self._thread: Optional[threading.Thread] = None

    def track_ray(self, anchor_hex: str, oid: bytes, pin: ObjectBuffer) -> None:
        with self._lock:
            self._ray[anchor_hex] = (oid, pin)
            self._start()

    def track_explicit(self, oid: bytes, pin: ObjectBuffer) -> None:
        with self._lock:
            self._explicit[oid] = pin
            self._start()

    def untrack_explicit(self, oid: bytes) -> Optional[ObjectBuffer]:
        with self._lock:
            return self._explicit.pop(oid, None)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="gismo-keeper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(KEEPER_PERIOD_S)
            try:
                self.collect()
            except Exception:  # noqa: BLE001 - keep watching; the next pass retries
                _log.warning("gismo.ray keeper pass failed; retrying", exc_info=True)

    def collect(self) -> int:
        """One pass: lets go of what is no longer referenced. Returns how many objects."""
        freed = []
        with self._lock:
            if self._ray:
                # Ray shut down in this process: every anchor (and handle) here is void.
                live = _ray_reference_table() or set()
                for anchor in [a for a in self._ray if a not in live]:
                    freed.append(self._ray.pop(anchor))
            if self._ray or self._explicit:
                # free() from any process marks the object; our reference is what holds it.
                c = client()
                for anchor in [a for a, (o, _) in self._ray.items() if c.delete_pending(o)]:
                    freed.append(self._ray.pop(anchor))
                for oid in [o for o in self._explicit if c.delete_pending(o)]:
                    freed.append((oid, self._explicit.pop(oid)))
        c = client() if freed else None
        for oid, pin in freed:
            pin.release()
            if c is not None:
                c.delete(oid)
        return len(freed)


_keeper = _Keeper()


def _ray_reference_table() -> Optional[set]:
    """The hex ids this process's Ray core worker still counts (owned or borrowed); None when Ray
    is not initialised here (any more)."""
    import ray

    if not ray.is_initialized():
        return None
    core_worker = ray._private.worker.global_worker.core_worker
    # Keys are the ids in hex, as bytes (Ray 2.x) or str.
    return {k.decode() if isinstance(k, bytes) else str(k) for k in core_worker.get_all_reference_counts()}


def collect() -> int:
    """Runs the keeper's pass now (it also runs every ``KEEPER_PERIOD_S`` seconds)."""
    return _keeper.collect()


def put(value: Any, *, lifetime: str = "ray") -> GismoRef:
    """Stores ``value`` in the region; returns a handle any Ray task attached to it can resolve.

    ``lifetime="ray"``: deleted once Ray holds no copy of the handle anywhere (and the last view
    of a reader is gone). ``lifetime="explicit"``: kept until :func:`free`.
    """
    import ray

    c = client()
    oid = gismo.random_id()
    pin = _codec.write(c, oid, value)
    if lifetime == "ray":
        anchor = ray.put(oid)
        _keeper.track_ray(anchor.hex(), oid, pin)
        return GismoRef(oid, pin.nbytes, anchor)
    if lifetime == "explicit":
        _keeper.track_explicit(oid, pin)
        return GismoRef(oid, pin.nbytes, None)
    pin.release()
    c.delete(oid)
    raise ValueError(f"lifetime={lifetime!r}: expected 'ray' or 'explicit'")


def get(ref: GismoRef, timeout: Optional[float] = None) -> Any:
    """The value behind ``ref``, read in place (read-only views that keep it alive)."""
    return _codec.read(get_buffer(ref, timeout))


def get_buffer(ref: GismoRef, timeout: Optional[float] = None) -> ObjectBuffer:
    """The raw object behind ``ref`` (buffer protocol, ``with`` releases it)."""
    if not isinstance(ref, GismoRef):
        raise TypeError(f"expected a GismoRef, got {type(ref).__name__}")
    return client().get(ref.id, timeout)


def free(ref: GismoRef) -> None:
    """Deletes the object now (deferred while some process still reads it). For either
    lifetime; the owner's keeper notices and drops its reference."""
    c = client()
    pin = _keeper.untrack_explicit(ref.id)
    if pin is not None:
        pin.release()
    c.delete(ref.id)
