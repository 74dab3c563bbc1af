"""The alias admin's rollout panel: /admin/registry/modelalias/<id>/rollout/.

On an alias's page, a link to its panel: the rollout (candidate and weight, shadow, guard),
each version's requests, errors, p50/p95 and the shadow's agreement side by side for the last
15 minutes and the last hour (inference.rollouts, the figures the API returns), and the alias's
audit trail. Its forms set the candidate and weight (with the shadow and the guard), promote,
or abort, each through a confirmation page that shows the traffic split before and after.

A client of registry.rollouts, as the API is: before the confirmation page, the change is
tried in a transaction that is rolled back, so what the service refuses (a weight outside
0-100, a candidate of another name or not ready, a shadow equal to the primary) is shown with
its code and the API's status (400, 404, 409) instead of a confirmation. Reading the panel
needs `registry.view_rollout`, changing a rollout `registry.change_rollout` (403 otherwise).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from console import confirm
from core.exceptions import DomainError
from inference.rollouts import WINDOWS, rollout_report, split
from registry import rollouts
from registry.admin import alias_history_table
from registry.errors import ModelNotFound
from registry.models import AliasEvent, MLModel, ModelAlias, Rollout

VIEW = "registry.view_rollout"
CHANGE = "registry.change_rollout"
ACTIONS = ("set", "promote", "abort")


class RolloutForm(forms.Form):
    """The panel's set form. Versions are chosen by id (the alias page's way), so a version of
    another name is the service's to refuse, with its code."""

    candidate = forms.UUIDField(required=False, help_text="The version that takes the weight (empty: none).")
    weight = forms.FloatField(required=False, help_text="Percent of the alias's requests, 0-100.")
    shadow = forms.UUIDField(required=False, help_text="A version that gets copies of requests (empty: none).")
    shadow_percent = forms.FloatField(required=False, help_text="Percent of requests copied, 0-100.")
    guard_enabled = forms.BooleanField(required=False)
    guard_error_margin = forms.FloatField(required=False)
    guard_latency_margin = forms.FloatField(required=False)
    guard_min_requests = forms.IntegerField(required=False, min_value=1)
    guard_window_minutes = forms.IntegerField(required=False, min_value=1, max_value=60)

    def settings(self) -> dict:
        """rollout_set's arguments from the form (a version that does not exist: 404)."""
        data = self.cleaned_data
        chosen = {}
        for role in ("candidate", "shadow"):
            if data[role] is None:
                chosen[role] = None
                continue
            model = MLModel.objects.filter(pk=data[role]).only("name", "version").first()
            if model is None:
                raise ModelNotFound(f"No version with the id {data[role]}: choose one of the list.")
            chosen[role], chosen[f"{role}_name"] = model.version, model.name
        guard = {field: data[field] for field in rollouts.GUARD_FIELDS if data[field] is not None}
        return {
            **chosen,
            "weight": data["weight"] if data["weight"] is not None else 0.0,
            "shadow_percent": data["shadow_percent"] if data["shadow_percent"] is not None else 0.0,
            "guard": guard,
        }


class RolloutPanelMixin:
    """Added to the alias admin (console.admin): the rollout page and a link to it."""

    def get_urls(self):
        return [
            path(
                "<path:object_id>/rollout/",
                self.admin_site.admin_view(self.rollout_view),
                name="registry_modelalias_rollout",
            ),
            *super().get_urls(),
        ]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return fields if obj is None else (*fields, "rollout_link")

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else (*fields, "rollout_link")

    @admin.display(description="rollout")
    def rollout_link(self, obj: ModelAlias):
        rollout = Rollout.objects.select_related("candidate").filter(alias=obj).first()
        url = reverse("admin:registry_modelalias_rollout", args=[obj.pk])
        if rollout is None:
            return format_html('None. <a href="{}" id="mf-rollout-link">Start a rollout</a>', url)
        return format_html(
            '{} % to {}. <a href="{}" id="mf-rollout-link">Rollout panel</a>',
            f"{rollout.weight:g}",
            rollout.candidate.version if rollout.candidate else "no candidate",
            url,
        )

    # --- the page --------------------------------------------------------------------------

    def rollout_view(self, request, object_id):
        alias = ModelAlias.objects.select_related("model").filter(pk=object_id).first()
        if alias is None:
            raise Http404("No such alias.")
        if not request.user.has_perm(VIEW):
            raise PermissionDenied
        if request.method != "POST":
            return self._rollout_page(request, alias)
        if not request.user.has_perm(CHANGE):
            raise PermissionDenied
        action = request.POST.get("action")
        if action not in ACTIONS:
            return self._rollout_page(
                request, alias, error=("invalid_action", "Choose set, promote or abort."), status=400
            )
        form = RolloutForm(request.POST) if action == "set" else None
        if form is not None and not form.is_valid():
            return self._rollout_page(request, alias, form=form, status=400)
        try:
            change = self._rollout_change(action, alias, form, request.user)
            with transaction.atomic():  # the service's own checks, then undone: refusals before confirming
                change()
                transaction.set_rollback(True)
            if not confirm.confirmed(request):
                return self._rollout_confirmation(request, alias, action, form)
            change()
        except DomainError as exc:
            return self._rollout_page(request, alias, form=form, error=(exc.code, exc.detail), status=exc.status_code)
        self.message_user(request, f"{alias}: {dict(set='rollout set', promote='promoted', abort='aborted')[action]}.")
        return HttpResponseRedirect(reverse("admin:registry_modelalias_rollout", args=[alias.pk]))

    @staticmethod
    def _rollout_change(action: str, alias: ModelAlias, form: RolloutForm | None, user):
        if action == "promote":
            return lambda: rollouts.rollout_promote(name=alias.name, alias=alias.alias, actor=user)
        if action == "abort":
            return lambda: rollouts.rollout_abort(name=alias.name, alias=alias.alias, actor=user)
        settings = form.settings()
        return lambda: rollouts.rollout_set(name=alias.name, alias=alias.alias, actor=user, **settings)

    def _rollout_confirmation(self, request, alias: ModelAlias, action: str, form: RolloutForm | None):
        rollout = Rollout.objects.select_related("candidate", "shadow").filter(alias=alias).first()
        before = split(rollout)
        primary, candidate = alias.model.version, rollout.candidate.version if rollout and rollout.candidate else None
        if action == "set":
            settings = form.settings()
            after_weight = settings["weight"] if settings.get("candidate") else 0.0
            after = {"primary": round(100 - after_weight, 3), "candidate": round(after_weight, 3)}
            after_candidate, after_primary = settings.get("candidate"), primary
            title, verb = f"Set the rollout of {alias}", "Yes, set the rollout"
        elif action == "promote":
            after = {"primary": 100.0, "candidate": 0.0}
            after_candidate, after_primary = None, candidate
            title, verb = f"Promote {candidate} to {alias}", "Yes, promote"
        else:
            after = {"primary": 100.0, "candidate": 0.0}
            after_candidate, after_primary = None, primary
            title, verb = f"Abort the rollout of {alias}", "Yes, abort"
        rows = [
            _split_row("primary (the alias's version)", primary, before["primary"], after_primary, after["primary"]),
            _split_row("candidate", candidate, before["candidate"], after_candidate, after["candidate"]),
        ]
        changes = {
            "caption": "Traffic split",
            "columns": [
                {"label": "Role", "numeric": False},
                {"label": "Version now → after", "numeric": False},
                {"label": "Share now", "numeric": True},
                {"label": "Share after", "numeric": True},
            ],
            "rows": rows,
        }
        lead = (
            f"{alias}: primary {before['primary']:g} % / candidate {before['candidate']:g} % → "
            f"primary {after['primary']:g} % / candidate {after['candidate']:g} %."
        )
        return confirm.confirmation_page(
            self,
            request,
            title=title,
            lead=lead,
            changes=changes,
            notes=["Every change is recorded in the alias's audit trail, with you as the actor."],
            hidden=confirm.posted_fields(request),
            can_confirm=True,
            confirm_label=verb,
            cancel_url=reverse("admin:registry_modelalias_rollout", args=[alias.pk]),
        )

    def _rollout_page(self, request, alias: ModelAlias, *, form=None, error=None, status: int = 200):
        reports = {minutes: rollout_report(name=alias.name, alias=alias.alias, minutes=minutes) for minutes in WINDOWS}
        current = reports[WINDOWS[0]]
        versions = list(
            MLModel.objects.named(alias.name).ready().newest_first().exclude(pk=alias.model_id).only("pk", "version")
        )
        events = AliasEvent.objects.filter(name=alias.name, alias=alias.alias).newest_first()[:50]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Rollout of {alias}",
            "alias": alias,
            "report": current,
            "windows": [(minutes, reports[minutes]) for minutes in WINDOWS],
            "versions": versions,
            "form": form,
            "error": error,
            "can_change": request.user.has_perm(CHANGE),
            "trail": alias_history_table(events),
            "change_url": reverse("admin:registry_modelalias_change", args=[alias.pk]),
        }
        return TemplateResponse(request, "console/rollout_panel.html", context, status=status)


def _split_row(role: str, now: str | None, before: float, after_version: str | None, after: float) -> dict:
    return {
        "cells": [
            {"value": role, "numeric": False},
            {"value": format_html("{} → {}", now or confirm.NONE, after_version or confirm.NONE), "numeric": False},
            {"value": f"{before:g} %", "numeric": True},
            {"value": f"{after:g} %", "numeric": True},
        ],
        "refused": False,
        "outcome": f"{before:g} % → {after:g} % of the alias's requests",
    }
