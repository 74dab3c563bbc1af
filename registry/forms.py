"""Admin forms for the registry: they validate input only; saving goes through registry.services."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnxruntime
from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import FileExtensionValidator

from core.exceptions import DomainError
from registry import reference_files, services
from registry.models import (
    ALIAS_RULE,
    EXECUTION_MODES,
    GRAPH_OPTIMIZATION_LEVELS,
    LINEAGE_FIELDS,
    METRICS_RULE,
    WARMUP_DATA,
    MLModel,
    ModelAlias,
    tag_validator,
)
from registry.services import SERVING_OPTIONS, file_check

MAX_TAGS = 50  # the API's limit too (registry.serializers.TagListField)


class TagsField(forms.CharField):
    """Tags as one comma-separated string; cleans to a sorted list of unique tag names."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Comma-separated, e.g. vision, prod. Letters, digits, '-', '_', '.', ':'.")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        # The initial value of a change form is the model's Tag objects.
        if isinstance(value, list | tuple):
            return ", ".join(str(tag) for tag in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list | tuple):
            return sorted({str(tag) for tag in value})
        text = super().to_python(value)
        return sorted({part.strip() for part in text.split(",") if part.strip()})

    def validate(self, value: list[str]) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value: list[str]) -> None:
        if len(value) > MAX_TAGS:
            raise ValidationError(f"At most {MAX_TAGS} tags.", code="too_many_tags")
        errors = []
        for tag in value:
            try:
                tag_validator(tag)
            except ValidationError:
                message = f"'{tag}' is not a valid tag: {tag_validator.message}"
                errors.append(ValidationError(message, code="invalid_tag"))
        if errors:
            raise ValidationError(errors)

    def has_changed(self, initial, data) -> bool:
        try:
            return self.to_python(initial or []) != self.to_python(data)
        except ValidationError:
            return True


def _file_help() -> str:
    return f"A self-contained .onnx file, at most {settings.MAX_MODEL_SIZE_MB} MB."


def refuse_failing_file(upload) -> None:
    """Raise a ValidationError with the checks' code and reason if the uploaded file fails the
    checks a validation makes (registry.services.file_check, in the sandbox).

    In the admin a person waits at the form for the outcome: a file that can never be a model is
    refused on the form, with the reason, and nothing is registered (the API answers 202 at once
    and reports the outcome on the model). A file that passes is registered and validated as any
    other, in the background."""
    temporary_path = getattr(upload, "temporary_file_path", None)
    if temporary_path is not None:  # always, with the upload handler of the settings
        result = file_check(Path(temporary_path()))
    else:
        with tempfile.NamedTemporaryFile(suffix=".onnx", dir=settings.FILE_UPLOAD_TEMP_DIR) as copy:
            for chunk in upload.chunks():
                copy.write(chunk)
            copy.flush()
            result = file_check(Path(copy.name))
    if not result.ok:
        raise ValidationError(
            "This file cannot be registered (%(code)s): %(detail)s",
            code=result.code,
            params={"code": result.code, "detail": result.detail},
        )


class MLModelAddForm(forms.ModelForm):
    """Register a model: name, version, description, tags and the file, validated at once."""

    tags = TagsField()
    file = forms.FileField(
        label="ONNX model file",
        validators=[FileExtensionValidator(["onnx"], message="Choose a .onnx file.")],
        widget=forms.FileInput(attrs={"accept": ".onnx"}),
    )

    reference = forms.FileField(
        label="Drift reference file",
        required=False,
        widget=forms.FileInput(attrs={"accept": ".jsonl,.ndjson,.csv,.npy"}),
        help_text=(
            "Optional: samples of the model's inputs (JSON Lines, CSV or .npy, as a batch job's input file), "
            "summarised as the version's drift reference once it is validated. A file that does not fit the "
            "inputs is reported under Monitoring › References, naming the column."
        ),
    )
    reference_format = forms.ChoiceField(
        label="Reference file format",
        required=False,
        choices=[("", "from the file name"), *((name, name) for name in reference_files.FORMATS)],
    )

    class Meta:
        model = MLModel
        fields = ("name", "version", "description", *LINEAGE_FIELDS)
        widgets = {"metrics": forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": '{"accuracy": 0.97}'})}
        help_texts = {
            "name": "1-100 characters: letters, digits, '-', '_' and '.'.",
            "version": "A semantic version, e.g. 1.2.0 or 2.0.0-rc.1. Each name + version is registered once.",
        }
        error_messages = {
            # The unique constraint on (name, version); services.model_create enforces it as well.
            NON_FIELD_ERRORS: {
                "unique_together": "This name and version are already registered. Pick a new version number.",
            }
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = _file_help()
        self.fields["metrics"].error_messages["invalid"] = METRICS_RULE  # text that is not JSON

    def clean_metrics(self):
        return self.cleaned_data.get("metrics") or {}  # empty: no metrics

    def clean(self):
        cleaned = super().clean()
        reference = cleaned.get("reference")
        suffix = os.path.splitext(reference.name or "")[1].lower() if reference else ""
        if reference and not cleaned.get("reference_format") and suffix not in reference_files.SUFFIXES:
            self.add_error(
                "reference",
                "Cannot tell the file's format from its name: choose its format, or name it *.jsonl, *.csv or *.npy.",
            )
        if cleaned.get("file") and not self.errors:  # the checks take a while: only for a valid form
            try:
                refuse_failing_file(cleaned["file"])
            except ValidationError as exc:
                self.add_error("file", exc)
        return cleaned


class MLModelChangeForm(forms.ModelForm):
    """The descriptive fields and serving options change here; an optional new file replaces the
    current one."""

    tags = TagsField()
    file = forms.FileField(
        label="Upload a new file",
        required=False,
        validators=[FileExtensionValidator(["onnx"], message="Choose a .onnx file.")],
        widget=forms.FileInput(attrs={"accept": ".onnx"}),
    )

    class Meta:
        model = MLModel
        fields = ("description", *SERVING_OPTIONS)
        error_messages = {
            "ort_graph_optimization_level": {
                "invalid_choice": f"Choose one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, or leave it empty."
            },
            "ort_execution_mode": {"invalid_choice": f"Choose one of {', '.join(EXECUTION_MODES)}, or leave it empty."},
            "warmup_data": {"invalid_choice": f"Choose one of {', '.join(WARMUP_DATA)}."},
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        providers = self.fields.get("ort_execution_providers")
        if providers is not None:
            providers.help_text += f" This server offers: {', '.join(onnxruntime.get_available_providers())}."
        if self.instance.is_immutable:
            self.fields["file"].help_text = (
                "This version has been ready, so its file can never be replaced: upload a new file as a new "
                "version (below)."
            )
        else:
            self.fields["file"].help_text = f"{_file_help()} Replaces the current file; the model is validated again."

    def clean_ort_execution_providers(self):
        return self.cleaned_data.get("ort_execution_providers") or []  # empty: CPU only

    def clean(self):
        cleaned = super().clean()
        # A warm-up sample must fit the model's inputs, as the API checks it (registry.services).
        if cleaned.get("warmup_data") == "sample":
            try:
                services.check_warmup_sample(cleaned.get("warmup_sample"), self.instance.input_schema)
            except ValidationError as exc:
                self.add_error("warmup_sample", exc)
            except DomainError as exc:
                self.add_error("warmup_sample", ValidationError(exc.detail, code=exc.code))
        return cleaned

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if not upload:
            return upload
        status = self.instance.status
        if status == MLModel.Status.ARCHIVED:
            raise ValidationError("This version is archived; register a new version instead.", code="model_archived")
        if self.instance.is_immutable:
            raise ValidationError(
                "This version has been ready, so its file can never be replaced. "
                "Upload the new file as a new version with 'Upload a new version' below.",
                code="version_immutable",
            )
        if status == MLModel.Status.VALIDATING:
            raise ValidationError(
                "This version is being validated; upload again once validation ends.", code="invalid_status"
            )
        refuse_failing_file(upload)
        return upload


class ReadyVersionField(forms.ModelChoiceField):
    """A ready version, labelled "name version" (or just "version" within one name)."""

    def __init__(self, *, with_name: bool, **kwargs):
        self.with_name = with_name
        super().__init__(queryset=MLModel.objects.none(), **kwargs)

    def label_from_instance(self, obj: MLModel) -> str:
        return f"{obj.name} {obj.version}" if self.with_name else obj.version


class ModelAliasAddForm(forms.ModelForm):
    """Create an alias: its name and a ready version (the model name comes from the version)."""

    model = ReadyVersionField(with_name=True, label="Version", help_text="Only ready versions can be aliased.")

    class Meta:
        model = ModelAlias
        fields = ("alias", "model")
        help_texts = {"alias": ALIAS_RULE}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = MLModel.objects.ready().order_by("name", "-version_key")

    def clean(self):
        cleaned = super().clean()
        model, alias = cleaned.get("model"), cleaned.get("alias")
        if model is not None and alias and ModelAlias.objects.filter(name=model.name, alias=alias).exists():
            raise ValidationError(
                f"{model.name} already has the alias {alias}; move it from its own page instead.", code="alias_exists"
            )
        return cleaned


class ModelAliasChangeForm(forms.ModelForm):
    """Move an alias: choose another ready version of the same name."""

    model = ReadyVersionField(with_name=False, label="Version", help_text="Only ready versions can be aliased.")

    class Meta:
        model = ModelAlias
        fields = ("model",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The current target stays listed even if it was archived since (saving it changes nothing).
        versions = MLModel.objects.named(self.instance.name)
        self.fields["model"].queryset = (versions.ready() | versions.filter(pk=self.instance.model_id)).newest_first()
