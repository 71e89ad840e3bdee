"""Mixed clusters: reading a ``GismoRef`` in a process that cannot map its region, through Ray.

A Ray node without the region's memory (no ``GISMO_REGION`` in its workers' environment, or a
spec naming a file or device it does not have) cannot read a GISMO object in place. ``get``
then asks a node that can: it runs one small task there, pinned with
``NodeAffinitySchedulingStrategy(node, soft=False)``, which looks the object up in *its* mapping
and returns the raw object — its metadata and its bytes as an out-of-band pickle buffer, so Ray
copies them once into its object store and moves them like any task result. This process then
decodes the value from that copy exactly as from the region (``_codec.read_view``). So mixed
clusters work, with Ray's cost (one transfer, a copy), and one warning per process.

**Which node.** A handle records the Ray node of the process that put it (``GismoRef.node``): the
producer's node mapped the region when it put the object. It is tried first, then the node that
last served this region here, then every other live node of the cluster (``ray.nodes()``), this
node last. A node that answers that it cannot map the region, or maps another one, is skipped; so
is one that died or cannot run the task. Nodes that map the region are thereby found by asking,
without a registry to keep up to date (a named actor or node labels would need every attaching
process to register and to deregister on exit); the cost of asking falls only on the rare path
where the producer's node is gone.

**Failures stay Ray-like and never hang.** The serving task looks the object up with timeout 0
(a handle names a sealed object: absent means lost), so a lost object raises
:class:`ObjectLostError` here as fast as a task round trip; the first node that can map the region
decides it (all nodes that map it see the same memory). Every other answer is an error value, not
an exception, so nothing of Ray's exception wrapping applies. When no node could serve,
:class:`RegionUnavailableError` names what each said.

**Inside Ray's deserializer (transparent mode).** The receiving side of transparent mode is a
deserializer that Ray calls from ``SerializationContext.deserialize_objects`` — a plain Python
call made after the core worker returned the serialized objects, holding no lock of Ray's; its
per-thread state (the stack of outer ``ObjectRef``s, for borrowed references) is a stack, pushed
and popped around each object, so a nested ``ray.get`` that deserializes another object inside it
is sound; and a task blocked in it is a task blocked in ``ray.get`` (the raylet lends its CPU
out). The serving task takes no CPU (``num_cpus=0``), so it runs even when the serving node's CPUs
are all held by tasks waiting for it. The tests run it there (``tests/test_ray_mixed.py``).

**The copy** is read-only (it lies in this node's Ray object store, as any array ``ray.get``
returns) and lives as long as a view of it does, with Ray's rules, not the region's:
``gismo.ray.free`` of the handle does not take it away.

Contained ``ObjectRef``s come, as in the region, from the handle's anchor (one Ray ``get``).
"""

from __future__ import annotations

import logging
import pickle
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

from gismo import _codec
from gismo._ray_errors import ObjectLostError, RegionMismatchError, RegionUnavailableError

_log = logging.getLogger("gismo.ray")

_lock = threading.Lock()
_warned = False
# Region UUID -> the node that last served it to this process.
_served_by: Dict[str, str] = {}
_serve_remote = None

# What a serving task answers (its first element).
_OK, _LOST, _CANNOT = "ok", "lost", "cannot"


def _serve(ref: Any) -> Tuple[Any, ...]:
    """Runs on a node that may map the region: the object's metadata and bytes (out of band: Ray
    copies them straight from the region into its store), or why not."""
    import ray

    from gismo import ray as gr

    node = ray.get_runtime_context().get_node_id()
    try:
        buffer = gr.get_buffer(ref)
    except ObjectLostError as e:
        return (_LOST, node, e.region)
    except (RegionUnavailableError, RegionMismatchError) as e:
        return (_CANNOT, node, str(e))
    # The PickleBuffer holds the ObjectBuffer (and its store reference) until Ray has copied the
    # bytes into its object store; then both go.
    return (_OK, node, bytes(buffer.metadata), pickle.PickleBuffer(buffer))


def _remote():
    global _serve_remote
    if _serve_remote is None:
        import ray

        _serve_remote = ray.remote(num_cpus=0, max_retries=0)(_serve)
    return _serve_remote


def _candidates(ref: Any, here: Optional[str]) -> List[str]:
    """The nodes to ask, in order: the producer's, the last that served this region, every other
    live node, this one last. Dead nodes are left out."""
    import ray

    preferred = [ref.node, _served_by.get(ref.region or "")]
    try:
        alive = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    except Exception:  # noqa: BLE001 - without the node table, ask the producer's node only
        return [n for n in preferred[:1] if n]
    order: List[str] = []
    for node in preferred + [n for n in alive if n != here] + [here]:
        if node and node in alive and node not in order:
            order.append(node)
    return order


def fetch(ref: Any, cause: RegionUnavailableError) -> Any:
    """The value behind ``ref``, copied through Ray from a node that maps its region (this
    process cannot: ``cause``). Raises :class:`ObjectLostError` if the object is gone,
    ``cause`` (with what each node said) if no node could serve it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise cause
    here = ray.get_runtime_context().get_node_id()
    tried: List[str] = []
    for node in _candidates(ref, here):
        strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        try:
            reply = ray.get(_remote().options(scheduling_strategy=strategy).remote(ref))
        except ray.exceptions.RayTaskError:
            raise  # the serving task itself failed: a bug, not a node without the region
        except ray.exceptions.RayError as e:  # the node died, cannot run it, ...
            tried.append(f"node {node}: {type(e).__name__}")
            continue
        kind, served_by = reply[0], reply[1]
        if kind == _LOST:
            raise ObjectLostError(ref.id, reply[2])
        if kind == _CANNOT:
            tried.append(f"node {served_by}: {reply[2]}")
            continue
        metadata, view = reply[2], reply[3]
        _served_by[ref.region or ""] = served_by
        _warn_once(ref, served_by, cause)
        from gismo import ray as gr

        return _codec.read_view(metadata, memoryview(view), lambda: gr._refs_of(ref))
    raise RegionUnavailableError(cause.reason, tried) from cause


def _warn_once(ref: Any, node: str, cause: RegionUnavailableError) -> None:
    global _warned
    with _lock:
        first, _warned = not _warned, True
    if first:
        msg = (
            f"{cause.reason}; GISMO objects of region {ref.region} are fetched "
            f"through Ray from a node that maps it (first: node {node}), a copy, slower than "
            "reading in place (warned once per process)"
        )
        _log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
