"""A version's reference: what its inputs and outputs looked like when it was built, summarised
once, per feature (monitoring.features): quantile bins and counts, or class frequencies, and
summary statistics (monitoring.distributions).

Two sources:

- a reference file, in a batch job's formats (JSON Lines, CSV, ``.npy``: jobs.batch_io reads
  and checks it exactly as a job's input, so a column or input that does not fit the model is
  a 400 naming it). Its rows are run through the model to summarise the outputs too. At most
  ``MAX_FILE_ROWS`` rows are read;
- else the version's first DRIFT_REFERENCE_PREDICTIONS recorded predictions, once that many
  have been recorded (the periodic drift run builds it).

The summary document: ``{"rows", "features": [{name, source, tensor, kind, statistic, column,
count, missing, bin_edges + counts + ks_sample + mean/std/min/max | categories + counts}],
"skipped": [why]}``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from inference.services import run_session
from jobs import batch_io
from monitoring import features as F
from monitoring import recorded
from monitoring.distributions import ReferenceClasses, ReferenceNumbers
from monitoring.errors import ReferenceColumns
from registry.models import MLModel

MAX_FILE_ROWS = 100_000

Batches = dict[tuple[str, str], Any]  # (source, tensor) -> the batch of that tensor in one chunk


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from what is being summarised: the same data, the same summary."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_for(model: MLModel) -> F.Plan:
    return F.plan_features(model.input_schema, model.output_schema, max_features=settings.DRIFT_MAX_FEATURES)


def _prepared(plan: F.Plan, batches: Batches) -> Batches:
    """Each numeric tensor converted to float64 once per chunk (not once per column)."""
    prepared = dict(batches)
    for key in {(feature.source, feature.tensor) for feature in plan.features if feature.kind == F.NUMERIC}:
        batch = batches.get(key)
        if batch is not None and not isinstance(batch, np.ndarray):
            # Ragged: monitoring.features reads it sample by sample.
            with contextlib.suppress(ValueError, TypeError):
                prepared[key] = np.asarray(batch, dtype=np.float64)
    return prepared


def feed(plan: F.Plan, accumulators: list, batches: Batches) -> None:
    """Add one chunk's values of every feature to its accumulator (reference or window)."""
    batches = _prepared(plan, batches)
    for feature, accumulator in zip(plan.features, accumulators, strict=True):
        batch = batches.get((feature.source, feature.tensor))
        if batch is None:
            continue
        if feature.kind == F.NUMERIC:
            accumulator.add(F.numbers(feature, batch))
        else:
            accumulator.add(F.categories(batch))


def summarise(plan: F.Plan, chunks: Iterable[Batches], rng: np.random.Generator) -> dict[str, Any]:
    accumulators = [ReferenceNumbers(rng) if f.kind == F.NUMERIC else ReferenceClasses() for f in plan.features]
    rows = 0
    for batches in chunks:
        rows += _rows_of(batches)
        feed(plan, accumulators, batches)
    return {
        "rows": rows,
        "features": [
            {**feature.as_dict(), **accumulator.summary()}
            for feature, accumulator in zip(plan.features, accumulators, strict=True)
        ],
        "skipped": plan.skipped,
    }


def _rows_of(batches: Batches) -> int:
    for batch in batches.values():
        if batch is not None:
            return len(batch)
    return 0


# --- from recorded predictions ----------------------------------------------------------------


def _stacked(documents: list[dict | None], tensor: str) -> list | None:
    """The samples of ``tensor`` across a chunk's documents, one list (rows of every request)."""
    samples: list = []
    for document in documents:
        value = document.get(tensor) if isinstance(document, dict) else None
        if isinstance(value, list):
            samples.extend(value)
    return samples or None


def batches_of(plan: F.Plan, documents: recorded.Documents) -> Batches:
    tensors = {(feature.source, feature.tensor) for feature in plan.features}
    return {
        (source, tensor): _stacked(documents.inputs if source == "input" else documents.outputs, tensor)
        for source, tensor in tensors
    }


def from_predictions(model: MLModel) -> dict[str, Any]:
    plan = plan_for(model)
    chunks = recorded.first(model_id=model.pk, count=settings.DRIFT_REFERENCE_PREDICTIONS)
    return summarise(plan, (batches_of(plan, documents) for documents in chunks), rng_for(model.pk, "predictions"))


# --- from a reference file ---------------------------------------------------------------------


def check_columns(path: Path, input_format: str, model: MLModel) -> None:
    """A CSV file's header against the model's input, naming the columns that do not fit
    (jobs.batch_io only counts them)."""
    if input_format != "csv" or len(model.input_schema) != 1:
        return
    entry = model.input_schema[0]
    shape = entry.get("shape") or []
    if len(shape) != 2 or shape[1] <= 0:
        return
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for cells in csv.reader(islice(handle, 1000)):
            if not any(cell.strip() for cell in cells):
                continue
            if not _is_header(cells) or len(cells) == shape[1]:
                return
            if len(cells) > shape[1]:
                extra = ", ".join(f"{column} '{name}'" for column, name in enumerate(cells, 1) if column > shape[1])
                raise ReferenceColumns(
                    f"The reference file has {len(cells)} columns; input '{entry['name']}' takes {shape[1]} features. "
                    f"Column {extra} does not match any of the model's inputs: remove it."
                )
            missing = ", ".join(str(column) for column in range(len(cells) + 1, shape[1] + 1))
            raise ReferenceColumns(
                f"The reference file has {len(cells)} columns; input '{entry['name']}' takes {shape[1]} features: "
                f"column {missing} ('{entry['name']}[{len(cells)}]' onwards) is missing."
            )


def _is_header(cells: list[str]) -> bool:
    """A header names its columns: some cell is text (as jobs.batch_io reads CSV files)."""
    for cell in cells:
        try:
            float(cell)
        except ValueError:
            if cell.strip():
                return True
    return False


def _file_chunks(handle, input_format: str, model: MLModel) -> Iterator[Batches]:
    plan_outputs = {feature.tensor for feature in plan_for(model).features if feature.source == "output"}
    rows = 0
    for chunk in batch_io.read_chunks(handle, input_format, model, batch_io.chunk_rows_for(model)):
        feeds = batch_io.decode_chunk(chunk, model)
        if rows + chunk.rows > MAX_FILE_ROWS:
            feeds = {name: value[: MAX_FILE_ROWS - rows] for name, value in feeds.items()}
        batches: Batches = {("input", name): value for name, value in feeds.items()}
        if plan_outputs:
            names, values, _ms = run_session(model, feeds)
            batches.update({("output", name): value for name, value in zip(names, values, strict=True)})
        yield batches
        rows += len(next(iter(feeds.values())))
        if rows >= MAX_FILE_ROWS:
            return


def from_file(model: MLModel, path: Path, input_format: str) -> dict[str, Any]:
    """The summary of a reference file, checked against the model first (400s name the column,
    input or row that does not fit)."""
    check_columns(path, input_format, model)
    batch_io.inspect_file(path, input_format, model)
    plan = plan_for(model)
    with open(path, "rb") as handle:
        return summarise(plan, _file_chunks(handle, input_format, model), rng_for(model.pk, "file"))


def read_upload(upload) -> tuple[Path, bool]:
    """The uploaded file's path on disk (and whether it is a copy to delete afterwards)."""
    if hasattr(upload, "temporary_file_path"):
        return Path(upload.temporary_file_path()), False
    with tempfile.NamedTemporaryFile(delete=False, dir=settings.FILE_UPLOAD_TEMP_DIR or None) as copy:
        for part in upload.chunks():
            copy.write(part)
    return Path(copy.name), True
