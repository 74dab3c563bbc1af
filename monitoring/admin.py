"""Health thresholds per model name, edited by ops (the dashboard links here).

An empty field takes the deployment's default (settings.MONITOR_*), shown beside each field and
in the list. The form refuses thresholds that cannot mean anything: rates outside 0..1 (the
fields' validators) and an amber threshold above its red one, comparing what will be in effect
(a field left empty against the default of the other).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from core.exceptions import DomainError
from monitoring import services
from monitoring.forms import ReferenceUploadForm
from monitoring.models import DriftResult, Reference, Thresholds, defaults
from monitoring.reference import read_upload

# (amber field, red field, what they measure in words)
PAIRS = (
    ("error_rate_amber", "error_rate_red", "server-error rate"),
    ("p95_amber_ms", "p95_red_ms", "p95 latency"),
)


def _shown(field: str, value: float) -> str:
    return f"{value:.1%}" if field.startswith("error_rate") else f"{value:,.0f} ms"


class ThresholdsForm(forms.ModelForm):
    class Meta:
        model = Thresholds
        fields = ("name", "error_rate_amber", "error_rate_red", "p95_amber_ms", "p95_red_ms", "min_requests")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field, default in defaults().items():
            if field in self.fields:
                shown = _shown(field, default) if field != "min_requests" else f"{default:g}"
                self.fields[field].help_text += f" Default: {shown}."

    def clean(self):
        cleaned = super().clean()
        fallback = defaults()
        for amber_field, red_field, words in PAIRS:
            if amber_field in self.errors or red_field in self.errors:
                continue  # already refused (not a number, out of range)
            amber = cleaned.get(amber_field)
            red = cleaned.get(red_field)
            amber_in_effect = fallback[amber_field] if amber is None else amber
            red_in_effect = fallback[red_field] if red is None else red
            if amber_in_effect > red_in_effect:
                message = (
                    f"The amber {words} ({_shown(amber_field, amber_in_effect)}"
                    f"{'' if amber is not None else ', the default'}) is above the red one "
                    f"({_shown(red_field, red_in_effect)}{'' if red is not None else ', the default'}): "
                    "amber must be at most red."
                )
                self.add_error(amber_field if amber is not None else red_field, message)
        return cleaned


@admin.register(Thresholds)
class ThresholdsAdmin(admin.ModelAdmin):
    form = ThresholdsForm
    list_display = ("name", "server_error_rate", "p95", "minimum_requests", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("updated_at",)

    @admin.display(description="Server-error rate amber / red")
    def server_error_rate(self, obj: Thresholds) -> str:
        return self._pair(obj, "error_rate_amber", "error_rate_red")

    @admin.display(description="p95 amber / red")
    def p95(self, obj: Thresholds) -> str:
        return self._pair(obj, "p95_amber_ms", "p95_red_ms")

    @admin.display(description="Minimum requests")
    def minimum_requests(self, obj: Thresholds) -> str:
        value = obj.effective()["min_requests"]
        return f"{value:g}" + ("" if obj.min_requests is not None else " (default)")

    @staticmethod
    def _pair(obj: Thresholds, amber_field: str, red_field: str) -> str:
        effective = obj.effective()
        return " / ".join(
            _shown(field, effective[field]) + ("" if getattr(obj, field) is not None else " (default)")
            for field in (amber_field, red_field)
        )


# --- drift: references and the latest results, read-only (written by monitoring.services) --------


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


class _ReadOnly(admin.ModelAdmin):
    """Rows the system writes: references through the API or the periodic run, results by it."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reference)
class ReferenceAdmin(_ReadOnly):
    list_display = ("model", "source", "filename", "rows", "feature_count", "status_display", "updated_at")
    list_select_related = ("model",)
    list_filter = ("source",)
    search_fields = ("model__name", "filename")
    fields = (
        "model",
        "source",
        "filename",
        "rows",
        "status_display",
        "error",
        "created_at",
        "updated_at",
        "features_table",
        "skipped",
    )
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        # Uploading one is the API's PUT .../reference: the same permission.
        return request.user.has_perm("registry.change_mlmodel")

    def add_view(self, request, form_url="", extra_context=None):
        """Upload (or replace) a version's reference file, through the service the API calls."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ReferenceUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            path, is_copy = read_upload(upload)
            try:
                reference = services.reference_set_from_file(
                    model=form.cleaned_data["model"],
                    path=path,
                    filename=upload.name or "",
                    input_format=form.cleaned_data["format"] or None,
                )
            except DomainError as exc:
                form.add_error("file", f"{exc.detail} ({exc.code})")
            else:
                messages.success(request, f"Reference of {reference.model} summarised: {reference.rows} rows.")
                return redirect("admin:monitoring_reference_change", reference.pk)
            finally:
                upload.close()
                if is_copy:
                    path.unlink(missing_ok=True)
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload a reference",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/monitoring/reference/upload.html", context)

    @admin.display(description="status")
    def status_display(self, reference: Reference) -> str:
        return f"failed ({reference.error_code})" if reference.error_code else "ready"

    @admin.display(description="features")
    def feature_count(self, reference: Reference) -> int:
        return len(reference.features)

    @admin.display(description="skipped")
    def skipped(self, reference: Reference) -> str:
        return "; ".join(reference.summary.get("skipped", [])) or "—"

    @admin.display(description="summary per feature")
    def features_table(self, reference: Reference) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    feature["name"],
                    feature["source"],
                    feature["kind"],
                    feature["count"],
                    _number(feature.get("mean")),
                    _number(feature.get("std")),
                    ", ".join(
                        f"{name}: {count}"
                        for name, count in zip(
                            feature.get("categories") or [f"≤{_number(edge)}" for edge in feature["bin_edges"][1:]],
                            feature["counts"],
                            strict=False,
                        )
                    ),
                )
                for feature in reference.features
            ),
        )
        return format_html(
            "<table><tr><th>feature</th><th>source</th><th>kind</th><th>count</th><th>mean</th><th>std</th>"
            "<th>bins (upper edge: count) or classes</th></tr>{}</table>",
            rows,
        )


@admin.register(DriftResult)
class DriftResultAdmin(_ReadOnly):
    list_display = ("model", "window", "level", "state", "rows", "predictions", "sampled", "computed_at")
    list_select_related = ("model",)
    list_filter = ("level", "window")
    search_fields = ("model__name",)
    fields = (
        "model",
        "window",
        "level",
        "state",
        "window_start",
        "window_end",
        "predictions",
        "rows",
        "sampled",
        "computed_at",
        "features_table",
    )
    readonly_fields = fields

    @admin.display(description="features")
    def features_table(self, result: DriftResult) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    feature["name"],
                    feature["level"],
                    _number(feature["psi"]),
                    feature["test"],
                    _number(feature["p_value"]),
                    feature["rows"],
                )
                for feature in result.features
            ),
        )
        return format_html(
            "<table><tr><th>feature</th><th>level</th><th>PSI</th><th>test</th><th>p-value</th><th>samples</th></tr>"
            "{}</table>",
            rows,
        )
