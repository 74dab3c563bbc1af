"""Synchronous prediction: validate, look up the cache, run the session, record history.

Shared by /api/v1 predict (and later /v2 infer and jobs): whatever the protocol, inputs are
validated the same way, the same cache and history are used, and the same errors are raised.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from inference.cache import prediction_cache
from inference.errors import InferenceFailed, ModelArchived, ModelNotReady
from inference.history import history
from inference.sessions import get_pool
from inference.tensors import decode_inputs, encode_outputs, tensor_digest
from registry.models import MLModel

Status = MLModel.Status


@dataclass
class Timings:
    """Milliseconds per stage, for the Server-Timing header."""

    parse: float = 0.0
    queue: float = 0.0
    compute: float = 0.0
    serialize: float = 0.0

    def header(self) -> str:
        return ", ".join(f"{name};dur={getattr(self, name):.3f}" for name in ("parse", "queue", "compute", "serialize"))


@dataclass
class PredictionOutcome:
    id: uuid.UUID
    model: MLModel
    output_data: dict[str, Any]
    warnings: list[str]
    cached: bool
    created_at: Any
    timings: Timings = field(default_factory=Timings)

    @property
    def inference_time_ms(self) -> float:
        return round(self.timings.compute, 3)


def ensure_servable(model: MLModel) -> None:
    if model.status == Status.ARCHIVED:
        raise ModelArchived(f"{model} is archived and no longer served. Use another version.")
    if model.status != Status.READY:
        raise ModelNotReady(
            f"{model} is {model.status}, not ready. Upload and validate it first"
            + (f" (last error: {model.error_code})." if model.error_code else ".")
        )


def run_session(model: MLModel, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[Any], float]:
    """Run the model once; returns (output names, values, compute milliseconds)."""
    pool = get_pool()
    pool.sweep_stale()
    loaded = pool.get(model)
    started = time.perf_counter()
    try:
        values = loaded.session.run(None, feeds)
    except Exception as exc:
        # Inputs passed our checks but the graph refused them (e.g. a value-dependent op).
        raise InferenceFailed(f"The model could not run on these inputs: {str(exc)[:500]}") from exc
    return loaded.output_names, values, (time.perf_counter() - started) * 1000


def predict(
    *,
    model: MLModel,
    input_data: Any,
    skip_cache: bool = False,
    api_key=None,
    user=None,
    input_size: int = 0,
    timings: Timings | None = None,
) -> PredictionOutcome:
    """One prediction on a ready model, from the decoded JSON ``input_data``."""
    timings = timings or Timings()
    ensure_servable(model)
    feeds = decode_inputs(
        input_data,
        model.input_schema,
        allow_non_finite=model.allow_non_finite,
        max_elements=settings.MAX_INPUT_ELEMENTS,
        max_depth=settings.MAX_JSON_DEPTH,
    )

    cache_key = None
    cached = None
    if not skip_cache:
        cache_key = prediction_cache.key(model.file_sha256, tensor_digest(feeds))
        cached = prediction_cache.get(cache_key)

    if cached is not None:
        output_data, warnings = cached["output_data"], cached["warnings"]
    else:
        names, values, timings.compute = run_session(model, feeds)
        output_data, warnings = encode_outputs(names, values, model.output_schema)
        if cache_key is not None:
            prediction_cache.set(cache_key, {"output_data": output_data, "warnings": warnings})

    outcome = PredictionOutcome(
        id=uuid.uuid4(),
        model=model,
        output_data=output_data,
        warnings=warnings,
        cached=cached is not None,
        created_at=timezone.now(),
        timings=timings,
    )
    _record(outcome, input_data=input_data, input_size=input_size, api_key=api_key, user=user)
    return outcome


def _record(outcome: PredictionOutcome, *, input_data: Any, input_size: int, api_key, user) -> None:
    if not history.should_record():
        return
    truncated = input_size > settings.HISTORY_MAX_INPUT_BYTES
    history.record(
        {
            "id": outcome.id,
            "model_id": outcome.model.pk,
            "model_name": outcome.model.name,
            "model_version": outcome.model.version,
            "api_key": api_key,
            "user_id": getattr(user, "pk", None) if getattr(user, "is_staff", False) else None,
            "input_data": None if truncated else input_data,
            "input_truncated": truncated,
            "output_data": outcome.output_data,
            "warnings": outcome.warnings,
            "cached": outcome.cached,
            "inference_time_ms": outcome.inference_time_ms,
            "total_time_ms": round(outcome.timings.parse + outcome.timings.queue + outcome.timings.compute, 3),
            "created_at": outcome.created_at,
        }
    )
