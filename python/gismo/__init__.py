"""GISMO for Python: put large objects into a shared memory region and read them in place.

A *region* is a file in ``/dev/shm``, a DAX device on CXL memory, or any other region spec GISMO
understands (``docs/operations.md``). Every process that attaches the same region — on this host,
or on any host sharing the CXL memory — sees every object, and reads it without a copy::

    import numpy as np, gismo

    gismo.connect("file:/dev/shm/gismo-demo", size=1 << 30)   # or GISMO_REGION=...
    ref = gismo.put(np.arange(1_000_000))
    arr = gismo.get(ref)            # read-only NumPy array over the region, no copy

``gismo.ray`` passes objects between Ray tasks and actors this way. See ``docs/python.md``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Union

from gismo import _codec
from gismo._native import (
    OBJECT_ID_LEN,
    Client,
    FencedError,
    GismoError,
    ObjectBuffer,
    ObjectExistsError,
    ObjectNotFoundError,
    StoreFullError,
    WritableBuffer,
    random_id,
)

__all__ = [
    "OBJECT_ID_LEN",
    "Client",
    "FencedError",
    "GismoError",
    "ObjectBuffer",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjectRef",
    "StoreFullError",
    "WritableBuffer",
    "connect",
    "connected",
    "contains",
    "create",
    "delete",
    "disconnect",
    "get",
    "get_buffer",
    "put",
    "random_id",
    "seal",
    "abort",
]

#: The environment variable naming the region when ``connect()`` is given none.
REGION_ENV = "GISMO_REGION"

_lock = threading.Lock()
_client: Optional[Client] = None


class ObjectRef:
    """The handle ``put`` returns: the object id, and the reference ``put`` took on it.

    While the handle holds its reference (until ``release()``, the end of a ``with`` block, or
    garbage collection) the object cannot be evicted. Afterwards it stays until ``delete()`` —
    or until the region needs the room and evicts it (unreferenced objects are evictable, least
    recently used first, as in Ray's Plasma store). Pickling keeps only the id.
    """

    __slots__ = ("id", "nbytes", "_pin", "__weakref__")

    def __init__(self, id: bytes, nbytes: int = 0, pin: Optional[ObjectBuffer] = None) -> None:
        if len(id) != OBJECT_ID_LEN:
            raise ValueError(f"an object id is {OBJECT_ID_LEN} bytes, got {len(id)}")
        self.id = bytes(id)
        self.nbytes = nbytes
        self._pin = pin

    def release(self) -> None:
        """Drops this handle's reference (the object itself stays until deleted or evicted)."""
        pin, self._pin = self._pin, None
        if pin is not None:
            pin.release()

    def __enter__(self) -> "ObjectRef":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __reduce__(self):
        return (ObjectRef, (self.id, self.nbytes))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"gismo.ObjectRef({self.id.hex()}, nbytes={self.nbytes})"


Ref = Union[ObjectRef, bytes]


def _id(ref: Ref) -> bytes:
    # An ObjectRef, a gismo.ray.GismoRef (anything with an ``id``), or the id itself.
    oid = getattr(ref, "id", ref)
    return bytes(oid)


def connect(
    region: Optional[str] = None,
    *,
    size: Optional[int] = None,
    client_name: str = "gismo-python",
    max_clients: Optional[int] = None,
    refs_per_client: Optional[int] = None,
    dir_capacity: Optional[int] = None,
) -> Client:
    """Attaches a region and makes it this process's default for the module-level functions.

    ``region`` defaults to the ``GISMO_REGION`` environment variable. With ``size`` (bytes), a
    region that does not exist yet is created and formatted, with ``max_clients`` client entries
    (every process attached at once is one; default 1024, a Ray node's worth, fewer in a region
    under 129 MiB), ``refs_per_client`` references per client (objects one process holds at
    once; a power of two, default 2048) and ``dir_capacity`` directory slots (objects in the
    region; a power of two, default one per 32 KiB of heap). An existing region keeps its own.
    Connecting again replaces the default client (the old one stays usable through its own
    methods). The client is a context manager: ``with gismo.connect(...) as c:`` closes it on
    exit.
    """
    global _client
    region = region or os.environ.get(REGION_ENV)
    if not region:
        raise GismoError(f"no region: pass connect(region=...) or set {REGION_ENV}")
    client = Client(
        region,
        size=size,
        client_name=client_name,
        max_clients=max_clients,
        refs_per_client=refs_per_client,
        dir_capacity=dir_capacity,
    )
    with _lock:
        _client = client
    return client


def connected() -> Optional[Client]:
    """The default client, if ``connect()`` was called (and it was not closed)."""
    c = _client
    return c if c is not None and not c.closed else None


def _default() -> Client:
    c = connected()
    if c is not None:
        return c
    with _lock:
        c = _client
        if c is not None and not c.closed:
            return c
    if os.environ.get(REGION_ENV):
        return connect()
    raise GismoError(f"not connected: call gismo.connect(region=...) or set {REGION_ENV}")


def disconnect() -> None:
    """Closes the default client (objects already read stay readable)."""
    global _client
    with _lock:
        c, _client = _client, None
    if c is not None:
        c.close()


def put(value: Any, *, id: Optional[bytes] = None, client: Optional[Client] = None) -> ObjectRef:
    """Stores ``value`` (NumPy array, bytes-like, ``pyarrow.Buffer``, pyarrow table, record
    batch or array — an Arrow IPC stream, read back in place —, or any picklable value) as a new
    sealed object and returns its handle (``id`` defaults to a random one)."""
    c = client or _default()
    oid = random_id() if id is None else bytes(id)
    pin = _codec.write(c, oid, value)
    return ObjectRef(oid, pin.nbytes, pin)


def get(ref: Ref, timeout: Optional[float] = None, *, client: Optional[Client] = None) -> Any:
    """The value of object ``ref``, read in place: NumPy arrays and memoryviews are read-only
    views of the region that keep the object referenced while they live.

    Waits up to ``timeout`` seconds for the object to be sealed (``None``: forever); raises
    ``TimeoutError`` otherwise.
    """
    return _codec.read(get_buffer(ref, timeout, client=client))


def get_buffer(
    ref: Ref, timeout: Optional[float] = None, *, client: Optional[Client] = None
) -> ObjectBuffer:
    """The raw object (data through the buffer protocol, plus ``metadata``); use it in a ``with``
    block to give the reference back on exit."""
    return (client or _default()).get(_id(ref), timeout)


def create(
    id: bytes, size: int, metadata: bytes = b"", *, client: Optional[Client] = None
) -> WritableBuffer:
    """Creates an object of ``size`` bytes and returns its writable buffer; ``seal`` it when
    written (``with gismo.create(id, n) as buf:`` seals on exit, aborts on an exception)."""
    return (client or _default()).create(id, size, metadata)


def seal(id: bytes, *, client: Optional[Client] = None) -> None:
    """Seals an object created by this process: from now on every client can read it."""
    (client or _default()).seal(id)


def abort(id: bytes, *, client: Optional[Client] = None) -> None:
    """Aborts an unsealed object created by this process."""
    (client or _default()).abort(id)


def delete(ref: Ref, *, client: Optional[Client] = None) -> None:
    """Deletes the object: now if nobody reads it, else when the last reader lets go."""
    (client or _default()).delete(_id(ref))


def contains(ref: Ref, *, client: Optional[Client] = None) -> bool:
    """Whether the object exists and is sealed."""
    return (client or _default()).contains(_id(ref))
