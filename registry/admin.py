"""The registry in the Django admin: a client of registry.services, like the API.

Registering, uploading, validating, archiving and deleting all call the services; the change
form edits only a model's description and tags, through `services.model_update`. Schema and
metadata come from uploaded files, so every value shown from them is escaped.

The ops console (console/admin.py) registers its own subclasses of the model and alias admins
in their place: the model page (Try it, the serving actions) and the confirmation pages that
show what an archive, a delete or an alias move touches, traffic included. Both read the
inference app, which the registry does not import.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.exceptions import DomainError
from registry import services
from registry.forms import MLModelAddForm, MLModelChangeForm, ModelAliasAddForm, ModelAliasChangeForm
from registry.models import LINEAGE_FIELDS, AliasEvent, MLModel, ModelAlias, SettingsEvent, Tag

Status = MLModel.Status

# White text on each colour passes WCAG AA contrast.
STATUS_COLOURS = {
    Status.PENDING: "#5f6368",
    Status.UPLOADED: "#1d4ed8",
    Status.VALIDATING: "#9a3412",
    Status.READY: "#166534",
    Status.ERROR: "#b91c1c",
    Status.ARCHIVED: "#374151",
}
EMPTY = "—"
# Nested metadata deeper than this is shown as JSON text rather than more nested tables.
MAX_TABLE_DEPTH = 3


def status_badge(model: MLModel) -> SafeString:
    """A coloured label that also names the status, so it reads without colour."""
    return format_html(
        '<span style="display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;'
        'background:{};font-weight:600;white-space:nowrap" class="mf-status mf-status-{}">{}</span>',
        STATUS_COLOURS.get(model.status, "#5f6368"),
        model.status,
        model.get_status_display(),
    )


def _scalar(value: Any) -> str:
    if value is None or value == "":
        return EMPTY
    return str(value)


def _value_html(value: Any, depth: int = 0) -> SafeString:
    """Any JSON value as escaped HTML: dicts as key/value tables, lists of dicts as tables."""
    if depth >= MAX_TABLE_DEPTH and isinstance(value, dict | list):
        return format_html("<code>{}</code>", json.dumps(value, ensure_ascii=False))
    if isinstance(value, dict):
        return _key_value_table(value.items(), depth + 1)
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        columns = list(dict.fromkeys(key for item in value for key in item))
        return _table(columns, ([item.get(column) for column in columns] for item in value), depth + 1)
    if isinstance(value, list) and value:
        return format_html_join(", ", "{}", ((_value_html(item, depth + 1),) for item in value))
    if isinstance(value, list):
        return format_html("{}", EMPTY)
    return format_html("{}", _scalar(value))


def _key_value_table(items: Iterable[tuple[Any, Any]], depth: int = 0) -> SafeString:
    rows = format_html_join(
        "", '<tr><th scope="row">{}</th><td>{}</td></tr>', ((key, _value_html(value, depth)) for key, value in items)
    )
    if not rows:
        return format_html("{}", EMPTY)
    return format_html('<table class="mf-table"><tbody>{}</tbody></table>', rows)


def _table(columns: list[str], rows: Iterable[list[Any]], depth: int = 0) -> SafeString:
    head = format_html_join("", '<th scope="col">{}</th>', ((column,) for column in columns))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((_value_html(cell, depth),) for cell in row)),) for row in rows),
    )
    return format_html('<table class="mf-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)


# The keys registry.onnx_inspect writes, in display order; unknown keys follow as they come.
METADATA_LABELS = {
    "producer_name": "Producer",
    "producer_version": "Producer version",
    "domain": "Domain",
    "model_version": "Model version",
    "graph_name": "Graph name",
    "ir_version": "IR version",
    "opset_imports": "Opset imports",
    "doc_string": "Documentation",
    "metadata_props": "Metadata properties",
}


def _metadata_value_html(key: str, value: Any) -> SafeString:
    if key == "opset_imports" and isinstance(value, list) and all(isinstance(item, dict) for item in value):
        # The empty domain is the default operator set, ai.onnx.
        rows = ([item.get("domain") or "ai.onnx", item.get("version")] for item in value)
        return _table(["Domain", "Version"], rows) if value else format_html("{}", EMPTY)
    if key == "doc_string" and isinstance(value, str) and value:
        return format_html('<div style="white-space:pre-wrap">{}</div>', value)
    return _value_html(value)


def metadata_table(metadata: Any) -> SafeString:
    """The model_metadata dict as a key/value table, with readable labels for the known keys."""
    if not isinstance(metadata, dict) or not metadata:
        return format_html("{}", EMPTY)
    keys = [key for key in METADATA_LABELS if key in metadata] + [key for key in metadata if key not in METADATA_LABELS]
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td></tr>',
        ((METADATA_LABELS.get(key, key), _metadata_value_html(key, metadata[key])) for key in keys),
    )
    return format_html('<table class="mf-table"><tbody>{}</tbody></table>', rows)


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "unknown rank"
    if not isinstance(shape, list):
        return str(shape)
    if not shape:
        return "scalar"
    return "[" + ", ".join("?" if isinstance(d, int) and d < 0 else str(d) for d in shape) + "]"


def _dim_names_text(names: Any) -> str:
    if not isinstance(names, list) or not any(names):
        return EMPTY
    return ", ".join(str(name) if name else EMPTY for name in names)


def schema_table(schema: Any) -> SafeString:
    """An input_schema / output_schema list as a table; "?" marks a variable dimension."""
    if not isinstance(schema, list) or not schema:
        return format_html("{}", EMPTY)
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
        (
            (
                _scalar(spec.get("name")),
                _scalar(spec.get("kind")),
                _scalar(spec.get("datatype")),
                _scalar(spec.get("onnx_type")),
                _shape_text(spec.get("shape")),
                _dim_names_text(spec.get("dim_names")),
            )
            for spec in schema
            if isinstance(spec, dict)
        ),
    )
    return format_html(
        '<table class="mf-table"><thead><tr><th scope="col">Name</th><th scope="col">Kind</th>'
        '<th scope="col">Datatype</th><th scope="col">ONNX type</th><th scope="col">Shape</th>'
        '<th scope="col">Dimension names</th></tr></thead><tbody>{}</tbody></table>',
        rows,
    )


def source_link(model: MLModel) -> SafeString:
    """The source run URL as a link (validated http(s) on the way in), or a dash."""
    if not model.source_url:
        return format_html("{}", EMPTY)
    return format_html('<a href="{}" rel="noopener noreferrer nofollow">{}</a>', model.source_url, model.source_url)


def metrics_table(metrics: Any) -> SafeString:
    """Metric name -> number as a two-column table, in name order, or a dash."""
    if not isinstance(metrics, dict) or not metrics:
        return format_html("{}", EMPTY)
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td class="mf-num">{}</td></tr>',
        sorted(metrics.items()),
    )
    return format_html('<table class="mf-table mf-metrics"><tbody>{}</tbody></table>', rows)


def _model_label(model: MLModel) -> str:
    return f"{model.name} {model.version}"


def report_validation(request, model: MLModel) -> None:
    """One message with the outcome of a validation."""
    if model.status == Status.READY:
        inputs, outputs = len(model.input_schema), len(model.output_schema)
        messages.success(
            request,
            f"{_model_label(model)} is ready: {inputs} input{'s' * (inputs != 1)}, "
            f"{outputs} output{'s' * (outputs != 1)}.",
        )
        if model.validation_warnings:
            messages.warning(request, f"{_model_label(model)}: {'; '.join(model.validation_warnings)}")
    elif model.status == Status.ERROR:
        messages.error(request, f"{_model_label(model)} failed validation ({model.error_code}): {model.error_message}")
    elif model.status == Status.VALIDATING:
        messages.info(
            request,
            f"{_model_label(model)} is being validated in the background; its page refreshes until it is ready "
            "or has failed.",
        )
    else:
        messages.info(request, f"{_model_label(model)} is {model.get_status_display().lower()}.")


class RefusedDeleteMixin:
    """A delete the service refuses (an aliased version, an alias taken meanwhile) is a message
    saying why and a redirect, not an error page."""

    refused_delete_redirect: str | None

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as exc:
            messages.error(request, f"Not deleted: {exc.detail}")
            target = self.refused_delete_redirect
            return HttpResponseRedirect(reverse(target) if target else request.get_full_path())


@admin.register(MLModel)
class MLModelAdmin(RefusedDeleteMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "version_display",
        "status_display",
        "size_display",
        "tag_list",
        "created_by_display",
        "created_at",
    )
    list_display_links = ("name", "version_display")
    list_filter = ("status", "value_dependent_memory", "name", "tags")
    search_fields = ("name", "description", "^file_sha256")
    search_help_text = "Name, description, or the start of a sha256."
    list_select_related = ("created_by", "created_by_key")
    ordering = ("name", "-version_key", "-created_at")
    list_per_page = 50
    actions = ("validate_selected", "archive_selected", "unarchive_selected", "delete_selected")
    readonly_fields = (
        "name",
        "version",
        "status_display",
        "file_sha256",
        "size_display",
        "input_schema_table",
        "output_schema_table",
        "metadata_table",
        "error_code",
        "error_message",
        "warnings_list",
        "value_dependent_memory",
        "created_by_display",
        "created_at",
        "updated_at",
        "uploaded_at",
        "validated_at",
        "source_link",
        "code_commit",
        "dataset",
        "metrics_table",
    )

    # --- lists and pages -----------------------------------------------------------------------

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return (
                (None, {"fields": ("name", "version", "description", "tags", "file")}),
                (
                    "Lineage (optional)",
                    {"fields": LINEAGE_FIELDS, "description": "Where this version came from: the training run, code, "
                     "data and its metrics. Shown on the name's page and in the API."},
                ),
                ("Drift reference (optional)", {"fields": ("reference", "reference_format")}),
            )  # fmt: skip
        fieldsets = [
            (None, {"fields": ("name", "version", "status_display", "description", "tags")}),
            ("File", {"fields": ("file_sha256", "size_display", "uploaded_at", "validated_at", "file")}),
            ("Serving", {"fields": ("preload", "allow_non_finite", "value_dependent_memory")}),
            (
                "Dynamic batching",
                {
                    "fields": (
                        "batching_enabled",
                        "max_batch_size",
                        "max_queue_delay_microseconds",
                        "preferred_batch_size",
                        "max_queue_size",
                        "default_timeout_microseconds",
                    ),
                    "description": "Concurrent requests merged along the first dimension into one run.",
                },
            ),
            (
                "ONNX Runtime",
                {
                    "fields": services.ORT_OPTIONS,
                    "description": "Empty fields take the server's ORT_* settings. Saving rebuilds the model's "
                    "sessions in every server process (on its next request), warm-up included.",
                },
            ),
            (
                "Warm-up",
                {
                    "fields": ("warmup_count", "warmup_data", "warmup_sample"),
                    "description": "Runs on each new session before it serves; the model answers not ready "
                    "(/v2 .../ready) until they are done.",
                },
            ),
        ]
        fieldsets.insert(
            1,
            (
                "Lineage",
                {"fields": ("source_link", "code_commit", "dataset", "metrics_table"), "classes": ("collapse",)},
            ),
        )
        if obj.error_code or obj.error_message or obj.validation_warnings:
            fieldsets.append(("Validation", {"fields": ("error_code", "error_message", "warnings_list")}))
        fieldsets += [
            ("Inputs", {"fields": ("input_schema_table",)}),
            ("Outputs", {"fields": ("output_schema_table",)}),
            ("Metadata", {"fields": ("metadata_table",), "description": "As written in the ONNX file."}),
            ("History", {"fields": ("created_by_display", "created_at", "updated_at"), "classes": ("collapse",)}),
        ]
        return fieldsets

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = MLModelAddForm if obj is None else MLModelChangeForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="version", ordering="version_key")
    def version_display(self, obj: MLModel) -> str:
        return obj.version

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: MLModel) -> SafeString:
        return status_badge(obj)

    @admin.display(description="size", ordering="file_size")
    def size_display(self, obj: MLModel) -> str:
        return EMPTY if obj.file_size is None else filesizeformat(obj.file_size)

    @admin.display(description="tags")
    def tag_list(self, obj: MLModel) -> str:
        return ", ".join(tag.name for tag in obj.tags.all())  # prefetched in get_queryset

    @admin.display(description="created by")
    def created_by_display(self, obj: MLModel) -> str:
        return obj.created_by_label or EMPTY

    @admin.display(description="inputs")
    def input_schema_table(self, obj: MLModel) -> SafeString:
        return schema_table(obj.input_schema)

    @admin.display(description="outputs")
    def output_schema_table(self, obj: MLModel) -> SafeString:
        return schema_table(obj.output_schema)

    @admin.display(description="metadata")
    def metadata_table(self, obj: MLModel) -> SafeString:
        return metadata_table(obj.model_metadata)

    @admin.display(description="source run")
    def source_link(self, obj: MLModel) -> SafeString:
        return source_link(obj)

    @admin.display(description="metrics")
    def metrics_table(self, obj: MLModel) -> SafeString:
        return metrics_table(obj.metrics)

    @admin.display(description="validation warnings")
    def warnings_list(self, obj: MLModel) -> SafeString:
        if not obj.validation_warnings:
            return format_html("{}", EMPTY)
        items = format_html_join("", "<li>{}</li>", ((str(warning),) for warning in obj.validation_warnings))
        return format_html("<ul>{}</ul>", items)

    # --- saving through the services ----------------------------------------------------------

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Django wraps a POST to this view in one transaction. Saving here stores the file and
        # hands its validation to the background once committed; the services keep slow work
        # (storing, hashing) outside transactions, and a long one would hold SQLite's write
        # lock. Each service call is atomic on its own, so the view runs without the outer
        # transaction.
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            # A service refused after the form was valid (a registration that lost a race on
            # name + version), or the upload handler refused an over-size body. Nothing was
            # saved; say why on the same page.
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj: MLModel, form, change: bool) -> None:
        if change:
            self._save_change(request, obj, form)
        else:
            self._register(request, obj, form)

    def _register(self, request, obj: MLModel, form) -> None:
        data = form.cleaned_data
        reference = None
        if data.get("reference"):
            reference = services.stage_reference(data["reference"], input_format=data.get("reference_format") or "")
        staged = services.stage_uploaded_file(data["file"])
        try:
            model = services.model_register(
                reference=reference,
                name=data["name"],
                version=data["version"],
                description=data.get("description", ""),
                tags=data.get("tags", []),
                staged=staged,
                actor=request.user,
                **{field: data[field] for field in LINEAGE_FIELDS if field in data},
            )
        except DomainError:
            services.staged_cleanup(staged)  # a no-op once the file was put in place
            raise
        # The admin goes on with the form's instance (change message, redirect): make it the
        # row the service created.
        obj.pk = model.pk
        obj.refresh_from_db()
        report_validation(request, model)

    def response_add(self, request, obj, post_url_continue=None):
        # A new version is being validated: its own page shows the progress, then the report.
        # report_validation said what happened; Django's "was added successfully" would be a
        # second message about the same thing.
        if "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        return HttpResponseRedirect(reverse("admin:registry_mlmodel_change", args=[obj.pk]))

    def _save_change(self, request, obj: MLModel, form) -> None:
        data = form.cleaned_data
        tags = data["tags"] if "tags" in form.changed_data else None
        options = {name: data[name] for name in services.SERVING_OPTIONS if name in form.changed_data}
        services.model_update(model=obj, description=data.get("description"), tags=tags, actor=request.user, **options)
        upload = data.get("file")
        if not upload:
            return
        try:
            staged = services.stage_uploaded_file(upload)
            try:
                model = services.model_upload(model=obj, staged=staged)
            except DomainError:
                services.staged_cleanup(staged)
                raise
            model = services.model_validate(model=model)
        except DomainError as exc:
            # The descriptive changes above are saved; only the new file was refused.
            messages.error(request, f"The new file for {_model_label(obj)} was not used: {exc.detail}")
            return
        obj.refresh_from_db()
        report_validation(request, model)

    def save_related(self, request, form, formsets, change) -> None:
        # Tags were set by the services; the form's own m2m save would treat names as ids.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    # --- deleting: Django's confirmation pages (the console adds what the delete takes away) --
    # An alias's foreign key PROTECTs its version, so Django's pages already refuse (no confirm
    # button) a version an alias points at; the service refuses it too if an alias was pointed
    # at it after the page was shown.

    refused_delete_redirect = None  # the delete page again, to show why

    def delete_model(self, request, obj: MLModel) -> None:
        services.model_delete(model=obj)

    def delete_queryset(self, request, queryset) -> None:
        for model in queryset:
            try:
                services.model_delete(model=model)
            except DomainError as exc:
                self.message_user(request, f"Not deleted: {exc.detail}", messages.ERROR)

    # --- actions -------------------------------------------------------------------------------

    @admin.action(description="Validate selected models", permissions=["change"])
    def validate_selected(self, request, queryset) -> None:
        started, refused = 0, []
        for model in queryset:
            try:
                services.model_validate(model=model)
            except DomainError as exc:
                refused.append(f"{_model_label(model)}: {exc.detail}")
                continue
            started += 1
            self.log_change(request, model, "Validation started")
        self.message_user(
            request,
            f"Validation started for {started} (in the background: the list shows each outcome), "
            f"refused {len(refused)}.",
            messages.SUCCESS if not refused else messages.WARNING,
        )
        for reason in refused:
            self.message_user(request, f"Not validated: {reason}", messages.WARNING)

    @admin.action(description="Archive selected models", permissions=["change"])
    def archive_selected(self, request, queryset):
        archived, refused = 0, []
        for model in queryset:
            try:
                services.model_archive(model=model)
            except DomainError as exc:
                refused.append(f"{_model_label(model)}: {exc.detail}")
                continue
            self.log_change(request, model, "Archived")
            archived += 1
        self.message_user(
            request,
            f"Archived {archived}, refused {len(refused)}.",
            messages.SUCCESS if not refused else messages.WARNING,
        )
        for reason in refused:
            self.message_user(request, f"Not archived: {reason}", messages.WARNING)
        return None

    @admin.action(description="Unarchive selected models (re-verified and validated again)", permissions=["change"])
    def unarchive_selected(self, request, queryset) -> None:
        refused = []
        for model in queryset:
            try:
                model = services.model_unarchive(model=model)
            except DomainError as exc:
                refused.append(f"{_model_label(model)}: {exc.detail}")
                continue
            self.log_change(request, model, f"Unarchived: {model.get_status_display().lower()}")
            report_validation(request, model)
        for reason in refused:
            self.message_user(request, f"Not unarchived: {reason}", messages.ERROR)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("name", "model_count")
    search_fields = ("name",)
    ordering = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(model_count=Count("models"))

    @admin.display(description="models", ordering="model_count")
    def model_count(self, obj: Tag) -> int:
        return obj.model_count


# --- aliases ---------------------------------------------------------------------------------------


def _event_actor(event: AliasEvent) -> str:
    return event.actor_label or EMPTY


def alias_history_table(events: Iterable[AliasEvent]) -> SafeString:
    """An alias's audit rows, newest first, as a table."""
    rows = [
        [
            formats.date_format(timezone.localtime(event.created_at), "DATETIME_FORMAT"),
            event.get_action_display(),
            event.from_version,
            event.to_version,
            _event_actor(event),
            _weights(event),
            event.detail,
        ]
        for event in events
    ]
    if not rows:
        return format_html("{}", EMPTY)
    return _table(["When", "Action", "From", "To", "By", "Candidate weight", "Detail"], rows)


def _weights(event: AliasEvent) -> str:
    """A rollout event's candidate weight from -> to ("" for plain alias moves)."""
    if event.from_weight is None and event.to_weight is None:
        return ""
    before = EMPTY if event.from_weight is None else f"{event.from_weight:g} %"
    return f"{before} → {event.to_weight:g} %"


@admin.register(ModelAlias)
class ModelAliasAdmin(RefusedDeleteMixin, admin.ModelAdmin):
    """Aliases are created, moved and deleted through registry.services, so each change is
    audited (with the admin user as the actor) and every server process sees it at once."""

    list_display = ("name", "alias", "version_display", "target_status", "updated_at", "updated_by_display")
    list_display_links = ("name", "alias")
    list_filter = ("alias", "name")
    search_fields = ("name", "alias")
    list_select_related = ("model", "updated_by", "updated_by_key")
    ordering = ("name", "alias")
    actions = ("delete_selected",)
    readonly_fields = ("name", "alias", "target_status", "updated_at", "updated_by_display", "audit_trail")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ModelAliasAddForm if obj is None else ModelAliasChangeForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("alias", "model")
        return ("name", "alias", "model", "target_status", "updated_at", "updated_by_display", "audit_trail")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    @admin.display(description="version", ordering="model__version_key")
    def version_display(self, obj: ModelAlias) -> str:
        return obj.model.version

    @admin.display(description="version status")
    def target_status(self, obj: ModelAlias) -> SafeString:
        return status_badge(obj.model)

    @admin.display(description="updated by")
    def updated_by_display(self, obj: ModelAlias) -> str:
        if obj.updated_by_id:
            return obj.updated_by.get_username()
        if obj.updated_by_key_id:
            return f"key:{obj.updated_by_key.name}"
        return EMPTY

    @admin.display(description="audit trail (newest first)")
    def audit_trail(self, obj: ModelAlias) -> SafeString:
        events = AliasEvent.objects.filter(name=obj.name, alias=obj.alias).newest_first()[:200]
        return alias_history_table(events)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            # The service refused after the form was valid (the version stopped being ready
            # meanwhile). Nothing was saved; say why on the same page.
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj: ModelAlias, form, change: bool) -> None:
        target = form.cleaned_data["model"]
        name = obj.name if change else target.name
        result = services.alias_set(name=name, alias=obj.alias, version=target.version, actor=request.user)
        # The admin goes on with the form's instance (change message, redirect): make it the row.
        obj.pk = result.alias.pk
        obj.refresh_from_db()

    refused_delete_redirect = "admin:registry_modelalias_changelist"

    def delete_model(self, request, obj: ModelAlias) -> None:
        services.alias_delete(name=obj.name, alias=obj.alias, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for alias in queryset:
            try:
                services.alias_delete(name=alias.name, alias=alias.alias, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"Not deleted: {exc.detail}", messages.ERROR)


class AuditTrailAdmin(admin.ModelAdmin):
    """An audit trail: shown, never added to, edited or deleted here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AliasEvent)
class AliasEventAdmin(AuditTrailAdmin):
    """The audit trail: written by the alias services only, never edited or deleted here."""

    list_display = ("created_at", "name", "alias", "action", "from_version", "to_version", "actor_display")
    list_filter = ("action", "alias", "name")
    search_fields = ("name", "alias", "actor_label", "from_version", "to_version")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    fields = ("created_at", "name", "alias", "action", "from_version", "to_version", "actor_display")
    readonly_fields = fields

    @admin.display(description="by", ordering="actor_label")
    def actor_display(self, obj: AliasEvent) -> str:
        return _event_actor(obj)


@admin.register(SettingsEvent)
class SettingsEventAdmin(AuditTrailAdmin):
    """The audit trail of serving and runtime settings: written by `services.model_update`
    (the API's PATCH and this admin's model form alike), never edited or deleted here."""

    list_display = ("created_at", "name", "version", "changed_fields", "actor_display")
    list_filter = ("name",)
    search_fields = ("name", "version", "actor_label")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    fields = ("created_at", "name", "version", "changes_table", "actor_display")
    readonly_fields = fields

    @admin.display(description="changed")
    def changed_fields(self, obj: SettingsEvent) -> str:
        return ", ".join(sorted(obj.changes))

    @admin.display(description="changes")
    def changes_table(self, obj: SettingsEvent) -> SafeString:
        return _table(["Setting", "From", "To"], ([name, *values] for name, values in obj.changes.items()))

    @admin.display(description="by", ordering="actor_label")
    def actor_display(self, obj: SettingsEvent) -> str:
        return obj.actor_label or EMPTY
