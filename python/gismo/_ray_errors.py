"""The errors of ``gismo.ray``, each also the Ray exception a Ray user already handles."""

from __future__ import annotations

from typing import Optional

import gismo

try:
    from ray.exceptions import ObjectLostError as _RayObjectLostError
    from ray.exceptions import ObjectStoreFullError as _RayObjectStoreFullError
except ImportError:  # pragma: no cover - gismo.ray without Ray: only the types are usable

    class _RayObjectLostError(Exception):  # type: ignore[no-redef]
        def __init__(self, object_ref_hex: str, owner_address: Optional[bytes], call_site: str):
            self.object_ref_hex = object_ref_hex
            self.owner_address = owner_address
            self.call_site = call_site

    class _RayObjectStoreFullError(Exception):  # type: ignore[no-redef]
        pass


class ObjectLostError(_RayObjectLostError, gismo.GismoError):
    """The object behind a :class:`GismoRef` is no longer in the region: deleted (``free``, or
    its last handle went), evicted after its owner died, or the region was reformatted. A
    ``ray.exceptions.ObjectLostError`` (``object_ref_hex`` is the GISMO object id) and a
    ``gismo.GismoError``."""

    def __init__(self, object_id: bytes, region: str = "") -> None:
        super().__init__(bytes(object_id).hex(), None, "")
        self.object_id = bytes(object_id)
        self.region = region

    def __str__(self) -> str:
        where = f" {self.region}" if self.region else ""
        return (
            f"GISMO object {self.object_ref_hex} is not in the region{where} any more: it was "
            "deleted (gismo.ray.free, or Ray dropped its last handle), evicted after its owner "
            "died, or the region was reformatted. A handle only exists for an object that was "
            "sealed, so it is lost, not late."
        )


class RegionMismatchError(gismo.GismoError):
    """A :class:`GismoRef` resolved in a process attached to another region than the one its
    object was put into (each host's own ``/dev/shm``, another DAX device)."""

    def __init__(self, handle_region: str, attached_region: str, spec: str = "") -> None:
        super().__init__(handle_region, attached_region, spec)
        self.handle_region = handle_region
        self.attached_region = attached_region
        self.spec = spec

    def __str__(self) -> str:
        spec = f" ({self.spec})" if self.spec else ""
        return (
            f"this GismoRef belongs to region {self.handle_region}, but this process is "
            f"attached to region {self.attached_region}{spec}: every process that resolves it "
            "must map the same memory (GISMO_REGION on every node)"
        )


class ObjectStoreFullError(gismo.StoreFullError, _RayObjectStoreFullError):
    """``put`` found no room in the region, even after evicting unreferenced objects (or this
    process holds as many objects as its client's reference table allows). A
    ``gismo.StoreFullError`` and a ``ray.exceptions.ObjectStoreFullError``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the GISMO region is full"


class RegionUnavailableError(gismo.GismoError):
    """This process cannot map a region: ``GISMO_REGION`` is unset, or names memory this node
    does not have (a missing file or device, a mapping refused). Not the same as
    :class:`RegionMismatchError` (mapped, but another region). ``gismo.ray.get`` then fetches the
    value through Ray from a node that can map it; this error reaches the caller only when no
    node could serve it (``tried`` says what each node answered) or where no fetch applies
    (``put``, ``get_buffer``, ``free``)."""

    def __init__(self, reason: str, tried: Optional[list] = None) -> None:
        super().__init__(reason, tried or [])
        self.reason = reason
        self.tried = list(tried or [])

    def __str__(self) -> str:
        if not self.tried:
            return self.reason
        return f"{self.reason}; no node could serve it through Ray: " + "; ".join(self.tried)
