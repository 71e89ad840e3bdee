"""Passing large objects between Ray tasks through a GISMO region instead of Ray's object store.

``gismo.ray.put(value)`` stores the value in the region and returns a :class:`GismoRef`, a small
picklable handle (the 28-byte object id, the size, the region's UUID, and a tiny Ray
``ObjectRef`` used as a lifetime anchor). Pass it to tasks and actors like any argument; ``gismo.ray.get(ref)`` in any
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

Values other than arrays and bytes are pickled with Ray's cloudpickle (classes defined in the
driver's ``__main__`` work on workers). Ray ``ObjectRef``s inside the value — also the anchors
of ``GismoRef``s inside it — are kept out of the region and put into the anchor instead
(``ray.put((id, [refs]))``), so Ray counts them as contained in it and keeps them alive as long as
a handle to the outer object exists.

If the owning worker dies, Ray loses the anchor (and would raise ``OwnerDiedError`` for it, but
nothing fetches it); the GISMO object stays readable. The dead process's references are reclaimed
by the region's reaper — the maintainer every ``gismo.ray`` process runs (the leader lease picks
one; ``GISMO_RAY_MAINTAIN=0`` opts out), ``gismo-server``, a raylet running the GISMO plugin, or
``Client.reap_dead()`` — after which the object is unreferenced: it is evicted when the region
needs room, or deleted by ``free``. Nothing leaks for ever, with or without a server.

Failures are Ray-like, never hangs: a handle always names an object sealed before the handle
existed, so ``get`` does not wait: an object that is gone raises :class:`ObjectLostError` (a
``ray.exceptions.ObjectLostError``) at once; a handle of another region raises
:class:`RegionMismatchError`; a full region makes ``put`` raise :class:`ObjectStoreFullError`
(a ``gismo.StoreFullError`` and a ``ray.exceptions.ObjectStoreFullError``). A process that
cannot map the region at all (:class:`RegionUnavailableError`) still gets values from ``get``:
a copy fetched through Ray from a node that maps it (``gismo/_ray_fetch.py``). See
``docs/python.md``.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import gismo
from gismo import _codec
from gismo._native import Client, ObjectBuffer
from gismo._ray_errors import (
    ObjectLostError,
    ObjectStoreFullError,
    RegionMismatchError,
    RegionUnavailableError,
)

__all__ = [
    "GismoRef",
    "ObjectLostError",
    "ObjectStoreFullError",
    "RegionMismatchError",
    "RegionUnavailableError",
    "put",
    "get",
    "get_buffer",
    "free",
    "client",
    "attach_seconds",
    "collect",
    "keeper_period_s",
    "ray_lifetime_available",
    "install",
    "uninstall",
    "empty",
    "PendingArray",
    "DEFAULT_THRESHOLD_BYTES",
]

_log = logging.getLogger(__name__)

#: How often the keeper thread looks at Ray's reference table (at least: see
#: ``KEEPER_MAX_CPU_SHARE``).
KEEPER_PERIOD_S = 0.1

#: The most of one core the keeper's background passes may take: with many handles a pass costs
#: more (Ray's reference table is read whole), and the period grows to keep to this share.
KEEPER_MAX_CPU_SHARE = 0.01

_lock = threading.Lock()
_client: Optional[Client] = None
_attach_seconds: Optional[float] = None
# The client whose region UUID was read last, and that UUID.
_uuid_of: Tuple[Optional[Client], str] = (None, "")
# Why the last attach from the environment failed, and the GISMO_REGION it tried: a process on a
# node without the region does not retry the same spec at every get.
_attach_failure: Optional[Tuple[Optional[str], str]] = None


#: Set to ``0`` to keep ``gismo.ray`` from running the region's maintenance roles in this process.
MAINTAIN_ENV = "GISMO_RAY_MAINTAIN"


#: How often a gismo.ray process that is not its host's maintainer looks whether the role is free.
HOST_ROLE_POLL_S = 0.2


def _maintain(c: Client) -> None:
    """Runs the region's maintenance roles in *one* gismo.ray process of this host
    (``_HostMaintainer``); among hosts (and with a gismo-server or raylet runner), the region's
    leader lease picks who reaps. No separately started gismo-server is needed."""
    if os.environ.get(MAINTAIN_ENV, "1") == "0" or c.maintaining:
        return
    _HostMaintainer(c).start()


class _HostMaintainer:
    """Which of this host's gismo.ray processes maintains the region: the one bound to the
    abstract Unix socket ``\0gismo-maintainer-<region UUID>``. The name is host-local by nature
    (per network namespace), leaves no file behind, and the kernel frees it when its holder exits,
    however it exits, so another process takes the role over at its next poll
    (``HOST_ROLE_POLL_S``) — a kill -9 of the maintainer costs no lease. The others poll from a
    daemon thread (one ``bind`` every 200 ms). The holder gives the name up when its client
    closes. Before this, every process maintained: one more client entry for each, and all of
    them polling the leader lease."""

    def __init__(self, c: Client) -> None:
        self._client = c
        self._name = "\0gismo-maintainer-" + _region_uuid(c)
        self._sock: Optional[socket.socket] = None

    def start(self) -> None:
        # The first look now, so that the first process of a host maintains at once.
        if self._step():
            threading.Thread(target=self._run, name="gismo-host-role", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(HOST_ROLE_POLL_S)
            if not self._step():
                return

    def _step(self) -> bool:
        """One look; whether to keep looking: True while waiting for the role and while holding
        it (to give it up when the client closes), False once the client is closed or the
        maintenance could not start."""
        c = self._client
        if c.closed:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            return False
        if self._sock is not None:
            return True  # holding: watch for the client's close
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self._name)
        except OSError:  # EADDRINUSE: another process of this host maintains
            s.close()
            return True
        self._sock = s
        try:
            started = c.start_maintenance()
        except gismo.GismoError as e:  # no client entry left, ...: others may still maintain
            _log.warning("gismo.ray: not running the region's maintenance in this process: %s", e)
            s.close()
            self._sock = None
            return False
        if started:
            # A clean exit gives the lease up at once (another process leads within 100 ms
            # instead of after the lease).
            atexit.register(c.stop_maintenance)
        return True


def client() -> Client:
    """This process's client of the region, attached on first use (``GISMO_REGION``, or the
    region of an earlier ``gismo.connect()``). Also runs the region's maintenance roles here
    (``Client.start_maintenance``: reaping dead clients while this process holds the leader
    lease) unless ``GISMO_RAY_MAINTAIN=0``.

    Raises :class:`RegionUnavailableError` when this process cannot map the region (no
    ``GISMO_REGION``, or it names memory this node cannot map); a failed spec is not tried again
    until ``GISMO_REGION`` changes or ``gismo.connect()`` attaches one."""
    global _client, _attach_seconds, _attach_failure
    c = _client
    if c is not None and not c.closed:
        return c
    with _lock:
        if _client is None or _client.closed:
            existing = gismo.connected()
            if existing is not None:
                _client = existing
            else:
                region = os.environ.get(gismo.REGION_ENV) or None
                if _attach_failure is not None and _attach_failure[0] == region:
                    raise RegionUnavailableError(_attach_failure[1])
                if region is None:
                    reason = (
                        f"gismo.ray: no region here: set {gismo.REGION_ENV} in the workers' "
                        "environment (runtime_env={'env_vars': {...}}) or call gismo.connect() "
                        "first"
                    )
                    _attach_failure = (region, reason)
                    raise RegionUnavailableError(reason)
                start = time.perf_counter()
                try:
                    _client = Client(region, client_name=f"gismo-ray-{os.getpid()}")
                except gismo.GismoError as e:
                    reason = f"gismo.ray: this process cannot map {region}: {e}"
                    _attach_failure = (region, reason)
                    raise RegionUnavailableError(reason) from e
                _attach_seconds = time.perf_counter() - start
                _attach_failure = None
            _maintain(_client)
        return _client


def attach_seconds() -> Optional[float]:
    """How long this process's lazy attach took (``None`` if it attached otherwise)."""
    return _attach_seconds


def _region_uuid(c: Client) -> str:
    """The UUID of the region ``c`` attached (read once per client)."""
    global _uuid_of
    cached, uuid = _uuid_of
    if cached is c:
        return uuid
    uuid = str(c.stats()["uuid"])
    _uuid_of = (c, uuid)
    return uuid


class GismoRef:
    """A picklable handle to an object in the region. Resolve it with :func:`get`.

    ``region`` is the UUID of the region the object was put into (``None`` in handles that do not
    say: then it is not checked). ``node`` is the Ray node id (hex) of the process that put it
    (``None`` outside Ray): where a process that cannot map the region fetches the value first."""

    __slots__ = ("id", "nbytes", "region", "node", "_anchor", "__weakref__")

    def __init__(
        self,
        id: bytes,
        nbytes: int,
        anchor: Any = None,
        region: Optional[str] = None,
        node: Optional[str] = None,
    ) -> None:
        self.id = id
        self.nbytes = nbytes
        self._anchor = anchor
        self.region = region
        self.node = node

    def __reduce__(self):
        # The anchor is a Ray ObjectRef: pickled inside a task argument or return value, Ray
        # records it as borrowed, which is what keeps the object alive.
        return (GismoRef, (self.id, self.nbytes, self._anchor, self.region, self.node))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GismoRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"GismoRef({self.id.hex()}, nbytes={self.nbytes}, region={self.region})"


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
        #: Seconds between background passes (``_adapt``).
        self.period_s = KEEPER_PERIOD_S
        # What the last background pass failed with (None: it succeeded).
        self._last_failure: Optional[str] = None

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
            time.sleep(self.period_s)
            cpu = time.thread_time()
            self.background_pass()
            self._adapt(time.thread_time() - cpu)

    def _adapt(self, pass_cpu_s: float) -> None:
        """Sets the period so that passes take at most ``KEEPER_MAX_CPU_SHARE`` of a core: a pass
        costs in proportion to the handles this process holds (Ray's whole reference table is
        read, and every object is looked up), so with many handles it runs less often — at
        10,000 handles about every 2.5 s instead of every 100 ms (``bench/bench_keeper.py``)."""
        # 1.25: headroom for a next pass that costs more than this one.
        self.period_s = max(KEEPER_PERIOD_S, 1.25 * pass_cpu_s / KEEPER_MAX_CPU_SHARE)

    def background_pass(self) -> None:
        """One pass of the keeper thread: a failure is logged once (with its traceback) until
        a pass succeeds or fails differently, not every period."""
        try:
            self.collect()
        except Exception as e:  # noqa: BLE001 - keep watching; the next pass retries
            what = f"{type(e).__name__}: {e}"
            if what != self._last_failure:
                self._last_failure = what
                _log.warning(
                    "gismo.ray keeper pass failed (retrying every %ss; logged again only "
                    "if it changes)",
                    KEEPER_PERIOD_S,
                    exc_info=True,
                )
        else:
            self._last_failure = None

    def collect(self) -> int:
        """One pass: lets go of what is no longer referenced. Returns how many objects."""
        freed = []
        with self._lock:
            if self._ray:
                try:
                    live = _ray_reference_table()
                except _NoReferenceTable as e:
                    # Ray's table is gone: nothing tells when a handle is dropped any more.
                    # Keep every object until free() rather than guess.
                    _lose_ray_lifetime(e)
                    for oid, pin in self._ray.values():
                        self._explicit[oid] = pin
                    self._ray.clear()
                    live = set()
                if live is None:
                    # Ray shut down in this process: every anchor (and handle) here is void.
                    live = set()
                for anchor in [a for a in self._ray if a not in live]:
                    freed.append(self._ray.pop(anchor))
            if self._ray or self._explicit:
                # free() from any process marks the object; our reference is what holds it.
                c = client()
                anchors = list(self._ray)
                for i in c.pending_deletes([self._ray[a][0] for a in anchors]):
                    freed.append(self._ray.pop(anchors[i]))
                oids = list(self._explicit)
                for i in c.pending_deletes(oids):
                    freed.append((oids[i], self._explicit.pop(oids[i])))
        c = client() if freed else None
        for oid, pin in freed:
            pin.release()
            if c is not None:
                c.delete(oid)
        return len(freed)


_keeper = _Keeper()


class _NoReferenceTable(Exception):
    """Ray's private reference-count API is missing or failed."""


# None: not tried yet; True: works; False: missing, every put is explicit.
_ray_lifetime: Optional[bool] = None


def _lose_ray_lifetime(cause: BaseException) -> None:
    """Says once that ``lifetime="ray"`` cannot work in this process, and turns it off."""
    global _ray_lifetime
    with _lock:
        first = _ray_lifetime is not False
        _ray_lifetime = False
    if first:
        msg = (
            "gismo.ray: Ray's reference table (core_worker.get_all_reference_counts, a private "
            f"API) is not usable in this process ({cause}); lifetime='ray' falls back to "
            "lifetime='explicit': objects put here stay in the region until gismo.ray.free()"
        )
        _log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _ray_reference_table() -> Optional[set]:
    """The hex ids this process's Ray core worker still counts (owned or borrowed); None when Ray
    is not initialised here (any more). Raises ``_NoReferenceTable`` when Ray is up but its
    private table API is missing or fails."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        counts = ray._private.worker.global_worker.core_worker.get_all_reference_counts()
        # Keys are the ids in hex, as bytes (Ray 2.x) or str.
        return {k.decode() if isinstance(k, bytes) else str(k) for k in counts}
    except Exception as e:  # noqa: BLE001 - any failure of a private API means the same
        raise _NoReferenceTable(f"{type(e).__name__}: {e}") from e


def ray_lifetime_available() -> bool:
    """Whether ``lifetime="ray"`` works in this process: Ray's private reference table answers.
    Checked once (at the first ``put``); afterwards, if the keeper finds it failing."""
    global _ray_lifetime
    if _ray_lifetime is None:
        try:
            table = _ray_reference_table()
        except _NoReferenceTable as e:
            _lose_ray_lifetime(e)
        else:
            if table is None:
                return True  # Ray is not up here yet: the put's ray.put will say so
            with _lock:
                if _ray_lifetime is None:
                    _ray_lifetime = True
    return bool(_ray_lifetime)


def collect() -> int:
    """Runs the keeper's pass now (it also runs in the background, every
    :func:`keeper_period_s`)."""
    return _keeper.collect()


def keeper_period_s() -> float:
    """Seconds between the keeper's background passes in this process: ``KEEPER_PERIOD_S``,
    longer when a pass costs more than ``KEEPER_MAX_CPU_SHARE`` of a core at that period."""
    return _keeper.period_s


def _contained_refs(refs: List[Any]):
    """The ``persistent_id`` hook that takes Ray ``ObjectRef``s out of a pickle into ``refs``."""
    import ray

    seen: Dict[bytes, int] = {}

    def persistent_id(obj: Any) -> Optional[int]:
        if not isinstance(obj, ray.ObjectRef):
            return None
        key = obj.binary()
        index = seen.get(key)
        if index is None:
            index = seen[key] = len(refs)
            refs.append(obj)
        return index

    return persistent_id


# Set while gismo.ray.put pickles a value: arrays inside it go into that object (out of band), not
# into objects of their own.
_pickling = threading.local()


def put(value: Any, *, lifetime: str = "ray") -> GismoRef:
    """Stores ``value`` in the region; returns a handle any Ray task attached to it can resolve.

    ``lifetime="ray"``: deleted once Ray holds no copy of the handle anywhere (and the last view
    of a reader is gone). ``lifetime="explicit"``: kept until :func:`free`. Ray ``ObjectRef``s
    (and ``GismoRef``s) inside ``value`` stay alive while a handle to it exists.

    Raises :class:`ObjectStoreFullError` when the region has no room for it.
    """
    from ray import cloudpickle

    lifetime = _lifetime(lifetime)
    c = client()
    region = _region_uuid(c)
    oid = gismo.random_id()
    refs: List[Any] = []
    depth = getattr(_pickling, "depth", 0)
    _pickling.depth = depth + 1
    try:
        # Ray's lifetime ends when the owner dies (its anchor is lost, OwnerDiedError): the
        # region object goes too, deleted when this process's client is reaped.
        pin = _codec.write(
            c,
            oid,
            value,
            pickler=cloudpickle.Pickler,
            persistent_id=_contained_refs(refs),
            dies_with_creator=lifetime == "ray",
        )
    except gismo.StoreFullError as e:
        raise _store_full(c, region, e) from e
    finally:
        _pickling.depth = depth
    return _publish(c, oid, pin, refs, lifetime, region)


def _lifetime(lifetime: str) -> str:
    """The lifetime a put gets: as asked, unless Ray's reference table is not usable here."""
    if lifetime not in ("ray", "explicit"):
        raise ValueError(f"lifetime={lifetime!r}: expected 'ray' or 'explicit'")
    if lifetime == "ray" and not ray_lifetime_available():
        return "explicit"
    return lifetime


def _store_full(c: Client, region: str, e: BaseException) -> "ObjectStoreFullError":
    return ObjectStoreFullError(
        f"gismo.ray.put: no room in region {region} ({c.region}) for the object, even after "
        f"evicting unreferenced objects: {e}"
    )


def _publish(
    c: Client, oid: bytes, pin: ObjectBuffer, refs: List[Any], lifetime: str, region: str
) -> GismoRef:
    """The handle of a sealed object: its anchor made, the owner's reference given to the
    keeper."""
    import ray

    anchor = None
    if lifetime == "ray" or refs:
        try:
            # The anchor: a small Ray object owned here. With contained references it carries
            # them, so Ray counts them as contained in it (alive while any handle is).
            anchor = ray.put((oid, refs)) if refs else ray.put(oid)
        except BaseException:
            pin.release()
            c.delete(oid)
            raise
    if lifetime == "ray":
        _keeper.track_ray(anchor.hex(), oid, pin)
    else:
        _keeper.track_explicit(oid, pin)
    return GismoRef(oid, pin.nbytes, anchor, region, _node_id())


def _node_id() -> Optional[str]:
    """This process's Ray node id (hex), ``None`` when Ray is not up here."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a handle without a node is still a handle
        return None


def get(ref: GismoRef) -> Any:
    """The value behind ``ref``, read in place (read-only views that keep it alive).

    Never waits: raises :class:`ObjectLostError` if the object is gone and
    :class:`RegionMismatchError` if this process is attached to another region. In a process
    that cannot map the region at all, the value is fetched through Ray from a node that can
    (a copy in this node's Ray object store, read-only; one warning per process): see
    ``gismo/_ray_fetch.py``."""
    try:
        buffer = get_buffer(ref)
    except RegionUnavailableError as e:
        from gismo import _ray_fetch

        return _ray_fetch.fetch(ref, e)
    return _codec.read(buffer, lambda: _refs_of(ref))


def _refs_of(ref: GismoRef) -> List[Any]:
    """The contained references carried by ``ref``'s anchor."""
    import ray

    if ref._anchor is None:
        raise gismo.GismoError(f"{ref!r} names contained references but carries no anchor")
    value = ray.get(ref._anchor)
    if not (isinstance(value, tuple) and len(value) == 2 and value[0] == ref.id):
        raise gismo.GismoError(f"the anchor of {ref!r} does not carry its contained references")
    return list(value[1])


def get_buffer(ref: GismoRef) -> ObjectBuffer:
    """The raw object behind ``ref`` (buffer protocol, ``with`` releases it). Raises as
    :func:`get`, and :class:`RegionUnavailableError` where this process cannot map the region
    (only :func:`get` fetches through Ray)."""
    if not isinstance(ref, GismoRef):
        raise TypeError(f"expected a GismoRef, got {type(ref).__name__}")
    c = client()
    here = _region_uuid(c)
    if ref.region is not None and ref.region != here:
        raise RegionMismatchError(ref.region, here, c.region)
    try:
        # Timeout 0: the object was sealed before any handle to it existed, so if it is not in
        # the region now it never will be again.
        return c.get(ref.id, 0)
    except TimeoutError:
        raise ObjectLostError(ref.id, here) from None


def free(ref: GismoRef) -> None:
    """Deletes the object now (deferred while some process still reads it). For either
    lifetime; the owner's keeper notices and drops its reference."""
    c = client()
    pin = _keeper.untrack_explicit(ref.id)
    if pin is not None:
        pin.release()
    c.delete(ref.id)


# The errors, the in-place producer and transparent mode live in their own modules
# (``gismo.ray.install`` is the setup hook's name).
from gismo._ray_empty import PendingArray, empty  # noqa: E402
from gismo._ray_transparent import (  # noqa: E402
    DEFAULT_THRESHOLD_BYTES,
    THRESHOLD_ENV,
    install,
    uninstall,
)
