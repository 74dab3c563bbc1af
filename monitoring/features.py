"""Which features of a model version drift is watched on, and how they are read from tensors.

A *feature* is one number or one category per sample (a row along the batch dimension):

- each column of a 2-D numeric tensor with a fixed width (``X[0]``, ``X[1]``, ...), and a 1-D
  numeric tensor (or ``[batch, 1]``) as one feature: summarised by quantile bins;
- a 1-D (or ``[batch, 1]``) output of integers, booleans or strings: its classes, summarised
  by their frequencies (``categorical``);
- any other tensor (images, sequences of vectors, a variable width): its per-sample mean, named
  ``<tensor> (mean)``, with summary statistics of its elements.

Tensors the APIs cannot carry (sequences of maps, e.g. a ZipMap output) are left out, with the
reason in the plan's ``skipped``. At most DRIFT_MAX_FEATURES features per version: the
outputs' first (there are few, and they say whether the model's behaviour moved), then the
inputs' in order. A feature's ``values(batch)`` takes a tensor's batch as predict receives or
renders it (a numpy array, or nested lists with None for NaN) and returns one value per sample.

Pure: imports numpy and nothing of ours but the datatype table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.tensor_types import FLOAT_DATATYPES, NUMERIC_DATATYPES

NUMERIC = "numeric"
CATEGORICAL = "categorical"
_CATEGORICAL_OUTPUTS = frozenset({"BOOL", "BYTES"}) | (NUMERIC_DATATYPES - FLOAT_DATATYPES)


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # "input" or "output"
    tensor: str
    kind: str  # NUMERIC or CATEGORICAL
    statistic: str  # "column", "value" or "mean"
    column: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "tensor": self.tensor,
            "kind": self.kind,
            "statistic": self.statistic,
            "column": self.column,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feature:
        return cls(
            name=data["name"],
            source=data["source"],
            tensor=data["tensor"],
            kind=data["kind"],
            statistic=data["statistic"],
            column=data.get("column"),
        )


@dataclass(frozen=True)
class Plan:
    features: list[Feature]
    skipped: list[str]  # why a tensor or features were left out, in words


def plan_features(input_schema: list[dict], output_schema: list[dict], *, max_features: int) -> Plan:
    """The features of a version with these schemas (registry.onnx_inspect's)."""
    skipped: list[str] = []
    inputs = [feature for entry in input_schema for feature in _of_entry(entry, "input", skipped)]
    outputs = [feature for entry in output_schema for feature in _of_entry(entry, "output", skipped)]
    kept_outputs = outputs[:max_features]
    kept_inputs = inputs[: max_features - len(kept_outputs)]
    left_out = len(inputs) + len(outputs) - len(kept_inputs) - len(kept_outputs)
    if left_out:
        skipped.append(f"{left_out} feature(s) over DRIFT_MAX_FEATURES={max_features} (outputs are kept first)")
    return Plan(features=kept_inputs + kept_outputs, skipped=skipped)


def _of_entry(entry: dict, source: str, skipped: list[str]) -> list[Feature]:
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if entry.get("kind") != "tensor" or datatype is None or shape is None:
        skipped.append(f"{source} '{name}' ({entry.get('onnx_type')}): not a tensor")
        return []
    sample_shape = list(shape[1:])
    one_value = sample_shape in ([], [1])
    if source == "output" and datatype in _CATEGORICAL_OUTPUTS and one_value:
        return [Feature(name, source, name, CATEGORICAL, "value")]
    if datatype in {"BYTES", "BOOL"}:
        if one_value:
            return [Feature(name, source, name, CATEGORICAL, "value")]
        skipped.append(f"{source} '{name}' ({datatype} {shape}): neither numbers nor one class per sample")
        return []
    if one_value:
        return [Feature(name, source, name, NUMERIC, "value")]
    if len(sample_shape) == 1 and sample_shape[0] > 0:
        return [
            Feature(f"{name}[{column}]", source, name, NUMERIC, "column", column) for column in range(sample_shape[0])
        ]
    return [Feature(f"{name} (mean)", source, name, NUMERIC, "mean")]


# --- reading values ---------------------------------------------------------------------------


def numbers(feature: Feature, batch: Any) -> np.ndarray:
    """One float64 per sample of ``batch`` (NaN where a value is missing); samples that do not
    have the tensor's shape are dropped."""
    if isinstance(batch, np.ndarray):
        array = batch.astype(np.float64, copy=False)
    else:
        try:
            array = np.asarray(batch, dtype=np.float64)
        except (ValueError, TypeError):
            return _numbers_one_by_one(feature, batch)
    if array.ndim == 0:
        return array.reshape(1)
    if feature.statistic == "mean":
        if array.ndim == 1:
            return array
        return array.reshape(array.shape[0], -1).mean(axis=1) if array.shape[0] else np.empty(0)
    if feature.statistic == "column":
        if array.ndim != 2 or array.shape[1] <= feature.column:
            return _numbers_one_by_one(feature, batch)
        return array[:, feature.column]
    return array.reshape(array.shape[0], -1)[:, 0] if array.ndim > 1 else array


def _numbers_one_by_one(feature: Feature, batch: Sequence) -> np.ndarray:
    """Ragged or odd rows (a client's mistake the model still took): each sample on its own."""
    found = []
    for sample in batch:
        try:
            value = np.asarray(sample, dtype=np.float64)
        except (ValueError, TypeError):
            continue
        if feature.statistic == "mean":
            found.append(value.mean() if value.size else np.nan)
        elif feature.statistic == "column":
            if value.ndim == 1 and value.shape[0] > feature.column:
                found.append(value[feature.column])
        elif value.size == 1:
            found.append(value.reshape(-1)[0])
    return np.asarray(found, dtype=np.float64)


def categories(batch: Any) -> list[str]:
    """One class per sample, as text (``"1"``, ``"True"``, ``"cat"``)."""
    values = batch.tolist() if isinstance(batch, np.ndarray) else batch
    if not isinstance(values, list):
        values = [values]
    found = []
    for value in values:
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value is not None:
            found.append(str(value))
    return found
