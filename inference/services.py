"""Synchronous prediction: validate, look up the cache, run the session, record history.

Shared by /api/v1 predict (and later /v2 infer and jobs): whatever the protocol, inputs are
validated the same way, the same cache and history are used, and the same errors are raised.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from core import ids
from core.exceptions import DomainError
from core.tensor_types import DTYPES
from inference.batching import batchable_schema, batchers
from inference.cache import cache_tenant, prediction_cache
from inference.errors import InferenceFailed, ModelArchived, ModelNotReady
from inference.history import HistoryRecord, history
from inference.limits import check_batch_rows, in_flight
from inference.metrics import metrics
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
        return (
            f"parse;dur={self.parse:.3f}, queue;dur={self.queue:.3f}, "
            f"compute;dur={self.compute:.3f}, serialize;dur={self.serialize:.3f}"
        )


@dataclass
class PredictionOutcome:
    id: uuid.UUID
    model: MLModel
    cached: bool
    created_at: Any
    timings: Timings = field(default_factory=Timings)
    # The session's own arrays by output name when the model ran (None when served from the
    # cache) and every array output's shape: what a binary protocol (/v2) renders exactly.
    values: dict[str, Any] | None = None
    shapes: dict[str, list[int]] = field(default_factory=dict)
    cache_key: str | None = None  # where the outputs are cached (None with skip_cache)
    # The outputs as JSON-ready data and their warnings: ``rendered`` when given, else made by
    # ``render`` on first use (/v2 answers from the arrays; when nothing is cached or recorded,
    # the JSON rendering is never needed). Every outcome is built with one of the two.
    rendered: tuple[dict[str, Any], list[str]] | None = None
    render: Callable[[], tuple[dict[str, Any], list[str]]] | None = field(default=None, repr=False)

    @property
    def output_data(self) -> dict[str, Any]:
        return self._json()[0]

    @property
    def warnings(self) -> list[str]:
        return self._json()[1]

    def _json(self) -> tuple[dict[str, Any], list[str]]:
        if self.rendered is None:
            self.rendered = self.render()
        return self.rendered

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
    """Run the model on these feeds; returns (output names, values, compute milliseconds)."""
    names, values, _queue_ms, compute_ms = run_model(model, feeds)
    return names, values, compute_ms


def run_model(model: MLModel, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[Any], float, float]:
    """Run the model once (alone, or merged with concurrent requests when batching is on).

    Returns (output names, values, queue milliseconds, compute milliseconds).
    """
    pool = get_pool()
    pool.sweep_stale()
    loaded = pool.get(model)
    bfloat16 = [name for name, array in feeds.items() if array.dtype == DTYPES["BF16"]]
    if model.batching_enabled and batchable_schema(model.input_schema) and not bfloat16:
        batcher = batchers.for_model(model, lambda: pool.get(model))
        values, queue_ms, compute_ms = batcher.run(feeds)
        return loaded.output_names, values, queue_ms, compute_ms
    started = time.perf_counter()
    try:
        with in_flight.admit(model.pk, str(model)):
            values = loaded.run(feeds, label=str(model))
    except DomainError:
        raise  # stopped at its deadline or memory limit, or refused: the model is busy
    except Exception as exc:
        # Inputs passed our checks but the graph refused them (e.g. a value-dependent op).
        raise InferenceFailed(f"The model could not run on these inputs: {str(exc)[:500]}") from exc
    rows = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
    metrics.executed((model.name, model.version), requests=1, rows=rows)
    return loaded.output_names, values, 0.0, (time.perf_counter() - started) * 1000


def decode_model_inputs(model: MLModel, input_data: Any) -> dict[str, np.ndarray]:
    """A request's JSON inputs as the model's feeds, under the request limits of the settings."""
    return decode_inputs(
        input_data,
        model.input_schema,
        allow_non_finite=model.allow_non_finite,
        max_elements=settings.MAX_INPUT_ELEMENTS,
        max_depth=settings.MAX_JSON_DEPTH,
    )


def infer(
    *,
    model: MLModel,
    feeds: dict[str, np.ndarray],
    skip_cache: bool = False,
    api_key=None,
    user=None,
    history_input: Any = None,
    input_size: int = 0,
    requested_outputs: Collection[str] | None = None,
    exact: bool = False,
    timings: Timings | None = None,
) -> PredictionOutcome:
    """One prediction on a servable model (the exchange checked it: `ensure_servable`) from
    validated feeds (``{input name: array}`` as
    `inference.tensors.decode_inputs` makes them), whatever protocol they came in by: the same
    cache (keyed by the feeds' digest, so /api/v1 and /v2 share entries), session and history.

    ``history_input`` is what the history records as the inputs: JSON-ready data, or a function
    returning it, called only when this prediction is recorded with its inputs.
    ``requested_outputs`` limits the outcome (and its history) to those outputs; the model still
    runs, and is cached, whole. With ``exact`` a cached result in which non-finite values were
    rendered as null is not used (the model runs again), so the outcome holds exact values.
    """
    timings = timings or Timings()
    check_batch_rows(feeds, model.input_schema)

    cache_key = None
    cached = None
    if not skip_cache:
        tenant = cache_tenant(api_key=api_key, user=user)  # per caller: see inference/cache.py
        cache_key = prediction_cache.key(model.file_sha256, tensor_digest(feeds), tenant=tenant)
        cached = prediction_cache.get(cache_key)
        if cached is not None and exact and cached["warnings"]:
            cached = None

    values = None
    rendered = None
    if cached is not None:
        rendered = cached["output_data"], cached["warnings"]
        shapes = cached.get("shapes") or {}
    else:
        names, raw_values, timings.queue, timings.compute = run_model(model, feeds)
        values = dict(zip(names, raw_values, strict=True))
        shapes = {name: list(value.shape) for name, value in values.items() if isinstance(value, np.ndarray)}
        if cache_key is not None:
            rendered = _render(values, model.output_schema)
            output_data, warnings = rendered
            prediction_cache.set(cache_key, {"output_data": output_data, "warnings": warnings, "shapes": shapes})

    if requested_outputs is not None:
        wanted = set(requested_outputs)
        if rendered is not None:
            output_data, warnings = rendered
            rendered = (
                {name: data for name, data in output_data.items() if name in wanted},
                [text for text in warnings if text.partition("'")[2].partition("'")[0] in wanted],
            )
        shapes = {name: shape for name, shape in shapes.items() if name in wanted}
        if values is not None:
            values = {name: value for name, value in values.items() if name in wanted}

    # The model ran and nothing was cached: the outputs are rendered as JSON only when asked for.
    render = partial(_render, values, model.output_schema) if rendered is None else None

    outcome = PredictionOutcome(
        id=ids.uuid7(),
        model=model,
        cached=cached is not None,
        created_at=timezone.now(),
        timings=timings,
        values=values,
        shapes=shapes,
        cache_key=cache_key,
        rendered=rendered,
        render=render,
    )
    _record(outcome, input_data=history_input, input_size=input_size, api_key=api_key, user=user)
    return outcome


def _render(values: dict[str, Any], output_schema: list[dict]) -> tuple[dict[str, Any], list[str]]:
    return encode_outputs(list(values), list(values.values()), output_schema)


def predict_cached(
    *, model: MLModel, cache_key: str, input_data: Any, api_key=None, user=None, input_size: int = 0, timings=None
) -> PredictionOutcome | None:
    """Serve a request whose body was validated before into this cache key (see
    inference.cache.BodyMemo) straight from the prediction cache; None when it is not cached."""
    cached = prediction_cache.get(cache_key)
    if cached is None:
        return None
    outcome = PredictionOutcome(
        id=ids.uuid7(),
        model=model,
        rendered=(cached["output_data"], cached["warnings"]),
        cached=True,
        created_at=timezone.now(),
        timings=timings or Timings(),
        shapes=cached.get("shapes") or {},
        cache_key=cache_key,
    )
    _record(outcome, input_data=input_data, input_size=input_size, api_key=api_key, user=user)
    return outcome


def _record(outcome: PredictionOutcome, *, input_data: Any | Callable[[], Any], input_size: int, api_key, user) -> None:
    if not history.should_record():
        return
    truncated = input_size > settings.HISTORY_MAX_INPUT_BYTES
    if callable(input_data):
        input_data = None if truncated else input_data()
    model = outcome.model
    timings = outcome.timings
    history.record(
        HistoryRecord(
            outcome.id,
            model.pk,
            model.name,
            model.version,
            None if api_key is None else api_key.pk,
            user.pk if getattr(user, "is_staff", False) else None,
            None if truncated else input_data,
            truncated,
            outcome.output_data,
            outcome.warnings,
            outcome.cached,
            round(timings.compute, 3),
            round(timings.parse + timings.queue + timings.compute, 3),
            outcome.created_at,
        )
    )
