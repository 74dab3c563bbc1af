"""Translate registry requests and responses; no side effects here."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.strict_input import StrictInputSerializer
from registry import reference_files
from registry.models import (
    BATCHING_BOUNDS,
    EXECUTION_MODES,
    GRAPH_OPTIMIZATION_LEVELS,
    MAX_METRICS,
    METRICS_RULE,
    NAME_PATTERN,
    NAME_RULE,
    WARMUP_DATA,
    AliasEvent,
    MLModel,
    ModelAlias,
    RuntimeRange,
    code_commit_validator,
    source_url_validator,
    tag_validator,
    validate_execution_mode,
    validate_execution_providers,
    validate_graph_optimization_level,
    validate_metrics,
    validate_version,
    validate_warmup_data,
)
from registry.versioning import MAX_VERSION_LENGTH


class TagListField(serializers.ListField):
    """Tags as a JSON list, repeated form fields, or one comma-separated string."""

    child = serializers.CharField(max_length=50, validators=[tag_validator])

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 50)
        super().__init__(**kwargs)

    def get_value(self, dictionary):
        value = super().get_value(dictionary)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and "," in value[0]:
            return [part.strip() for part in value[0].split(",") if part.strip()]
        return value

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [part.strip() for part in data.split(",") if part.strip()]
        return super().to_internal_value(data)


# Semantic Versioning 2.0.0's own pattern (semver.org), ASCII digits only. In the OpenAPI schema
# so that clients, and the fuzzing (tests/fuzz), generate versions that look like versions:
# numbers of any length included, which is how a 21-digit number once ended as a 500.
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@extend_schema_field(
    {
        "type": "string",
        "maxLength": MAX_VERSION_LENGTH,
        "pattern": SEMVER_PATTERN,
        "description": "A semantic version, e.g. 1.2.0 or 2.0.0-rc.1; each number at most 20 digits.",
    }
)
class VersionField(serializers.CharField):
    """A semantic version: 400 `invalid_version` (with what to fix) for anything else."""

    def __init__(self, **kwargs):
        # No max_length here: parse_version checks the length first, so every refusal of a
        # version, too long included, has the one code.
        super().__init__(**kwargs)
        self.validators.append(_version)


def _version(value: str) -> str:
    from django.core.exceptions import ValidationError

    try:
        validate_version(value)
    except ValidationError as exc:
        raise serializers.ValidationError(exc.messages[0], code="invalid_version") from exc
    return value


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "number"},
        "maxProperties": MAX_METRICS,
        "description": 'Evaluation metrics, name -> number, e.g. {"accuracy": 0.97, "f1": 0.95}; in a multipart '
        "body, the object as JSON text. 400 `invalid_metrics` otherwise.",
    }
)
class MetricsField(serializers.JSONField):
    """A JSON object of metric name -> number; JSON text in a multipart form. Every refusal,
    unparsable text included, is 400 `invalid_metrics`."""

    default_error_messages = {"invalid": METRICS_RULE.replace("{", "{{").replace("}", "}}")}  # str.format()ted

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators.append(validate_metrics)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(METRICS_RULE, code="invalid_metrics") from exc


class LineageSerializer(serializers.Serializer):
    """Where a version came from (given on upload): the training run, code, data and metrics."""

    source_url = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        validators=[source_url_validator],
        help_text="The training run or job that produced the file (http or https), e.g. an MLflow run's URL. "
        "400 `invalid_source_url` otherwise.",
    )
    code_commit = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        validators=[code_commit_validator],
        help_text="The commit of the training code: 7-64 hexadecimal characters. 400 `invalid_code_commit` otherwise.",
    )
    dataset = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="The training data: a name, version or URI."
    )
    metrics = MetricsField(required=False)


def _reference_field() -> serializers.FileField:
    return serializers.FileField(
        required=False,
        help_text=(
            "Optional drift reference file (multipart only): JSON Lines, CSV or .npy samples of the model's inputs, "
            "as a batch job's input file. Kept until the version is validated, then summarised as its reference "
            "(see GET /api/v1/models/{id}/reference: a file that does not fit the inputs is reported there)."
        ),
    )


def _reference_format_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=reference_files.FORMATS,
        required=False,
        help_text="The reference file's format (jsonl, csv, npy); by default from its extension.",
    )


def _with_reference(data: dict, *, needs_file: bool) -> dict:
    if "reference_format" in data and "reference" not in data:
        raise serializers.ValidationError(
            {"reference_format": "Give it with a `reference` file (or leave it out)."}, code="reference_missing"
        )
    if needs_file and "reference" in data and data.get("file") is None:
        raise serializers.ValidationError(
            {"reference": "A reference file comes with the model's `file`: register the model with both."},
            code="file_missing",
        )
    return data


class ModelCreateSerializer(LineageSerializer, StrictInputSerializer):
    name = serializers.RegexField(
        NAME_PATTERN,
        max_length=100,
        error_messages={"invalid": NAME_RULE},
    )
    version = VersionField()
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")
    tags = TagListField(required=False, default=list)
    file = serializers.FileField(
        required=False,
        allow_empty_file=True,
        help_text="The .onnx file (multipart only). With it, the model is uploaded and validated at once.",
    )
    reference = _reference_field()
    reference_format = _reference_format_field()

    def validate(self, data):
        return _with_reference(data, needs_file=True)


def _bounded(field: str, **kwargs) -> serializers.IntegerField:
    low, high = BATCHING_BOUNDS[field]
    return serializers.IntegerField(min_value=low, max_value=high, required=False, **kwargs)


class BatchingSerializer(StrictInputSerializer):
    """Dynamic batching settings (Triton's names); see inference/batching.py."""

    enabled = serializers.BooleanField(source="batching_enabled", required=False)
    max_batch_size = _bounded("max_batch_size")
    max_queue_delay_microseconds = _bounded("max_queue_delay_microseconds")
    preferred_batch_size = _bounded("preferred_batch_size", allow_null=True)
    max_queue_size = _bounded("max_queue_size")
    default_timeout_microseconds = _bounded("default_timeout_microseconds")


def _runtime_int(setting: str, source: str | None, help_text: str, **kwargs) -> serializers.IntegerField:
    # Bounds through the model's validator, so the refusal has its own code and names the range.
    if source:
        kwargs["source"] = source
    return serializers.IntegerField(required=False, validators=[RuntimeRange(setting)], help_text=help_text, **kwargs)


def _one_of(source: str, validator, help_text: str) -> serializers.CharField:
    return serializers.CharField(
        source=source, required=False, allow_blank=True, max_length=20, validators=[validator], help_text=help_text
    )


class RuntimeSerializer(StrictInputSerializer):
    """ONNX Runtime settings of one model; null or "" means the server's ORT_* setting."""

    graph_optimization_level = _one_of(
        "ort_graph_optimization_level",
        validate_graph_optimization_level,
        f"One of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}; empty: ORT_GRAPH_OPTIMIZATION.",
    )
    intra_op_threads = _runtime_int(
        "intra_op_threads",
        "ort_intra_op_threads",
        "0-64 (0: one per core); null: ORT_INTRA_OP_THREADS.",
        allow_null=True,
    )
    inter_op_threads = _runtime_int(
        "inter_op_threads", "ort_inter_op_threads", "0-64; null: ORT_INTER_OP_THREADS.", allow_null=True
    )
    execution_mode = _one_of(
        "ort_execution_mode", validate_execution_mode, f"One of {', '.join(EXECUTION_MODES)}; empty: sequential."
    )
    enable_cpu_mem_arena = serializers.BooleanField(
        source="ort_enable_cpu_mem_arena", required=False, allow_null=True, help_text="null: on."
    )
    execution_providers = serializers.ListField(
        source="ort_execution_providers",
        child=serializers.CharField(max_length=100),
        max_length=20,
        required=False,
        validators=[validate_execution_providers],
        help_text="ONNX Runtime provider names in order; CPUExecutionProvider is added last if missing. "
        "An unknown one is 400 unknown_execution_provider naming those this server offers.",
    )
    sessions_per_process = _runtime_int(
        "sessions_per_process", None, "1-8 sessions per server process, requests spread over them."
    )


class WarmupSerializer(StrictInputSerializer):
    """Runs on each new session before it serves (Triton's model_warmup)."""

    count = _runtime_int("warmup_count", "warmup_count", "0-100 runs.")
    data = _one_of("warmup_data", validate_warmup_data, f"One of {', '.join(WARMUP_DATA)}.")
    sample = serializers.JSONField(
        source="warmup_sample",
        required=False,
        allow_null=True,
        help_text='For data "sample": an input_data document, as predict takes ({"X": [[5.1, 3.5, 1.4, 0.2]]}).',
    )

    def validate_data(self, value: str) -> str:
        if value == "":
            raise serializers.ValidationError(
                f"warmup data must be one of {', '.join(WARMUP_DATA)}.", code="invalid_warmup_data"
            )
        return value


class ModelUpdateSerializer(StrictInputSerializer):
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    tags = TagListField(required=False)
    preload = serializers.BooleanField(required=False, help_text="Load a session when a server process starts.")
    allow_non_finite = serializers.BooleanField(
        required=False, help_text="Accept null (NaN) in float inputs, for models that treat NaN as missing."
    )
    batching = BatchingSerializer(required=False)
    runtime = RuntimeSerializer(required=False)
    warmup = WarmupSerializer(required=False)

    def validate(self, data: dict) -> dict:
        # One `runtime` for the service: the warm-up fields are runtime settings of the model too.
        warmup = data.pop("warmup", None)
        if warmup is not None:
            data["runtime"] = {**data.get("runtime", {}), **warmup}
        return data


class ModelUploadSerializer(StrictInputSerializer):
    file = serializers.FileField(allow_empty_file=True, help_text="The .onnx file.")
    reference = _reference_field()
    reference_format = _reference_format_field()

    def validate(self, data):
        return _with_reference(data, needs_file=False)


class TensorSpecSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField(help_text="tensor, sequence, map, ...")
    datatype = serializers.CharField(allow_null=True, help_text="Open Inference Protocol datatype, e.g. FP32.")
    onnx_type = serializers.CharField(help_text="The ONNX type, e.g. tensor(float).")
    shape = serializers.ListField(child=serializers.IntegerField(), allow_null=True, help_text="-1 = variable.")
    dim_names = serializers.ListField(child=serializers.CharField(allow_null=True), allow_null=True)


class ModelSerializer(serializers.ModelSerializer):
    tags = serializers.SerializerMethodField()
    batching = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by_label", read_only=True)
    input_schema = TensorSpecSerializer(many=True, read_only=True)
    output_schema = TensorSpecSerializer(many=True, read_only=True)
    model_metadata = serializers.DictField(read_only=True)
    validation_warnings = serializers.ListField(child=serializers.CharField(), read_only=True)
    metrics = MetricsField(read_only=True, help_text="Evaluation metrics given on upload, name -> number.")

    class Meta:
        model = MLModel
        fields = (
            "id",
            "name",
            "version",
            "description",
            "tags",
            "status",
            "file_sha256",
            "file_size",
            "input_schema",
            "output_schema",
            "model_metadata",
            "validation_warnings",
            "value_dependent_memory",
            "error_code",
            "error_message",
            "created_by",
            "created_at",
            "updated_at",
            "uploaded_at",
            "validated_at",
            "source_url",
            "code_commit",
            "dataset",
            "metrics",
            "preload",
            "allow_non_finite",
            "batching",
            "runtime",
            "warmup",
        )
        read_only_fields = fields

    @extend_schema_field(BatchingSerializer)
    def get_batching(self, obj: MLModel) -> dict:
        return BatchingSerializer(obj).data

    runtime = serializers.SerializerMethodField()
    warmup = serializers.SerializerMethodField()

    @extend_schema_field(RuntimeSerializer)
    def get_runtime(self, obj: MLModel) -> dict:
        return RuntimeSerializer(obj).data

    @extend_schema_field(WarmupSerializer)
    def get_warmup(self, obj: MLModel) -> dict:
        return WarmupSerializer(obj).data

    def get_tags(self, obj: MLModel) -> list[str]:
        return [tag.name for tag in obj.tags.all()]


# --- aliases ---------------------------------------------------------------------------------


class AliasSetSerializer(StrictInputSerializer):
    version = VersionField(help_text="The version to point the alias at: a ready version of this name, e.g. 1.2.0.")


def _actor_type(user_id, key_id) -> str | None:
    if user_id:
        return "user"
    if key_id:
        return "key"
    return None


class AliasSerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="model.version", read_only=True)
    model_id = serializers.UUIDField(read_only=True)
    status = serializers.CharField(
        source="model.status", read_only=True, help_text="The status of the version it points at."
    )
    updated_by = serializers.SerializerMethodField(help_text='Who moved it last: a user name or "key:<key name>".')

    class Meta:
        model = ModelAlias
        fields = ("name", "alias", "version", "model_id", "status", "created_at", "updated_at", "updated_by")
        read_only_fields = fields

    def get_updated_by(self, obj: ModelAlias) -> str | None:
        if obj.updated_by_id:
            return obj.updated_by.get_username()
        if obj.updated_by_key_id:
            return f"key:{obj.updated_by_key.name}"
        return None


class AliasEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor_label", read_only=True, help_text='A user name or "key:<key name>", as it was at the time.'
    )
    actor_type = serializers.SerializerMethodField(help_text="user, key, or null (a command-line change).")

    class Meta:
        model = AliasEvent
        fields = (
            "id",
            "alias",
            "action",
            "from_version",
            "to_version",
            "from_model_id",
            "to_model_id",
            "actor",
            "actor_type",
            "from_weight",
            "to_weight",
            "detail",
            "created_at",
        )
        read_only_fields = fields
        extra_kwargs = {
            "from_weight": {"help_text": "A rollout's candidate weight (percent) before the change; null otherwise."},
            "to_weight": {"help_text": "A rollout's candidate weight (percent) after the change; null otherwise."},
            "detail": {"help_text": "What else changed, or why (a guard trip's reason)."},
        }

    def get_actor_type(self, obj: AliasEvent) -> str | None:
        return _actor_type(obj.actor_user_id, obj.actor_key_id)


class AliasesSerializer(serializers.Serializer):
    name = serializers.CharField()
    default_version = serializers.CharField(
        allow_null=True,
        help_text="What requests without a version get: the production alias's version, else the latest ready one.",
    )
    aliases = AliasSerializer(many=True)
    events = AliasEventSerializer(many=True, help_text="The audit trail of this name's aliases, newest first.")
