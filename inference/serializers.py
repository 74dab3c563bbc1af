"""Shapes of the inference API, for the OpenAPI schema and the history endpoints."""

from __future__ import annotations

from rest_framework import serializers

from inference.models import Prediction


class PredictRequestSerializer(serializers.Serializer):
    """Documentation of the predict body (the view parses it itself, strictly)."""

    input_data = serializers.DictField(
        help_text='Each model input by name: a nested list (row-major) or a scalar, e.g. {"X": [[5.1, 3.5, 1.4, 0.2]]}.'
    )
    skip_cache = serializers.BooleanField(default=False, help_text="Run the model even if the result is cached.")


class PredictResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="The prediction's id in the history (written within about a second).")
    model_id = serializers.UUIDField()
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    output_data = serializers.DictField(help_text="Each output by name. Non-finite floats are null (see warnings).")
    inference_time_ms = serializers.FloatField(help_text="ONNX Runtime compute time only; 0 for a cache hit.")
    cached = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    warnings = serializers.ListField(child=serializers.CharField(), required=False)


class PredictionSerializer(serializers.ModelSerializer):
    model_id = serializers.UUIDField(read_only=True)
    api_key = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = (
            "id",
            "model_id",
            "model_name",
            "model_version",
            "api_key",
            "input_data",
            "input_truncated",
            "output_data",
            "warnings",
            "cached",
            "inference_time_ms",
            "total_time_ms",
            "created_at",
        )
        read_only_fields = fields

    def get_api_key(self, obj: Prediction) -> str | None:
        return obj.api_key.name if obj.api_key_id and obj.api_key else None
