"""Drift on /metrics: read from the latest drift results when scraped (the same whichever
process answers), for ready versions only.

- ``modelforge_drift_psi{model, version, window, feature}``: each feature's PSI (absent while
  too few samples gave none);
- ``modelforge_drift_level{model, version, window}``: 0 green, 1 amber, 2 red, -1 idle.

Label cardinality is bounded: a version has at most DRIFT_MAX_FEATURES features (and the
collector cuts at that many should the setting have been lowered since its reference was
summarised), over the DRIFT_WINDOWS windows.
"""

from __future__ import annotations

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily

from monitoring.models import DriftLevel, DriftResult
from registry.models import MLModel

LEVEL_VALUES = {DriftLevel.IDLE: -1, DriftLevel.GREEN: 0, DriftLevel.AMBER: 1, DriftLevel.RED: 2}


class DriftCollector:
    def collect(self):
        psi = GaugeMetricFamily(
            "modelforge_drift_psi",
            "Population Stability Index of a feature over a window, against the version's reference.",
            labels=["model", "version", "window", "feature"],
        )
        level = GaugeMetricFamily(
            "modelforge_drift_level",
            "Drift level of a version over a window: 0 green, 1 amber, 2 red, -1 idle (too few samples).",
            labels=["model", "version", "window"],
        )
        rows = (
            DriftResult.objects.filter(model__status=MLModel.Status.READY, window__in=settings.DRIFT_WINDOWS)
            .order_by("model__name", "model__version_key", "window")
            .values_list("model__name", "model__version", "window", "level", "features")
        )
        for name, version, window, judged, features in rows.iterator(chunk_size=500):
            level.add_metric([name, version, window], LEVEL_VALUES[DriftLevel(judged)])
            for feature in features[: settings.DRIFT_MAX_FEATURES]:
                if feature.get("psi") is not None:
                    psi.add_metric([name, version, window, feature["name"]], feature["psi"])
        yield psi
        yield level
