"""Per-request limits of synchronous inference that the input decoder does not already apply.

- ``MAX_BATCH_ROWS``: the most rows (first dimension of every input whose first dimension is
  variable) in one request; more is a 400 ``too_many_rows``. The decoder already caps elements
  (``MAX_INPUT_ELEMENTS``) and nesting (``MAX_JSON_DEPTH``); rows are what make one request
  run long on a wide model, so they get their own cap.
- ``MAX_INFLIGHT_PER_MODEL``: the most runs of one model at once in this process (models
  without dynamic batching; a batched model has its queue's ``max_queue_size``). One more is
  refused at once with 503 ``model_overloaded`` and ``Retry-After``, instead of piling threads
  up behind a slow model while other models wait.
"""

from __future__ import annotations

import threading

import numpy as np
from django.conf import settings

from core.tensor_checks import InvalidInput
from inference.errors import Overloaded


class ModelOverloaded(Overloaded):
    code = "model_overloaded"


def check_batch_rows(feeds: dict[str, np.ndarray], input_schema: list[dict]) -> None:
    limit = settings.MAX_BATCH_ROWS
    if limit <= 0:
        return
    for entry in input_schema:
        shape = entry.get("shape")
        if not shape or shape[0] != -1:
            continue  # a fixed first dimension is not a batch
        array = feeds.get(entry["name"])
        if array is not None and array.ndim and array.shape[0] > limit:
            raise InvalidInput(
                f"Input '{entry['name']}' has {array.shape[0]} rows, over the {limit} allowed in one request "
                "(MAX_BATCH_ROWS). Split the rows over several requests, or use a batch job.",
                code="too_many_rows",
                input_name=entry["name"],
            )


class InFlight:
    """Counts of runs in progress per model in this process."""

    def __init__(self) -> None:
        self._counts: dict[object, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: object, label: str) -> _Admission:
        """``with in_flight.admit(model.pk, str(model)):`` around a run; raises
        `ModelOverloaded` when MAX_INFLIGHT_PER_MODEL runs of the model are in progress."""
        return _Admission(self, key, label)

    def running(self, key: object) -> int:
        return self._counts.get(key, 0)


class _Admission:
    # A plain context manager: a generator-based one costs several times more per request.
    __slots__ = ("counts", "key", "label", "counted")

    def __init__(self, counts: InFlight, key: object, label: str):
        self.counts = counts
        self.key = key
        self.label = label
        self.counted = False

    def __enter__(self) -> None:
        limit = settings.MAX_INFLIGHT_PER_MODEL
        if limit <= 0:
            return
        counts = self.counts
        with counts._lock:
            running = counts._counts.get(self.key, 0)
            if running >= limit:
                raise ModelOverloaded(
                    f"{self.label} is already running {running} requests in this server process "
                    f"(MAX_INFLIGHT_PER_MODEL={limit}). Retry shortly.",
                    retry_after=1,
                )
            counts._counts[self.key] = running + 1
        self.counted = True

    def __exit__(self, *exc_info) -> None:
        if not self.counted:
            return
        counts = self.counts
        with counts._lock:
            left = counts._counts[self.key] - 1
            if left:
                counts._counts[self.key] = left
            else:
                del counts._counts[self.key]


in_flight = InFlight()
