"""The model registry: one row per model name + semantic version."""

from __future__ import annotations

import json
import math
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.utils.deconstruct import deconstructible

from registry.versioning import MAX_SORT_KEY_LENGTH, MAX_VERSION_LENGTH, parse_version, version_sort_key

# A label, never a path: it starts with a letter or digit so that "..", ".x" or "-x" (which
# clients and shells treat specially in URLs and arguments) cannot be names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
NAME_RULE = "A model name is 1-100 characters: letters, digits, '-', '_' and '.', starting with a letter or digit."
name_validator = RegexValidator(
    NAME_PATTERN,
    NAME_RULE,
    code="invalid_name",
)
tag_validator = RegexValidator(
    r"^[A-Za-z0-9_.:-]{1,50}$",
    "A tag is 1-50 characters: letters, digits, '-', '_', '.' and ':'.",
    code="invalid_tag",
)


def validate_version(value: str) -> None:
    from django.core.exceptions import ValidationError

    try:
        parse_version(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_version") from exc


# The bounds of the serving numbers, for the API's serializer and the admin's form alike (and
# so never a value too large for its integer column).
BATCHING_BOUNDS = {
    "max_batch_size": (1, 100_000),
    "max_queue_delay_microseconds": (0, 10_000_000),
    "preferred_batch_size": (1, 100_000),
    "max_queue_size": (1, 1_000_000),
    "default_timeout_microseconds": (0, 600_000_000),
}


def _bounds(field: str) -> list:
    low, high = BATCHING_BOUNDS[field]
    return [MinValueValidator(low), MaxValueValidator(high)]


# ONNX Runtime settings of one model; empty means the server-wide ORT_* settings. The allowed
# values are named in every refusal, for the API's serializer and the admin's form alike.
GRAPH_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
# Warm-up inputs, Triton's three kinds: zeros (inference.tensors.example_input), random values
# within each input's type, or the sample stored with the model (`warmup_sample`).
WARMUP_DATA = ("zero", "random", "sample")
CPU_PROVIDER = "CPUExecutionProvider"
# (low, high, code): threads 0 let ONNX Runtime pick (one per core); more than 64 threads for
# one session, or more than 8 sessions of one model per process, is a typo, not a tuning.
RUNTIME_BOUNDS = {
    "intra_op_threads": (0, 64, "invalid_thread_count"),
    "inter_op_threads": (0, 64, "invalid_thread_count"),
    "sessions_per_process": (1, 8, "invalid_sessions_per_process"),
    "warmup_count": (0, 100, "invalid_warmup_count"),
}


@deconstructible
class RuntimeRange:
    """A bound of RUNTIME_BOUNDS as a validator whose message names the allowed range."""

    def __init__(self, setting: str):
        self.setting = setting

    def __call__(self, value) -> None:
        from django.core.exceptions import ValidationError

        low, high, code = RUNTIME_BOUNDS[self.setting]
        if value is not None and not (low <= value <= high):
            raise ValidationError(f"{self.setting} must be {low}-{high}; received {value}.", code=code)

    def __eq__(self, other) -> bool:
        return isinstance(other, RuntimeRange) and other.setting == self.setting


@deconstructible
class OneOf:
    """One of the ``allowed`` words, or empty (the server's default); the refusal names them."""

    def __init__(self, setting: str, allowed: tuple[str, ...], code: str):
        self.setting, self.allowed, self.code = setting, tuple(allowed), code

    def __call__(self, value) -> None:
        from django.core.exceptions import ValidationError

        if value not in ("", None) and value not in self.allowed:
            raise ValidationError(
                f"{self.setting} must be one of {', '.join(self.allowed)} (or empty: the server's default); "
                f"received {value!r}.",
                code=self.code,
            )

    def __eq__(self, other) -> bool:
        return isinstance(other, OneOf) and (other.setting, other.allowed, other.code) == (
            self.setting,
            self.allowed,
            self.code,
        )


validate_graph_optimization_level = OneOf(
    "graph_optimization_level", GRAPH_OPTIMIZATION_LEVELS, "invalid_optimization_level"
)
validate_execution_mode = OneOf("execution_mode", EXECUTION_MODES, "invalid_execution_mode")
validate_warmup_data = OneOf("warmup data", WARMUP_DATA, "invalid_warmup_data")


def validate_execution_providers(value) -> None:
    """A list of the execution providers this server's onnxruntime offers, each once (ONNX
    Runtime's names, e.g. CPUExecutionProvider); 400 `unknown_execution_provider` naming them."""
    import onnxruntime
    from django.core.exceptions import ValidationError

    available = onnxruntime.get_available_providers()
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError(
            f"execution_providers must be a list of provider names, from: {', '.join(available)}.",
            code="invalid_execution_providers",
        )
    unknown = [name for name in value if name not in available]
    if unknown:
        raise ValidationError(
            f"execution provider {', '.join(unknown)} is not offered by this server's onnxruntime; "
            f"it offers: {', '.join(available)}.",
            code="unknown_execution_provider",
        )
    if len(set(value)) != len(value):
        raise ValidationError("execution_providers lists a provider twice.", code="invalid_execution_providers")


def execution_providers(configured: list[str]) -> list[str]:
    """The providers a session is created with, in order: CPU always present, last if not given."""
    return list(configured) if CPU_PROVIDER in configured else [*configured, CPU_PROVIDER]


# --- lineage: where a version came from, as MLflow records a run ---------------------------------
# Optional on upload (the API's create, the admin's add form), shown on the name page and in the
# API. Each rule has its own 400 code, for the API's serializer and the admin's form alike.
LINEAGE_FIELDS = ("source_url", "code_commit", "dataset", "metrics")
MAX_METRICS = 50
MAX_METRIC_NAME_LENGTH = 100
METRICS_RULE = 'Enter a JSON object of metric name -> number, e.g. {"accuracy": 0.97}.'
source_url_validator = URLValidator(
    schemes=["http", "https"],
    message="Enter an http(s) URL, e.g. https://mlflow.example.com/#/experiments/1/runs/7f3a.",
    code="invalid_source_url",
)
code_commit_validator = RegexValidator(
    r"^[0-9a-fA-F]{7,64}$",
    "Enter a commit hash: 7-64 hexadecimal characters, e.g. 4f2c9e1 or a full 40-character sha.",
    code="invalid_code_commit",
)


def validate_metrics(value) -> None:
    """An object of metric name -> finite number ({"accuracy": 0.97, "f1": 0.95}), at most
    MAX_METRICS of them; 400 `invalid_metrics` saying which entry is wrong."""
    from django.core.exceptions import ValidationError

    def refuse(message: str):
        return ValidationError(message, code="invalid_metrics")

    if not isinstance(value, dict):
        raise refuse(METRICS_RULE)
    if len(value) > MAX_METRICS:
        raise refuse(f"At most {MAX_METRICS} metrics; received {len(value)}.")
    for name, number in value.items():
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_METRIC_NAME_LENGTH:
            raise refuse(f"Metric names are 1-{MAX_METRIC_NAME_LENGTH} characters.")
        # bool is an int in Python, never a metric; NaN and infinity cannot be compared.
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise refuse(f"Metric values are finite numbers; {name!r} is {json.dumps(number)}.")


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True, validators=[tag_validator])

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class MLModelQuerySet(models.QuerySet):
    def ready(self):
        return self.filter(status=MLModel.Status.READY)

    def named(self, name: str):
        return self.filter(name=name)

    def newest_first(self):
        return self.order_by("-version_key", "-created_at")

    def with_relations(self):
        return self.select_related("created_by", "created_by_key").prefetch_related("tags")


class MLModel(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending upload"
        UPLOADED = "uploaded", "Uploaded"
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        ERROR = "error", "Error"
        ARCHIVED = "archived", "Archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, validators=[name_validator], db_index=True)
    version = models.CharField(max_length=MAX_VERSION_LENGTH, validators=[validate_version])
    # Digits-only key ordering versions by semver precedence (see registry.versioning).
    version_key = models.CharField(max_length=MAX_SORT_KEY_LENGTH, editable=False, db_index=True)
    description = models.TextField(blank=True, max_length=10_000)
    tags = models.ManyToManyField(Tag, blank=True, related_name="models")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)

    # Serving options (used by the inference app).
    preload = models.BooleanField(default=False, help_text="Load a session at server start-up, not on first use.")
    allow_non_finite = models.BooleanField(
        default=False,
        help_text="Accept NaN in float inputs, sent as JSON null (tree models that treat NaN as missing).",
    )

    # Dynamic batching (Triton's vocabulary): concurrent requests merged into one run.
    batching_enabled = models.BooleanField(
        default=False, help_text="Merge concurrent requests along the first (variable) dimension into one run."
    )
    max_batch_size = models.PositiveIntegerField(
        default=64, validators=_bounds("max_batch_size"), help_text="Most rows in one merged run."
    )
    max_queue_delay_microseconds = models.PositiveIntegerField(
        default=500,
        validators=_bounds("max_queue_delay_microseconds"),
        help_text="Longest a request waits for others to join its batch.",
    )
    preferred_batch_size = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=_bounds("preferred_batch_size"),
        help_text="Run as soon as this many rows wait (default: max_batch_size).",
    )
    max_queue_size = models.PositiveIntegerField(
        default=256,
        validators=_bounds("max_queue_size"),
        help_text="Requests that may wait; more are refused with 503 and Retry-After.",
    )
    default_timeout_microseconds = models.PositiveIntegerField(
        default=10_000_000,
        validators=_bounds("default_timeout_microseconds"),
        help_text="A request waiting longer in the queue is refused with 503 (0: no limit).",
    )

    # ONNX Runtime settings (inference.sessions), empty: the server's ORT_* settings. A change
    # rebuilds the model's sessions in every process (the pool keys sessions by file and settings).
    ort_graph_optimization_level = models.CharField(
        max_length=10,
        blank=True,
        choices=[(level, level) for level in GRAPH_OPTIMIZATION_LEVELS],
        validators=[validate_graph_optimization_level],
        verbose_name="graph optimization level",
        help_text="Empty: ORT_GRAPH_OPTIMIZATION.",
    )
    ort_intra_op_threads = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[RuntimeRange("intra_op_threads")],
        verbose_name="intra-op threads",
        help_text="Threads within an operator, 0-64 (0: ONNX Runtime picks one per core). Empty: ORT_INTRA_OP_THREADS.",
    )
    ort_inter_op_threads = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[RuntimeRange("inter_op_threads")],
        verbose_name="inter-op threads",
        help_text="Threads across operators (parallel execution mode), 0-64. Empty: ORT_INTER_OP_THREADS.",
    )
    ort_execution_mode = models.CharField(
        max_length=10,
        blank=True,
        choices=[(mode, mode) for mode in EXECUTION_MODES],
        validators=[validate_execution_mode],
        verbose_name="execution mode",
        help_text="Operators one after another (sequential), or independent branches at once. Empty: sequential.",
    )
    ort_enable_cpu_mem_arena = models.BooleanField(
        null=True,
        blank=True,
        verbose_name="CPU memory arena",
        help_text="ONNX Runtime keeps and reuses what runs allocated (faster, holds memory). Empty: on "
        "(always off for a model run in an isolated process).",
    )
    ort_execution_providers = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_execution_providers],
        verbose_name="execution providers",
        help_text="In order of preference; CPUExecutionProvider is always there, last if not listed. Empty: CPU only.",
    )
    sessions_per_process = models.PositiveSmallIntegerField(
        default=1,
        validators=[RuntimeRange("sessions_per_process")],
        help_text="Sessions of this model in each server process, 1-8; requests are spread over them "
        "(unbatched models; a batched model runs one batch at a time on one).",
    )

    # Warm-up runs when a session is loaded; the model answers not ready until they are done.
    warmup_count = models.PositiveSmallIntegerField(
        default=1,
        validators=[RuntimeRange("warmup_count")],
        help_text="Runs on each new session before it serves, 0-100.",
    )
    warmup_data = models.CharField(
        max_length=10,
        default="zero",
        choices=[(kind, kind) for kind in WARMUP_DATA],
        validators=[validate_warmup_data],
        help_text="zero: zeros of each input's type; random: random values within it; sample: the stored sample.",
    )
    warmup_sample = models.JSONField(
        null=True,
        blank=True,
        help_text='The warm-up input for "sample", as predict\'s input_data ({"X": [[...]]}).',
    )

    # Lineage (optional, given on upload): the training run, code and data this version came from.
    # Not a URLField: its own validator (and form field) would accept ftp, or add a scheme.
    source_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[source_url_validator],
        verbose_name="source run URL",
        help_text="The training run or job that produced the file, e.g. an MLflow run's URL (http or https).",
    )
    code_commit = models.CharField(
        max_length=64,
        blank=True,
        validators=[code_commit_validator],
        help_text="The commit of the training code: 7-64 hexadecimal characters.",
    )
    dataset = models.CharField(
        max_length=500, blank=True, help_text="The training data: a name, version or URI, as your team writes it."
    )
    metrics = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_metrics],
        help_text='Evaluation metrics of the training run, name -> number, e.g. {"accuracy": 0.97}.',
    )

    file_sha256 = models.CharField(max_length=64, blank=True, editable=False, db_index=True)
    file_size = models.BigIntegerField(null=True, blank=True, editable=False)
    input_schema = models.JSONField(default=list, blank=True, editable=False)
    output_schema = models.JSONField(default=list, blank=True, editable=False)
    model_metadata = models.JSONField(default=dict, blank=True, editable=False)
    validation_warnings = models.JSONField(default=list, blank=True, editable=False)
    # Set by validation (registry.onnx_inspect.value_sized_allocations): some operator's output
    # size comes from the request's values, so the model runs only in a memory-capped process.
    value_dependent_memory = models.BooleanField(
        default=False,
        editable=False,
        verbose_name="memory set by input values",
        help_text="Some operator's output size comes from input values (ConstantOfShape, Expand, Tile, Range, ...): "
        "served only in an isolated process under MODEL_MEMORY_LIMIT_MB.",
    )
    error_code = models.CharField(max_length=50, blank=True, editable=False)
    error_message = models.TextField(blank=True, editable=False)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_key = models.ForeignKey(
        "access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    uploaded_at = models.DateTimeField(null=True, blank=True, editable=False)
    validated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set when the version is first ready, never cleared: from then on its file is fixed (a
    # new file is a new version), so whatever served it can be served again, byte for byte.
    first_ready_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The background validation's claim (registry.services.model_validation_run): while
    # validating, started_at is None until a worker takes it, and each take counts an
    # attempt, which is also the token that lets only that run write the result.
    validation_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    validation_attempts = models.PositiveSmallIntegerField(default=0, editable=False)

    objects = MLModelQuerySet.as_manager()

    class Meta:
        verbose_name = "model"
        ordering = ("name", "-version_key")
        constraints = [
            models.UniqueConstraint(fields=("name", "version"), name="registry_unique_name_version"),
            models.CheckConstraint(
                condition=~Q(status__in=["uploaded", "validating", "ready"]) | ~Q(file_sha256=""),
                name="registry_servable_has_file",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    def save(self, *args, **kwargs):
        self.version_key = version_sort_key(self.version)
        super().save(*args, **kwargs)

    @property
    def has_file(self) -> bool:
        return bool(self.file_sha256)

    def is_servable(self) -> bool:
        return self.status == self.Status.READY

    @property
    def is_immutable(self) -> bool:
        """Whether the file is fixed for good: the version has been ready once."""
        return self.first_ready_at is not None

    @property
    def created_by_label(self) -> str:
        if self.created_by_id:
            return self.created_by.get_username()
        if self.created_by_key_id:
            return f"key:{self.created_by_key.name}"
        return ""


# --- aliases: named pointers to one version of a name ---------------------------------------

# A label that can never be read as a version: it starts with a letter and has no '.', while
# every semantic version starts with a digit and has two dots. So `/versions/production` and
# `/versions/1.2.0` are never ambiguous, and neither is Triton's habit of integer versions.
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,49}$"
ALIAS_RULE = "An alias is 1-50 characters: letters, digits, '-' and '_', starting with a letter (e.g. production)."
alias_validator = RegexValidator(ALIAS_PATTERN, ALIAS_RULE, code="invalid_alias")


def validate_alias(value: str) -> None:
    """An alias name: a label (ALIAS_RULE) that is not a version, each refusal with its own code."""
    from django.core.exceptions import ValidationError

    try:
        parse_version(value)
    except ValueError:
        alias_validator(value)
    else:
        raise ValidationError(
            f"'{value}' is a version, not an alias name. An alias is a label such as production or staging.",
            code="alias_is_version",
        )


# Requests that name no version use this alias when the name has it (else the latest ready version).
DEFAULT_ALIAS = "production"


class ModelAliasQuerySet(models.QuerySet):
    def named(self, name: str):
        return self.filter(name=name)

    def with_target(self):
        return self.select_related("model", "updated_by", "updated_by_key")


class ModelAlias(models.Model):
    """`name:alias` points at one version of `name`; moved only by registry.aliases.alias_set."""

    name = models.CharField(max_length=100, validators=[name_validator], db_index=True)
    alias = models.CharField(max_length=50, validators=[validate_alias])
    # PROTECT: a version an alias points at cannot be deleted (move or delete the alias first).
    model = models.ForeignKey(MLModel, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by_key = models.ForeignKey(
        "access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ModelAliasQuerySet.as_manager()

    class Meta:
        verbose_name = "alias"
        verbose_name_plural = "aliases"
        ordering = ("name", "alias")
        constraints = [models.UniqueConstraint(fields=("name", "alias"), name="registry_unique_name_alias")]

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"

    @property
    def version(self) -> str:
        return self.model.version


class AliasEventQuerySet(models.QuerySet):
    def named(self, name: str):
        return self.filter(name=name)

    def newest_first(self):
        return self.order_by("-created_at", "-id")


class AliasEvent(models.Model):
    """One change of an alias (the audit trail). Written by the alias services in the same
    transaction as the change; never edited. Versions are kept as text, so the trail outlives
    the versions it names."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        MOVED = "moved", "Moved"
        DELETED = "deleted", "Deleted"
        # A rollout (registry.rollouts): from/to versions and weights say what changed.
        ROLLOUT_STARTED = "rollout_started", "Rollout started"
        ROLLOUT_CHANGED = "rollout_changed", "Rollout changed"  # shadow or guard settings
        WEIGHT_CHANGED = "weight_changed", "Weight changed"
        PROMOTED = "promoted", "Promoted"
        ABORTED = "aborted", "Aborted"
        GUARD_TRIPPED = "guard_tripped", "Guard tripped"

    name = models.CharField(max_length=100, db_index=True)
    alias = models.CharField(max_length=50)
    action = models.CharField(max_length=20, choices=Action.choices)
    from_model = models.ForeignKey(MLModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    from_version = models.CharField(max_length=MAX_VERSION_LENGTH, blank=True)
    to_model = models.ForeignKey(MLModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_version = models.CharField(max_length=MAX_VERSION_LENGTH, blank=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_key = models.ForeignKey("access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who, as text at the time ("ops" or "key:deploy-bot"): still readable once the user or key is gone.
    actor_label = models.CharField(max_length=200, blank=True)
    # A rollout's candidate weight (percent) before and after the change; null for plain moves.
    from_weight = models.FloatField(null=True, blank=True)
    to_weight = models.FloatField(null=True, blank=True)
    # What else changed or why (a guard trip's reason, a shadow set), in words.
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AliasEventQuerySet.as_manager()

    class Meta:
        verbose_name = "alias event"
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=("name", "alias", "-created_at"), name="registry_aliasevent_trail")]

    def __str__(self) -> str:
        return f"{self.name}@{self.alias} {self.action} {self.from_version or '-'} -> {self.to_version or '-'}"


percent_validators = [MinValueValidator(0.0), MaxValueValidator(100.0)]


class RolloutQuerySet(models.QuerySet):
    def with_versions(self):
        return self.select_related("alias", "alias__model", "candidate", "shadow")


class Rollout(models.Model):
    """A gradual move of an alias: the alias keeps its version (the primary) and a candidate
    version of the same name gets `weight` percent of the requests through the alias; a shadow
    version gets a copy of `shadow_percent` percent of them, never answered to the client.
    Changed only by registry.rollouts (each change an AliasEvent); gone once promoted or aborted.

    The guard (inference.rollout_guard), when on, sets the weight to 0 once the candidate's
    error rate exceeds the primary's by `guard_error_margin` percentage points, or its p95 the
    primary's by `guard_latency_margin` percent, over `guard_window_minutes` minutes with at
    least `guard_min_requests` candidate requests."""

    alias = models.OneToOneField(ModelAlias, on_delete=models.CASCADE, related_name="rollout")
    # PROTECT: a version that takes live traffic is not deleted from under the rollout.
    candidate = models.ForeignKey(
        MLModel, null=True, blank=True, on_delete=models.PROTECT, related_name="candidate_rollouts"
    )
    weight = models.FloatField(default=0.0, validators=percent_validators, help_text="Percent of requests, 0-100.")
    # SET_NULL: a shadow answers no client; deleting it just ends the copies.
    shadow = models.ForeignKey(MLModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    shadow_percent = models.FloatField(default=0.0, validators=percent_validators)
    guard_enabled = models.BooleanField(default=False)
    guard_error_margin = models.FloatField(default=5.0, validators=percent_validators)
    guard_latency_margin = models.FloatField(default=50.0, validators=[MinValueValidator(0.0)])
    guard_min_requests = models.PositiveIntegerField(default=100)
    guard_window_minutes = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(60)]
    )
    guard_tripped_at = models.DateTimeField(null=True, blank=True)
    guard_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RolloutQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(weight__gte=0, weight__lte=100), name="registry_rollout_weight_range"),
            models.CheckConstraint(
                condition=Q(shadow_percent__gte=0, shadow_percent__lte=100), name="registry_rollout_shadow_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.alias} rollout"


class SettingsEvent(models.Model):
    """One change of a version's serving or runtime settings (the audit trail), written by
    `registry.services.model_update` in the same transaction; never edited. ``changes`` maps
    each changed field to ``[from, to]``; name, version and who are kept as text, like an
    AliasEvent's, so the trail outlives the version, the user and the key."""

    model = models.ForeignKey(MLModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=100, db_index=True)
    version = models.CharField(max_length=MAX_VERSION_LENGTH)
    changes = models.JSONField(default=dict)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_key = models.ForeignKey("access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "settings event"
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.name}:{self.version} {', '.join(self.changes)}"


class DeploymentIdentity(models.Model):
    """This deployment's one row: a token the model storage holds too, in its sentinel object
    (registry.sentinel). A process whose storage settings hold another token, or none and none
    of the files this database lists, is looking at the wrong bucket, prefix or folder."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "deployment identity"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="registry_deployment_identity_single_row")]

    def __str__(self) -> str:
        return f"deployment {self.token}"


class PendingReference(models.Model):
    """A drift reference file given with a version's upload, kept (as a server-named blob,
    registry.reference_files) until the version is validated: monitoring then summarises it
    against the version's inputs and deletes this row and the blob (monitoring.services
    `pending_reference_build`). The registry only keeps it: it knows nothing of references."""

    model = models.OneToOneField(MLModel, on_delete=models.CASCADE, related_name="pending_reference")
    sha256 = models.CharField(max_length=64, help_text="The blob's name in the model storage (references/...).")
    size = models.PositiveBigIntegerField()
    filename = models.CharField(max_length=255, blank=True, help_text="The client's name for it: a label only.")
    input_format = models.CharField(
        max_length=10, blank=True, help_text="jsonl, csv or npy as given; empty: from the file name's extension."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "pending reference file"

    def __str__(self) -> str:
        return f"reference file {self.filename or self.sha256[:12]} of {self.model_id}"
