"""Ready model versions for the alias tests, built fast.

Each version is created and uploaded through the registry's services; its validation report is
computed by the same pure inspector the sandbox runs (registry.onnx_inspect), once per file in
this process, instead of in a child process per version. A version's scale factor tells apart
which version answered: `scaled_version(name, "1.0.0", 2.0)` computes Y = X * 2.
"""

from __future__ import annotations

import functools
import io

from django.utils import timezone

from registry import services
from registry.models import MLModel
from registry.onnx_inspect import inspect_model
from tests.inference.factories import make_scaled_model


@functools.cache
def _report(data: bytes) -> dict:
    return inspect_model(data)


def ready_version(data: bytes, *, name: str, version: str) -> MLModel:
    model = services.model_create(name=name, version=version)
    model = services.model_upload(model=model, staged=services.stage_stream(io.BytesIO(data)))
    report = _report(data)
    MLModel.objects.filter(pk=model.pk).update(
        status=MLModel.Status.READY,
        input_schema=report["input_schema"],
        output_schema=report["output_schema"],
        model_metadata=report["model_metadata"],
        validated_at=timezone.now(),
        first_ready_at=timezone.now(),
    )
    model.refresh_from_db()
    return model


def scaled_version(name: str, version: str, factor: float) -> MLModel:
    """A ready version computing Y = X * factor on float32 X of shape [batch, 3]."""
    return ready_version(make_scaled_model(factor), name=name, version=version)
