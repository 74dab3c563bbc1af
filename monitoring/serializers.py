"""Shapes of the drift API: references, drift results, drift thresholds."""

from __future__ import annotations

from rest_framework import serializers

from core.strict_input import StrictInputSerializer
from jobs.batch_io import FORMATS


class ReferenceUploadSerializer(StrictInputSerializer):
    file = serializers.FileField(help_text="The reference samples: JSON Lines, CSV or .npy, as a batch job's input.")
    input_format = serializers.ChoiceField(
        choices=FORMATS, required=False, help_text="The file's format, as a job's; by default from its extension."
    )


class ReferenceFeatureSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="`X[0]` for column 0 of input X; an output's name; `<tensor> (mean)`.")
    source = serializers.ChoiceField(choices=("input", "output"))
    tensor = serializers.CharField()
    kind = serializers.ChoiceField(choices=("numeric", "categorical"))
    statistic = serializers.ChoiceField(choices=("column", "value", "mean"))
    count = serializers.IntegerField(help_text="Values summarised (NaN and missing ones excluded).")
    missing = serializers.IntegerField()
    bin_edges = serializers.ListField(child=serializers.FloatField(), required=False)
    categories = serializers.ListField(child=serializers.CharField(), required=False)
    counts = serializers.ListField(child=serializers.IntegerField())
    mean = serializers.FloatField(required=False)
    std = serializers.FloatField(required=False)
    min = serializers.FloatField(required=False)
    max = serializers.FloatField(required=False)


class ReferenceSerializer(serializers.Serializer):
    model_id = serializers.UUIDField()
    source = serializers.ChoiceField(choices=("file", "predictions"))
    filename = serializers.CharField(allow_blank=True)
    rows = serializers.IntegerField(help_text="Samples summarised.")
    status = serializers.ChoiceField(
        choices=("ready", "failed"),
        help_text="`failed`: the reference file given with the upload did not fit the version's inputs (no drift).",
    )
    error_code = serializers.CharField(allow_blank=True, help_text="Why it failed, e.g. `reference_columns`.")
    error = serializers.CharField(allow_blank=True, help_text="What does not fit, naming the column, input or row.")
    features = serializers.SerializerMethodField()
    skipped = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_features(self, obj) -> list[dict]:
        # The KS test's quantile sketch stays server-side: a thousand numbers per feature.
        return [
            ReferenceFeatureSerializer({k: v for k, v in feature.items() if k != "ks_sample"}).data
            for feature in obj.summary.get("features", [])
        ]

    def get_skipped(self, obj) -> list[str]:
        return obj.summary.get("skipped", [])


class DriftFeatureSerializer(serializers.Serializer):
    name = serializers.CharField()
    source = serializers.CharField()
    kind = serializers.CharField()
    level = serializers.ChoiceField(choices=("green", "amber", "red", "idle"))
    psi = serializers.FloatField(allow_null=True, help_text="Population Stability Index over the reference's bins.")
    test = serializers.ChoiceField(choices=("ks", "chi2"), help_text="Kolmogorov-Smirnov or chi-square.")
    p_value = serializers.FloatField(allow_null=True)
    rows = serializers.IntegerField(help_text="The feature's values in the window.")
    missing = serializers.IntegerField()
    bin_edges = serializers.ListField(child=serializers.FloatField(), required=False)
    categories = serializers.ListField(child=serializers.CharField(), required=False)
    reference_counts = serializers.ListField(child=serializers.IntegerField())
    window_counts = serializers.ListField(child=serializers.IntegerField())


class DriftWindowSerializer(serializers.Serializer):
    window = serializers.CharField(help_text="As in DRIFT_WINDOWS: 1h, 1d.")
    level = serializers.ChoiceField(choices=("green", "amber", "red", "idle"))
    state = serializers.ChoiceField(
        choices=("green", "amber", "red"), help_text="The last judged level (an idle window keeps it)."
    )
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    predictions = serializers.IntegerField()
    rows = serializers.IntegerField(help_text="Samples read (all, or a random sample: `sampled`).")
    sampled = serializers.BooleanField()
    computed_at = serializers.DateTimeField()
    features = DriftFeatureSerializer(many=True)


class DriftThresholdsSerializer(StrictInputSerializer):
    psi_amber = serializers.FloatField(min_value=0.001, max_value=10.0, allow_null=True, required=False)
    psi_red = serializers.FloatField(min_value=0.001, max_value=10.0, allow_null=True, required=False)
    p_value = serializers.FloatField(min_value=1e-12, max_value=0.5, allow_null=True, required=False)
    min_rows = serializers.IntegerField(min_value=1, max_value=10_000_000, allow_null=True, required=False)


class DriftSerializer(serializers.Serializer):
    model_id = serializers.UUIDField()
    name = serializers.CharField()
    version = serializers.CharField()
    level = serializers.ChoiceField(
        choices=("green", "amber", "red", "idle"), help_text="The worst window's level; idle without results."
    )
    thresholds = DriftThresholdsSerializer(help_text="The effective thresholds of the model's name.")
    reference = ReferenceSerializer(allow_null=True)
    windows = DriftWindowSerializer(many=True)
