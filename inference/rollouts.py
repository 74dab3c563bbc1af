"""A rollout as ops look at it: the split, each version's live serving figures side by side, the
shadow's agreement, and the alias's audit trail. Read by the rollout API
(inference.rollout_views) and the alias admin's rollout panel (console.rollout_panel).

Figures are sums of the per-minute rows every server process writes (inference.models
ServingMinute for the primary and the candidate, ShadowMinute for the shadow) since the start
of the minute `minutes` ago; the last few seconds may not be counted yet.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Max, Sum
from django.utils import timezone

from inference.models import ShadowMinute
from inference.stats import serving_summary
from registry import selectors
from registry.models import ModelAlias, Rollout
from registry.rollouts import GUARD_FIELDS

WINDOWS = (15, 60)  # minutes: what the panel and the API offer


def split(rollout: Rollout | None) -> dict[str, float]:
    """Percent of the alias's requests per role."""
    weight = rollout.weight if rollout is not None and rollout.candidate_id else 0.0
    return {"primary": round(100.0 - weight, 3), "candidate": round(weight, 3)}


def _versions(alias: ModelAlias, rollout: Rollout | None, since) -> list[dict[str, Any]]:
    roles = [("primary", alias.model)]
    if rollout is not None and rollout.candidate is not None:
        roles.append(("candidate", rollout.candidate))
    if rollout is not None and rollout.shadow is not None:
        roles.append(("shadow", rollout.shadow))
    served = {row["model_id"]: row for row in serving_summary(since=since) if row["model_name"] == alias.name}
    rows = []
    for role, model in roles:
        row = served.get(model.pk, {})
        requests, errors = row.get("requests", 0), row.get("errors", 0)
        rows.append(
            {
                "role": role,
                "version": model.version,
                "status": model.status,
                "requests": requests,
                "errors": errors,
                "error_rate": round(errors / requests, 4) if requests else None,
                "p50_ms": row.get("p50_ms"),
                "p95_ms": row.get("p95_ms"),
            }
        )
    return rows


def shadow_figures(alias: ModelAlias, rollout: Rollout | None, since) -> dict[str, Any] | None:
    """The shadow's copies since `since` (None without a shadow): agreement is agreements / compared."""
    if rollout is None or rollout.shadow is None:
        return None
    fields = ("copies", "dropped", "errors", "compared", "agreements")
    fields = (*fields, "primary_latency_sum_ms", "shadow_latency_sum_ms")
    row = ShadowMinute.objects.filter(shadow_id=rollout.shadow_id, minute__gte=since).aggregate(
        **{field: Sum(field) for field in fields}, max_abs_diff=Max("max_abs_diff"), max_rel_diff=Max("max_rel_diff")
    )
    compared = row["compared"] or 0
    return {
        "version": rollout.shadow.version,
        "percent": rollout.shadow_percent,
        "copies": row["copies"] or 0,
        "dropped": row["dropped"] or 0,
        "errors": row["errors"] or 0,
        "compared": compared,
        "agreement": round((row["agreements"] or 0) / compared, 4) if compared else None,
        "max_abs_diff": row["max_abs_diff"],
        "max_rel_diff": row["max_rel_diff"],
        "primary_mean_ms": round(row["primary_latency_sum_ms"] / compared, 3) if compared else None,
        "shadow_mean_ms": round(row["shadow_latency_sum_ms"] / compared, 3) if compared else None,
    }


def rollout_report(*, name: str, alias: str, minutes: int = WINDOWS[0], events: int = 20) -> dict[str, Any]:
    """The alias, its rollout (None without one) and the live figures of the last `minutes`."""
    row = ModelAlias.objects.select_related("model").filter(name=name, alias=alias).first()
    if row is None:
        raise selectors.alias_not_found(name=name, alias=alias)
    rollout = Rollout.objects.select_related("candidate", "shadow").filter(alias=row).first()
    since = (timezone.now() - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    described = None
    if rollout is not None:
        described = {
            "candidate": rollout.candidate.version if rollout.candidate else None,
            "weight": rollout.weight,
            "shadow": rollout.shadow.version if rollout.shadow else None,
            "shadow_percent": rollout.shadow_percent,
            "guard": {field.removeprefix("guard_"): getattr(rollout, field) for field in GUARD_FIELDS},
            "guard_tripped_at": rollout.guard_tripped_at,
            "guard_reason": rollout.guard_reason,
            "created_at": rollout.created_at,
            "updated_at": rollout.updated_at,
        }
    trail = selectors.alias_events(name=name).filter(alias=alias)[:events]
    return {
        "name": name,
        "alias": alias,
        "version": row.model.version,
        "rollout": described,
        "split": split(rollout),
        "window_minutes": minutes,
        "versions": _versions(row, rollout, since),
        "shadow": shadow_figures(row, rollout, since),
        "events": list(trail),
    }
