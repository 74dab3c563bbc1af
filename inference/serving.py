"""Which model row a predict request means, cached per process so the hot path makes no query.

Rows are cached by id, by (name, version) and by name for "the latest ready version", for up to
SERVING_CACHE_SECONDS. Every registry write notifies all processes (modelforge_site.invalidation),
which clear this cache at once: an archive or a re-upload is seen by every process within
milliseconds, and within the TTL even if a notification were lost.
"""

from __future__ import annotations

import threading
import time
import uuid

from django.conf import settings

from modelforge_site import invalidation
from registry import selectors
from registry.errors import ModelNotFound
from registry.models import MLModel
from registry.services import SERVING_OPTIONS

SERVING_FIELDS = (
    "id",
    "name",
    "version",
    "status",
    "file_sha256",
    "input_schema",
    "output_schema",
    "error_code",
    *SERVING_OPTIONS,
)
MAX_ENTRIES = 10_000


class ServingCache:
    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[MLModel, float]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _get(self, key: tuple, load) -> MLModel:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[1] <= settings.SERVING_CACHE_SECONDS:
            return entry[0]
        model = load()
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (model, time.monotonic())
        return model

    def by_id(self, model_id: uuid.UUID | str) -> MLModel:
        def load() -> MLModel:
            model = MLModel.objects.only(*SERVING_FIELDS).filter(pk=model_id).first()
            if model is None:
                raise ModelNotFound("No model with this id. List models with GET /api/v1/models.")
            return model

        return self._get(("id", str(model_id)), load)

    def by_name(self, name: str, version: str | None = None) -> MLModel:
        """A given version of a name, or its latest ready version."""
        if version:
            return self._get(
                ("version", name, version),
                lambda: selectors.model_by_name_version(name=name, version=version, fields=SERVING_FIELDS),
            )
        return self._get(("latest", name), lambda: selectors.model_latest_ready(name=name, fields=SERVING_FIELDS))


serving_cache = ServingCache()
invalidation.on_change("models", serving_cache.clear)
