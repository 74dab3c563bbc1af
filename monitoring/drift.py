"""Drift: a version's recorded inputs and outputs over a window, against its reference.

For each window of DRIFT_WINDOWS ending now, the window's predictions (monitoring.recorded: a
random sample of about DRIFT_SAMPLE_ROWS where there are more) are read a chunk at a time and
every feature of the reference (monitoring.features) is counted against the reference's bins
or classes (monitoring.distributions): memory stays flat whatever the window holds.

A feature's level, with its model name's thresholds (monitoring.models.Thresholds, else the
DRIFT_* settings):

- ``idle``: fewer than ``min_rows`` samples of it in the window, nothing judged;
- ``red``: PSI >= ``psi_red`` and the two-sample test's p-value < ``p_value``;
- ``amber``: PSI >= ``psi_amber`` and p-value < ``p_value``;
- ``green`` otherwise.

Both conditions, because each alone misleads: on large windows a test finds differences too
small to matter, and on small ones the PSI of a few samples is noise. A window's level is
its worst feature's (idle only if every feature is idle).

`latest_for(model_ids)` is what the console shows: each version's latest results.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from monitoring import features as F
from monitoring import recorded
from monitoring.distributions import WindowClasses, WindowNumbers, compare
from monitoring.models import DriftLevel, DriftResult, Thresholds, drift_defaults
from monitoring.reference import batches_of, feed, rng_for

_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_RANK = {DriftLevel.IDLE: 0, DriftLevel.GREEN: 1, DriftLevel.AMBER: 2, DriftLevel.RED: 3}


def window_length(window: str) -> timedelta:
    """``30m``, ``1h``, ``1d`` as a timedelta (DRIFT_WINDOWS is checked at start-up)."""
    return timedelta(**{_UNITS[window[-1]]: int(window[:-1])})


def thresholds_for(name: str) -> dict[str, float]:
    own = Thresholds.objects.filter(name=name).first()
    return own.drift_effective() if own is not None else drift_defaults()


def worst(levels: Iterable[str]) -> str:
    return max(levels, key=lambda level: _RANK[DriftLevel(level)], default=DriftLevel.IDLE)


def feature_level(numbers: dict[str, Any], thresholds: dict[str, float]) -> str:
    if numbers["rows"] < thresholds["min_rows"] or numbers["psi"] is None:
        return DriftLevel.IDLE
    significant = numbers["p_value"] is not None and numbers["p_value"] < thresholds["p_value"]
    if significant and numbers["psi"] >= thresholds["psi_red"]:
        return DriftLevel.RED
    if significant and numbers["psi"] >= thresholds["psi_amber"]:
        return DriftLevel.AMBER
    return DriftLevel.GREEN


def compute(
    *, model_id, summary: dict[str, Any], window: str, end: datetime, thresholds: dict[str, float]
) -> dict[str, Any]:
    """One window's drift of one version, as the fields of its DriftResult."""
    start = end - window_length(window)
    plan = F.Plan(features=[F.Feature.from_dict(entry) for entry in summary["features"]], skipped=[])
    rng = rng_for(model_id, window, end.isoformat())
    accumulators = [
        WindowNumbers(entry, rng) if entry["kind"] == F.NUMERIC else WindowClasses(entry)
        for entry in summary["features"]
    ]
    found = recorded.window(model_id=model_id, start=start, end=end, sample_rows=settings.DRIFT_SAMPLE_ROWS)
    rows = 0
    for documents in found.chunks:
        batches = batches_of(plan, documents)
        rows += max((len(batch) for batch in batches.values() if batch is not None), default=0)
        feed(plan, accumulators, batches)
    results = []
    for entry, accumulator in zip(summary["features"], accumulators, strict=True):
        numbers = compare(entry, accumulator)
        results.append(
            {"name": entry["name"], "source": entry["source"], "kind": entry["kind"], **numbers}
            | {"level": feature_level(numbers, thresholds)}
        )
    judged = [result["level"] for result in results if result["level"] != DriftLevel.IDLE]
    return {
        "window_start": start,
        "window_end": end,
        "predictions": found.predictions,
        "rows": rows,
        "sampled": found.sampled,
        "level": worst(judged) if judged else DriftLevel.IDLE,
        "features": results,
    }


def latest_for(model_ids: Iterable) -> dict[Any, dict[str, Any]]:
    """Each version's latest drift, for the console (one query):

    ``{model_id: {"level", "window", "windows": {window: level}, "computed_at", "features":
    [{name, source, kind, psi, p_value, test, level, rows, reference_counts, window_counts,
    bin_edges | categories}]}}``, the features those of its worst window (the shortest of
    equals). Versions without results are absent.
    """
    order = {window: index for index, window in enumerate(settings.DRIFT_WINDOWS)}
    by_model: dict[Any, list[DriftResult]] = {}
    for result in DriftResult.objects.filter(model_id__in=list(model_ids), window__in=list(order)):
        by_model.setdefault(result.model_id, []).append(result)
    latest = {}
    for model_id, results in by_model.items():
        results.sort(key=lambda result: order[result.window])
        shown = max(results, key=lambda result: _RANK[DriftLevel(result.level)])
        latest[model_id] = {
            "level": shown.level,
            "window": shown.window,
            "windows": {result.window: result.level for result in results},
            "computed_at": shown.computed_at,
            "features": shown.features,
        }
    return latest
