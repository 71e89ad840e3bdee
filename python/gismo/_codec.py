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
* ``arrow_ipc`` — a ``pyarrow.Table``, ``RecordBatch``, ``ChunkedArray`` or ``Array`` (``type``:
  ``table``, ``record_batch``, ``chunked_array``, ``array``): the data is an Arrow IPC *stream*
  (schema, record batches, end-of-stream marker; an array is the one column of a one-batch stream,
  a chunked array the one column of a table), written straight into the object, whose size is
  measured first by writing the same stream to a ``pyarrow.MockOutputStream`` — so the writer
  copies the bytes once. IPC writes only the referenced range of a sliced value (pickling a slice
  would carry its parent's whole buffers). Read back with ``pyarrow.ipc.open_stream`` over a
  ``pyarrow.py_buffer`` of the region: every buffer of the result is a slice of the region's
  mapping (no copy), immutable, and keeps the object referenced as long as it lives. Values with
  extension types (which a reader that has not registered the type would get back as their
  storage type) are pickled instead.
* no header (an object made with ``create``/``seal`` or by another program) — read back as
  ``bytes`` are.
* ``pickle`` — anything else, pickled with protocol 5 and its large buffers kept *out of band*:
  ``main`` (length of the pickle stream at offset 0) and ``buffers`` (``[offset, length]`` each,
  64-byte aligned). Unpickling hands those buffers to ``pickle.loads`` as read-only views of the
  region, so NumPy arrays nested in dicts, lists or dataclasses are not copied either. With
  ``refs`` (a count), the pickle names that many *contained references* by persistent id
  ``0..refs-1``: values the writer's ``persistent_id`` hook took out of the stream (``gismo.ray``
  keeps Ray ``ObjectRef``s there, in its anchor, so that Ray tracks them); the reader supplies
  them in the same order.

Unpickling runs code named by the data: attach only regions whose writers you trust (as with
Ray's own object store).
"""

from __future__ import annotations

import functools
import io
import json
import pickle
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


#: Field metadata key by which Arrow IPC marks an extension type.
_ARROW_EXTENSION_KEY = b"ARROW:extension:name"


def _arrow_type_of(value: Any) -> Optional[str]:
    """The ``arrow_ipc`` type of a pyarrow data value written as an IPC stream, else ``None``
    (not pyarrow data, or with an extension type somewhere in its schema)."""
    if not type(value).__module__.startswith("pyarrow"):
        return None
    import pyarrow as pa

    if isinstance(value, pa.Table):
        kind, schema = "table", value.schema
    elif isinstance(value, pa.RecordBatch):
        kind, schema = "record_batch", value.schema
    elif isinstance(value, pa.ChunkedArray):
        kind, schema = "chunked_array", pa.schema([pa.field("_", value.type)])
    elif isinstance(value, pa.Array):
        kind, schema = "array", pa.schema([pa.field("_", value.type)])
    else:
        return None
    try:
        extension = _ARROW_EXTENSION_KEY in schema.serialize().to_pybytes()
    except pa.ArrowException:  # a schema IPC cannot write: pickled
        return None
    return None if extension else kind


def _arrow_stream(value: Any, kind: str):
    """The schema and record batches of the IPC stream that holds ``value``."""
    import pyarrow as pa

    if kind == "table":
        return value.schema, value.to_batches()
    if kind == "record_batch":
        return value.schema, [value]
    if kind == "chunked_array":
        table = pa.Table.from_arrays([value], names=["_"])
        return table.schema, table.to_batches()
    batch = pa.RecordBatch.from_arrays([value], names=["_"])
    return batch.schema, [batch]


def _write_arrow_stream(sink: Any, schema: Any, batches: Sequence[Any]) -> None:
    import pyarrow as pa

    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


#: Decides which values a pickle keeps out of its stream: returns a reference's index in the
#: writer's list of contained references, or ``None`` to pickle the value normally.
PersistentId = Callable[[Any], Optional[int]]


def write(
    client: "_native.Client",
    oid: bytes,
    value: Any,
    *,
    pickler: type = pickle.Pickler,
    persistent_id: Optional[PersistentId] = None,
    dies_with_creator: bool = False,
) -> "_native.ObjectBuffer":
    """Creates object ``oid`` holding ``value``, seals it, and returns it (referenced).
    ``dies_with_creator``: deleted when this process's client is reaped (``Client.create``).

    A value that is pickled uses ``pickler`` (a ``pickle.Pickler`` subclass, such as
    ``ray.cloudpickle.Pickler``); ``persistent_id`` takes contained references out of the stream
    (see the module docs)."""
    create = functools.partial(client.create, dies_with_creator=dies_with_creator)
    np = _numpy()
    # Exactly ndarray: subclasses (masked arrays, matrices) keep their type through pickle.
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        header = _header(
            "ndarray",
            dtype=np.lib.format.dtype_to_descr(value.dtype),
            shape=list(value.shape),
        )
        wb = create(oid, value.nbytes, header)
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
        return _write_bytes(create, oid, memoryview(value), "arrow")
    arrow_type = _arrow_type_of(value)
    plan = _plan_arrow_stream(value, arrow_type) if arrow_type is not None else None
    if plan is not None:
        return _write_arrow(create, oid, arrow_type, *plan)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _write_bytes(create, oid, memoryview(value), "bytes")
    return _write_pickle(create, oid, value, pickler, persistent_id)


def _write_bytes(create, oid: bytes, src: memoryview, kind: str):
    if not src.c_contiguous:
        raise ValueError("only C-contiguous buffers can be stored as bytes")
    src = src.cast("B") if src.format != "B" or src.ndim != 1 else src
    wb = create(oid, src.nbytes, _header(kind))
    try:
        if src.nbytes:
            with memoryview(wb) as dst:
                dst[:] = src
        return wb.seal()
    except BaseException:
        if wb.writable:
            wb.abort()
        raise


def _plan_arrow_stream(value: Any, kind: str) -> Optional[Tuple[Any, List[Any], int]]:
    """The schema, record batches and size in bytes of ``value``'s IPC stream, measured by
    writing it to a ``MockOutputStream`` (no bytes are copied); ``None`` if IPC cannot write
    it (then it is pickled)."""
    import pyarrow as pa

    try:
        schema, batches = _arrow_stream(value, kind)
        measure = pa.MockOutputStream()
        _write_arrow_stream(measure, schema, batches)
    except (pa.ArrowException, TypeError):  # a type IPC cannot write
        return None
    return schema, batches, measure.size()


def _write_arrow(create, oid: bytes, kind: str, schema: Any, batches: List[Any], size: int):
    import pyarrow as pa

    wb = create(oid, size, _header("arrow_ipc", type=kind))
    try:
        with memoryview(wb) as raw:
            # A mutable Arrow buffer over the new object (it holds an export of ``raw`` until it
            # is collected: dropped before the memoryview is released, and before the seal).
            target = pa.py_buffer(raw)
            sink = pa.FixedSizeBufferWriter(target)
            try:
                _write_arrow_stream(sink, schema, batches)
                written = sink.tell()
            finally:
                sink.close()
                del sink, target
        if written != size:
            raise _native.GismoError(
                f"Arrow IPC stream of {written} bytes, measured {size} (pyarrow changed it?)"
            )
        return wb.seal()
    except BaseException:
        if wb.writable:
            wb.abort()
        raise


# One subclass per pickler class, made once: a class made per call would sit in a reference cycle
# and keep the contained references it saw alive until the cyclic collector runs.
_ref_picklers: Dict[type, type] = {}


def _ref_pickler(base: type) -> type:
    cls = _ref_picklers.get(base)
    if cls is None:

        class _RefPickler(base):  # type: ignore[misc, valid-type]
            _hook: Optional[PersistentId] = None
            _count = 0

            def persistent_id(self, obj: Any) -> Optional[int]:
                index = self._hook(obj) if self._hook is not None else None
                if index is not None and index >= self._count:
                    self._count = index + 1
                return index

        cls = _ref_picklers[base] = _RefPickler
    return cls


def _dumps(value: Any, pickler: type, persistent_id: Optional[PersistentId], buffer_callback):
    """The pickle stream of ``value`` and how many contained references it names."""
    out = io.BytesIO()
    p = _ref_pickler(pickler)(out, protocol=5, buffer_callback=buffer_callback)
    p._hook = persistent_id
    try:
        p.dump(value)
        return out.getvalue(), p._count
    finally:
        # Nothing of the value stays reachable from the pickler (its memo, the hook's list).
        p._hook = None
        p.clear_memo()


def _write_pickle(create, oid: bytes, value: Any, pickler: type, persistent_id):
    buffers: List[pickle.PickleBuffer] = []
    if pickler is pickle.Pickler and persistent_id is None:
        main, refs = pickle.dumps(value, protocol=5, buffer_callback=buffers.append), 0
    else:
        main, refs = _dumps(value, pickler, persistent_id, buffers.append)
    raws = [b.raw() for b in buffers]
    layout: List[Tuple[int, int]] = []
    end = len(main)
    for raw in raws:
        offset = _align(end)
        layout.append((offset, raw.nbytes))
        end = offset + raw.nbytes
    fields: dict = {"main": len(main), "buffers": layout}
    if refs:
        fields["refs"] = refs
    wb = create(oid, end, _header("pickle", **fields))
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


def read(
    buffer: "_native.ObjectBuffer",
    contained: Optional[Callable[[], Sequence[Any]]] = None,
) -> Any:
    """The value in ``buffer``, as views of the region: NumPy arrays and memoryviews that keep the
    buffer (and its store reference) alive as long as they live.

    ``contained`` returns the contained references of a pickle that names some (called only
    then)."""
    return read_view(buffer.metadata, memoryview(buffer), contained)


def read_view(
    metadata: bytes,
    view: memoryview,
    contained: Optional[Callable[[], Sequence[Any]]] = None,
) -> Any:
    """As :func:`read`, for an object given as its metadata and a view of its data (a copy that
    ``gismo.ray`` fetched through Ray, on a node that cannot map the region): the value is made
    of views of ``view``, which they keep alive."""
    header = _parse_header(metadata)
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
        return np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
    if kind == "bytes":
        return view
    if kind == "arrow":
        import pyarrow

        return pyarrow.py_buffer(view)
    if kind == "arrow_ipc":
        return _read_arrow(view, header.get("type"))
    if kind == "pickle":
        bufs = [view[o : o + n] for o, n in header["buffers"]]
        refs = header.get("refs", 0)
        if not refs:
            return pickle.loads(view[: header["main"]], buffers=bufs)
        if contained is None:
            raise _native.GismoError(
                "this object contains Ray ObjectRefs: read it with gismo.ray.get, which "
                "resolves them through its handle"
            )
        return _loads_with_refs(view[: header["main"]], bufs, list(contained()), refs)
    raise _native.GismoError(f"unknown object kind {kind!r} (written by a newer gismo?)")


def _read_arrow(view: memoryview, kind: Any) -> Any:
    import pyarrow as pa

    if kind not in ("table", "record_batch", "chunked_array", "array"):
        raise _native.GismoError(f"unknown Arrow value type {kind!r} (written by a newer gismo?)")
    # A read-only Arrow buffer over the region (or over the copy fetched through Ray): the reader
    # slices it, so every buffer of the result is a view whose parent holds this memoryview (and
    # so the ObjectBuffer's export) until the last array goes.
    source = pa.py_buffer(view)
    reader = pa.ipc.open_stream(source)
    if kind == "table":
        return reader.read_all()
    if kind == "chunked_array":
        return reader.read_all().column(0)
    batches = list(reader)
    if len(batches) != 1:
        raise _native.GismoError(f"corrupt Arrow object: {len(batches)} record batches, not 1")
    return batches[0] if kind == "record_batch" else batches[0].column(0)


class _RefUnpickler(pickle.Unpickler):
    """Resolves the persistent ids of contained references from the list the reader gave."""

    _refs: Optional[List[Any]] = None

    def persistent_load(self, pid: Any) -> Any:
        refs = self._refs or []
        if not isinstance(pid, int) or not 0 <= pid < len(refs):
            raise pickle.UnpicklingError(f"unknown contained reference {pid!r}")
        return refs[pid]


def _loads_with_refs(main: memoryview, bufs: List[memoryview], refs: List[Any], count: int) -> Any:
    if len(refs) != count:
        raise _native.GismoError(
            f"corrupt object: its pickle names {count} contained references, its handle {len(refs)}"
        )
    u = _RefUnpickler(io.BytesIO(main), buffers=bufs)
    u._refs = refs
    try:
        return u.load()
    finally:
        u._refs = None


def _descr(d: Any) -> Any:
    # JSON turned the tuples of a structured dtype's descriptor into lists.
    if isinstance(d, list):
        return [tuple(_descr(x) for x in field) if isinstance(field, list) else field for field in d]
    return d
