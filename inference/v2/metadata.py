"""What the v2 health and metadata routes answer, for every transport that carries them (the
/v2 REST views, inference.v2.views, and the gRPC service, inference.grpc.service)."""

from __future__ import annotations

from django.conf import settings

from core import probes, shutdown
from inference.v2 import codec
from inference.v2.protocol import v2_resolve
from registry.models import MLModel

SERVER_NAME = "modelforge"
EXTENSIONS = ("binary_tensor_data", "model_repository")


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": settings.MODELFORGE_VERSION, "extensions": list(EXTENSIONS)}


def not_ready_reason() -> tuple[str, str] | None:
    """(code, message) when this process should not be sent requests: it is shutting down
    (core.shutdown), or a check of /api/v1/ready fails (core.probes.check_ready); else None."""
    if shutdown.stopping.is_set():
        return "shutting_down", "Not ready: the server is shutting down."
    ok, detail = probes.check_ready()
    if not ok:
        return "not_ready", f"Not ready: {detail}."
    return None


def model_metadata(name: str, version: str | None) -> dict:
    """The v2 model metadata: its ready versions, platform, and the tensors it takes and gives
    (inputs and outputs the protocol cannot carry are left out)."""
    model = v2_resolve(name, version)
    ready_versions = list(MLModel.objects.named(name).ready().newest_first().values_list("version", flat=True))
    return {
        "name": model.name,
        "versions": ready_versions,
        "platform": codec.PLATFORM,
        "inputs": [codec.tensor_metadata(entry) for entry in codec.tensor_entries(model.input_schema)],
        "outputs": [codec.tensor_metadata(entry) for entry in codec.tensor_entries(model.output_schema)],
    }
