"""Summaries of one feature's values, built a chunk at a time in bounded memory, and the drift
statistics between a reference summary and a window's.

Reference (``ReferenceNumbers``, ``ReferenceClasses``): a numeric feature keeps a uniform
random sample of at most ``REFERENCE_SAMPLE`` values (reservoir sampling, Vitter's algorithm R)
and exact running statistics; at the end its quantile bins (``BINS`` of equal reference mass,
fewer where values repeat) and their counts come from that sample, and ``KS_POINTS`` quantiles
of it are kept as the reference side of the Kolmogorov-Smirnov test. A categorical feature
counts its classes exactly, up to ``MAX_CLASSES`` (the rest as ``OTHER``).

Window (``WindowNumbers``, ``WindowClasses``): counts against the reference's bin edges
(or classes; a class the reference never saw counts as ``OTHER``), and for numeric features a
reservoir of at most ``WINDOW_SAMPLE`` values for the KS test. So the KS test runs on bounded
samples (the reference's quantile sketch against a uniform sample of the window), never on
binned counts; PSI runs on the bins.

Statistics (`compare`): the Population Stability Index over the bins, sum((w - r) * ln(w / r))
with proportions floored at ``PSI_FLOOR`` (an empty bin would make it infinite), and
scipy.stats.ks_2samp (numeric) or scipy.stats.chi2_contingency on the 2 x classes table of
counts (categorical). NaN values are counted as ``missing`` and left out of both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

BINS = 10
REFERENCE_SAMPLE = 20_000
KS_POINTS = 1_000
WINDOW_SAMPLE = 5_000
MAX_CLASSES = 50
OTHER = "(other)"
PSI_FLOOR = 1e-4


class Reservoir:
    """A uniform random sample of at most ``size`` of the values added (algorithm R, a chunk at
    a time: value number t replaces a random slot with probability size / t)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self._values = np.empty(size, dtype=np.float64)
        self._rng = rng
        self.filled = 0
        self.seen = 0

    def add(self, values: np.ndarray) -> None:
        size = len(self._values)
        take = min(size - self.filled, len(values))
        if take:
            self._values[self.filled : self.filled + take] = values[:take]
            self.filled += take
            self.seen += take
        rest = values[take:]
        if len(rest):
            positions = np.arange(self.seen + 1, self.seen + len(rest) + 1, dtype=np.float64)
            slots = (self._rng.random(len(rest)) * positions).astype(np.int64)
            kept = slots < size
            # In order, as the sequential algorithm would: numpy writes repeated slots last-wins.
            self._values[slots[kept]] = rest[kept]
            self.seen += len(rest)

    def sample(self) -> np.ndarray:
        return self._values[: self.filled]


def _finite(values: np.ndarray) -> tuple[np.ndarray, int]:
    finite = np.isfinite(values)
    return (values, 0) if finite.all() else (values[finite], int(len(values) - finite.sum()))


# --- reference ---------------------------------------------------------------------------------


class ReferenceNumbers:
    def __init__(self, rng: np.random.Generator):
        self._sample = Reservoir(REFERENCE_SAMPLE, rng)
        self.count = 0
        self.missing = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._min = math.inf
        self._max = -math.inf

    def add(self, values: np.ndarray) -> None:
        values, missing = _finite(values)
        self.missing += missing
        if not len(values):
            return
        self.count += len(values)
        self._sum += float(values.sum())
        self._sum_sq += float(np.square(values).sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))
        self._sample.add(values)

    def summary(self) -> dict[str, Any]:
        sample = np.sort(self._sample.sample())
        if not len(sample):
            return {"count": 0, "missing": self.missing, "bin_edges": [], "counts": [], "ks_sample": []}
        interior = np.unique(np.quantile(sample, np.linspace(0, 1, BINS + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(interior, sample, side="left"), minlength=len(interior) + 1)
        mean = self._sum / self.count
        variance = max(self._sum_sq / self.count - mean * mean, 0.0)
        points = sample if len(sample) <= KS_POINTS else np.quantile(sample, (np.arange(KS_POINTS) + 0.5) / KS_POINTS)
        return {
            "count": self.count,
            "missing": self.missing,
            "mean": mean,
            "std": math.sqrt(variance),
            "min": self._min,
            "max": self._max,
            # Bin i holds (edges[i], edges[i + 1]]; the first and last reach to -inf and +inf.
            "bin_edges": [self._min, *interior.tolist(), self._max],
            "counts": counts.tolist(),
            "ks_sample": points.tolist(),
        }


class ReferenceClasses:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.missing = 0

    def add(self, values: list[str]) -> None:
        counts = self.counts
        for value in values:
            if value in counts:
                counts[value] += 1
            elif len(counts) < MAX_CLASSES:
                counts[value] = 1
            else:
                counts[OTHER] = counts.get(OTHER, 0) + 1

    def summary(self) -> dict[str, Any]:
        classes = sorted(self.counts, key=lambda name: (name == OTHER, -self.counts[name], name))
        return {
            "count": sum(self.counts.values()),
            "missing": self.missing,
            "categories": classes,
            "counts": [self.counts[name] for name in classes],
        }


# --- window ------------------------------------------------------------------------------------


class WindowNumbers:
    def __init__(self, reference: dict[str, Any], rng: np.random.Generator):
        self._interior = np.asarray(reference["bin_edges"][1:-1], dtype=np.float64)
        self.counts = np.zeros(max(len(reference["counts"]), 1), dtype=np.int64)
        self._sample = Reservoir(WINDOW_SAMPLE, rng)
        self.missing = 0

    def add(self, values: np.ndarray) -> None:
        values, missing = _finite(values)
        self.missing += missing
        if len(values):
            self.counts += np.bincount(np.searchsorted(self._interior, values, side="left"), minlength=len(self.counts))
            self._sample.add(values)

    def sample(self) -> np.ndarray:
        return self._sample.sample()


class WindowClasses:
    def __init__(self, reference: dict[str, Any]):
        self.categories = list(reference["categories"])
        if OTHER not in self.categories:
            self.categories.append(OTHER)
        self._index = {name: index for index, name in enumerate(self.categories)}
        self.counts = np.zeros(len(self.categories), dtype=np.int64)
        self.missing = 0

    def add(self, values: list[str]) -> None:
        index, other = self._index, self._index[OTHER]
        found = np.fromiter((index.get(value, other) for value in values), dtype=np.int64, count=len(values))
        self.counts += np.bincount(found, minlength=len(self.counts))


# --- statistics ----------------------------------------------------------------------------------


def psi(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    reference = np.maximum(reference_counts / max(reference_counts.sum(), 1), PSI_FLOOR)
    window = np.maximum(window_counts / max(window_counts.sum(), 1), PSI_FLOOR)
    return float(np.sum((window - reference) * np.log(window / reference)))


def ks_p_value(reference_points: list[float], window_sample: np.ndarray) -> float | None:
    if not reference_points or not len(window_sample):
        return None
    return float(stats.ks_2samp(np.asarray(reference_points), window_sample).pvalue)


def chi2_p_value(reference_counts: np.ndarray, window_counts: np.ndarray) -> float | None:
    if not window_counts.sum() or not reference_counts.sum():
        return None
    table = np.vstack([reference_counts, window_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0  # one class on both sides: nothing to tell apart
    return float(stats.chi2_contingency(table).pvalue)


def compare(reference: dict[str, Any], window: WindowNumbers | WindowClasses) -> dict[str, Any]:
    """The feature's numbers over a window: PSI, the test and its p-value, the counts."""
    if isinstance(window, WindowClasses):
        categories = reference["categories"]
        reference_counts = np.zeros(len(window.categories), dtype=np.int64)
        reference_counts[: len(categories)] = reference["counts"]
        p_value, test = chi2_p_value(reference_counts, window.counts), "chi2"
        bins = {"categories": window.categories}
    else:
        reference_counts = np.asarray(reference["counts"] or [0], dtype=np.int64)
        p_value, test = ks_p_value(reference.get("ks_sample", []), window.sample()), "ks"
        bins = {"bin_edges": reference["bin_edges"]}
    rows = int(window.counts.sum())
    return {
        "rows": rows,
        "missing": window.missing,
        "psi": psi(reference_counts, window.counts) if rows and reference_counts.sum() else None,
        "test": test,
        "p_value": p_value,
        **bins,
        "reference_counts": reference_counts.tolist(),
        "window_counts": window.counts.tolist(),
    }
