"""Translate job requests and responses; no side effects here."""

from __future__ import annotations

from rest_framework import serializers

from core.strict_input import StrictInputSerializer
from jobs.batch_io import FORMATS
from jobs.models import Job
from registry.models import NAME_PATTERN, NAME_RULE
from registry.versioning import MAX_VERSION_LENGTH


class JobCreateSerializer(StrictInputSerializer):
    model_id = serializers.UUIDField(required=False, help_text="The model version's id.")
    model_name = serializers.RegexField(
        NAME_PATTERN,
        max_length=100,
        required=False,
        error_messages={"invalid": NAME_RULE},
        help_text="Instead of model_id: a model name; its production alias's version, else its latest ready "
        "version, unless `version` or `alias` is given.",
    )
    version = serializers.CharField(max_length=MAX_VERSION_LENGTH, required=False)
    alias = serializers.CharField(max_length=50, required=False, help_text="With model_name: an alias, e.g. staging.")
    priority = serializers.ChoiceField(choices=Job.Priority.choices, default=Job.Priority.NORMAL)
    input_data = serializers.JSONField(
        required=False,
        help_text='Inline input, as for predict: {"<input name>": <nested list>} (JSON bodies).',
    )
    input_file = serializers.FileField(
        required=False,
        allow_empty_file=True,
        help_text="A batch input file (multipart): JSON Lines, CSV or .npy, one row per sample.",
    )
    input_format = serializers.ChoiceField(
        choices=FORMATS, required=False, help_text="The input file's format; by default from its extension."
    )

    def validate(self, attrs):
        if ("model_id" in attrs) == ("model_name" in attrs):
            raise serializers.ValidationError(
                "Name the model: model_id, or model_name (with an optional version).", code="model_required"
            )
        for field in ("version", "alias"):
            if field in attrs and "model_name" not in attrs:
                raise serializers.ValidationError({field: [f"{field} goes with model_name."]})
        if ("input_data" in attrs) == ("input_file" in attrs):
            raise serializers.ValidationError(
                "Send exactly one input: input_data (a JSON body) or input_file (multipart).", code="input_required"
            )
        if "input_format" in attrs and "input_file" not in attrs:
            raise serializers.ValidationError({"input_format": ["input_format goes with input_file."]})
        return attrs


class JobProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField(source="progress_done", help_text="Rows processed.")
    total = serializers.IntegerField(source="progress_total", help_text="Rows in the input.")


class JobInputSerializer(serializers.Serializer):
    format = serializers.CharField(source="input_format", help_text="json (inline), jsonl, csv or npy.")
    rows = serializers.IntegerField(source="progress_total")
    filename = serializers.CharField(source="input_filename", help_text="The uploaded file's name (a label).")
    size_bytes = serializers.IntegerField(source="input_size", allow_null=True)


class JobSerializer(serializers.ModelSerializer):
    model_id = serializers.UUIDField(read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner_label", read_only=True, help_text="key:<name>, or a staff user.")
    input = JobInputSerializer(source="*", read_only=True)
    progress = JobProgressSerializer(source="*", read_only=True)
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True)
    traceback = serializers.CharField(read_only=True, required=False, help_text="Staff only.")
    result_url = serializers.HyperlinkedIdentityField(view_name="job-result", read_only=True)

    class Meta:
        model = Job
        fields = (
            "id",
            "status",
            "priority",
            "model_id",
            "model_name",
            "model_version",
            "owner",
            "input",
            "progress",
            "attempts",
            "worker",
            "queue_time_ms",
            "inference_time_ms",
            "warnings",
            "error_code",
            "error_message",
            "traceback",
            "created_at",
            "started_at",
            "finished_at",
            "result_url",
        )
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("staff"):
            data.pop("traceback", None)
        return data


class JobDownloadsSerializer(serializers.Serializer):
    jsonl = serializers.URLField()
    csv = serializers.URLField()


class JobResultSerializer(serializers.Serializer):
    """A completed job's result: the outputs of an inline job, or where to get a batch job's file."""

    id = serializers.UUIDField()
    status = serializers.CharField()
    model_id = serializers.UUIDField(allow_null=True)
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    output_data = serializers.DictField(required=False, help_text="Inline jobs: each output by name.")
    rows = serializers.IntegerField(required=False, help_text="Batch jobs: rows in the output file.")
    downloads = JobDownloadsSerializer(required=False, help_text="Batch jobs: the output as JSON Lines or CSV.")
    warnings = serializers.ListField(child=serializers.CharField())
    inference_time_ms = serializers.FloatField(allow_null=True)
    finished_at = serializers.DateTimeField()


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    length = serializers.IntegerField()


class CeleryHealthSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="healthy, or degraded: the broker or every worker is silent.")
    mode = serializers.ChoiceField(choices=["celery", "embedded"])
    broker = serializers.DictField()
    workers = serializers.ListField(child=serializers.DictField())
    queues = QueueSerializer(many=True)
    jobs = serializers.DictField(child=serializers.IntegerField(), help_text="Jobs not yet finished, by status.")
    duration_ms = serializers.FloatField()
