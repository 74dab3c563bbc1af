from django.contrib import admin

from monitoring.models import Thresholds


@admin.register(Thresholds)
class ThresholdsAdmin(admin.ModelAdmin):
    list_display = ("name", "error_rate_amber", "error_rate_red", "p95_amber_ms", "p95_red_ms", "min_requests")
    search_fields = ("name",)


# --- drift: references and the latest results, read-only (written by monitoring.services) --------

from django.contrib import messages  # noqa: E402
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.shortcuts import redirect  # noqa: E402
from django.template.response import TemplateResponse  # noqa: E402
from django.utils.html import format_html, format_html_join  # noqa: E402

from core.exceptions import DomainError  # noqa: E402
from monitoring import services  # noqa: E402
from monitoring.forms import ReferenceUploadForm  # noqa: E402
from monitoring.models import DriftResult, Reference  # noqa: E402
from monitoring.reference import read_upload  # noqa: E402


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
    list_display = ("model", "source", "filename", "rows", "feature_count", "updated_at")
    list_select_related = ("model",)
    list_filter = ("source",)
    search_fields = ("model__name", "filename")
    fields = ("model", "source", "filename", "rows", "created_at", "updated_at", "features_table", "skipped")
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
