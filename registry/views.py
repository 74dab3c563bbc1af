"""Registry API: /api/v1/models and /api/v1/models/by-name/{name}/..."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, parsers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import SearchFilter
from rest_framework.response import Response
from rest_framework.reverse import reverse

from access.models import Scope
from access.throttling import KeyRateThrottle
from core.exceptions import DomainError
from core.list_filters import StrictFilterBackend, StrictOrderingFilter
from core.strict_input import UNAUTHENTICATED, error_responses
from registry import selectors, services
from registry.errors import ModelNotFound
from registry.filters import MLModelFilter
from registry.models import NAME_PATTERN, MLModel, ModelAlias
from registry.serializers import (
    AliasesSerializer,
    AliasSerializer,
    AliasSetSerializer,
    ModelCreateSerializer,
    ModelSerializer,
    ModelUpdateSerializer,
    ModelUploadSerializer,
)

_ERRORS = {
    400: "Invalid input; `code` says which rule failed.",
    401: UNAUTHENTICATED,
    403: "`missing_scope`: the key lacks the scope; `permission_denied`: the session lacks the Django permission.",
    404: "No such model.",
    409: (
        "Conflict with the model's current state (e.g. `duplicate_version`, `model_archived`, `model_aliased`, "
        "`version_immutable`: a version that has been ready keeps its file)."
    ),
    413: "The file is over MAX_MODEL_SIZE_MB (`model_too_large`).",
    429: "`throttled`: the key sent too many uploads (THROTTLE_RATE_UPLOAD); see Retry-After.",
}


def _errors(*statuses: int) -> dict:
    return error_responses(_ERRORS, *statuses)


_ALIAS_ERRORS = {
    **_ERRORS,
    400: "`invalid_alias` or `alias_is_version` (the alias name), or an invalid body.",
    404: "No such model name or version (`model_not_found`), or no such alias (`alias_not_found`).",
    409: "`model_not_ready`: an alias can only point at a ready version.",
}
_ALIAS_PARAMETER = OpenApiParameter(
    "alias", OpenApiTypes.STR, OpenApiParameter.PATH, description="The alias, e.g. production or staging."
)


class SemverOrderingFilter(StrictOrderingFilter):
    """`ordering=version` sorts by semver precedence, not by the string."""

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view) or []
        semver = {"version": "version_key", "-version": "-version_key"}
        return [semver.get(term, term) for term in ordering]


def actor_of(request):
    """The key (or the staff user) on whose behalf a write is made."""
    return request.auth if request.auth is not None else request.user


@extend_schema_view(
    list=extend_schema(summary="List models", responses={200: ModelSerializer(many=True), **_errors(400, 401, 403)}),
    retrieve=extend_schema(summary="Get a model", responses={200: ModelSerializer, **_errors(401, 403, 404)}),
    destroy=extend_schema(
        summary="Delete a model version and, unless shared, its file (409 `model_aliased` while an alias points at it)",
        responses={204: None, **_errors(401, 403, 404, 409)},
    ),
)
class ModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ModelSerializer
    queryset = MLModel.objects.with_relations()
    parser_classes = (parsers.JSONParser, parsers.MultiPartParser, parsers.FormParser)
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    filterset_class = MLModelFilter
    search_fields = ("name", "description")
    filter_backends = (StrictFilterBackend, SearchFilter, SemverOrderingFilter)
    ordering_fields = ("created_at", "updated_at", "name", "version", "file_size", "status")
    ordering = ("name", "-version_key")
    http_method_names = ("get", "post", "patch", "delete", "head", "options")
    throttle_classes = (KeyRateThrottle,)
    # Each of these may cost a validation (a sandboxed child for up to VALIDATION_TIMEOUT_SECONDS).
    throttle_scopes = {"create": "upload", "upload": "upload", "validate": "upload"}

    def get_object(self):
        try:
            return super().get_object()
        except Http404 as exc:
            raise ModelNotFound("No model with this id. List models with GET /api/v1/models.") from exc

    @extend_schema(
        summary=(
            "Register a model (JSON: 201, status pending), or register, upload and start its validation "
            "(multipart with `file`: 202, status validating; poll the Location until ready or error)"
        ),
        request={"application/json": ModelCreateSerializer, "multipart/form-data": ModelCreateSerializer},
        responses={
            201: OpenApiResponse(ModelSerializer, description="Registered without a file (status pending)."),
            202: OpenApiResponse(
                ModelSerializer,
                description=(
                    "Registered and uploaded; validation runs in the background (status validating). "
                    "`Location` is the model's URL."
                ),
            ),
            **_errors(400, 401, 403, 409, 413, 429),
        },
    )
    def create(self, request):
        serializer = ModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data.pop("file", None)
        reference = _staged_reference(data)
        if upload is None:
            model = services.model_create(**data, actor=actor_of(request))
            return Response(ModelSerializer(model).data, status=status.HTTP_201_CREATED)
        staged = services.stage_uploaded_file(upload)
        model = services.model_register(**data, staged=staged, reference=reference, actor=actor_of(request))
        return _accepted(request, model)

    @extend_schema(
        summary="Change a model's description, tags, serving options, ONNX Runtime settings or warm-up (audited)",
        request=ModelUpdateSerializer,
        responses={200: ModelSerializer, **_errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, pk=None):
        model = self.get_object()
        serializer = ModelUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.model_update(model=model, actor=actor_of(request), **serializer.validated_data)
        return Response(ModelSerializer(self.get_object()).data)

    def perform_destroy(self, instance):
        services.model_delete(model=instance)

    @extend_schema(
        summary="Upload the model file (multipart field `file`; optional drift reference file `reference`)",
        request={"multipart/form-data": ModelUploadSerializer},
        responses={200: ModelSerializer, **_errors(400, 401, 403, 404, 409, 413, 429)},
    )
    @action(detail=True, methods=["post"], parser_classes=(parsers.MultiPartParser,))
    def upload(self, request, pk=None):
        model = self.get_object()
        serializer = ModelUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reference = _staged_reference(serializer.validated_data)
        staged = services.stage_uploaded_file(serializer.validated_data["file"])
        model = services.model_upload(model=model, staged=staged, reference=reference)
        return Response(ModelSerializer(model).data)

    @extend_schema(
        summary=(
            "Validate the uploaded file in the background (202, status validating); "
            "poll the Location until ready (with schema and metadata) or error"
        ),
        request=None,
        responses={
            202: OpenApiResponse(ModelSerializer, description="Validation started; `Location` is the model's URL."),
            **_errors(401, 403, 404, 409, 429),
        },
    )
    @action(detail=True, methods=["post"])
    def validate(self, request, pk=None):
        model = services.model_validate(model=self.get_object())
        return _accepted(request, model)

    @extend_schema(
        summary="Archive a model version: kept and listed, never served (409 `model_aliased` while an alias "
        "points at it)",
        request=None,
        responses={200: ModelSerializer, **_errors(401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        model = services.model_archive(model=self.get_object())
        return Response(ModelSerializer(model).data)

    @extend_schema(
        summary="Unarchive a model version: its stored file is re-verified (sha256) and validated again",
        description=(
            "The version is validated again as after an upload: 202 with status `validating` and its URL in "
            "`Location`, then `ready`, or `error` with the reason (200 for a version archived before it had a "
            "file: it is `pending` again). A version whose stored file is gone or no longer matches its sha256 "
            "stays archived (409 `file_missing` or `checksum_mismatch`)."
        ),
        request=None,
        responses={
            200: ModelSerializer,
            202: OpenApiResponse(ModelSerializer, description="Validation started; `Location` is the model's URL."),
            **error_responses(
                {
                    **_ERRORS,
                    409: "`invalid_status` (not archived), `file_missing` or `checksum_mismatch` (stays archived).",
                    503: "`storage_unavailable`: the stored file could not be read; nothing changed.",
                },
                401,
                403,
                404,
                409,
                503,
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def unarchive(self, request, pk=None):
        model = services.model_unarchive(model=self.get_object())
        if model.status == MLModel.Status.VALIDATING:
            return _accepted(request, model)  # re-validated in the background, as after an upload
        return Response(ModelSerializer(model).data)


def _staged_reference(data: dict) -> services.StagedReference | None:
    """The optional drift reference file of an upload (popped from ``data``), staged; 400
    `unsupported_format` if its format is neither given nor told by its name."""
    upload = data.pop("reference", None)
    input_format = data.pop("reference_format", "")
    if upload is None:
        return None
    return services.stage_reference(upload, input_format=input_format)


def _accepted(request, model: MLModel) -> Response:
    """202 with the model (status validating) and its URL to poll in Location."""
    location = reverse("model-detail", args=[model.pk], request=request)
    return Response(ModelSerializer(model).data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class ModelNameViewSet(viewsets.GenericViewSet):
    """Reads by model name across its versions, and the name's aliases (read, create, move, delete)."""

    serializer_class = ModelSerializer
    queryset = MLModel.objects.none()
    lookup_field = "name"
    lookup_value_regex = NAME_PATTERN.strip("^$")
    required_scopes = {
        "versions": Scope.READ,
        "latest": Scope.READ,
        "aliases": Scope.READ,
        "alias_set": Scope.MANAGE,
        "alias_delete": Scope.MANAGE,
    }

    @extend_schema(
        summary="All versions of a model, newest semver first",
        responses={200: ModelSerializer(many=True), **_errors(401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request, name=None):
        queryset = selectors.model_versions(name=name)
        page = self.paginate_queryset(queryset)
        if not page and not queryset.exists():
            raise ModelNotFound(f"No model named '{name}'.")
        return self.get_paginated_response(ModelSerializer(page, many=True).data)

    @extend_schema(
        summary="The latest version of a model",
        parameters=[
            OpenApiParameter(
                "ready_only", OpenApiTypes.BOOL, description="Only ready versions (default true).", default=True
            )
        ],
        responses={200: ModelSerializer, **_errors(400, 401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def latest(self, request, name=None):
        raw = request.query_params.get("ready_only", "true").lower()
        if raw not in {"true", "false", "1", "0"}:
            raise DomainError("ready_only must be true or false.", code="invalid_parameter")
        model = selectors.model_latest(name=name, ready_only=raw in {"true", "1"})
        return Response(ModelSerializer(model).data)

    # --- aliases -------------------------------------------------------------------------------

    @extend_schema(
        summary="A model's aliases, their versions, and the audit trail of every alias change (newest first)",
        responses={200: AliasesSerializer, **_errors(401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def aliases(self, request, name=None):
        aliases = list(selectors.alias_list(name=name))
        events = list(selectors.alias_events(name=name))
        if not aliases and not events and not MLModel.objects.named(name).exists():
            raise ModelNotFound(f"No model named '{name}'.")
        try:
            default_version = selectors.model_resolve(name=name, fields=("id", "version")).version
        except ModelNotFound:
            default_version = None
        document = {"name": name, "default_version": default_version, "aliases": aliases, "events": events}
        return Response(AliasesSerializer(document).data)

    @extend_schema(
        summary="Create an alias, or move it to another ready version (audited)",
        parameters=[_ALIAS_PARAMETER],
        request=AliasSetSerializer,
        responses={
            200: OpenApiResponse(AliasSerializer, description="Moved (or already there: nothing changed)."),
            201: OpenApiResponse(AliasSerializer, description="Created."),
            **error_responses(_ALIAS_ERRORS, 400, 401, 403, 404, 409),
        },
    )
    def session_permissions(self, request) -> tuple[str, ...]:
        """What a session needs for PUT on an alias (access.permissions asks): creating one
        needs `add`, moving one `change`, the admin's two forms. The alias may be created
        between this check and the write (then a user with `add` only has moved it); the
        admin's add form has the same window."""
        exists = ModelAlias.objects.filter(name=self.kwargs.get("name"), alias=self.kwargs.get("alias")).exists()
        return ("registry.change_modelalias",) if exists else ("registry.add_modelalias",)

    @action(detail=True, methods=["put"], url_path=r"aliases/(?P<alias>[^/]+)")
    def alias_set(self, request, name=None, alias=None):
        services.check_alias_name(alias)
        serializer = AliasSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        change = services.alias_set(
            name=name, alias=alias, version=serializer.validated_data["version"], actor=actor_of(request)
        )
        return Response(
            AliasSerializer(change.alias).data, status=status.HTTP_201_CREATED if change.created else status.HTTP_200_OK
        )

    @extend_schema(
        summary="Delete an alias (audited)",
        parameters=[_ALIAS_PARAMETER],
        request=None,
        responses={204: None, **error_responses(_ALIAS_ERRORS, 400, 401, 403, 404)},
    )
    @alias_set.mapping.delete
    def alias_delete(self, request, name=None, alias=None):
        services.check_alias_name(alias)
        services.alias_delete(name=name, alias=alias, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
