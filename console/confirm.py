"""The confirmation pages of the registry admin (console.admin): what an archive, a delete or
an alias move will change, shown before it is applied.

Every irreversible act of the registry admin (archive a version, delete a version, move or
create an alias, delete an alias) first renders a page listing each thing it touches: its state
now and after, the aliases that point at it, and the traffic it carries (requests answered in
the last hour and 24 hours, from the serving statistics every server process records). Nothing
changes until that page's Confirm button posts back with ``post=yes`` (the field Django's own
delete confirmation uses); a GET or an unconfirmed POST only shows the page. What the services
will refuse (a version an alias points at) is marked on the page; the services still decide, so
a change made between the page and the confirmation is refused then too.

The console, not the registry, reads the inference app's statistics here: it is a client of
both apps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Count
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from inference.models import Prediction, ServingMinute
from inference.stats import recent_requests
from registry import selectors
from registry.errors import ModelNotFound
from registry.models import DEFAULT_ALIAS, MLModel, ModelAlias

Status = MLModel.Status
CONFIRM_FIELD = "post"
NONE = "(none)"


def confirmed(request) -> bool:
    """The request is the confirming POST of a confirmation page."""
    return request.method == "POST" and request.POST.get(CONFIRM_FIELD) == "yes"


def _cell(value, *, numeric: bool = False) -> dict:
    return {"value": f"{value:,}" if numeric else value, "numeric": numeric}


def _column(label: str, *, numeric: bool = False) -> dict:
    return {"label": label, "numeric": numeric}


def _version_link(model: MLModel):
    return format_html(
        '<a href="{}">{} {}</a>', reverse("admin:registry_mlmodel_change", args=[model.pk]), model.name, model.version
    )


TRAFFIC_NOTE = (
    "Requests: answered by that version in the last hour and 24 hours (by version number, by alias or as "
    "the default), counted by every server process; the last few seconds may not be counted yet."
)


# --- versions: archive and delete ---------------------------------------------------------------


def version_refusal(model: MLModel, aliases: list[str], *, act: str) -> str:
    """Why the services will refuse to archive or delete this version ("" if they will not)."""
    if aliases:
        names = ", ".join(f"{model.name}@{alias}" for alias in aliases)
        one = len(aliases) == 1
        return f"Refused: {names} {'points' if one else 'point'} at it; move {'it' if one else 'them'} first."
    if act == "archive" and model.status == Status.VALIDATING:
        return "Refused: being validated; archive it once validation ends."
    return ""


def version_changes(models: Iterable[MLModel], *, act: str) -> dict:
    """The change table for archiving (act="archive") or deleting (act="delete") these versions."""
    models = list(models)
    aliases: dict = defaultdict(list)
    for model_id, alias in (
        ModelAlias.objects.filter(model_id__in=[m.pk for m in models])
        .order_by("alias")
        .values_list("model_id", "alias")
    ):
        aliases[model_id].append(alias)
    traffic = recent_requests(model_ids=[m.pk for m in models])
    after = "archived" if act == "archive" else "deleted (row, history and, unless shared, file)"
    rows = []
    for model in models:
        unchanged = act == "archive" and model.status == Status.ARCHIVED
        refusal = "" if unchanged else version_refusal(model, aliases[model.pk], act=act)
        last_hour, last_day = traffic[model.pk]
        rows.append(
            {
                "cells": [
                    _cell(_version_link(model)),
                    _cell(model.get_status_display() if unchanged else f"{model.get_status_display()} → {after}"),
                    _cell(", ".join(f"@{alias}" for alias in aliases[model.pk]) or NONE),
                    _cell(last_hour, numeric=True),
                    _cell(last_day, numeric=True),
                ],
                "refused": bool(refusal),
                "unchanged": unchanged,
                "last_day": last_day,
                "outcome": refusal or ("Already archived: nothing changes." if unchanged else f"Will be {act}d."),
            }
        )
    return {
        "caption": f"What {act[:-1]}ing changes",
        "columns": [
            _column("Version"),
            _column("Status"),
            _column("Aliases pointing at it"),
            _column("Requests, last hour", numeric=True),
            _column("Requests, last 24 h", numeric=True),
        ],
        "rows": rows,
    }


def archive_page(modeladmin, request, models: list[MLModel], *, hidden, cancel_url: str, action_url: str = ""):
    """The page before archiving `models` (one from the model page, several from the action)."""
    changes = version_changes(models, act="archive")
    going = [row for row in changes["rows"] if not row["refused"] and not row["unchanged"]]
    traffic = sum(row["last_day"] > 0 for row in going)
    lead = (
        f"Archive {len(going)} of {len(models)} version{'s' * (len(models) != 1)}? An archived version is kept and "
        "listed, but every request for it is refused (409 model_archived) until it is unarchived."
    )
    notes = [TRAFFIC_NOTE]
    if traffic:
        notes.insert(0, f"{traffic} of them served requests in the last 24 hours: those clients will get errors.")
    return confirmation_page(
        modeladmin,
        request,
        title=f"Archive {len(models)} version{'s' * (len(models) != 1)}",
        lead=lead,
        changes=changes,
        notes=notes,
        hidden=hidden,
        can_confirm=bool(going),
        confirm_label="Yes, archive",
        cancel_url=cancel_url,
        action_url=action_url,
    )


def delete_context(models: list[MLModel]) -> dict:
    """Added to Django's delete confirmation (one version or the bulk action) of versions."""
    return {
        "changes": version_changes(models, act="delete"),
        "mf_lead": "Deleting cannot be undone: the version's prediction history and serving statistics go with it.",
        "mf_notes": [TRAFFIC_NOTE],
    }


def version_deleted_objects(modeladmin, objs, request):
    """ModelAdmin.get_deleted_objects for versions: what Django's delete pages list.

    Django would list, and load, every row the delete takes along; a version's prediction
    history can hold millions. This lists the versions with a count of each kind of row
    (predictions, serving minutes), the aliases as the protected objects (their foreign key
    PROTECTs the version), and the delete permissions missing for what goes along, as Django's
    own does.
    """
    objs = list(objs)
    ids = [model.pk for model in objs]
    related = {
        kind: dict(kind.objects.filter(model_id__in=ids).values_list("model_id").annotate(n=Count("pk")).order_by())
        for kind in (Prediction, ServingMinute)
    }
    to_delete: list = []
    for model in objs:
        children = [
            f"{count:,} {kind._meta.verbose_name if count == 1 else kind._meta.verbose_name_plural}"
            for kind, counts in related.items()
            if (count := counts.get(model.pk, 0))
        ]
        to_delete += [_version_link(model), children] if children else [_version_link(model)]
    model_count = {MLModel._meta.verbose_name_plural: len(objs)}
    perms_needed = set()
    for kind, counts in related.items():
        if not counts:
            continue
        model_count[kind._meta.verbose_name_plural] = sum(counts.values())
        kind_admin = modeladmin.admin_site._registry.get(kind)
        if kind_admin is not None and not kind_admin.has_delete_permission(request):
            perms_needed.add(kind._meta.verbose_name)
    protected = [
        format_html(
            'Model alias: <a href="{}">{}</a>', reverse("admin:registry_modelalias_change", args=[alias.pk]), alias
        )
        for alias in ModelAlias.objects.filter(model_id__in=ids).order_by("name", "alias")
    ]
    return to_delete, model_count, perms_needed, protected


# --- aliases: move, create, delete --------------------------------------------------------------


def _default_version(name: str) -> str:
    """What a request for `name` without a version gets now (the production alias, else the
    latest ready version)."""
    try:
        return selectors.model_resolve(name=name, fields=("id", "version")).version
    except ModelNotFound:
        return NONE


def alias_changes(moves: list[tuple[str, str, MLModel | None, MLModel | None]]) -> dict:
    """The change table for moves of aliases: [(name, alias, from version or None, to version or None)]."""
    traffic = recent_requests(model_ids={m.pk for _, _, *pair in moves for m in pair if m is not None})
    rows = []
    for name, alias, current, target in moves:
        hour, day = traffic[current.pk] if current is not None else (0, 0)
        if target is None:
            outcome = f"Requests for {name}@{alias} get 404 alias_not_found."
            if alias == DEFAULT_ALIAS:
                outcome += " Requests without a version go to the latest ready version."
        elif current is None:
            outcome = f"Requests for {name}@{alias} go to {target.version}."
        else:
            outcome = f"Requests for {name}@{alias} go to {target.version} instead of {current.version}."
        rows.append(
            {
                "cells": [
                    _cell(f"{name}@{alias}"),
                    _cell(
                        format_html("{} → {}", current.version if current else NONE, target.version if target else NONE)
                    ),
                    _cell(hour, numeric=True),
                    _cell(day, numeric=True),
                ],
                "refused": False,
                "last_day": day,
                "outcome": outcome,
            }
        )
    return {
        "caption": "What changes",
        "columns": [
            _column("Alias"),
            _column("From → to"),
            _column("Requests to the current version, last hour", numeric=True),
            _column("…last 24 h", numeric=True),
        ],
        "rows": rows,
    }


def _alias_lead(name: str, alias: str, current: MLModel | None, target: MLModel | None, day: int) -> str:
    before = current.version if current else NONE
    after = target.version if target else NONE
    carried = f"; {before} answered {day:,} requests in the last 24 h" if current else ""
    return f"{name}@{alias}: {before} → {after}{carried}."


def alias_page(
    modeladmin,
    request,
    *,
    name: str,
    alias: str,
    target: MLModel | None,
    hidden,
    cancel_url: str,
    action_url: str = "",
):
    """The page before pointing `name`@`alias` at `target` (created if it has no alias yet), or
    before deleting it (`target` None)."""
    current_alias = ModelAlias.objects.select_related("model").filter(name=name, alias=alias).first()
    current = current_alias.model if current_alias else None
    changes = alias_changes([(name, alias, current, target)])
    day = changes["rows"][0]["last_day"]
    notes = [TRAFFIC_NOTE]
    if alias == DEFAULT_ALIAS:
        notes.insert(
            0,
            f"{DEFAULT_ALIAS} is also what requests without a version get: today {_default_version(name)}.",
        )
    verb = "Delete" if target is None else ("Move" if current else "Create")
    return confirmation_page(
        modeladmin,
        request,
        title=f"{verb} the alias {name}@{alias}",
        lead=_alias_lead(name, alias, current, target, day),
        changes=changes,
        notes=notes,
        hidden=hidden,
        can_confirm=True,
        confirm_label=f"Yes, {verb.lower()} the alias",
        cancel_url=cancel_url,
        action_url=action_url,
    )


def alias_delete_context(aliases: list[ModelAlias]) -> dict:
    """Added to Django's delete confirmation (one alias or the bulk action) of aliases."""
    changes = alias_changes([(a.name, a.alias, a.model, None) for a in aliases])
    lead = "; ".join(
        _alias_lead(row_alias.name, row_alias.alias, row_alias.model, None, row["last_day"])
        for row_alias, row in zip(aliases, changes["rows"], strict=True)
    )
    return {"changes": changes, "mf_lead": lead, "mf_notes": [TRAFFIC_NOTE]}


# --- the page -----------------------------------------------------------------------------------


def posted_fields(request) -> list[tuple[str, str]]:
    """The fields of a POST, to post them back from the confirmation page (without the CSRF
    token, which the page sends anew, and the confirmation itself)."""
    return [
        (name, value)
        for name, values in request.POST.lists()
        if name not in ("csrfmiddlewaretoken", CONFIRM_FIELD)
        for value in values
    ]


def confirmation_page(
    modeladmin,
    request,
    *,
    title: str,
    lead: str,
    changes: dict,
    notes: list[str],
    hidden,
    can_confirm: bool,
    confirm_label: str,
    cancel_url: str,
    action_url: str = "",
) -> TemplateResponse:
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.opts,
        "title": title,
        "lead": lead,
        "changes": changes,
        "notes": notes,
        "hidden": list(hidden),
        "can_confirm": can_confirm,
        "confirm_label": confirm_label,
        "cancel_url": cancel_url,
        "action_url": action_url,
    }
    return TemplateResponse(request, "console/confirm.html", context)
