"""Every write to the registry goes through here: the API, the admin and import_models alike.

Slow work (hashing, the ONNX checks in a child process) runs outside transactions; state
changes are conditional UPDATEs, so two racing requests cannot both move a model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client import Counter

from core import events, invalidation
from core.celery_app import app as celery_app
from core.celery_app import broker_configured
from core.embedded_runner import runner
from registry import reference_files, sandbox, selectors, sentinel
from registry.errors import (
    DuplicateVersion,
    InvalidAlias,
    InvalidTransition,
    ModelAliased,
    ModelArchived,
    ModelNotFound,
    ModelNotReady,
    ModelTooLarge,
    NoFile,
    ReferenceFormat,
    RolloutInProgress,
    StorageUnavailable,
    StoredFileInvalid,
    VersionImmutable,
)
from registry.models import (
    ALIAS_RULE,
    AliasEvent,
    MLModel,
    ModelAlias,
    PendingReference,
    Rollout,
    SettingsEvent,
    Tag,
    validate_alias,
)
from registry.storage import FileTooLarge, ModelStore, StoredFileMismatch, sha256_of_file

logger = logging.getLogger(__name__)
Status = MLModel.Status

# A ready version's file is fixed (first_ready_at): only versions never ready take a new file.
UPLOADABLE = (Status.PENDING, Status.UPLOADED, Status.ERROR)
VALIDATABLE = (Status.UPLOADED, Status.READY, Status.ERROR)
SWEEP_BATCH = 500
# The Celery task that runs a validation (registry.tasks.validate_model). Sent by name: that
# module calls this one.
VALIDATE_TASK = "registry.validate"


@dataclass(frozen=True)
class StagedFile:
    """A file written to the store's temporary folder, hashed, not yet in place."""

    path: Path
    sha256: str
    size: int


def stage_uploaded_file(upload) -> StagedFile:
    """A StagedFile from a Django UploadedFile (our upload handler already hashed it)."""
    sha256 = getattr(upload, "sha256", None)
    if sha256 and hasattr(upload, "temporary_file_path"):
        return StagedFile(Path(upload.temporary_file_path()), sha256, upload.size)
    upload.seek(0)
    return stage_stream(upload)


def stage_stream(stream: BinaryIO) -> StagedFile:
    try:
        sha256, size, path = ModelStore().write_stream(stream, max_bytes=settings.MAX_MODEL_SIZE_BYTES)
    except FileTooLarge as exc:
        raise ModelTooLarge(settings.MAX_MODEL_SIZE_MB) from exc
    return StagedFile(path, sha256, size)


@dataclass(frozen=True)
class StagedReference:
    """A drift reference file given with an upload: hashed in the store's temporary folder, its
    format as given ("" : from the file name), its client's name kept as a label."""

    staged: StagedFile
    filename: str
    input_format: str


def stage_reference(upload, *, input_format: str = "") -> StagedReference:
    """A StagedReference from an uploaded file. Its format must be given or told by its name
    (400 `unsupported_format`); whether it fits the model is known only after validation."""
    filename = os.path.basename(upload.name or "")[:255]
    if input_format and input_format not in reference_files.FORMATS:
        raise ReferenceFormat(
            f"reference_format must be one of {', '.join(reference_files.FORMATS)}; got {input_format!r}."
        )
    if not input_format and os.path.splitext(filename)[1].lower() not in reference_files.SUFFIXES:
        raise ReferenceFormat(
            "Cannot tell the reference file's format from its name: name it *.jsonl, *.csv or *.npy, "
            "or send reference_format (jsonl, csv or npy)."
        )
    return StagedReference(stage_uploaded_file(upload), filename, input_format)


def _store_reference(reference: StagedReference | None) -> None:
    if reference is not None:
        reference_files.store(reference.staged.path, reference.staged.sha256)


def _record_reference(*, model: MLModel, reference: StagedReference | None) -> None:
    """Record a stored reference file on the version (replacing one given before), for
    monitoring to summarise once the version is ready."""
    if reference is None:
        return
    with transaction.atomic():
        previous = PendingReference.objects.select_for_update().filter(model=model).first()
        row = previous or PendingReference(model=model)
        old_sha = previous.sha256 if previous is not None else ""
        row.sha256, row.size = reference.staged.sha256, reference.staged.size
        row.filename, row.input_format = reference.filename, reference.input_format
        row.full_clean()
        row.save()
        if old_sha and old_sha != row.sha256:
            transaction.on_commit(partial(_discard_reference_if_unreferenced, old_sha))
    logger.info("reference file kept until validation", extra={"model": str(model), "sha256": row.sha256})


def _discard_reference_if_unreferenced(sha256: str) -> None:
    if sha256 and not PendingReference.objects.filter(sha256=sha256).exists():
        try:
            reference_files.delete(sha256)
        except StorageUnavailable:
            logger.warning("stored reference file left behind", extra={"sha256": sha256})


def pending_reference_discard(*, pending: PendingReference) -> bool:
    """Forget a reference file once monitoring has used it: the row (unless another file
    replaced it meanwhile) and, after the commit, the blob unless another version has it."""
    with transaction.atomic():
        deleted, _ = PendingReference.objects.filter(pk=pending.pk, sha256=pending.sha256).delete()
        transaction.on_commit(partial(_discard_reference_if_unreferenced, pending.sha256))
    return bool(deleted)


def _set_tags(model: MLModel, tags: Iterable[str]) -> None:
    names = sorted(set(tags))
    for name in names:
        Tag(name=name).clean_fields(exclude=["id"])  # a bad tag fails before any row is written
    objs = [Tag.objects.get_or_create(name=name)[0] for name in names]
    model.tags.set(objs)


def _actor_fields(actor) -> dict:
    from access.models import APIKey

    if isinstance(actor, APIKey):
        return {"created_by_key": actor}
    if actor is not None and getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None):
        return {"created_by": actor}
    return {}


def model_create(
    *,
    name: str,
    version: str,
    description: str = "",
    tags: Iterable[str] = (),
    source_url: str = "",
    code_commit: str = "",
    dataset: str = "",
    metrics: dict | None = None,
    actor=None,
) -> MLModel:
    """Register a name + version with no file yet (status pending), with its lineage if given
    (the run, code commit, dataset and metrics it came from; each checked by its validator).

    The unique constraint decides races: of concurrent creates, one wins, the rest get 409.
    """
    model = MLModel(
        name=name,
        version=version,
        description=description,
        source_url=source_url,
        code_commit=code_commit,
        dataset=dataset,
        metrics=metrics or {},
        **_actor_fields(actor),
    )
    model.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            model.save()
            _set_tags(model, tags)
    except IntegrityError as exc:
        if MLModel.objects.filter(name=name, version=version).exists():
            raise DuplicateVersion(f"{name} {version} already exists. Pick a new version number.") from exc
        raise
    return model


# The ONNX Runtime settings and warm-up of a model (inference.sessions reads them; a change
# makes every process build the model's sessions again).
ORT_OPTIONS = (
    "ort_graph_optimization_level",
    "ort_intra_op_threads",
    "ort_inter_op_threads",
    "ort_execution_mode",
    "ort_enable_cpu_mem_arena",
    "ort_execution_providers",
    "sessions_per_process",
)
RUNTIME_OPTIONS = (
    *ORT_OPTIONS,
    "warmup_count",
    "warmup_data",
    "warmup_sample",
)
SERVING_OPTIONS = (
    "preload",
    "allow_non_finite",
    "batching_enabled",
    "max_batch_size",
    "max_queue_delay_microseconds",
    "preferred_batch_size",
    "max_queue_size",
    "default_timeout_microseconds",
    *RUNTIME_OPTIONS,
)

# How a warm-up sample is checked against the model's inputs: set by the inference app (its
# tensor decoder, the one predict uses) in AppConfig.ready; the registry does not import it.
# Called with (sample, input_schema); raises a DomainError (400) saying what to fix.
warmup_sample_check = None


def model_update(
    *,
    model: MLModel,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    batching: dict | None = None,
    runtime: dict | None = None,
    actor=None,
    **serving_options,
) -> MLModel:
    """Change the descriptive fields and the serving options; the rest is owned by the system.

    `batching` and `runtime` take the model field names (batching_enabled, max_batch_size, ...;
    ort_intra_op_threads, warmup_count, ...). Every changed serving option is recorded in one
    SettingsEvent with its old and new value and ``actor`` (an API key or a user).
    """
    changes = {**serving_options, **(batching or {}), **(runtime or {})}
    unknown = set(changes) - set(SERVING_OPTIONS)
    if unknown:
        raise ValueError(f"not serving options: {', '.join(sorted(unknown))}")
    # Compared with the stored row: the admin's form has already put its values on `model`.
    stored = (MLModel.objects.filter(pk=model.pk).values(*changes).first() or {}) if changes else {}
    changed = {name: [stored.get(name), value] for name, value in changes.items() if stored.get(name) != value}
    fields = ["updated_at"]
    if description is not None:
        model.description = description
        fields.append("description")
    for name, value in changes.items():
        setattr(model, name, value)
        fields.append(name)
    if changed.keys() & {"warmup_data", "warmup_sample"} or (changed and model.warmup_data == "sample"):
        _check_warmup_sample(model)
    with transaction.atomic():
        if len(fields) > 1:
            model.full_clean(validate_unique=False, validate_constraints=False)
            model.save(update_fields=fields)
        if tags is not None:
            _set_tags(model, tags)
        if changed:
            SettingsEvent.objects.create(
                model=model, name=model.name, version=model.version, changes=changed, **_actor_of_event(actor)
            )
    if changes:
        invalidation.notify("models")
    if changed:
        logger.info("model settings changed", extra={"model": str(model), "fields": sorted(changed)})
    return model


def _check_warmup_sample(model: MLModel) -> None:
    if model.warmup_data == "sample":
        check_warmup_sample(model.warmup_sample, model.input_schema)


def check_warmup_sample(sample, input_schema: list) -> None:
    """400 unless ``sample`` is an input_data document for these inputs (`missing_warmup_sample`
    when there is none; the tensor decoder's code, e.g. invalid_shape, when it does not fit)."""
    from django.core.exceptions import ValidationError

    if sample is None:
        raise ValidationError(
            'Warm-up data "sample" needs a sample: an input_data document such as {"X": [[0.5, 1.0]]}.',
            code="missing_warmup_sample",
        )
    if input_schema and warmup_sample_check is not None:
        warmup_sample_check(sample, input_schema)


def _discard_if_unreferenced(sha256: str) -> None:
    """Delete a stored object no row uses any more. Runs after the row is gone; if the storage
    is down then, the object stays behind (an orphan costs space, never correctness)."""
    if sha256 and not MLModel.objects.filter(file_sha256=sha256).exists():
        try:
            ModelStore().delete(sha256)
        except StorageUnavailable:
            logger.warning("stored model object left behind", extra={"sha256": sha256})


def _store(staged: StagedFile) -> None:
    """Put a staged file in the model storage (StorageUnavailable, and the staged file gone, if
    the storage cannot take it). Rows are written only after this succeeded."""
    ModelStore().put_file(staged.path, staged.sha256)


def model_upload(*, model: MLModel, staged: StagedFile, reference: StagedReference | None = None) -> MLModel:
    """Put a staged file in place and point the model at it (status uploaded), with the drift
    reference file given beside it, if any (summarised by monitoring once the version is ready).

    A version that has been ready keeps its file for good (409 `version_immutable`): a new file
    is a new version. The row changes only if the file is stored; if the row cannot change
    (archived, being validated, or ready meanwhile), the stored file is removed again unless
    another version shares it.
    """
    if model.status == Status.ARCHIVED:
        raise ModelArchived(f"{model} is archived; register a new version instead.")
    if model.is_immutable:
        raise _immutable(model)
    if model.status not in UPLOADABLE:
        raise InvalidTransition(f"{model} is {model.status}; wait until validation ends, then upload again.")
    _store(staged)
    try:
        _store_reference(reference)
    except BaseException:
        _discard_if_unreferenced(staged.sha256)
        raise
    try:
        model = _point_at(model=model, staged=staged)
    except BaseException:
        if reference is not None:
            _discard_reference_if_unreferenced(reference.staged.sha256)
        raise
    _record_reference(model=model, reference=reference)
    return model


def _immutable(model: MLModel) -> VersionImmutable:
    return VersionImmutable(
        f"{model} has been ready, so its file can never be replaced. Register the new file as a new version "
        f"(POST /api/v1/models with name {model.name} and a higher version, or the admin's "
        "'Upload a new version')."
    )


def _point_at(*, model: MLModel, staged: StagedFile) -> MLModel:
    """Point the row at a stored file (status uploaded), or undo the store if it cannot move."""
    previous_sha = model.file_sha256
    now = timezone.now()
    # first_ready_at is checked here too: a validation that ended ready after the caller read
    # the row fixes the file, and this UPDATE must not replace it.
    changed = MLModel.objects.filter(pk=model.pk, status__in=UPLOADABLE, first_ready_at__isnull=True).update(
        file_sha256=staged.sha256,
        file_size=staged.size,
        status=Status.UPLOADED,
        uploaded_at=now,
        updated_at=now,
        validated_at=None,
        input_schema=[],
        output_schema=[],
        model_metadata={},
        validation_warnings=[],
        value_dependent_memory=False,
        error_code="",
        error_message="",
    )
    if not changed:
        _discard_if_unreferenced(staged.sha256)
        model.refresh_from_db()
        if model.is_immutable:
            raise _immutable(model)
        raise InvalidTransition(f"{model} changed to {model.status} meanwhile; the upload was not applied.")
    if previous_sha and previous_sha != staged.sha256:
        transaction.on_commit(lambda: _discard_if_unreferenced(previous_sha))
    invalidation.notify("models")
    model.refresh_from_db()
    logger.info("model uploaded", extra={"model": str(model), "sha256": staged.sha256, "size": staged.size})
    return model


# --- validation: asked for in a request, run in the background ---------------------------------
#
# A validation runs a sandboxed child for up to VALIDATION_TIMEOUT_SECONDS, too long for a
# serving thread. `model_validate` only moves the row to `validating` and hands the run over
# once the transaction commits: to a Celery task (registry.tasks) with a broker, else to the
# embedded runner's threads (core.embedded_runner), as jobs are. Delivery is at least once: the run
# claims the row (`validation_attempts` + 1 as one conditional UPDATE, the attempt being the
# token of the only run that may write the outcome), and `validations_sweep` hands over again
# what a down broker or a lost worker left behind.


def model_validate(*, model: MLModel, inline: bool = False) -> MLModel:
    """Ask for the structural, security and runtime checks: status validating, then ready
    (schema and metadata filled in) or error (code and reason).

    By default the checks run in the background and the model comes back `validating`; with
    `inline` they run in this thread and the model comes back with the outcome (import_models
    and other commands, which hold no serving thread). Asking again while a validation is
    waiting or running hands it over again, which is harmless (only one run takes it).
    """
    if model.status == Status.ARCHIVED:
        raise ModelArchived(f"{model} is archived and is not validated again.")
    if not model.file_sha256:
        raise NoFile(f"{model} has no file yet. Upload one with POST /api/v1/models/{model.pk}/upload.")
    sha256 = model.file_sha256
    started = MLModel.objects.filter(pk=model.pk, status__in=VALIDATABLE, file_sha256=sha256).update(
        status=Status.VALIDATING, validation_started_at=None, validation_attempts=0, updated_at=timezone.now()
    )
    if not started:
        model.refresh_from_db()
        if model.status != Status.VALIDATING or model.file_sha256 != sha256:
            raise InvalidTransition(f"{model} changed to {model.status} meanwhile; validate again.")
    else:
        invalidation.notify("models")
    if inline or settings.VALIDATION_EAGER:
        model_validation_run(model_id=model.pk)
    else:
        transaction.on_commit(partial(validation_enqueue, model_id=model.pk), robust=True)
    model.refresh_from_db()
    return model


def validation_enqueue(*, model_id) -> bool:
    """Hand a waiting validation to the broker (task registry.validate) or, without one, to the
    embedded runner. A broker that cannot be reached leaves it for the sweeper: the row stays
    `validating` and nothing is lost. Returns whether it was handed over."""
    try:
        if broker_configured():
            celery_app.send_task(VALIDATE_TASK, args=[str(model_id)])
        else:
            # The runner's first rank: ahead of normal and low jobs.
            runner.submit(partial(model_validation_run, model_id=str(model_id)))
    except Exception as exc:
        logger.warning(
            "could not queue a validation (%s); the sweeper retries",
            exc,
            extra={"model_id": str(model_id), "error": repr(exc)},
        )
        return False
    return True


def model_validation_run(*, model_id) -> MLModel | None:
    """Run a requested validation: claim it, check the file in the sandbox, write the outcome.

    Idempotent: `None` (nothing done) when the row is gone, not validating, or taken by another
    run that is still within VALIDATION_STUCK_AFTER_SECONDS. A validation taken JOB_MAX_ATTEMPTS
    times without an outcome (its worker was lost each time) ends as `validation_crashed`.
    """
    model = MLModel.objects.filter(pk=model_id, status=Status.VALIDATING).first()
    if model is None:
        return None
    now = timezone.now()
    stale = Q(validation_started_at__isnull=True) | Q(
        validation_started_at__lt=now - timedelta(seconds=settings.VALIDATION_STUCK_AFTER_SECONDS)
    )
    takeable = MLModel.objects.filter(
        stale,
        pk=model.pk,
        status=Status.VALIDATING,
        file_sha256=model.file_sha256,
        validation_attempts=model.validation_attempts,
    )
    if model.validation_attempts >= settings.JOB_MAX_ATTEMPTS:
        if takeable.update(
            status=Status.ERROR,
            error_code="validation_crashed",
            error_message=(
                f"Gave up after {model.validation_attempts} attempts: the process validating the model was "
                "lost each time. Validate again, or check the workers' logs."
            ),
            validated_at=now,
            updated_at=now,
        ):
            invalidation.notify("models")
            model.refresh_from_db()
            _emit_validation(model)
        return None
    attempt = model.validation_attempts + 1
    if not takeable.update(validation_started_at=now, validation_attempts=attempt):
        return None

    result = _check_file(model.file_sha256)
    now = timezone.now()
    if result.ok:
        report = result.report
        fields = dict(
            status=Status.READY,
            input_schema=report["input_schema"],
            output_schema=report["output_schema"],
            model_metadata=report["model_metadata"],
            validation_warnings=report.get("warnings", []),
            value_dependent_memory=report.get("value_dependent_memory", False),
            error_code="",
            error_message="",
            first_ready_at=Coalesce(F("first_ready_at"), Value(now)),
        )
    else:
        fields = dict(status=Status.ERROR, error_code=result.code, error_message=result.detail[:5000])
    # Compare-and-set on the attempt: a re-upload, an archive or a later take wins over this result.
    written = MLModel.objects.filter(
        pk=model.pk, status=Status.VALIDATING, file_sha256=model.file_sha256, validation_attempts=attempt
    ).update(validated_at=now, updated_at=now, **fields)
    if not written:
        return None
    invalidation.notify("models")
    model.refresh_from_db()
    logger.info("model validated", extra={"model": str(model), "status": model.status, "code": model.error_code})
    _emit_validation(model)
    return model


def _emit_validation(model: MLModel) -> None:
    """`model.validated` or `model.failed` (webhooks) for a validation's outcome."""
    data = {"model_id": str(model.pk), "name": model.name, "version": model.version, "status": model.status}
    if model.status == Status.READY:
        events.emit("model.validated", data)
    else:
        events.emit("model.failed", {**data, "error_code": model.error_code, "error_message": model.error_message})


def validations_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Hand over again the validations nobody will finish otherwise (Celery beat, or the
    embedded runner's timer):

    - asked for more than JOB_ENQUEUE_GRACE_SECONDS ago and not taken (the broker was down, or
      the process that was to hand it over ended first);
    - taken more than VALIDATION_STUCK_AFTER_SECONDS ago and unfinished (its worker was lost;
      no sandbox outlives VALIDATION_TIMEOUT_SECONDS).

    A waiting validation's clock (updated_at) restarts when it is handed over, so a long queue
    gets one more message per grace period, not one per sweep.
    """
    now = now or timezone.now()
    validating = MLModel.objects.filter(status=Status.VALIDATING)
    waiting = validating.filter(
        validation_started_at__isnull=True,
        updated_at__lt=now - timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS),
    )
    stuck = validating.filter(
        validation_started_at__lt=now - timedelta(seconds=settings.VALIDATION_STUCK_AFTER_SECONDS)
    )
    report = {"waiting": 0, "stuck": 0}
    for kind, rows in (("waiting", waiting), ("stuck", stuck)):
        for pk in list(rows.order_by("updated_at").values_list("pk", flat=True)[:SWEEP_BATCH]):
            if validation_enqueue(model_id=pk):
                MLModel.objects.filter(pk=pk, status=Status.VALIDATING, validation_started_at__isnull=True).update(
                    updated_at=now
                )
                report[kind] += 1
    if any(report.values()):
        logger.info("validations handed over again", extra=report)
    return report


def _verify_stored_file(sha256: str) -> tuple[Path | None, sandbox.SandboxResult | None]:
    """The local path of the stored file if its bytes still hash to `sha256`, else the failure
    (file_missing, checksum_mismatch, or the storage being unavailable). A file missing from a
    storage that is not this deployment's (registry.sentinel: this process has the wrong
    bucket, prefix or folder) is the storage's fault, not the file's: storage_unavailable."""
    store = ModelStore()
    try:
        path = store.fetch(sha256)
    except FileNotFoundError:
        verdict = sentinel.verify(store=store)
        if not verdict.ok:
            logger.error("model file not found in a storage that is not this deployment's: %s", verdict.detail)
            return None, sandbox.SandboxResult(
                False,
                None,
                StorageUnavailable.code,
                "This process's model storage does not hold this deployment's files (its settings point "
                "elsewhere; the details are in its log). Validate again once it is fixed.",
            )
        return None, sandbox.SandboxResult(
            False, None, "file_missing", "The stored model file is missing; upload it again."
        )
    except StoredFileMismatch:
        path = None
    except StorageUnavailable as exc:
        return None, sandbox.SandboxResult(False, None, exc.code, f"{exc.detail} Validate again then.")
    if path is None or sha256_of_file(path) != sha256:
        logger.error("checksum mismatch on stored model file", extra={"sha256": sha256})
        return None, sandbox.SandboxResult(
            False, None, "checksum_mismatch", "The stored file no longer matches its sha256; upload it again."
        )
    return path, None


def _check_file(sha256: str) -> sandbox.SandboxResult:
    path, failure = _verify_stored_file(sha256)
    if failure is not None:
        return failure
    return file_check(path)


def file_check(path: Path) -> sandbox.SandboxResult:
    """A validation's checks on a local file, in the sandbox: for a stored file, or for an upload
    before anything is registered (the admin's forms refuse a file that fails them on the form,
    for the person waiting there; up to VALIDATION_TIMEOUT_SECONDS)."""
    return sandbox.inspect_in_sandbox(
        path,
        memory_mb=settings.VALIDATION_MEMORY_MB,
        timeout_seconds=settings.VALIDATION_TIMEOUT_SECONDS,
    )


def model_register(
    *,
    name: str,
    version: str,
    staged: StagedFile,
    description: str = "",
    tags: Iterable[str] = (),
    actor=None,
    inline: bool = False,
    reference: StagedReference | None = None,
    **lineage,
) -> MLModel:
    """Create, upload and ask for validation in one step (multipart create, the admin,
    import_models): the model comes back `validating`, or with the outcome if `inline` (see
    `model_validate`). `lineage`: model_create's source_url, code_commit, dataset, metrics. A
    drift reference file given beside it is kept on the version until monitoring summarises
    it, once the version is ready.

    The file goes to the storage before any row is written: if the storage is down, the call
    fails with 503 storage_unavailable and there is no model to clean up.
    """
    _store(staged)
    try:
        _store_reference(reference)
        model = model_create(name=name, version=version, description=description, tags=tags, actor=actor, **lineage)
    except BaseException:
        _discard_if_unreferenced(staged.sha256)
        if reference is not None:
            _discard_reference_if_unreferenced(reference.staged.sha256)
        raise
    try:
        model = _point_at(model=model, staged=staged)
        _record_reference(model=model, reference=reference)
    except BaseException:
        # The create and the upload are one user action: do not leave a half-registered row.
        MLModel.objects.filter(pk=model.pk).delete()
        _discard_if_unreferenced(staged.sha256)
        if reference is not None:
            _discard_reference_if_unreferenced(reference.staged.sha256)
        raise
    return model_validate(model=model, inline=inline)


def _refuse_if_aliased(model: MLModel, act: str) -> None:
    """409 `model_aliased`, naming the aliases, if any alias points at `model`.

    Archiving or deleting the target of an alias would take the alias's traffic down (a
    request for `production` would get 409 model_archived or 404): the alias is moved first,
    on purpose, by whoever owns it. Call with the version's row locked (see alias_set).
    """
    aliases = sorted(ModelAlias.objects.filter(model_id=model.pk).values_list("alias", flat=True))
    rollouts = sorted(Rollout.objects.filter(candidate_id=model.pk).values_list("alias__alias", flat=True))
    if rollouts and not aliases:
        names = ", ".join(f"{model.name}@{alias}" for alias in rollouts)
        raise ModelAliased(
            f"{model} cannot be {act}: it is the candidate of the rollout on {names}, which sends it live "
            f"traffic. Promote or abort the rollout first (POST /api/v1/models/by-name/{model.name}/aliases/"
            "<alias>/rollout/promote, or DELETE .../rollout)."
        )
    if aliases:
        names = ", ".join(f"{model.name}@{alias}" for alias in aliases)
        them = "them" if len(aliases) > 1 else "it"
        raise ModelAliased(
            f"{model} cannot be {act}: {'aliases' if len(aliases) > 1 else 'the alias'} {names} "
            f"{'point' if len(aliases) > 1 else 'points'} at it. Move {them} to another version "
            f"(PUT /api/v1/models/by-name/{model.name}/aliases/<alias>) or delete {them} first."
        )


def _lock_version(model: MLModel) -> MLModel:
    """The version's row, locked until the transaction ends (404 if it is gone). NO KEY, like
    alias_set's lock on its target: the two queue on each other, while history and job rows
    that reference the version are not held up."""
    locked = MLModel.objects.select_for_update(no_key=True).filter(pk=model.pk).first()
    if locked is None:
        raise ModelNotFound(f"{model} no longer exists.")
    return locked


def model_archive(*, model: MLModel) -> MLModel:
    """Archive: the row and file are kept and listed, but never served again.

    A version an alias points at is not archived (409 `model_aliased`, naming the aliases).
    The row lock orders this with `alias_set`, which locks its target too: an alias cannot be
    pointed at a version while it is being archived, nor the version archived under a new alias.
    Archiving an archived version changes nothing.
    """
    with transaction.atomic():
        current = _lock_version(model)
        if current.status == Status.ARCHIVED:
            model.refresh_from_db()
            return model
        if current.status == Status.VALIDATING:
            raise InvalidTransition(f"{model} is being validated; archive it once validation ends.")
        _refuse_if_aliased(current, "archived")
        MLModel.objects.filter(pk=model.pk).update(status=Status.ARCHIVED, updated_at=timezone.now())
        invalidation.notify("models")
    logger.info("model archived", extra={"model": str(model)})
    model.refresh_from_db()
    return model


def model_unarchive(*, model: MLModel) -> MLModel:
    """Bring an archived version back, re-verified as if it had just been uploaded.

    The stored file must still hash to the version's sha256; a version whose file is gone or
    changed stays archived (409 `file_missing` or `checksum_mismatch`, also written to the
    row's error fields so the admin shows it). Then the version is `uploaded` again and
    validated by `model_validate`, as after an upload: it ends ready, or error with the reason
    (the checks may have grown stricter since it was archived). A version archived before it
    had a file goes back to pending.
    """
    if model.status != Status.ARCHIVED:
        raise InvalidTransition(f"{model} is {model.status}, not archived: there is nothing to unarchive.")
    sha256 = model.file_sha256
    now = timezone.now()
    if not sha256:
        MLModel.objects.filter(pk=model.pk, status=Status.ARCHIVED, file_sha256="").update(
            status=Status.PENDING, updated_at=now
        )
        invalidation.notify("models")
        model.refresh_from_db()
        return model
    # Hashing (and on a remote store, downloading) is slow: no transaction is open.
    _, failure = _verify_stored_file(sha256)
    if failure is not None and failure.code == StorageUnavailable.code:
        raise StorageUnavailable(failure.detail)
    if failure is not None:
        problem = "is missing" if failure.code == "file_missing" else "no longer matches its sha256"
        detail = (
            f"{model} stays archived: its stored file (sha256 {sha256[:12]}…) {problem}. Put the original file "
            "back in the model storage, or register the model as a new version."
        )
        MLModel.objects.filter(pk=model.pk, status=Status.ARCHIVED, file_sha256=sha256).update(
            error_code=failure.code, error_message=detail, updated_at=now
        )
        model.refresh_from_db()
        raise StoredFileInvalid(detail, code=failure.code)
    # Compare-and-set: only the archived row with the file just verified moves.
    moved = MLModel.objects.filter(pk=model.pk, status=Status.ARCHIVED, file_sha256=sha256).update(
        status=Status.UPLOADED, updated_at=now
    )
    model.refresh_from_db()
    if not moved:
        raise InvalidTransition(f"{model} changed to {model.status} meanwhile; nothing was unarchived.")
    invalidation.notify("models")
    logger.info("model unarchived", extra={"model": str(model), "sha256": sha256})
    return model_validate(model=model)


def model_delete(*, model: MLModel) -> None:
    """Delete the row; the file goes too unless another version has the same bytes.

    A version an alias points at is not deleted (409 `model_aliased`, naming the aliases):
    move or delete the aliases first. The row lock orders this with `alias_set`, which locks
    its target too, so an alias cannot be pointed at a version while it is being deleted.
    """
    sha256 = model.file_sha256
    with transaction.atomic():
        MLModel.objects.select_for_update().filter(pk=model.pk).first()
        _refuse_if_aliased(model, "deleted")
        reference_sha = PendingReference.objects.filter(model=model).values_list("sha256", flat=True).first()
        model.delete()
        transaction.on_commit(lambda: _discard_if_unreferenced(sha256))
        if reference_sha:
            transaction.on_commit(partial(_discard_reference_if_unreferenced, reference_sha))
        invalidation.notify("models")


def model_mark_corrupt(*, model: MLModel, code: str, detail: str) -> bool:
    """Take a ready version out of service for good: its stored file is gone (`file_missing`)
    or no longer hashes to its sha256 (`checksum_mismatch`), as confirmed by
    `model_file_confirm`. Every node then refuses it (409 model_not_ready naming the code);
    validating it again once the file is back makes it ready again. Returns whether it moved."""
    moved = MLModel.objects.filter(pk=model.pk, file_sha256=model.file_sha256, status=Status.READY).update(
        status=Status.ERROR, error_code=code, error_message=detail, updated_at=timezone.now()
    )
    if moved:
        logger.error("model file failed its integrity check", extra={"model": str(model), "code": code})
        invalidation.notify("models")
    return bool(moved)


# --- a model file a node cannot read ----------------------------------------------------------
#
# One node's view of the storage is not the truth: a wrong S3_PREFIX, a bucket being restored, a
# partition or a bad download make files "missing" or "changed" to it alone. Such a node answers
# 503 for the model (inference.sessions), counts and logs it, checks its own storage again
# (registry.sentinel: readiness fails if the storage is not this deployment's), and asks for a
# confirmation: a task on a worker (or the embedded runner's thread) reads the object from the
# storage itself, hashes it, re-reads a mismatch, and only then marks the model `error`.

CONFIRM_FILE_TASK = "registry.confirm_file"
# At most one confirmation per model and file in this window, however many requests fail.
CONFIRM_FILE_WINDOW_SECONDS = 30
FILE_FAILURE_CODES = ("file_missing", "checksum_mismatch")

FILE_FAILURES = Counter(
    "modelforge_model_file_failures",
    "Model files this process could not read from the model storage (file_missing) or whose bytes did not "
    "match their sha256 (checksum_mismatch): answered 503 model_file_unavailable, and confirmed by a worker "
    "before the model is marked error.",
    ["model", "version", "code"],
)


def model_file_report(*, model: MLModel, code: str) -> None:
    """This process could not read `model`'s file (`code`: file_missing or checksum_mismatch).

    Changes nothing shared: counts it, has this process check its own storage again before the
    next readiness answer, and asks for one confirmation per model and file every
    CONFIRM_FILE_WINDOW_SECONDS (after the current transaction commits), logging each ask.
    """
    if code not in FILE_FAILURE_CODES:
        raise ValueError(f"code must be one of {', '.join(FILE_FAILURE_CODES)}")
    store = ModelStore()
    FILE_FAILURES.labels(model.name, model.version, code).inc()
    sentinel.verdicts.recheck(store=store)
    key = f"modelforge:confirm-file:{model.pk}:{model.file_sha256}"
    try:
        first = cache.add(key, code, timeout=CONFIRM_FILE_WINDOW_SECONDS)
    except Exception:  # the cache down: a duplicate confirmation is harmless, a missing one is not
        first = True
    if first:
        logger.error(
            "model file unreadable on this node; asking for a confirmation",
            extra={"model": str(model), "sha256": model.file_sha256, "code": code, "storage": store.describe()},
        )
        transaction.on_commit(
            partial(model_file_confirm_enqueue, model_id=model.pk, sha256=model.file_sha256), robust=True
        )


def model_file_confirm_enqueue(*, model_id, sha256: str) -> bool:
    """Hand a confirmation to the broker (task registry.confirm_file, queue high) or, without
    one, to the embedded runner. Lost if the broker is down: the next failing request asks
    again once the window has passed. Returns whether it was handed over."""
    try:
        if broker_configured():
            celery_app.send_task(CONFIRM_FILE_TASK, args=[str(model_id), sha256], queue="high")
        else:
            runner.submit(partial(model_file_confirm, model_id=str(model_id), sha256=sha256))
    except Exception as exc:
        logger.warning(
            "could not queue a model file confirmation (%s)", exc, extra={"model_id": str(model_id), "error": repr(exc)}
        )
        return False
    return True


def model_file_confirm(*, model_id, sha256: str) -> str:
    """Confirm, from this process, what a node reported about a model's file, and mark the model
    `error` only if it holds.

    Nothing is condemned from a storage that is not this deployment's (registry.sentinel: its
    sentinel and none of the database's files) or that cannot be reached. The object is read
    from the storage itself, never from a cached copy, and a mismatch is read again before it
    counts. Idempotent: a model no longer ready with this file is left alone. The outcome:
    ``present`` (the node's view was wrong), ``file_missing`` or ``checksum_mismatch`` (the model
    was marked), ``unverified`` (this process's storage is not this deployment's, or cannot be
    reached: nothing changed), ``skipped`` (no such model ready with this file).
    """
    try:
        model_id = uuid.UUID(str(model_id))
    except ValueError:
        logger.warning("model file confirmation skipped: not a model id", extra={"model_id": str(model_id)[:64]})
        model_id = None
    model = None
    if model_id is not None:
        model = MLModel.objects.filter(pk=model_id, file_sha256=str(sha256), status=Status.READY).first()
    return _confirm(model) if model is not None else "skipped"


def _confirm(model: MLModel) -> str:
    store = ModelStore()
    verdict = sentinel.verify(store=store)
    if not verdict.ok:
        logger.error(
            "model file not confirmed: this process's model storage is not this deployment's: %s",
            verdict.detail,
            extra={"model": str(model), "sha256": model.file_sha256},
        )
        return "unverified"
    try:
        found = store.check_object(model.file_sha256)
    except StorageUnavailable:
        return "unverified"  # logged by the storage; the next failing request asks again
    if found == "present":
        logger.warning(
            "model file confirmed present: the node that reported it sees another storage or had a passing fault",
            extra={"model": str(model), "sha256": model.file_sha256, "storage": store.describe()},
        )
        return "present"
    if found == "missing":
        code, detail = "file_missing", f"{model}'s stored file is missing from the model storage."
    else:
        code, detail = "checksum_mismatch", f"{model}'s stored file no longer matches its sha256 (read twice)."
    detail += " Put the original file back and validate the version again, or register a new version."
    model_mark_corrupt(model=model, code=code, detail=detail)
    return code


def staged_cleanup(staged: StagedFile) -> None:
    """Remove a staged file that was not put in place (e.g. a rejected import)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged.path)


# --- aliases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasChange:
    """What alias_set did: the alias as it is now, and the audit row (None when it already
    pointed at that version, which changes nothing and records nothing)."""

    alias: ModelAlias
    event: AliasEvent | None

    @property
    def created(self) -> bool:
        return self.event is not None and self.event.action == AliasEvent.Action.CREATED


def check_alias_name(alias: str) -> None:
    """400 `invalid_alias` or `alias_is_version` unless `alias` can name an alias."""
    from django.core.exceptions import ValidationError

    try:
        validate_alias(alias)
    except ValidationError as exc:
        code = exc.error_list[0].code
        detail = exc.messages[0] if code == "alias_is_version" else f"'{alias}' is not a valid alias. {ALIAS_RULE}"
        raise InvalidAlias(detail, code=code) from None


def _actor_of_event(actor) -> dict:
    from access.models import APIKey

    if isinstance(actor, APIKey):
        return {"actor_key": actor, "actor_label": f"key:{actor.name}"[:200]}
    if actor is not None and getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None):
        return {"actor_user": actor, "actor_label": actor.get_username()[:200]}
    return {"actor_label": ""}


def _updated_by(actor) -> dict:
    fields = _actor_of_event(actor)
    return {"updated_by": fields.get("actor_user"), "updated_by_key": fields.get("actor_key")}


def _locked_alias(name: str, alias: str):
    """The alias row, locked on its own (`of`: not the version it points at)."""
    return ModelAlias.objects.select_for_update(of=("self",)).select_related("model").filter(name=name, alias=alias)


def alias_set(*, name: str, alias: str, version: str, actor=None) -> AliasChange:
    """Point the alias `name`@`alias` at `version` of `name`, creating the alias if needed.

    The target must be a ready version of the same name (404 `model_not_found` if there is none,
    409 `model_not_ready` otherwise). The move and its AliasEvent are one transaction; moving to
    the version the alias already has is a no-op without an event. Concurrent moves of one alias
    queue on its row lock, so each is applied and audited in turn and `from_version` is always
    the version the alias really left. Every server process drops its cached resolution once
    the transaction commits.
    """
    check_alias_name(alias)
    with transaction.atomic():
        # Locks, always in this order (target version, then alias row), so no two calls deadlock:
        # the target's lock keeps it ready (no re-upload, archive or delete) until this commits;
        # NO KEY, so history and job rows that reference the version are not held up.
        target = MLModel.objects.select_for_update(no_key=True).filter(name=name, version=version).first()
        if target is None:
            raise selectors.version_not_found(name=name, version=version)
        if target.status != Status.READY:
            raise ModelNotReady(
                f"{target} is {target.status}; an alias can only point at a ready version. "
                "Validate it first, or choose another version."
            )
        current = (
            ModelAlias.objects.select_for_update(of=("self",))
            .select_related("model")
            .filter(name=name, alias=alias)
            .first()
        )
        if current is None:
            try:
                # A savepoint: a concurrent create of the same alias wins the unique constraint,
                # and this call then moves the alias that one created.
                with transaction.atomic():
                    current = ModelAlias(name=name, alias=alias, model=target, **_updated_by(actor))
                    current.full_clean(validate_unique=False, validate_constraints=False)
                    current.save()
            except IntegrityError:
                current = (
                    ModelAlias.objects.select_for_update(of=("self",))
                    .select_related("model")
                    .get(name=name, alias=alias)
                )
            else:
                event = AliasEvent.objects.create(
                    name=name,
                    alias=alias,
                    action=AliasEvent.Action.CREATED,
                    to_model=target,
                    to_version=target.version,
                    **_actor_of_event(actor),
                )
                invalidation.notify("models")
                _emit_alias(event)
                logger.info("alias created", extra={"alias": str(current), "version": target.version})
                return AliasChange(current, event)
        if current.model_id == target.pk:
            return AliasChange(current, None)
        if Rollout.objects.filter(alias_id=current.pk).exists():
            raise RolloutInProgress(
                f"{current} has a rollout in progress; promote it (its candidate becomes the alias's version) "
                f"or abort it before moving the alias: POST /api/v1/models/by-name/{name}/aliases/{alias}/rollout/"
                "promote, or DELETE .../rollout."
            )
        previous = current.model
        current.model = target
        for field, value in _updated_by(actor).items():
            setattr(current, field, value)
        current.save(update_fields=["model", "updated_by", "updated_by_key", "updated_at"])
        event = AliasEvent.objects.create(
            name=name,
            alias=alias,
            action=AliasEvent.Action.MOVED,
            from_model=previous,
            from_version=previous.version,
            to_model=target,
            to_version=target.version,
            **_actor_of_event(actor),
        )
        invalidation.notify("models")
        _emit_alias(event)
    logger.info(
        "alias moved", extra={"alias": str(current), "from_version": previous.version, "to_version": target.version}
    )
    return AliasChange(current, event)


def _emit_alias(event: AliasEvent) -> None:
    """`alias.moved` (webhooks) for a created, moved or deleted alias, once its change commits."""
    events.emit(
        "alias.moved",
        {
            "name": event.name,
            "alias": event.alias,
            "action": event.action,
            "from_version": event.from_version or None,
            "to_version": event.to_version or None,
            "actor": event.actor_label,
        },
    )


def alias_delete(*, name: str, alias: str, actor=None) -> AliasEvent:
    """Remove an alias (404 `alias_not_found` if there is none), recording who did it.

    Requests that named it get 404 from then on; without a `production` alias, requests
    without a version go back to the latest ready version.
    """
    with transaction.atomic():
        current = (
            ModelAlias.objects.select_for_update(of=("self",))
            .select_related("model")
            .filter(name=name, alias=alias)
            .first()
        )
        if current is None:
            raise selectors.alias_not_found(name=name, alias=alias)
        event = AliasEvent(
            name=name,
            alias=alias,
            action=AliasEvent.Action.DELETED,
            from_model=current.model,
            from_version=current.model.version,
            **_actor_of_event(actor),
        )
        current.delete()
        event.save()
        invalidation.notify("models")
        _emit_alias(event)
    logger.info("alias deleted", extra={"alias": f"{name}@{alias}", "version": event.from_version})
    return event
