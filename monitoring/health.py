"""A version's health in one word: green, amber, red (or idle without enough traffic), judged
against its model name's thresholds (monitoring.models.Thresholds, else the defaults).

The dashboard colours versions with it and the threshold watch raises `threshold.crossed`
when a version's level changes; both judge the same numbers the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from monitoring.models import Thresholds, defaults


class Level(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    IDLE = "idle"


def thresholds_for(names: Iterable[str]) -> dict[str, dict[str, float]]:
    """The effective thresholds of each name (one query)."""
    names = set(names)
    own = {row.name: row.effective() for row in Thresholds.objects.filter(name__in=names)}
    return {name: own.get(name) or defaults() for name in names}


def level(
    *, requests: int, server_errors: int, p95_ms: float | None, thresholds: dict[str, float]
) -> tuple[Level, str]:
    """The level and why, in words ("error rate 7.1% ≥ 5.0%")."""
    if requests < thresholds["min_requests"]:
        return Level.IDLE, f"{requests} requests, fewer than {thresholds['min_requests']:g} to judge"
    rate = server_errors / requests if requests else 0.0
    for colour in (Level.RED, Level.AMBER):
        reasons = []
        if rate >= thresholds[f"error_rate_{colour}"]:
            reasons.append(f"server-error rate {rate:.1%} ≥ {thresholds[f'error_rate_{colour}']:.1%}")
        if p95_ms is not None and p95_ms >= thresholds[f"p95_{colour}_ms"]:
            reasons.append(f"p95 {p95_ms:,.1f} ms ≥ {thresholds[f'p95_{colour}_ms']:,.0f} ms")
        if reasons:
            return colour, "; ".join(reasons)
    return Level.GREEN, "within thresholds"
