"""Monitoring writes: references, drift results and their events, drift thresholds."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.events import emit
from core.exceptions import DomainError
from jobs.batch_io import detect_format
from monitoring import drift, recorded, reference
from monitoring.errors import InvalidThresholds, ModelNotReady, ReferenceFileMissing
from monitoring.models import DriftLevel, DriftResult, Reference, Thresholds
from registry import reference_files
from registry import services as registry_services
from registry.models import MLModel, PendingReference

logger = logging.getLogger(__name__)

DRIFTED = frozenset({DriftLevel.AMBER, DriftLevel.RED})


def _save_reference(
    *, model: MLModel, source: str, filename: str, summary: dict[str, Any], error: DomainError | None = None
) -> Reference:
    with transaction.atomic():
        found = Reference.objects.select_for_update().filter(model=model).first() or Reference(model=model)
        found.source, found.filename, found.rows, found.summary = source, filename[:255], summary["rows"], summary
        found.error_code, found.error = (error.code, error.detail) if error is not None else ("", "")
        found.full_clean()
        found.save()
        # Results against the old reference would be compared with the new one's bins: gone.
        DriftResult.objects.filter(model=model).delete()
    return found


def reference_set_from_file(*, model: MLModel, path: Path, filename: str, input_format: str | None) -> Reference:
    """Summarise a reference file (a batch job's formats) as the version's reference, replacing
    any. The file is read and checked outside the transaction; the row is written after."""
    if model.status != MLModel.Status.READY:
        raise ModelNotReady(
            f"Version {model.version} of '{model.name}' is {model.status}: a reference is checked against the "
            "inputs of a validated version. Upload it once the version is ready."
        )
    summary = reference.from_file(model, path, detect_format(input_format, filename))
    return _save_reference(model=model, source=Reference.Source.FILE, filename=filename, summary=summary)


def pending_reference_build(*, model: MLModel) -> Reference | None:
    """Summarise the reference file given with the version's upload (registry.PendingReference),
    once the version is ready, as its reference (replacing any), then discard the file. None if
    there is none or the version is not ready.

    A file that does not fit the version's inputs (a column too many, a row that does not
    parse...) does not fail the version, which is already validated: it becomes a failed
    reference carrying the 400 the PUT would have answered (`error_code`, `error` naming the
    column), shown by GET .../reference and the admin, and the version has no drift until a
    reference is PUT or the failed one deleted. A storage that cannot be read (503) leaves the
    file for the next drift run."""
    pending = PendingReference.objects.filter(model=model).first()
    if pending is None or model.status != MLModel.Status.READY:
        return None
    try:
        input_format = detect_format(pending.input_format or None, pending.filename)
        with reference_files.local_path(pending.sha256) as path:
            summary = reference.from_file(model, path, input_format)
    except FileNotFoundError:
        failure = ReferenceFileMissing(
            "The reference file given with the upload is no longer in the model storage: upload it again with "
            "PUT /api/v1/models/{id}/reference."
        )
        found = _failed_reference(model=model, filename=pending.filename, error=failure)
    except DomainError as exc:
        if exc.status_code >= 500:
            raise  # the storage, not the file: the next drift run tries again
        found = _failed_reference(model=model, filename=pending.filename, error=exc)
    else:
        found = _save_reference(model=model, source=Reference.Source.FILE, filename=pending.filename, summary=summary)
        logger.info("reference summarised from the upload's file", extra={"model": str(model), "rows": found.rows})
    registry_services.pending_reference_discard(pending=pending)
    return found


def _failed_reference(*, model: MLModel, filename: str, error: DomainError) -> Reference:
    logger.warning(
        "reference file refused", extra={"model": str(model), "code": error.code, "detail": error.detail[:300]}
    )
    empty = {"rows": 0, "features": [], "skipped": []}
    return _save_reference(model=model, source=Reference.Source.FILE, filename=filename, summary=empty, error=error)


def on_event(sender=None, *, type: str, data: dict, **_: Any) -> None:  # noqa: A002 (the signal's name)
    """The core.events receiver: a version just validated gets the reference file given with
    its upload summarised (the drift run does it too, should this miss it)."""
    if type != "model.validated":
        return
    model = MLModel.objects.filter(pk=data.get("model_id")).first()
    if model is not None and PendingReference.objects.filter(model=model).exists():
        pending_reference_build(model=model)


def reference_build_from_predictions(*, model: MLModel) -> Reference | None:
    """The version's reference from its first DRIFT_REFERENCE_PREDICTIONS recorded predictions,
    once there are that many (None before); never replaces a reference it already has."""
    if Reference.objects.filter(model=model).exists():
        return None
    if not recorded.has_at_least(model_id=model.pk, count=settings.DRIFT_REFERENCE_PREDICTIONS):
        return None
    summary = reference.from_predictions(model)
    with transaction.atomic():
        if Reference.objects.select_for_update().filter(model=model).exists():
            return None  # a file came meanwhile: it wins
        found = Reference(model=model, source=Reference.Source.PREDICTIONS, rows=summary["rows"], summary=summary)
        found.full_clean()
        found.save()
    return found


def reference_delete(*, model: MLModel) -> bool:
    """Forget the version's reference (and its drift results): the next run builds one from
    its first recorded predictions."""
    with transaction.atomic():
        DriftResult.objects.filter(model=model).delete()
        deleted, _ = Reference.objects.filter(model=model).delete()
    return bool(deleted)


def drift_record(*, model: MLModel, window: str, numbers: dict[str, Any], now: datetime) -> DriftResult:
    """Store a window's drift and raise drift.raised / drift.cleared when its judged state
    changes (an idle window keeps the state). The change is a conditional UPDATE from the state
    read: of two overlapping runs only one moves it, so an event is raised once."""
    with transaction.atomic():
        result, _ = DriftResult.objects.update_or_create(
            model=model, window=window, defaults={**numbers, "computed_at": now}
        )
        new = numbers["level"]
        old = result.state
        if new == DriftLevel.IDLE or new == old:
            return result
        if not DriftResult.objects.filter(pk=result.pk, state=old).update(state=new):
            return result
        result.state = new
        if new in DRIFTED:
            emit("drift.raised", _event(model, window, numbers, new, old))
        elif old in DRIFTED:
            emit("drift.cleared", _event(model, window, numbers, new, old))
    return result


def _event(model: MLModel, window: str, numbers: dict[str, Any], level: str, previous: str) -> dict[str, Any]:
    return {
        "model": model.name,
        "version": model.version,
        "model_id": str(model.pk),
        "window": window,
        "level": str(level),
        "previous_level": str(previous),
        "window_start": numbers["window_start"].isoformat(),
        "window_end": numbers["window_end"].isoformat(),
        "features": [
            {key: feature[key] for key in ("name", "source", "psi", "test", "p_value", "level")}
            for feature in numbers["features"]
        ],
    }


def drift_compute(*, model: MLModel, now: datetime | None = None) -> list[DriftResult]:
    """Every window's drift of one version that has a reference."""
    now = now or timezone.now()
    found = Reference.objects.filter(model=model).first()
    if found is None or found.error_code:
        return []  # none yet, or a reference file that did not fit (it says why)
    thresholds = drift.thresholds_for(model.name)
    return [
        drift_record(
            model=model,
            window=window,
            numbers=drift.compute(
                model_id=model.pk, summary=found.summary, window=window, end=now, thresholds=thresholds
            ),
            now=now,
        )
        for window in settings.DRIFT_WINDOWS
    ]


def drift_run(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic run (Celery beat, or the embedded runner): build the references that can
    be built, then compute every ready version's drift. One version's failure is logged and
    does not stop the others."""
    now = now or timezone.now()
    counts = {"references": 0, "versions": 0, "failed": 0}
    pending = set(PendingReference.objects.values_list("model_id", flat=True))
    for model in MLModel.objects.filter(status=MLModel.Status.READY).order_by("name", "version_key"):
        try:
            if model.pk in pending and pending_reference_build(model=model) is not None:
                counts["references"] += 1
            if reference_build_from_predictions(model=model) is not None:
                counts["references"] += 1
            if drift_compute(model=model, now=now):
                counts["versions"] += 1
        except Exception:
            counts["failed"] += 1
            logger.exception("drift computation failed", extra={"model": model.name, "version": model.version})
    return counts


THRESHOLD_FIELDS = ("psi_amber", "psi_red", "p_value", "min_rows")


def drift_thresholds_set(*, name: str, **values: float | None) -> dict[str, float]:
    """Set (a value) or reset (None) a model name's drift thresholds; returns the effective ones.
    Raises InvalidThresholds (400) for a value out of range or amber above red."""
    unknown = set(values) - set(THRESHOLD_FIELDS)
    if unknown:
        raise InvalidThresholds(f"Unknown threshold(s) {sorted(unknown)}; drift takes {list(THRESHOLD_FIELDS)}.")
    with transaction.atomic():
        own, _ = Thresholds.objects.select_for_update().get_or_create(name=name)
        for field, value in values.items():
            setattr(own, f"drift_{field}", value)
        try:
            own.full_clean()
        except ValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            raise InvalidThresholds(f"{field.removeprefix('drift_')}: {' '.join(messages)}") from None
        own.save()
    return own.drift_effective()
