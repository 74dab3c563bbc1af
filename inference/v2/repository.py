"""Triton's model repository extension (index, load, unload) over our registry, for every
transport that carries it (the /v2/repository REST views, inference.v2.views, and the gRPC
service, inference.grpc.service). Callers check the ``manage`` scope first."""

from __future__ import annotations

from collections.abc import Iterable

from core.exceptions import NotFound
from core.tensor_checks import InvalidInput
from inference.sessions import get_pool
from inference.v2.protocol import v2_resolve
from registry.models import MLModel

# Triton's repository states for our statuses (ready means servable: sessions load on use).
_STATES = {
    MLModel.Status.READY: "READY",
    MLModel.Status.VALIDATING: "LOADING",
}


def repository_index(*, ready_only: bool) -> list[dict]:
    """Every registered model version with its state; ``ready_only`` lists only the ready."""
    rows = MLModel.objects.order_by("name", "-version_key", "-created_at")
    if ready_only:
        rows = rows.ready()
    index = []
    for name, version, status, error_code in rows.values_list("name", "version", "status", "error_code"):
        reason = ""
        if status != MLModel.Status.READY:
            reason = status + (f": {error_code}" if error_code else "")
        index.append({"name": name, "version": version, "state": _STATES.get(status, "UNAVAILABLE"), "reason": reason})
    return index


def repository_load(name: str, parameter_names: Iterable[str]) -> None:
    """Load the session of the name's latest ready version into this process's pool."""
    if any(key == "config" or key.startswith("file:") for key in parameter_names):
        raise InvalidInput(
            "Loading with a config or files is not supported: models are registered through "
            "/api/v1/models (upload and validation), then loaded by name.",
            code="unsupported_parameter",
        )
    get_pool().get(v2_resolve(name, None))


def repository_unload(name: str) -> None:
    """Evict the sessions of every version of a name from this process's pool. The model stays
    registered and servable: the next request loads it again. (Sessions are keyed by file, so
    another name registered with the very same bytes loses its session too, and reloads it.)"""
    files = set(MLModel.objects.named(name).exclude(file_sha256="").values_list("file_sha256", flat=True))
    if not files and not MLModel.objects.named(name).exists():
        raise NotFound(f"Unknown model '{name}'.", code="model_not_found")
    pool = get_pool()
    for sha256 in files:
        pool.evict(sha256)
