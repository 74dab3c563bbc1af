"""Rollouts: moving an alias to a new version gradually, every step audited.

An alias with a rollout (registry.models.Rollout) keeps its version, the primary; a candidate
version of the same name takes `weight` percent of the requests through the alias
(inference.routing picks per request), and a shadow version gets a copy of `shadow_percent`
percent of them (inference.shadow). Changes:

- `rollout_set`: start a rollout or change it (candidate, weight, shadow, guard settings);
- `rollout_promote`: the candidate becomes the alias's version, the rollout ends;
- `rollout_abort`: the rollout ends, the alias keeps its version;
- `rollout_trip`: the guard (inference.rollout_guard) sets the candidate's weight to 0.

Each is one transaction that locks the alias row (and the versions it points the alias's
traffic at, first, in alias_set's order: versions, then alias), writes an AliasEvent with the
actor, the versions and the weights from -> to, tells every server process to drop its cached
resolution (core.invalidation) and raises a domain event (core.events) once it commits.

Refusals, in the API and the admin alike: 404 `alias_not_found`, `model_not_found` (no such
version of the name), `rollout_not_found`; 400 `invalid_weight`, `invalid_shadow_percent`,
`other_name`, `candidate_is_primary`, `shadow_is_primary`, `no_candidate`, `invalid_rollout`
(a guard setting out of range); 409 `model_not_ready` (a candidate or shadow that is not ready).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import events, invalidation
from registry import selectors
from registry.errors import InvalidRollout, ModelNotReady, RolloutInProgress, RolloutNotFound
from registry.models import AliasEvent, MLModel, ModelAlias, Rollout
from registry.services import _actor_of_event

logger = logging.getLogger(__name__)
Status = MLModel.Status

UNSET: Any = object()  # a setting rollout_set leaves as it is
GUARD_FIELDS = (
    "guard_enabled",
    "guard_error_margin",
    "guard_latency_margin",
    "guard_min_requests",
    "guard_window_minutes",
)
GUARD_ACTOR = "guard"  # the actor label of the guard's own events


@dataclass(frozen=True)
class RolloutChange:
    """What rollout_set did: the rollout as it is now and its audit rows (none if nothing changed)."""

    rollout: Rollout
    events: list[AliasEvent]


def _percent(value: Any, field: str, code: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0.0 <= number <= 100.0:
        raise InvalidRollout(f"{field} must be a number from 0 to 100 (percent); got {value!r}.", code=code)
    return number


def _version(*, name: str, version: str, other_name: str | None, role: str, primary: MLModel) -> MLModel:
    """The locked, ready version `version` of `name` for `role` (candidate or shadow)."""
    if other_name is not None and other_name != name:
        raise InvalidRollout(
            f"The {role} must be a version of {name}, the alias's model; {other_name} is another model. "
            "A rollout compares versions of one name.",
            code="other_name",
        )
    model = MLModel.objects.select_for_update(no_key=True).filter(name=name, version=version).first()
    if model is None:
        raise selectors.version_not_found(name=name, version=version)
    if model.pk == primary.pk:
        raise InvalidRollout(
            f"{model} is already the alias's version (the primary); choose another version as the {role}.",
            code=f"{role}_is_primary",
        )
    if model.status != Status.READY:
        raise ModelNotReady(
            f"{model} is {model.status}; a rollout's {role} must be a ready version. Validate it first, "
            "or choose another version."
        )
    return model


def _locked_alias(name: str, alias: str) -> ModelAlias:
    current = (
        ModelAlias.objects.select_for_update(of=("self",))
        .select_related("model")
        .filter(name=name, alias=alias)
        .first()
    )
    if current is None:
        raise selectors.alias_not_found(name=name, alias=alias)
    return current


def _event(alias: ModelAlias, action: str, actor, **fields) -> AliasEvent:
    actor_fields = {"actor_label": GUARD_ACTOR} if actor is GUARD_ACTOR else _actor_of_event(actor)
    return AliasEvent.objects.create(name=alias.name, alias=alias.alias, action=action, **actor_fields, **fields)


def _payload(alias: ModelAlias, rollout: Rollout | None, **extra) -> dict:
    data = {"name": alias.name, "alias": alias.alias, "version": alias.model.version}
    if rollout is not None:
        data.update(
            candidate=rollout.candidate.version if rollout.candidate else None,
            weight=rollout.weight,
            shadow=rollout.shadow.version if rollout.shadow else None,
            shadow_percent=rollout.shadow_percent,
        )
    data.update(extra)
    return data


def rollout_set(
    *,
    name: str,
    alias: str,
    candidate: str | None = UNSET,
    candidate_name: str | None = None,
    weight: float = UNSET,
    shadow: str | None = UNSET,
    shadow_name: str | None = None,
    shadow_percent: float = UNSET,
    guard: dict[str, Any] | None = None,
    actor=None,
) -> RolloutChange:
    """Start a rollout on `name`@`alias`, or change the one it has; settings left UNSET keep
    their value (a new rollout starts at weight 0, no shadow, guard off).

    `candidate` and `shadow` are versions of `name` (None: none); `candidate_name` and
    `shadow_name`, when a client names the model too, must be `name`. `weight` and
    `shadow_percent` are percent (0-100). `guard` holds any of GUARD_FIELDS.
    A new candidate starts the rollout again (`rollout_started`, its guard trip cleared);
    a weight change is `weight_changed` (and clears a trip: ops decided); shadow and guard
    changes are `rollout_changed`. Setting what is already set records nothing.
    """
    if weight is not UNSET:
        weight = _percent(weight, "weight", "invalid_weight")
    if shadow_percent is not UNSET:
        shadow_percent = _percent(shadow_percent, "shadow_percent", "invalid_shadow_percent")
    unknown = sorted(set(guard or {}) - set(GUARD_FIELDS))
    if unknown:
        raise InvalidRollout(f"Unknown guard setting(s): {', '.join(unknown)}. Known: {', '.join(GUARD_FIELDS)}.")
    with transaction.atomic():
        # Versions first, then the alias (alias_set's order): the locks keep them ready until commit.
        current_alias = ModelAlias.objects.select_related("model").filter(name=name, alias=alias).first()
        if current_alias is None:
            raise selectors.alias_not_found(name=name, alias=alias)
        primary = current_alias.model
        candidate_model = shadow_model = None
        if candidate not in (UNSET, None):
            candidate_model = _version(
                name=name, version=candidate, other_name=candidate_name, role="candidate", primary=primary
            )
        if shadow not in (UNSET, None):
            shadow_model = _version(name=name, version=shadow, other_name=shadow_name, role="shadow", primary=primary)
        locked = _locked_alias(name, alias)
        if locked.model_id != primary.pk:
            raise RolloutInProgress(
                f"{locked} was moved while the rollout was being set; read it again and retry.", code="alias_moved"
            )
        rollout = Rollout.objects.select_for_update().filter(alias=locked).first()
        created = rollout is None
        if created:
            rollout = Rollout(alias=locked)
        before = {
            "candidate": rollout.candidate,
            "weight": rollout.weight,
            "shadow": rollout.shadow if rollout.shadow_id else None,
            "shadow_percent": rollout.shadow_percent,
            **{field: getattr(rollout, field) for field in GUARD_FIELDS},
        }
        if candidate is not UNSET:
            rollout.candidate = candidate_model
        if weight is not UNSET:
            rollout.weight = weight
        if shadow is not UNSET:
            rollout.shadow = shadow_model
        if shadow_percent is not UNSET:
            rollout.shadow_percent = shadow_percent
        for field, value in (guard or {}).items():
            setattr(rollout, field, value)
        if rollout.candidate is None and rollout.weight > 0:
            raise InvalidRollout(
                f"A weight of {rollout.weight:g} % needs a candidate version: send candidate with the weight.",
                code="no_candidate",
            )
        if rollout.candidate is None and rollout.shadow is None:
            raise InvalidRollout(
                "A rollout needs a candidate version or a shadow version (or both).", code="no_candidate"
            )
        try:
            rollout.full_clean(exclude=["alias"], validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            raise InvalidRollout(
                "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
            ) from None
        candidate_changed = created or before["candidate"] != rollout.candidate
        weight_changed = before["weight"] != rollout.weight
        other_changed = [
            field
            for field in ("shadow", "shadow_percent", *GUARD_FIELDS)
            if before[field] != (rollout.shadow if field == "shadow" else getattr(rollout, field))
        ]
        if not (candidate_changed or weight_changed or other_changed):
            return RolloutChange(rollout, [])
        if candidate_changed or weight_changed:
            rollout.guard_tripped_at, rollout.guard_reason = None, ""
        rollout.save()
        audit = []
        shadow_text = (
            f"shadow {rollout.shadow.version} at {rollout.shadow_percent:g} %" if rollout.shadow else "no shadow"
        )
        if candidate_changed:
            audit.append(
                _event(
                    locked,
                    AliasEvent.Action.ROLLOUT_STARTED,
                    actor,
                    from_model=primary,
                    from_version=primary.version,
                    to_model=rollout.candidate,
                    to_version=rollout.candidate.version if rollout.candidate else "",
                    from_weight=None if created else before["weight"],
                    to_weight=rollout.weight,
                    detail=shadow_text + ("; guard on" if rollout.guard_enabled else ""),
                )
            )
            events.emit("rollout.started", _payload(locked, rollout))
        elif weight_changed:
            audit.append(
                _event(
                    locked,
                    AliasEvent.Action.WEIGHT_CHANGED,
                    actor,
                    from_model=primary,
                    from_version=primary.version,
                    to_model=rollout.candidate,
                    to_version=rollout.candidate.version if rollout.candidate else "",
                    from_weight=before["weight"],
                    to_weight=rollout.weight,
                )
            )
            events.emit("rollout.weight_changed", _payload(locked, rollout, from_weight=before["weight"]))
        if other_changed and not candidate_changed:
            after = {field: rollout.shadow if field == "shadow" else getattr(rollout, field) for field in other_changed}
            changes = ", ".join(f"{field} {_text(before[field])} -> {_text(after[field])}" for field in other_changed)
            audit.append(
                _event(
                    locked,
                    AliasEvent.Action.ROLLOUT_CHANGED,
                    actor,
                    from_version=primary.version,
                    to_version=rollout.candidate.version if rollout.candidate else "",
                    from_weight=rollout.weight,
                    to_weight=rollout.weight,
                    detail=changes,
                )
            )
        invalidation.notify("models")
    logger.info(
        "rollout set", extra={"alias": str(locked), "candidate": _text(rollout.candidate), "weight": rollout.weight}
    )
    return RolloutChange(rollout, audit)


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, MLModel):
        return value.version
    return f"{value:g}" if isinstance(value, float) else str(value)


def _locked_rollout(name: str, alias: str) -> tuple[ModelAlias, Rollout]:
    locked = _locked_alias(name, alias)
    rollout = (
        Rollout.objects.select_for_update(of=("self",))
        .select_related("candidate", "shadow")
        .filter(alias=locked)
        .first()
    )
    if rollout is None:
        raise RolloutNotFound(
            f"{locked} has no rollout. Start one with PUT /api/v1/models/by-name/{name}/aliases/{alias}/rollout."
        )
    return locked, rollout


def rollout_promote(*, name: str, alias: str, actor=None) -> AliasEvent:
    """The candidate becomes the alias's version and the rollout ends (400 `no_candidate` for a
    shadow-only rollout; 409 `model_not_ready` if the candidate is no longer ready)."""
    with transaction.atomic():
        peek = (
            Rollout.objects.filter(alias__name=name, alias__alias=alias).values_list("candidate_id", flat=True).first()
        )
        if peek:  # the version first (alias_set's lock order), then the alias
            MLModel.objects.select_for_update(no_key=True).filter(pk=peek).first()
        locked, rollout = _locked_rollout(name, alias)
        candidate = rollout.candidate
        if candidate is None:
            raise InvalidRollout(
                f"{locked}'s rollout has no candidate to promote; abort it instead.", code="no_candidate"
            )
        if candidate.status != Status.READY:
            raise ModelNotReady(f"{candidate} is {candidate.status}; only a ready candidate can be promoted.")
        primary = locked.model
        data = _payload(locked, rollout, from_version=primary.version)
        rollout.delete()
        locked.model = candidate
        locked.save(update_fields=["model", "updated_at"])
        event = _event(
            locked,
            AliasEvent.Action.PROMOTED,
            actor,
            from_model=primary,
            from_version=primary.version,
            to_model=candidate,
            to_version=candidate.version,
            from_weight=rollout.weight,
            to_weight=100.0,
        )
        invalidation.notify("models")
        events.emit("rollout.promoted", {**data, "version": candidate.version})
    logger.info("rollout promoted", extra={"alias": str(locked), "version": candidate.version})
    return event


def rollout_abort(*, name: str, alias: str, actor=None) -> AliasEvent:
    """End the rollout: every request through the alias goes to its version again, no shadow."""
    with transaction.atomic():
        locked, rollout = _locked_rollout(name, alias)
        data = _payload(locked, rollout)
        rollout.delete()
        event = _event(
            locked,
            AliasEvent.Action.ABORTED,
            actor,
            from_model=rollout.candidate,
            from_version=rollout.candidate.version if rollout.candidate else "",
            to_model=locked.model,
            to_version=locked.model.version,
            from_weight=rollout.weight,
            to_weight=0.0,
        )
        invalidation.notify("models")
        events.emit("rollout.aborted", data)
    logger.info("rollout aborted", extra={"alias": str(locked)})
    return event


def rollout_trip(*, rollout_id: int, reason: str) -> AliasEvent | None:
    """The guard's move: the candidate's weight to 0, with the reason. None when there is
    nothing to trip (the rollout ended, or its weight is 0 already: a second guard run, in this
    or another process, finds the conditional update done)."""
    with transaction.atomic():
        rollout = Rollout.objects.select_related("alias", "alias__model", "candidate").filter(pk=rollout_id).first()
        if rollout is None:
            return None
        locked = _locked_alias(rollout.alias.name, rollout.alias.alias)
        weight = Rollout.objects.filter(pk=rollout_id, weight__gt=0).values_list("weight", flat=True).first()
        if not Rollout.objects.filter(pk=rollout_id, weight__gt=0).update(
            weight=0.0, guard_tripped_at=timezone.now(), guard_reason=reason, updated_at=timezone.now()
        ):
            return None
        event = _event(
            locked,
            AliasEvent.Action.GUARD_TRIPPED,
            GUARD_ACTOR,
            from_model=rollout.candidate,
            from_version=rollout.candidate.version if rollout.candidate else "",
            to_model=locked.model,
            to_version=locked.model.version,
            from_weight=weight,
            to_weight=0.0,
            detail=reason,
        )
        invalidation.notify("models")
        rollout.weight = 0.0
        events.emit("rollout.guard_tripped", _payload(locked, rollout, from_weight=weight, reason=reason))
    logger.warning("rollout guard tripped", extra={"alias": str(locked), "reason": reason})
    return event
