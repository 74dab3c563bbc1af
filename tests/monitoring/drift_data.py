"""Iris-like traffic for the drift tests: the iris measurements, resampled with a little noise
(seeded), so that a reference and a window are two samples of one distribution; and recorded
predictions written with the times a test needs, their outputs computed by the real model."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta
from functools import cache

import numpy as np
import onnxruntime as ort

from inference.models import Prediction
from registry.models import MLModel

COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@cache
def _iris() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data.astype(np.float64)


def iris_rows(count: int, *, seed: int, shift: dict[int, float] | None = None) -> np.ndarray:
    """``count`` samples like iris (float32); ``shift={0: 3.0}`` moves feature 0 by 3 of its
    standard deviations."""
    rng = np.random.default_rng(seed)
    data = _iris()
    rows = data[rng.integers(0, len(data), count)] + rng.normal(0, 0.05, (count, data.shape[1]))
    for column, deviations in (shift or {}).items():
        rows[:, column] += deviations * data[:, column].std()
    return rows.astype(np.float32)


def as_csv(rows: np.ndarray, *, header: tuple[str, ...] | None = COLUMNS) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    if header:
        writer.writerow(header)
    writer.writerows(rows.tolist())
    return text.getvalue().encode()


@cache
def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def record(model: MLModel, onnx: bytes, rows: np.ndarray, *, at: datetime, per_request: int = 10) -> None:
    """Recorded predictions of ``rows`` (``per_request`` rows each) at times just before ``at``,
    as the history writer stores them: the request's input_data and the model's rendered outputs."""
    session = _session(onnx)
    names = [output.name for output in session.get_outputs()]
    predictions = []
    for index, start in enumerate(range(0, len(rows), per_request)):
        batch = rows[start : start + per_request]
        outputs = dict(zip(names, session.run(None, {"X": batch}), strict=True))
        predictions.append(
            Prediction(
                id=uuid.uuid4(),
                model=model,
                model_name=model.name,
                model_version=model.version,
                input_data={"X": batch.tolist()},
                output_data={name: value.tolist() for name, value in outputs.items()},
                inference_time_ms=0.1,
                total_time_ms=0.2,
                created_at=at - timedelta(seconds=1 + index),
            )
        )
    Prediction.objects.bulk_create(predictions)
