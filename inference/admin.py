"""Prediction history in the admin: read-only rows the system writes, with filters by model,
cached and a date range, and a streamed CSV export of whatever the filters select."""

from __future__ import annotations

import contextlib
import csv
import json
import re
from datetime import date, datetime, time, timedelta

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.csv_cells import csv_cell, csv_row
from inference.models import Prediction
from registry.models import MLModel

EMPTY = "—"
EXPORT_CHUNK_ROWS = 2000
EXPORT_COLUMNS = (
    ("id", "id"),
    ("created_at", "created_at"),
    ("model_id", "model_id"),
    ("model_name", "model_name"),
    ("model_version", "model_version"),
    ("api_key__name", "api_key"),
    ("user__username", "user"),
    ("cached", "cached"),
    ("inference_time_ms", "inference_time_ms"),
    ("total_time_ms", "total_time_ms"),
    ("input_truncated", "input_truncated"),
    ("input_data", "input_data"),
    ("output_data", "output_data"),
    ("warnings", "warnings"),
)


class DateRangeFilter(admin.FieldListFilter):
    """From / to dates (both inclusive, in the site's time zone) as two labelled date inputs."""

    template = "admin/console/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.parameter_from = f"{field_path}__from"
        self.parameter_to = f"{field_path}__to"
        super().__init__(field, request, params, model, model_admin, field_path)
        # FieldListFilter took our parameters out of `params` into used_parameters (as lists).
        self.values = {}
        for name in (self.parameter_from, self.parameter_to):
            value = self.used_parameters.get(name)
            value = value[-1] if isinstance(value, list | tuple) else value
            if value:
                self.values[name] = value
        self.other_params = [
            (key, value)
            for key, values in request.GET.lists()
            if key not in self.expected_parameters()
            for value in values
        ]

    @property
    def value_from(self) -> str:
        return self.values.get(self.parameter_from, "")

    @property
    def value_to(self) -> str:
        return self.values.get(self.parameter_to, "")

    def expected_parameters(self) -> list[str]:
        return [self.parameter_from, self.parameter_to]

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        # The template renders the form; the choices clear the range or set it to today (in
        # the site's time zone, as the range is read).
        yield {
            "selected": not self.values,
            "query_string": changelist.get_query_string(remove=self.expected_parameters()),
            "display": "Any date",
        }
        today = timezone.localdate().isoformat()
        yield {
            "selected": self.value_from == today and self.value_to == today,
            "query_string": changelist.get_query_string({self.parameter_from: today, self.parameter_to: today}),
            "display": "Today",
        }

    @staticmethod
    def _day(value: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise IncorrectLookupParameters(f"'{value}' is not a date (YYYY-MM-DD).") from exc

    def queryset(self, request, queryset):
        zone = timezone.get_current_timezone()
        if self.parameter_from in self.values:
            start = datetime.combine(self._day(self.values[self.parameter_from]), time.min, zone)
            queryset = queryset.filter(**{f"{self.field_path}__gte": start})
        if self.parameter_to in self.values:
            end = datetime.combine(self._day(self.values[self.parameter_to]) + timedelta(days=1), time.min, zone)
            queryset = queryset.filter(**{f"{self.field_path}__lt": end})
        return queryset


class ModelNameFilter(admin.SimpleListFilter):
    """Every version of a model name (the history keeps the name, which outlives the versions).
    The names listed are the registry's: reading them from millions of history rows would be slow."""

    title = "model name"
    parameter_name = "model_name"

    def lookups(self, request, model_admin):
        names = MLModel.objects.order_by("name").values_list("name", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(model_name=value) if value else queryset


def _csv_cell(value) -> object:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif isinstance(value, datetime):
        value = value.isoformat()
    # Inputs, outputs and key names come from clients: no cell may run as a spreadsheet formula.
    return csv_cell(value)


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


def csv_rows(queryset):
    """The CSV text of a queryset of predictions, one line at a time, read in chunks (the rows
    are never all in memory)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(csv_row(header for _, header in EXPORT_COLUMNS))
    fields = [field for field, _ in EXPORT_COLUMNS]
    for row in queryset.values_list(*fields).iterator(chunk_size=EXPORT_CHUNK_ROWS):
        yield writer.writerow([_csv_cell(value) for value in row])


def export_filename(params) -> str:
    """predictions_<model>_<dates>.csv from the filters: the model name (and version), else
    all-models; the date range (from_to, inclusive), else up to now (UTC). Names and versions
    are letters, digits, '-', '_' and '.' (registry.models), so they need no quoting; anything
    else a filter carries is left out."""
    model = "all-models"
    if params.get("model_name"):
        model = params["model_name"]
    elif params.get("model__id__exact"):
        with contextlib.suppress(ValueError, ValidationError):  # the changelist refused it already
            found = MLModel.objects.filter(pk=params["model__id__exact"]).values_list("name", "version").first()
            model = "-".join(found) if found else model
    model = re.sub(r"[^A-Za-z0-9._-]", "", model) or "all-models"
    first, last = params.get("created_at__from", ""), params.get("created_at__to", "")
    if first or last:
        dates = f"{first or 'start'}_{last or timezone.localdate().isoformat()}"
    else:
        dates = "until-" + timezone.now().strftime("%Y-%m-%dT%H%M%SZ")
    dates = re.sub(r"[^0-9A-Za-z_-]", "", dates)
    return f"predictions_{model}_{dates}.csv"


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "model_label", "served", "inference_time_ms", "total_time_ms", "caller")
    list_filter = (
        ModelNameFilter,
        ("model", admin.RelatedOnlyFieldListFilter),
        "cached",
        ("created_at", DateRangeFilter),
    )
    list_select_related = ("api_key", "user")
    search_fields = ("=id", "model_name")
    search_help_text = "A prediction id, or a model name."
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False  # counting millions of history rows on every page is slow
    change_list_template = "admin/inference/prediction/change_list.html"
    fields = (
        "id",
        "created_at",
        "model",
        "model_name",
        "model_version",
        "caller",
        "cached",
        "inference_time_ms",
        "total_time_ms",
        "input_truncated",
        "input_json",
        "output_json",
        "warnings",
    )
    readonly_fields = fields

    # The system writes the history; the admin reads and exports it.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        export = path("export.csv", self.admin_site.admin_view(self.export_view), name="inference_prediction_export")
        return [export, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        query = request.GET.urlencode()
        extra_context = {
            **(extra_context or {}),
            "mf_export_url": reverse("admin:inference_prediction_export") + (f"?{query}" if query else ""),
        }
        return super().changelist_view(request, extra_context)

    def export_view(self, request):
        """The predictions the changelist's current filters and search select, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            messages.error(request, f"Nothing exported: {exc}")
            return HttpResponseRedirect(reverse("admin:inference_prediction_changelist"))
        queryset = changelist.get_queryset(request)
        response = StreamingHttpResponse(csv_rows(queryset), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{export_filename(request.GET)}"'
        return response

    @admin.display(description="model", ordering="model_name")
    def model_label(self, obj: Prediction) -> str:
        return f"{obj.model_name}:{obj.model_version}"

    @admin.display(description="served", boolean=False, ordering="cached")
    def served(self, obj: Prediction) -> str:
        return "cached" if obj.cached else "computed"

    @admin.display(description="by")
    def caller(self, obj: Prediction) -> str:
        if obj.api_key_id:
            return f"key:{obj.api_key.name}"
        if obj.user_id:
            return obj.user.get_username()
        return EMPTY

    @admin.display(description="input")
    def input_json(self, obj: Prediction):
        if obj.input_truncated:
            return "Not recorded: the request body was over HISTORY_MAX_INPUT_BYTES."
        return format_html('<pre class="mf-output">{}</pre>', json.dumps(obj.input_data, indent=2))

    @admin.display(description="output")
    def output_json(self, obj: Prediction):
        return format_html('<pre class="mf-output">{}</pre>', json.dumps(obj.output_data, indent=2))
