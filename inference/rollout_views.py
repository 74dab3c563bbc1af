"""The rollout API: /api/v1/models/by-name/{name}/aliases/{alias}/rollout[/promote].

GET reads the rollout with its live figures (scope read); PUT starts or changes it, POST
.../promote makes the candidate the alias's version, DELETE aborts it (scope manage). Every
change is a registry.rollouts service call, audited as an alias event.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from core.exceptions import DomainError
from core.strict_input import UNAUTHENTICATED, StrictInputSerializer, error_responses
from inference.rollouts import WINDOWS, rollout_report
from registry import rollouts
from registry.serializers import AliasEventSerializer

_ERRORS = {
    400: (
        "Invalid rollout: `invalid_weight` or `invalid_shadow_percent` (not 0-100), `other_name` (a version of "
        "another model), `candidate_is_primary`, `shadow_is_primary`, `no_candidate` (a weight without a "
        "candidate, or nothing to roll out), `invalid_rollout` (a guard setting), `invalid_parameter`."
    ),
    401: UNAUTHENTICATED,
    403: "`missing_scope`: the key lacks the scope; `permission_denied`: the session lacks the Django permission.",
    404: "`model_not_found` (no such version of the name), `alias_not_found`, `rollout_not_found`.",
    409: "`model_not_ready`: the candidate or shadow is not a ready version; `alias_moved`: retry.",
}
_PATH = [
    OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="The model name."),
    OpenApiParameter("alias", OpenApiTypes.STR, OpenApiParameter.PATH, description="The alias, e.g. production."),
]


class GuardSerializer(StrictInputSerializer):
    enabled = serializers.BooleanField(required=False, help_text="Whether the guard watches this rollout.")
    error_margin = serializers.FloatField(
        required=False, help_text="Trip when the candidate's error rate exceeds the primary's by more points (0-100)."
    )
    latency_margin = serializers.FloatField(
        required=False, help_text="Trip when the candidate's p95 exceeds the primary's by more percent."
    )
    min_requests = serializers.IntegerField(
        required=False, min_value=1, help_text="Candidate requests needed in the window before it can trip."
    )
    window_minutes = serializers.IntegerField(
        required=False, min_value=1, max_value=60, help_text="The minutes compared (never before the last change)."
    )


class RolloutSetSerializer(StrictInputSerializer):
    candidate_version = serializers.CharField(
        required=False, allow_null=True, help_text="A ready version of this name that takes `weight` % (null: none)."
    )
    candidate_name = serializers.CharField(
        required=False, help_text="Optional: the candidate's model name, which must be the alias's."
    )
    weight = serializers.FloatField(required=False, help_text="The candidate's percent of requests, 0-100.")
    shadow_version = serializers.CharField(
        required=False, allow_null=True, help_text="A ready version of this name that gets copies (null: none)."
    )
    shadow_name = serializers.CharField(required=False, help_text="Optional: the shadow's model name (the alias's).")
    shadow_percent = serializers.FloatField(required=False, help_text="Percent of requests copied to the shadow.")
    guard = GuardSerializer(required=False, help_text="The automatic rollback guard's settings.")


class VersionFiguresSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["primary", "candidate", "shadow"])
    version = serializers.CharField()
    status = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Answers that were not 2xx.")
    error_rate = serializers.FloatField(allow_null=True)
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)


class ShadowFiguresSerializer(serializers.Serializer):
    version = serializers.CharField()
    percent = serializers.FloatField()
    copies = serializers.IntegerField()
    dropped = serializers.IntegerField(help_text="Copies dropped because the shadow queue was full.")
    errors = serializers.IntegerField(help_text="Copies the shadow failed on (never seen by clients).")
    compared = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True, help_text="Compared copies whose outputs agreed, 0..1.")
    max_abs_diff = serializers.FloatField(allow_null=True)
    max_rel_diff = serializers.FloatField(allow_null=True)
    primary_mean_ms = serializers.FloatField(allow_null=True)
    shadow_mean_ms = serializers.FloatField(allow_null=True)


class RolloutStateSerializer(serializers.Serializer):
    candidate = serializers.CharField(allow_null=True)
    weight = serializers.FloatField()
    shadow = serializers.CharField(allow_null=True)
    shadow_percent = serializers.FloatField()
    guard = serializers.DictField(help_text="enabled, error_margin, latency_margin, min_requests, window_minutes.")
    guard_tripped_at = serializers.DateTimeField(allow_null=True)
    guard_reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RolloutReportSerializer(serializers.Serializer):
    name = serializers.CharField()
    alias = serializers.CharField()
    version = serializers.CharField(help_text="The alias's version (the primary).")
    rollout = RolloutStateSerializer(allow_null=True)
    split = serializers.DictField(child=serializers.FloatField(), help_text="Percent of requests: primary, candidate.")
    window_minutes = serializers.IntegerField()
    versions = VersionFiguresSerializer(many=True)
    shadow = ShadowFiguresSerializer(allow_null=True)
    events = AliasEventSerializer(many=True, help_text="The alias's audit trail, newest first.")


def _report(name: str, alias: str, request=None) -> Response:
    minutes = WINDOWS[0]
    if request is not None and "minutes" in request.query_params:
        raw = request.query_params["minutes"]
        if raw not in {str(window) for window in WINDOWS}:
            raise DomainError(
                f"minutes must be one of {', '.join(map(str, WINDOWS))}; got {raw!r}.", code="invalid_parameter"
            )
        minutes = int(raw)
    return Response(RolloutReportSerializer(rollout_report(name=name, alias=alias, minutes=minutes)).data)


def _actor(request):
    return request.auth if request.auth is not None else request.user


class RolloutView(APIView):
    required_scopes = {"GET": Scope.READ, "PUT": Scope.MANAGE, "DELETE": Scope.MANAGE}

    @extend_schema(
        summary="An alias's rollout: the split, each version's requests, errors, p50/p95, the shadow's agreement",
        parameters=[
            *_PATH,
            OpenApiParameter("minutes", OpenApiTypes.INT, enum=list(WINDOWS), description="The window (15 or 60)."),
        ],
        responses={200: RolloutReportSerializer, **error_responses(_ERRORS, 400, 401, 403, 404)},
    )
    def get(self, request, name: str, alias: str):
        return _report(name, alias, request)

    @extend_schema(
        summary="Start or change a rollout: candidate and weight, shadow, guard (audited; unset fields are kept)",
        parameters=_PATH,
        request=RolloutSetSerializer,
        responses={200: RolloutReportSerializer, **error_responses(_ERRORS, 400, 401, 403, 404, 409)},
    )
    def put(self, request, name: str, alias: str):
        serializer = RolloutSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        settings = {
            key: data[field]
            for key, field in (
                ("candidate", "candidate_version"),
                ("candidate_name", "candidate_name"),
                ("weight", "weight"),
                ("shadow", "shadow_version"),
                ("shadow_name", "shadow_name"),
                ("shadow_percent", "shadow_percent"),
            )
            if field in data
        }
        guard = {f"guard_{field}": value for field, value in data.get("guard", {}).items()}
        rollouts.rollout_set(name=name, alias=alias, guard=guard, actor=_actor(request), **settings)
        return _report(name, alias)

    @extend_schema(
        summary="Abort the rollout: every request through the alias goes to its version again (audited)",
        parameters=_PATH,
        request=None,
        responses={200: RolloutReportSerializer, **error_responses(_ERRORS, 401, 403, 404)},
    )
    def delete(self, request, name: str, alias: str):
        rollouts.rollout_abort(name=name, alias=alias, actor=_actor(request))
        return _report(name, alias)


class RolloutPromoteView(APIView):
    required_scopes = {"POST": Scope.MANAGE}

    @extend_schema(
        summary="Promote: the candidate becomes the alias's version and the rollout ends (audited)",
        parameters=_PATH,
        request=None,
        responses={200: RolloutReportSerializer, **error_responses(_ERRORS, 400, 401, 403, 404, 409)},
    )
    def post(self, request, name: str, alias: str):
        rollouts.rollout_promote(name=name, alias=alias, actor=_actor(request))
        return Response(_report(name, alias).data, status=status.HTTP_200_OK)
