"""In-process counters of the inference path, per model name and version.

`inferences` counts requests served by running the model and `executions` the session.run
calls that served them: their ratio is the mean batch size. Counters are per process; the
Prometheus endpoint (ops console) exports them with the process as a label.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class InferenceMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], dict[str, int]] = defaultdict(
            lambda: {"inferences": 0, "executions": 0, "rows": 0, "rejected": 0}
        )

    def executed(self, label: tuple[str, str], *, requests: int, rows: int) -> None:
        with self._lock:
            counters = self._counters[label]
            counters["inferences"] += requests
            counters["executions"] += 1
            counters["rows"] += rows

    def rejected(self, label: tuple[str, str]) -> None:
        with self._lock:
            self._counters[label]["rejected"] += 1

    def snapshot(self) -> dict[tuple[str, str], dict[str, int]]:
        with self._lock:
            return {label: dict(values) for label, values in self._counters.items()}

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()


metrics = InferenceMetrics()
