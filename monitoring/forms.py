"""The admin's reference upload form (the API's PUT /api/v1/models/{id}/reference, in the admin)."""

from __future__ import annotations

from django import forms

from jobs.batch_io import FORMATS
from registry.models import MLModel


class ReferenceUploadForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=MLModel.objects.filter(status=MLModel.Status.READY).order_by("name", "-version_key"),
        help_text="A ready version.",
    )
    file = forms.FileField(help_text="JSON Lines, CSV or .npy: one sample per row, as a batch job's input.")
    format = forms.ChoiceField(
        choices=[("", "from the file name"), *((name, name) for name in FORMATS)], required=False
    )
