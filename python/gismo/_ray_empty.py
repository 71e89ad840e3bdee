"""``gismo.ray.empty``: a producer allocates an array directly in the region, fills it in place
and seals it to a ``GismoRef`` — no copy at all (``put`` copies the value in once)."""

from __future__ import annotations

from typing import Any

import gismo
from gismo import _codec
from gismo._native import Client


class PendingArray:
    """A NumPy array being written in place in the region (made by :func:`empty`): fill
    ``array``, then :meth:`seal` it for its :class:`GismoRef`. No copy: the array is the
    object's memory. As a context manager it aborts on an exception."""

    def __init__(self, client: Client, oid: bytes, buffer: Any, shape: tuple, dtype: Any):
        self._client = client
        self._oid = oid
        self._buffer = buffer
        self._shape = shape
        self._dtype = dtype
        self._lifetime = "ray"
        #: The writable array over the object; let go of every other view of it before sealing.
        self.array = self._writable()

    def _writable(self) -> Any:
        import numpy as np

        count = 1
        for n in self._shape:
            count *= n
        if not count:
            return np.empty(self._shape, dtype=self._dtype)
        raw = memoryview(self._buffer)
        return np.frombuffer(raw, dtype=self._dtype, count=count).reshape(self._shape)

    def seal(self) -> GismoRef:
        """Seals the object (readable everywhere from now on) and returns its handle. Raises
        ``BufferError`` while other views of ``array`` are still alive (nothing may write a
        sealed object); ``array`` is read-only afterwards."""
        from gismo import ray as gr

        c = self._client
        region = gr._region_uuid(c)
        if self._buffer is None:
            raise gismo.GismoError("this array was already sealed or aborted")
        self.array = None  # our own view; another one still alive makes the seal refuse
        try:
            pin = self._buffer.seal()
        except BufferError:
            self.array = self._writable()
            raise
        ref = gr._publish(c, self._oid, pin, [], self._lifetime, region)
        self._buffer = None
        self.array = _codec.read(pin)
        return ref

    def abort(self) -> None:
        """Drops the object unsealed (after the views of ``array`` are gone)."""
        self.array = None
        if self._buffer is not None and self._buffer.writable:
            self._buffer.abort()
        self._buffer = None

    def __enter__(self) -> "PendingArray":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> bool:
        if exc_type is not None and self._buffer is not None:
            self.abort()
        return False


def empty(shape: Any, dtype: Any = float, *, lifetime: str = "ray") -> PendingArray:
    """A new, unsealed array of ``shape`` and ``dtype`` allocated directly in the region, for a
    producer that computes its result in place (zero extra copies)::

        pending = gismo.ray.empty((1 << 20,), np.float32)
        np.multiply(x, 2, out=pending.array)
        ref = pending.seal()            # a GismoRef, as put(...) returns

    Raises :class:`ObjectStoreFullError` when the region has no room."""
    import numpy as np

    from gismo import ray as gr

    lifetime = gr._lifetime(lifetime)
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError(f"dtype {dt} holds Python objects: it cannot live in the region")
    shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    count = 1
    for n in shape:
        if n < 0:
            raise ValueError(f"negative dimension in shape {shape}")
        count *= n
    c = gr.client()
    oid = gismo.random_id()
    header = _codec._header("ndarray", dtype=np.lib.format.dtype_to_descr(dt), shape=list(shape))
    try:
        wb = c.create(oid, count * dt.itemsize, header, dies_with_creator=lifetime == "ray")
    except gismo.StoreFullError as e:
        raise gr._store_full(c, gr._region_uuid(c), e) from e
    pending = PendingArray(c, oid, wb, shape, dt)
    pending._lifetime = lifetime
    return pending
