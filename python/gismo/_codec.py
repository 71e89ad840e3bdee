"""How Python values are laid out in a GISMO object, and read back in place.

An object's *data* holds the value's bytes; its *metadata* (stored after the data, in the same
allocation) holds a small header telling how to read them:

``GSMO1`` followed by a JSON object with ``kind`` and the fields of that kind:

* ``ndarray`` — a NumPy array without Python objects in it: ``dtype`` (``numpy.lib.format``
  descriptor), ``shape``. The data is the array in C order. Read back as a read-only array over
  the region (no copy).
* ``bytes`` — ``bytes``, ``bytearray`` or any C-contiguous buffer; read back as a read-only
  ``memoryview`` over the region.
* ``arrow`` — a ``pyarrow.Buffer``; read back as ``pyarrow.py_buffer`` over the region.
* no header (an object made with ``create``/``seal`` or by another program) — read back as
  ``bytes`` are.
* ``pickle`` — anything else, pickled with protocol 5 and its large buffers kept *out of band*:
  ``main`` (length of the pickle stream at offset 0) and ``buffers`` (``[offset, length]`` each,
  64-byte aligned). Unpickling hands those buffers to ``pickle.loads`` as read-only views of the
  region, so NumPy arrays nested in dicts, lists or dataclasses are not copied either.

Unpickling runs code named by the data: attach only regions whose writers you trust (as with
Ray's own object store).
"""

from __future__ import annotations

import json
import pickle
from typing import Any, List, Tuple

from gismo import _native

MAGIC = b"GSMO1"
ALIGN = 64


def _header(kind: str, **fields: Any) -> bytes:
    return MAGIC + json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode()


def _parse_header(metadata: bytes) -> dict:
    if not metadata.startswith(MAGIC):
        # Written by something else (create/seal, another language): raw bytes.
        return {"kind": "bytes"}
    try:
        header = json.loads(metadata[len(MAGIC) :])
    except ValueError as e:
        raise _native.GismoError(f"corrupt object header: {e}") from None
    if not isinstance(header, dict) or "kind" not in header:
        raise _native.GismoError("corrupt object header: no kind")
    return header


def _numpy():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is optional
        return None
    return numpy


def _is_arrow_buffer(value: Any) -> bool:
    t = type(value)
    return t.__module__.startswith("pyarrow") and t.__name__ == "Buffer"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def write(client: "_native.Client", oid: bytes, value: Any) -> "_native.ObjectBuffer":
    """Creates object ``oid`` holding ``value``, seals it, and returns it (referenced)."""
    np = _numpy()
    # Exactly ndarray: subclasses (masked arrays, matrices) keep their type through pickle.
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        header = _header(
            "ndarray",
            dtype=np.lib.format.dtype_to_descr(value.dtype),
            shape=list(value.shape),
        )
        wb = client.create(oid, value.nbytes, header)
        try:
            if value.nbytes:
                with memoryview(wb) as raw:
                    dst = np.frombuffer(raw, dtype=value.dtype, count=value.size)
                    np.copyto(dst.reshape(value.shape), value, casting="no")
                    del dst
            return wb.seal()
        except BaseException:
            if wb.writable:
                wb.abort()
            raise
    if _is_arrow_buffer(value):
        return _write_bytes(client, oid, memoryview(value), "arrow")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _write_bytes(client, oid, memoryview(value), "bytes")
    return _write_pickle(client, oid, value)


def _write_bytes(client, oid: bytes, src: memoryview, kind: str):
    if not src.c_contiguous:
        raise ValueError("only C-contiguous buffers can be stored as bytes")
    src = src.cast("B") if src.format != "B" or src.ndim != 1 else src
    wb = client.create(oid, src.nbytes, _header(kind))
    try:
        if src.nbytes:
            with memoryview(wb) as dst:
                dst[:] = src
        return wb.seal()
    except BaseException:
        if wb.writable:
            wb.abort()
        raise


def _write_pickle(client, oid: bytes, value: Any):
    buffers: List[pickle.PickleBuffer] = []
    main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    layout: List[Tuple[int, int]] = []
    end = len(main)
    for raw in raws:
        offset = _align(end)
        layout.append((offset, raw.nbytes))
        end = offset + raw.nbytes
    wb = client.create(oid, end, _header("pickle", main=len(main), buffers=layout))
    try:
        if end:
            with memoryview(wb) as dst:
                dst[: len(main)] = main
                for (offset, n), raw in zip(layout, raws):
                    dst[offset : offset + n] = raw
        return wb.seal()
    except BaseException:
        if wb.writable:
            wb.abort()
        raise
    finally:
        for raw in raws:
            raw.release()


def read(buffer: "_native.ObjectBuffer") -> Any:
    """The value in ``buffer``, as views of the region: NumPy arrays and memoryviews that keep the
    buffer (and its store reference) alive as long as they live."""
    header = _parse_header(buffer.metadata)
    kind = header["kind"]
    if kind == "ndarray":
        np = _numpy()
        if np is None:
            raise _native.GismoError("this object is a NumPy array: install numpy to read it")
        dtype = np.lib.format.descr_to_dtype(_descr(header["dtype"]))
        shape = tuple(header["shape"])
        count = 1
        for n in shape:
            count *= n
        if count == 0:
            return np.empty(shape, dtype=dtype)
        # Through a memoryview: NumPy drops its own buffer export at once and keeps only a
        # reference to the object it was given; the memoryview keeps the export counted, so the
        # ObjectBuffer refuses release() (and stays alive) while the array lives.
        return np.frombuffer(memoryview(buffer), dtype=dtype, count=count).reshape(shape)
    if kind == "bytes":
        return memoryview(buffer)
    if kind == "arrow":
        import pyarrow

        return pyarrow.py_buffer(memoryview(buffer))
    if kind == "pickle":
        view = memoryview(buffer)
        bufs = [view[o : o + n] for o, n in header["buffers"]]
        return pickle.loads(view[: header["main"]], buffers=bufs)
    raise _native.GismoError(f"unknown object kind {kind!r} (written by a newer gismo?)")


def _descr(d: Any) -> Any:
    # JSON turned the tuples of a structured dtype's descriptor into lists.
    if isinstance(d, list):
        return [tuple(_descr(x) for x in field) if isinstance(field, list) else field for field in d]
    return d
