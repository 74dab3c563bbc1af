"""The model page of the admin (the MLModel change page): status timeline, recent predictions,
"Try it", "Upload a new version", and the serving actions validate, archive, preload and evict.

Everything here is a client of the services the API uses: Try it is a door of the serving
exchange (inference.exchange: the same authorization, throttle, parsing, validation, cache,
history and errors as `POST /api/v1/models/{id}/predict`), a new version goes through the add
form (and so `registry.services.model_register`), and the actions call `registry.services` and the session
pool. Values that come from uploaded files or from clients are escaped. It is the console's, not
the registry's: it reads and drives the inference app (console.admin adds it to the model admin).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from access.principals import Credential
from console import confirm
from core.exceptions import DomainError
from inference import exchange
from inference.models import Prediction
from inference.protocols import JSON_PREDICT
from inference.services import ensure_servable
from inference.sessions import get_pool
from inference.tensors import example_input
from registry import selectors, services
from registry.admin import report_validation
from registry.models import DEFAULT_ALIAS, MLModel, ModelAlias, SettingsEvent
from registry.versioning import parse_version

Status = MLModel.Status
EMPTY = "—"
RECENT_PREDICTIONS = 10
# The model page reloads itself this often while the version is being validated (as a job's
# page does while the job runs).
REFRESH_SECONDS = 2
ALIAS_EVENTS = 20
# The serving actions of the model page: name -> (label, what it does, in words).
SERVING_ACTIONS = {
    "validate": ("Validate", "Run the checks again in the sandbox."),
    "archive": ("Archive", "Keep the row and file, never serve them again (asks for confirmation first)."),
    "unarchive": ("Unarchive", "Verify the stored file's sha256, validate it again, and serve it if ready."),
    "preload": ("Preload session", "Load the ONNX Runtime session now, in the process that answers."),
    "evict": ("Evict session", "Drop the session from that process's pool; the next request loads it."),
}


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    label: str
    detail: str = ""


def timeline(model: MLModel) -> list[TimelineEvent]:
    """The model's history from its own timestamps and the admin's log of changes to it.

    The registry keeps the time of the last upload and the last validation (a re-upload moves
    both); archiving keeps no time of its own, so an archived model shows its last change.
    """
    events = [
        TimelineEvent(model.created_at, "Registered", f"by {model.created_by_label}" if model.created_by_label else "")
    ]
    if model.uploaded_at:
        size = filesizeformat(model.file_size) if model.file_size is not None else ""
        events.append(TimelineEvent(model.uploaded_at, "File uploaded", f"{size}, sha256 {model.file_sha256[:12]}…"))
    if model.validated_at:
        if model.error_code:
            events.append(TimelineEvent(model.validated_at, "Validation failed", model.error_code))
        elif model.input_schema or model.status in (Status.READY, Status.ARCHIVED):
            events.append(TimelineEvent(model.validated_at, "Validated: ready"))
    if model.status == Status.ARCHIVED:
        events.append(TimelineEvent(model.updated_at, "Archived", "time of the last change"))
    content_type = ContentType.objects.get_for_model(MLModel)
    entries = LogEntry.objects.filter(content_type=content_type, object_id=str(model.pk)).select_related("user")
    for entry in entries.order_by("-action_time")[:50]:
        events.append(
            TimelineEvent(entry.action_time, f"Admin: {entry.get_change_message() or 'changed'}", f"by {entry.user}")
        )
    # Settings changed through the API (the admin's own are in its log above).
    changes = SettingsEvent.objects.filter(model_id=model.pk, actor_user__isnull=True).order_by("-created_at")[:50]
    for change in changes:
        events.append(
            TimelineEvent(
                change.created_at,
                f"Settings changed: {', '.join(sorted(change.changes))}",
                f"by {change.actor_label}" if change.actor_label else "",
            )
        )
    return sorted(events, key=lambda event: event.at)


def timeline_html(model: MLModel) -> SafeString:
    rows = format_html_join(
        "",
        '<li><time datetime="{}">{}</time> <strong>{}</strong> <span class="mf-muted">{}</span></li>',
        (
            (event.at.isoformat(), date_format(localtime(event.at), "DATETIME_FORMAT"), event.label, event.detail)
            for event in timeline(model)
        ),
    )
    return format_html('<ol class="mf-timeline">{}</ol>', rows)


def recent_predictions_html(model: MLModel) -> SafeString:
    rows = list(
        Prediction.objects.filter(model=model)
        .select_related("api_key", "user")
        .defer("input_data", "output_data")
        .order_by("-created_at")[:RECENT_PREDICTIONS]
    )
    if not rows:
        return format_html("{}", "No predictions recorded yet.")
    body = format_html_join(
        "",
        '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
        (
            (
                reverse("admin:inference_prediction_change", args=[row.pk]),
                f"{row.created_at:%Y-%m-%d %H:%M:%S}",
                "cached" if row.cached else "computed",
                f"{row.inference_time_ms:.3f}",
                f"{row.total_time_ms:.3f}",
                f"key:{row.api_key.name}" if row.api_key_id else (row.user.get_username() if row.user_id else EMPTY),
            )
            for row in rows
        ),
    )
    changelist = reverse("admin:inference_prediction_changelist") + f"?model__id__exact={model.pk}"
    return format_html(
        '<table class="mf-table"><thead><tr><th scope="col">When</th><th scope="col">Served</th>'
        '<th scope="col">Inference ms</th><th scope="col">Total ms</th><th scope="col">By</th></tr></thead>'
        '<tbody>{}</tbody></table><p><a href="{}">All predictions of this version</a></p>',
        body,
        changelist,
    )


def example_input_text(model: MLModel) -> str:
    """A JSON input_data document for Try it: one row for each variable dimension, zeros of
    the input's type (0.0, 0, false, "")."""
    if not model.input_schema:
        return "{}"
    try:
        example = example_input(model.input_schema)
    except DomainError:
        return "{}"
    return json.dumps(example)


def next_version(model: MLModel) -> str:
    """The next patch release above the highest version of this name."""
    highest = MLModel.objects.named(model.name).newest_first().values_list("version", flat=True).first()
    try:
        return str(parse_version(highest or model.version).bump_patch())
    except ValueError:
        return ""


def server_timing(header: str) -> dict[str, float]:
    """{"parse": 0.1, ...} from a Server-Timing header as inference.services.Timings writes it."""
    timings = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        try:
            timings[name] = float(duration)
        except ValueError:
            continue
    return timings


def try_predict(*, model: MLModel, input_text: str, skip_cache: bool, user) -> dict:
    """Run one prediction as `POST /api/v1/models/{id}/predict` would with this input_data text:
    the admin's door of the serving exchange, as the signed-in user.

    Returns {"ok", "status", "response" (the API's JSON), "timings", "wall_ms"}; a refusal is
    the API's {"code", "detail"} with its status.
    """
    # The text is placed into the body unparsed, so the API's own parser judges it (NaN
    # literals, depth, syntax) and its errors read exactly as an API client would see them.
    body = b'{"input_data": ' + input_text.encode() + b', "skip_cache": ' + (b"true" if skip_cache else b"false") + b"}"
    started = time.perf_counter()
    reply = exchange.answer(
        Credential(user=user),
        exchange.ModelRef(model_id=str(model.pk)),
        exchange.Incoming(len(body), lambda: body),
        JSON_PREDICT,
    )
    if reply.status != 200:
        return {"ok": False, "status": reply.status, "response": json.loads(reply.content)}
    wall_ms = (time.perf_counter() - started) * 1000
    return {
        "ok": True,
        "status": 200,
        "response": json.loads(reply.content),
        "cache": reply.headers.get("X-Cache", ""),
        "timings": server_timing(reply.headers.get("Server-Timing", "")),
        "wall_ms": round(wall_ms, 3),
    }


def siblings(model: MLModel) -> list[dict]:
    """The versions of the model's name, newest first, each with its aliases: [{"model", "aliases"}]."""
    aliases: dict = {}
    for model_id, alias in ModelAlias.objects.named(model.name).order_by("alias").values_list("model_id", "alias"):
        aliases.setdefault(model_id, []).append(alias)
    versions = MLModel.objects.named(model.name).newest_first().only("id", "name", "version", "status")
    return [{"model": version, "aliases": aliases.get(version.pk, [])} for version in versions]


def may_point_alias(admin_site, request, *, name: str, alias: str) -> bool:
    """The alias admin's permission to point `name`@`alias` at a version: change to move an
    alias, add to create one (as the alias admin's forms and the API's session door ask)."""
    alias_admin = admin_site._registry[ModelAlias]
    if ModelAlias.objects.filter(name=name, alias=alias).exists():
        return alias_admin.has_change_permission(request)
    return alias_admin.has_add_permission(request)


def session_loaded(model: MLModel) -> bool:
    return bool(model.file_sha256) and model.file_sha256 in get_pool().loaded()


class ModelPageMixin:
    """Adds the model page's own views to MLModelAdmin (a ModelAdmin)."""

    change_form_template = "admin/registry/mlmodel/model_page.html"

    def get_urls(self):
        own = [
            path("<path:object_id>/try/", self.admin_site.admin_view(self.try_view), name="registry_mlmodel_try"),
            path("<path:object_id>/alias/", self.admin_site.admin_view(self.alias_view), name="registry_mlmodel_alias"),
            path(
                "<path:object_id>/serving/<str:action>/",
                self.admin_site.admin_view(self.serving_action_view),
                name="registry_mlmodel_serving",
            ),
        ]
        return own + super().get_urls()

    def _model_or_404(self, request, object_id) -> MLModel:
        model = self.get_object(request, object_id)
        if model is None:
            raise Http404("No model with this id.")
        return model

    def change_view(self, request, object_id, form_url="", extra_context=None):
        model = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if model is not None:
            context.update(self.model_page_context(request, model))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def model_page_context(self, request, model: MLModel) -> dict:
        can_change = self.has_change_permission(request, model)
        alias_admin = self.admin_site._registry[ModelAlias]
        return {
            "mf_model": model,
            "mf_can_change": can_change,
            "mf_can_point_alias": alias_admin.has_change_permission(request) or alias_admin.has_add_permission(request),
            "mf_can_add": self.has_add_permission(request),
            "mf_try_url": reverse("admin:registry_mlmodel_try", args=[model.pk]),
            "mf_example_input": example_input_text(model),
            "mf_servable": model.status == Status.READY,
            "mf_session_loaded": session_loaded(model),
            "mf_actions": [
                {
                    "name": name,
                    "label": label,
                    "help": help_text,
                    "url": reverse("admin:registry_mlmodel_serving", args=[model.pk, name]),
                }
                for name, (label, help_text) in SERVING_ACTIONS.items()
                if name != ("archive" if model.status == Status.ARCHIVED else "unarchive")
            ],
            "mf_add_url": reverse("admin:registry_mlmodel_add"),
            "mf_name": model.name,
            "mf_description": model.description,
            "mf_next_version": next_version(model),
            "mf_tags": ", ".join(tag.name for tag in model.tags.all()),
            "mf_siblings": siblings(model),
            "mf_name_url": reverse("admin:registry_mlmodel_name", args=[model.name]),
            "mf_timeline": timeline_html(model),
            "mf_alias_url": reverse("admin:registry_mlmodel_alias", args=[model.pk]),
            "mf_aliases": list(selectors.alias_list(name=model.name)),
            "mf_alias_events": list(selectors.alias_events(name=model.name)[:ALIAS_EVENTS]),
            "mf_default_alias": DEFAULT_ALIAS,
            "mf_recent_predictions": recent_predictions_html(model),
            "mf_refresh_seconds": REFRESH_SECONDS if model.status == Status.VALIDATING else None,
        }

    # --- Try it -------------------------------------------------------------------------------

    def try_view(self, request, object_id):
        model = self._model_or_404(request, object_id)
        if not self.has_view_permission(request, model):
            raise PermissionDenied
        input_text = example_input_text(model)
        skip_cache = False
        result = None
        if request.method == "POST":
            input_text = request.POST.get("input_data", "").strip() or "null"
            skip_cache = request.POST.get("skip_cache") == "on"
            result = try_predict(model=model, input_text=input_text, skip_cache=skip_cache, user=request.user)
        elif request.method != "GET":
            return HttpResponseNotAllowed(["GET", "POST"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": model,
            "title": f"Try {model.name} {model.version}",
            "mf_model": model,
            "mf_input": input_text,
            "mf_skip_cache": skip_cache,
            "mf_result": result,
            "mf_result_json": json.dumps(result["response"], indent=2) if result else "",
            "mf_change_url": reverse("admin:registry_mlmodel_change", args=[model.pk]),
        }
        status = result["status"] if result else 200
        return TemplateResponse(request, "admin/registry/mlmodel/try.html", context, status=status)

    # --- aliases ------------------------------------------------------------------------------

    def alias_view(self, request, object_id):
        """Point an alias of this name (production by default) at this version, audited."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        model = self._model_or_404(request, object_id)
        alias = request.POST.get("alias", "").strip() or DEFAULT_ALIAS
        if not may_point_alias(self.admin_site, request, name=model.name, alias=alias):
            raise PermissionDenied
        if not confirm.confirmed(request) and self._alias_takes_traffic(model, alias):
            return confirm.alias_page(
                self,
                request,
                name=model.name,
                alias=alias,
                target=model,
                hidden=[("alias", alias)],
                cancel_url=reverse("admin:registry_mlmodel_change", args=[model.pk]) + "#mf-aliases",
            )
        try:
            change = services.alias_set(name=model.name, alias=alias, version=model.version, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"Alias not moved ({exc.code}): {exc.detail}")
        else:
            if change.event is None:
                messages.info(request, f"Alias {model.name}@{alias} already points at {model.version}.")
            else:
                was = f" (was {change.event.from_version})" if change.event.from_version else ""
                messages.success(request, f"Alias {model.name}@{alias} now points at {model.version}{was}.")
        return HttpResponseRedirect(reverse("admin:registry_mlmodel_change", args=[model.pk]) + "#mf-aliases")

    @staticmethod
    def _alias_takes_traffic(model: MLModel, alias: str) -> bool:
        """Pointing `alias` at `model` moves requests (so it is confirmed first): the alias
        exists and points elsewhere, or it is the default alias. A refusal (a bad name, a
        version that is not ready) is left to the service, which says why."""
        if model.status != Status.READY:
            return False
        current = ModelAlias.objects.filter(name=model.name, alias=alias).values_list("model_id", flat=True).first()
        return current != model.pk if current is not None else alias == DEFAULT_ALIAS

    # --- serving actions ----------------------------------------------------------------------

    def serving_action_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        model = self._model_or_404(request, object_id)
        if action not in SERVING_ACTIONS:
            raise Http404("No such action.")
        if not self.has_change_permission(request, model):
            raise PermissionDenied
        if action == "archive" and not confirm.confirmed(request):
            return confirm.archive_page(
                self,
                request,
                [model],
                hidden=[],
                cancel_url=reverse("admin:registry_mlmodel_change", args=[model.pk]),
            )
        try:
            text = getattr(self, f"_serving_{action}")(request, model)
        except DomainError as exc:
            messages.error(request, f"{SERVING_ACTIONS[action][0]} refused ({exc.code}): {exc.detail}")
        else:
            self.log_change(request, model, text)
        return HttpResponseRedirect(reverse("admin:registry_mlmodel_change", args=[model.pk]))

    def _serving_validate(self, request, model: MLModel) -> str:
        model = services.model_validate(model=model)
        report_validation(request, model)
        if model.status == Status.VALIDATING:
            return "Validation started"
        return f"Validated: {model.get_status_display().lower()}"

    def _serving_archive(self, request, model: MLModel) -> str:
        services.model_archive(model=model)
        messages.success(request, f"Archived {model.name} {model.version}: kept and listed, never served.")
        return "Archived"

    def _serving_unarchive(self, request, model: MLModel) -> str:
        model = services.model_unarchive(model=model)
        report_validation(request, model)
        return f"Unarchived: {model.get_status_display().lower()}"

    def _serving_preload(self, request, model: MLModel) -> str:
        ensure_servable(model)
        started = time.perf_counter()
        get_pool().get(model)
        elapsed = (time.perf_counter() - started) * 1000
        messages.success(
            request,
            f"The session of {model.name} {model.version} is loaded in this server process ({elapsed:.0f} ms). "
            "Other processes load it on their first request, or at start-up with the preload option.",
        )
        return "Session preloaded"

    def _serving_evict(self, request, model: MLModel) -> str:
        evicted = bool(model.file_sha256) and get_pool().evict(model.file_sha256)
        messages.success(
            request,
            f"The session of {model.name} {model.version} was evicted from this server process."
            if evicted
            else f"No session of {model.name} {model.version} was loaded in this server process.",
        )
        return "Session evicted"
