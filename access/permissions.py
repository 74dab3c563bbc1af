"""Who may use a route of /api/v1 (and /metrics): an API key by its scope, an admin session by
its Django permissions.

API keys: reads need `read`, registry writes `manage`, inference and jobs `predict`
(`required_scopes` on each view; `required_scope` below).

Sessions (a staff user signed in to the admin, using the browsable API, the docs or a script
with the session cookie) get from the API exactly what their Django permissions give them in
the admin, no more: `SESSION_PERMISSIONS` maps every route and method to the permissions it
needs, the way the admin asks for them (listing and reading need `view` or `change`, as the
admin's `has_view_permission` has it; archive and validate are `change` actions there;
delete is `delete`). Superusers have every permission. A route missing from the table is
refused to sessions (fail closed): adding a route means deciding here what a session needs. A
method a route does not take is its 405 (with the browsable API's form for the methods it does
take), as for a key, not a 403.

"See everyone's objects": jobs and predictions are per key (a key sees only its own); a session
that may view jobs (predictions) in the admin lists and reads all of them through the API, one
without is refused. The querysets' `visible_to` scope the rows the same way (`sees_all`).

Every refusal is `403 permission_denied` naming the missing permission.
"""

from __future__ import annotations

from collections.abc import Callable

from rest_framework import exceptions, permissions

from access.models import APIKey, Scope
from access.principals import Credential, authorize

# Models of the registry, and the permissions of running a model. Predicting (or creating a
# job) with a session needs `view` on the model, because the answer reveals what the model
# computes, and `add` on the row it creates (a prediction, a job).
MODELS_VIEW = "registry.view_mlmodel"
RUN_MODEL = (MODELS_VIEW, "inference.add_prediction")
# The serving figures per model, jobs by status, queues: /metrics and the admin's dashboard.
METRICS_VIEW = MODELS_VIEW


def _asked_of_the_view(request, view) -> tuple[str, ...]:
    """What the view says this request needs, where that depends on the registry's rows (which
    access, below the registry, does not read): the view's ``session_permissions(request)``."""
    return view.session_permissions(request)


Required = tuple[str, ...] | Callable[..., tuple[str, ...]]

# (URL name, method) -> the Django permissions a session needs, all of them. HEAD is GET.
# OPTIONS describes the route (as the schema does), and a method the route does not take is
# answered 405: both need a staff session only.
SESSION_PERMISSIONS: dict[tuple[str, str], Required] = {
    # The OpenAPI schema and its pages describe the API, no data: any staff session.
    ("schema", "GET"): (),
    ("swagger-ui", "GET"): (),
    ("redoc", "GET"): (),
    # Registry: models
    ("model-list", "GET"): (MODELS_VIEW,),
    ("model-list", "POST"): ("registry.add_mlmodel",),  # register, and upload + validate with a file
    ("model-detail", "GET"): (MODELS_VIEW,),
    ("model-detail", "PATCH"): ("registry.change_mlmodel",),
    ("model-detail", "DELETE"): ("registry.delete_mlmodel",),
    ("model-upload", "POST"): ("registry.change_mlmodel",),
    ("model-validate", "POST"): ("registry.change_mlmodel",),  # an admin action with `change`
    ("model-archive", "POST"): ("registry.change_mlmodel",),  # an admin action with `change`
    ("model-unarchive", "POST"): ("registry.change_mlmodel",),
    ("model-by-name-versions", "GET"): (MODELS_VIEW,),
    ("model-by-name-latest", "GET"): (MODELS_VIEW,),
    # Registry: aliases (the list comes with the aliases' audit trail, as the admin's alias page)
    ("model-by-name-aliases", "GET"): ("registry.view_modelalias",),
    ("model-by-name-alias-set", "PUT"): _asked_of_the_view,  # add to create, change to move
    ("model-by-name-alias-set", "DELETE"): ("registry.delete_modelalias",),
    # Rollouts: their own permissions (the alias admin's rollout panel asks the same)
    ("alias-rollout", "GET"): ("registry.view_rollout",),
    ("alias-rollout", "PUT"): ("registry.change_rollout",),
    ("alias-rollout", "DELETE"): ("registry.change_rollout",),
    ("alias-rollout-promote", "POST"): ("registry.change_rollout",),
    # Inference
    ("model-predict", "POST"): RUN_MODEL,
    ("model-by-name-predict", "POST"): RUN_MODEL,
    ("model-predictions", "GET"): ("inference.view_prediction",),
    ("prediction-detail", "GET"): ("inference.view_prediction",),
    # The cache holds predictions: its counters are theirs to read, resetting them is a change.
    ("cache-metrics", "GET"): ("inference.view_prediction",),
    ("cache-metrics-reset", "POST"): ("inference.change_prediction",),
    # Jobs
    ("job-list", "GET"): ("jobs.view_job",),
    ("job-list", "POST"): (MODELS_VIEW, "jobs.add_job"),
    ("job-detail", "GET"): ("jobs.view_job",),
    ("job-detail", "DELETE"): ("jobs.delete_job",),
    ("job-cancel", "POST"): ("jobs.change_job",),  # the admin's cancel needs `change`
    ("job-result", "GET"): ("jobs.view_job",),
    ("health-celery", "GET"): ("jobs.view_job",),  # queues and unfinished jobs
    # Drift (monitoring): read with the models; a reference changes how a version is watched
    # (the admin shows it read-only); thresholds are the monitoring app's rows.
    ("model-drift", "GET"): (MODELS_VIEW,),
    ("model-reference", "GET"): (MODELS_VIEW,),
    ("model-reference", "PUT"): ("registry.change_mlmodel",),
    ("model-reference", "DELETE"): ("registry.change_mlmodel",),
    ("model-drift-thresholds", "GET"): ("monitoring.view_thresholds",),
    ("model-drift-thresholds", "PATCH"): ("monitoring.change_thresholds",),
    # Prometheus: model names, their traffic and latency, jobs by status.
    ("metrics", "GET"): (METRICS_VIEW,),
    # Webhooks (the admin's actions: send test event and redeliver are `change`)
    ("webhook-list", "GET"): ("webhooks.view_subscription",),
    ("webhook-list", "POST"): ("webhooks.add_subscription",),
    ("webhook-detail", "GET"): ("webhooks.view_subscription",),
    ("webhook-detail", "PATCH"): ("webhooks.change_subscription",),
    ("webhook-detail", "DELETE"): ("webhooks.delete_subscription",),
    ("webhook-test", "POST"): ("webhooks.change_subscription",),
    ("webhook-deliveries", "GET"): ("webhooks.view_delivery",),
    ("webhook-delivery-detail", "GET"): ("webhooks.view_delivery",),
    ("webhook-delivery-redeliver", "POST"): ("webhooks.change_delivery",),
}


def required_scope(request, view) -> str:
    """The scope a view asks for: `required_scopes[action]`, else read for safe methods."""
    scopes = getattr(view, "required_scopes", {}) or {}
    action = getattr(view, "action", None)
    if action in scopes:
        return scopes[action]
    if request.method in scopes:
        return scopes[request.method]
    return Scope.READ if request.method in permissions.SAFE_METHODS else Scope.MANAGE


def session_permissions(request, view) -> tuple[str, ...] | None:
    """The permissions a session needs for this request, or None when the route has no entry."""
    match = getattr(request, "resolver_match", None)
    method = "GET" if request.method == "HEAD" else request.method
    if method == "OPTIONS" or request.method not in getattr(view, "allowed_methods", (request.method,)):
        # Describing the route, or answering 405 for a method it does not take (what the
        # browsable API shows, with its form for the methods it does take): no data.
        return ()
    required = SESSION_PERMISSIONS.get((getattr(match, "url_name", None), method))
    if callable(required):
        return required(request, view)
    return required


def sees_all(request, model: str) -> bool:
    """Whether a session may see every key's rows of `model` ("jobs.job"): as in the admin,
    where a user who may view, change or delete a model's rows finds any of them by its id.
    Which of these a route needs is the route's check (HasScope); this scopes the rows."""
    user = request.user
    if isinstance(request.auth, APIKey) or not getattr(user, "is_authenticated", False):
        return False
    if not (user.is_active and user.is_staff):
        return False
    app_label, _, model_name = model.partition(".")
    return any(user.has_perm(f"{app_label}.{action}_{model_name}") for action in ("view", "change", "delete"))


class HasScope(permissions.BasePermission):
    """API keys need the scope; staff sessions need the Django permissions of the route
    (access.principals.authorize, the check every door makes)."""

    def has_permission(self, request, view) -> bool:
        credential = Credential.from_request(request)
        if not credential.present:
            return False  # 401 from the authenticators' header
        try:
            authorize(
                credential,
                scope=required_scope(request, view),
                permissions=session_permissions(request, view) if credential.user is not None else (),
            )
        except exceptions.PermissionDenied as exc:
            self.message, self.code = exc.detail, exc.get_codes()
            return False
        return True


def is_staff_request(request) -> bool:
    return bool(getattr(request.user, "is_staff", False)) and not isinstance(request.auth, APIKey)
