"""Recorded predictions (inference.models.Prediction) read for drift, a chunk at a time.

Only ``input_data`` and ``output_data`` are read, through a server-side cursor on PostgreSQL
(``iterator(chunk_size=...)``), so a window of a million predictions never sits in memory. The
day partitions of the history (inference.history_partitions) are pruned by the ``created_at``
bounds. A window holding more than DRIFT_SAMPLE_ROWS predictions is read as a random sample
(``random() < DRIFT_SAMPLE_ROWS / count``, in the database: the rows left out are never sent).
A prediction whose input was too large to record (``input_truncated``) still gives its outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

import orjson
from django.db.models import TextField
from django.db.models.functions import Cast, Random

from inference.models import Prediction

CHUNK = 2_000


@dataclass(frozen=True)
class Documents:
    """One chunk: the recorded ``input_data`` and ``output_data`` documents (None where absent)."""

    inputs: list[dict | None]
    outputs: list[dict | None]


@dataclass(frozen=True)
class Window:
    predictions: int  # in the window
    sampled: bool
    chunks: Iterator[Documents]


def _loads(texts: list[str | None]) -> list:
    """Many JSON documents in one orjson call (one array), None for SQL NULL."""
    return orjson.loads("[" + ",".join("null" if text is None else text for text in texts) + "]")


def _chunks(queryset) -> Iterator[Documents]:
    # The JSON columns as text, parsed by orjson: the JSONField's own decoding (json.loads per
    # value) was half of a window's time.
    rows = (
        queryset.annotate(input_text=Cast("input_data", TextField()), output_text=Cast("output_data", TextField()))
        .values_list("input_text", "output_text")
        .iterator(chunk_size=CHUNK)
    )
    while block := list(islice(rows, CHUNK)):
        yield Documents(_loads([row[0] for row in block]), _loads([row[1] for row in block]))


def window(*, model_id, start: datetime, end: datetime, sample_rows: int) -> Window:
    """The predictions of one version recorded in [start, end)."""
    queryset = Prediction.objects.filter(model_id=model_id, created_at__gte=start, created_at__lt=end).order_by()
    count = queryset.count()
    sampled = bool(sample_rows) and count > sample_rows
    if sampled:
        queryset = queryset.alias(draw=Random()).filter(draw__lt=sample_rows / count)
    return Window(predictions=count, sampled=sampled, chunks=_chunks(queryset))


def first(*, model_id, count: int) -> Iterator[Documents]:
    """The first ``count`` predictions recorded for a version."""
    queryset = Prediction.objects.filter(model_id=model_id).order_by("created_at")[:count]
    return _chunks(queryset)


def has_at_least(*, model_id, count: int) -> bool:
    return Prediction.objects.filter(model_id=model_id).order_by()[count - 1 : count].exists()
