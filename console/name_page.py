"""The page of a model name in the admin (/admin/registry/mlmodel/name/<name>/): its aliases,
its versions side by side, and what ops do from there.

For each version: status, the aliases pointing at it (badges), who registered it and when,
sha256, size, the producer written in the ONNX file, its lineage (source run, code commit,
dataset, metrics), and its serving figures over the last hour and the last 24 hours next to
each other's (requests, errors, p50/p95, cache hit rate; inference.stats), so a new version
reads against the one in production at a glance. From the page: promote a ready version to an
alias, roll an alias back to the version it pointed at before (from the AliasEvent trail), both
through the confirmation page that shows from -> to and the traffic carried (console.confirm)
and then `registry.services.alias_set` (audited); upload the next version (the add form);
open a version's page.

Drift (monitoring.drift.latest_for): per version its level in words and colour and the window
judged, and for its drifted features (amber or red; else its few highest PSI) a chart of the
window's distribution against the reference (console.charts.distribution_chart) with the same
shares in a table. Rollouts (registry.models.Rollout): per alias its candidate and weight, its
shadow and the share copied, the guard (tripped, when and why) and a link to the alias's
rollout panel (console.rollout_panel); the versions table marks candidates and shadows.

Who may do what is the admin's own permissions: the page needs the model admin's view
permission; promoting and rolling back need the alias admin's change permission (add, for an
alias that does not exist yet), as the alias admin and the API's session doors ask.

The models list (NamePageMixin.list_display) links every row to its name's page and shows the
name's production version.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery, UUIDField
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import re_path, reverse
from django.utils import timezone
from django.utils.html import format_html

from console import charts, confirm
from console.model_page import may_point_alias, next_version
from console.rollout_panel import VIEW as VIEW_ROLLOUT
from core.exceptions import DomainError
from inference.stats import serving_summary
from monitoring.drift import latest_for
from registry import selectors, services
from registry.admin import EMPTY, source_link, status_badge
from registry.errors import ModelNotFound
from registry.models import DEFAULT_ALIAS, NAME_PATTERN, AliasEvent, MLModel, ModelAlias, Rollout

Status = MLModel.Status
# Metric names shown as columns of the lineage table (the most common first); the rest are on
# each version's page.
MAX_METRIC_COLUMNS = 6
ALIAS_EVENTS = 10
# Charts per version when none of its features drifted (the highest PSI first).
TOP_FEATURES = 3
DRIFTED = ("amber", "red")


def name_url(name: str) -> str:
    return reverse("admin:registry_mlmodel_name", args=[name])


# --- what the page reads ---------------------------------------------------------------------


def serving_by_version(name: str) -> dict:
    """{model_id: {"hour": figures or None, "day": figures or None}} for the versions of `name`
    that served in the last 24 hours (inference.stats.serving_summary's figures)."""
    now = timezone.now()
    figures: dict = defaultdict(lambda: {"hour": None, "day": None})
    for period, since in (("hour", now - timedelta(hours=1)), ("day", now - timedelta(hours=24))):
        for row in serving_summary(since=since):
            if row["model_name"] == name:
                figures[row["model_id"]][period] = row
    return figures


def rollback_target(alias: ModelAlias) -> MLModel | None:
    """The version `alias` pointed at before it was moved to its current one (the latest move
    onto it in the audit trail), if that version still exists; None otherwise."""
    event = (
        AliasEvent.objects.filter(
            name=alias.name, alias=alias.alias, action=AliasEvent.Action.MOVED, to_model_id=alias.model_id
        )
        .exclude(from_model=None)
        .select_related("from_model")
        .newest_first()
        .first()
    )
    return event.from_model if event is not None else None


def drift_anchor(version: str) -> str:
    """The id of a version's block in the drift section (the dashboard links to it)."""
    return "mf-drift-" + "".join(char if char.isalnum() or char in "-_" else "-" for char in version)


def _number(value, digits: str) -> str:
    return EMPTY if value is None else format(value, digits)


def drift_by_version(model_ids) -> dict:
    """{model_id: what the page shows of its latest drift}: the level and window judged, every
    window's level, and the features charted: the drifted ones (amber, red; worst and highest
    PSI first), else the TOP_FEATURES highest PSI. Versions without results are absent."""
    shown = {}
    for model_id, latest in latest_for(model_ids).items():
        features = sorted(
            latest["features"],
            key=lambda feature: (feature["level"] != "red", -(feature.get("psi") or 0.0), feature["name"]),
        )
        drifted = [feature for feature in features if feature["level"] in DRIFTED]
        charted = drifted or [feature for feature in features if feature.get("psi") is not None][:TOP_FEATURES]
        shown[model_id] = {
            "level": latest["level"],
            "window": latest["window"],
            "windows": list(latest["windows"].items()),
            "computed_at": latest["computed_at"],
            "drifted": [feature["name"] for feature in drifted],
            "any_drifted": bool(drifted),
            "features": [
                {
                    "name": feature["name"],
                    "level": feature["level"],
                    "psi": _number(feature.get("psi"), ".3g"),
                    "p_value": _number(feature.get("p_value"), ".2g"),
                    "rows": feature.get("rows", 0),
                    "chart": charts.distribution_chart(feature, window=latest["window"]),
                    "shares": charts.distribution_rows(feature),
                }
                for feature in charted
            ],
        }
    return shown


def _stat_cells(row: dict | None) -> list[dict]:
    """The five serving figures of one period as table cells ("—" where nothing was recorded)."""
    if row is None:
        return [{"value": "0", "zero": True}, {"value": "0", "zero": True}] + [{"value": EMPTY, "zero": True}] * 3
    hit_rate = row["cache_hit_rate"]
    return [
        {"value": f"{row['requests']:,}"},
        {"value": f"{row['errors']:,}", "bad": row["errors"] > 0},
        {"value": EMPTY if row["p50_ms"] is None else f"{row['p50_ms']:,.1f}"},
        {"value": EMPTY if row["p95_ms"] is None else f"{row['p95_ms']:,.1f}"},
        {"value": EMPTY if hit_rate is None else f"{hit_rate:.0%}"},
    ]


def _producer(model: MLModel) -> str:
    metadata = model.model_metadata if isinstance(model.model_metadata, dict) else {}
    producer = " ".join(str(metadata.get(key) or "") for key in ("producer_name", "producer_version")).strip()
    return producer or EMPTY


def _metric_columns(models: list[MLModel]) -> list[str]:
    counts: dict[str, int] = defaultdict(int)
    for model in models:
        for metric in model.metrics if isinstance(model.metrics, dict) else {}:
            counts[metric] += 1
    return sorted(counts, key=lambda metric: (-counts[metric], metric))[:MAX_METRIC_COLUMNS]


def name_page_context(name: str) -> dict:
    """Everything the name page shows; ModelNotFound if `name` has no version."""
    versions = list(selectors.model_versions(name=name).select_related("created_by", "created_by_key"))
    if not versions:
        raise ModelNotFound(f"No model named '{name}'.")
    aliases = list(selectors.alias_list(name=name))
    aliases_of: dict = defaultdict(list)
    for alias in aliases:
        aliases_of[alias.model_id].append(alias.alias)
    try:
        default = selectors.model_resolve(name=name, fields=("id", "version"))
    except ModelNotFound:
        default = None
    production = next((alias.model for alias in aliases if alias.alias == DEFAULT_ALIAS), None)
    figures = serving_by_version(name)
    drift = drift_by_version([model.pk for model in versions])
    rollouts = {rollout.alias_id: rollout for rollout in Rollout.objects.with_versions().filter(alias__name=name)}
    roles: dict = defaultdict(list)  # model_id: ["candidate of @production (10 %)", ...]
    for rollout in rollouts.values():
        if rollout.candidate_id:
            roles[rollout.candidate_id].append(f"candidate of @{rollout.alias.alias} ({rollout.weight:g} %)")
        if rollout.shadow_id:
            roles[rollout.shadow_id].append(f"shadow of @{rollout.alias.alias} ({rollout.shadow_percent:g} % copied)")
    metric_columns = _metric_columns(versions)
    rows = []
    for model in versions:
        metrics = model.metrics if isinstance(model.metrics, dict) else {}
        rows.append(
            {
                "model": model,
                "url": reverse("admin:registry_mlmodel_change", args=[model.pk]),
                "status": status_badge(model),
                "aliases": aliases_of[model.pk],
                "is_production": production is not None and model.pk == production.pk,
                "is_default": default is not None and model.pk == default.pk,
                "ready": model.status == Status.READY,
                "producer": _producer(model),
                "hour": _stat_cells(figures[model.pk]["hour"] if model.pk in figures else None),
                "day": _stat_cells(figures[model.pk]["day"] if model.pk in figures else None),
                "source": source_link(model),
                "metric_values": [metrics.get(metric, EMPTY) for metric in metric_columns],
                "has_lineage": bool(model.source_url or model.code_commit or model.dataset or metrics),
                "drift": drift.get(model.pk),
                "drift_anchor": drift_anchor(model.version),
                "roles": roles[model.pk],
            }
        )
    alias_rows = []
    for alias in aliases:
        previous = rollback_target(alias)
        alias_rows.append(
            {
                "alias": alias,
                "url": reverse("admin:registry_modelalias_change", args=[alias.pk]),
                "version_url": reverse("admin:registry_mlmodel_change", args=[alias.model_id]),
                "previous": previous,
                "previous_ready": previous is not None and previous.status == Status.READY,
                "rollout": rollouts.get(alias.pk),
                "rollout_url": reverse("admin:registry_modelalias_rollout", args=[alias.pk]),
            }
        )
    return {
        "mf_name": name,
        "mf_rows": rows,
        "mf_alias_rows": alias_rows,
        "mf_production": production,
        "mf_default": default,
        "mf_default_alias": DEFAULT_ALIAS,
        "mf_ready_versions": [model for model in versions if model.status == Status.READY],
        "mf_metric_columns": metric_columns,
        "mf_any_lineage": any(row["has_lineage"] for row in rows),
        "mf_any_drift": bool(drift),
        "mf_newest": versions[0],
        "mf_events": list(selectors.alias_events(name=name)[:ALIAS_EVENTS]),
    }


# --- the model admin's part ---------------------------------------------------------------------


class NamePageMixin:
    """Adds the name page and its two acts to MLModelAdmin (a ModelAdmin), and to the models
    list a link to each row's name page and the name's production version."""

    list_display = (
        "name_link",
        "version_display",
        "status_display",
        "production_display",
        "size_display",
        "tag_list",
        "created_by_display",
        "created_at",
    )
    list_display_links = ("version_display",)

    def get_urls(self):
        name = NAME_PATTERN.strip("^$")
        own = [
            re_path(
                rf"^name/(?P<name>{name})/$",
                self.admin_site.admin_view(self.name_view),
                name="registry_mlmodel_name",
            ),
            re_path(
                rf"^name/(?P<name>{name})/promote/$",
                self.admin_site.admin_view(self.promote_view),
                name="registry_mlmodel_name_promote",
            ),
            re_path(
                rf"^name/(?P<name>{name})/rollback/$",
                self.admin_site.admin_view(self.rollback_view),
                name="registry_mlmodel_name_rollback",
            ),
        ]
        return own + super().get_urls()

    # --- the list ---------------------------------------------------------------------------

    def get_queryset(self, request):
        production = ModelAlias.objects.filter(name=OuterRef("name"), alias=DEFAULT_ALIAS)
        return (
            super()
            .get_queryset(request)
            .annotate(
                production_version=Subquery(production.values("model__version")[:1]),
                # A UUIDField, so SQLite's text comes back as the UUID the row's pk is.
                production_id=Subquery(production.values("model_id")[:1], output_field=UUIDField()),
            )
        )

    def name_link(self, obj: MLModel):
        link = '<a href="{}" class="mf-name-link" title="All versions of {}">{}</a>'
        return format_html(link, name_url(obj.name), obj.name, obj.name)

    name_link.short_description = "name"
    name_link.admin_order_field = "name"

    def production_display(self, obj: MLModel):
        version = getattr(obj, "production_version", None)
        if version is None:
            return EMPTY
        if getattr(obj, "production_id", None) == obj.pk:
            return format_html('<strong class="mf-production">{} (this version)</strong>', version)
        return version

    production_display.short_description = "production"

    # --- the page ---------------------------------------------------------------------------

    def name_view(self, request, name):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            context = name_page_context(name)
        except ModelNotFound as exc:
            raise Http404(exc.detail) from exc
        alias_admin = self.admin_site._registry[ModelAlias]
        newest = context["mf_newest"]
        context.update(
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"{name}: versions and aliases",
                "mf_can_move": alias_admin.has_change_permission(request),
                "mf_can_create_alias": alias_admin.has_add_permission(request),
                "mf_can_add": self.has_add_permission(request),
                "mf_can_view_rollout": request.user.has_perm(VIEW_ROLLOUT),
                "mf_add_url": reverse("admin:registry_mlmodel_add"),
                "mf_next_version": next_version(newest),
                "mf_description": newest.description,
                "mf_tags": ", ".join(tag.name for tag in newest.tags.all()),
                "mf_promote_url": reverse("admin:registry_mlmodel_name_promote", args=[name]),
                "mf_rollback_url": reverse("admin:registry_mlmodel_name_rollback", args=[name]),
                "mf_changelist_url": reverse("admin:registry_mlmodel_changelist") + f"?name__exact={name}",
            }
        )
        return TemplateResponse(request, "admin/registry/mlmodel/name_page.html", context)

    # --- promote and roll back ----------------------------------------------------------------

    def promote_view(self, request, name):
        """Point an alias (production by default) at a version of this name, after the confirmation."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        alias = request.POST.get("alias", "").strip() or DEFAULT_ALIAS
        target = MLModel.objects.filter(name=name, version=request.POST.get("version", "")).first()
        if target is None:
            raise Http404(f"No version {request.POST.get('version', '')!r} of {name}.")
        return self._point(request, name=name, alias=alias, target=target, act="Promote")

    def rollback_view(self, request, name):
        """Point an alias back at the version it pointed at before, after the confirmation."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        current = ModelAlias.objects.filter(name=name, alias=request.POST.get("alias", "")).first()
        if current is None:
            raise Http404(f"{name} has no alias {request.POST.get('alias', '')!r}.")
        if not may_point_alias(self.admin_site, request, name=name, alias=current.alias):
            raise PermissionDenied
        target = rollback_target(current)
        if target is None:
            messages.error(
                request,
                f"{name}@{current.alias}: no earlier version to roll back to (it was never moved onto "
                f"{current.version}, or that version is deleted).",
            )
            return HttpResponseRedirect(name_url(name))
        return self._point(request, name=name, alias=current.alias, target=target, act="Roll back")

    def _point(self, request, *, name: str, alias: str, target: MLModel, act: str):
        if not may_point_alias(self.admin_site, request, name=name, alias=alias):
            raise PermissionDenied
        current = ModelAlias.objects.filter(name=name, alias=alias).values_list("model_id", flat=True).first()
        # The confirmation first, for a change the service will make; a refusal (a bad alias
        # name, a version that is not ready) is left to the service, which says why.
        changes = current != target.pk and target.status == Status.READY
        if changes and not confirm.confirmed(request):
            try:
                services.check_alias_name(alias)
            except DomainError as exc:
                messages.error(request, f"{act} refused ({exc.code}): {exc.detail}")
                return HttpResponseRedirect(name_url(name))
            return confirm.alias_page(
                self,
                request,
                name=name,
                alias=alias,
                target=target,
                hidden=confirm.posted_fields(request),
                cancel_url=name_url(name),
            )
        try:
            change = services.alias_set(name=name, alias=alias, version=target.version, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"{act} refused ({exc.code}): {exc.detail}")
        else:
            if change.event is None:
                messages.info(request, f"{name}@{alias} already points at {target.version}.")
            else:
                was = f" (was {change.event.from_version})" if change.event.from_version else ""
                messages.success(request, f"{name}@{alias} now points at {target.version}{was}.")
        return HttpResponseRedirect(name_url(name) + "#mf-aliases")
