"""Inference API under /api/v1: predict, prediction history, cache metrics.

The predict views parse the body themselves (orjson, strict about NaN and depth) and render with
orjson: this is the hot path, and DRF's parsers and renderers would add work without adding
checks. Authentication, scopes and error rendering are still DRF's.
"""

from __future__ import annotations

import time

import orjson
from django.conf import settings
from django.http import HttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import APIKey, Scope
from access.throttling import KeyRateThrottle
from core import request_log
from core.datetime_filters import UtcIsoDateTimeFilter
from core.exceptions import PayloadTooLarge
from core.list_filters import StrictFilterBackend
from core.strict_input import UNAUTHENTICATED, error_responses
from inference import services
from inference.cache import body_memo, cache_tenant, prediction_cache
from inference.errors import InvalidInput
from inference.models import Prediction
from inference.serializers import PredictionSerializer, PredictRequestSerializer, PredictResponseSerializer
from inference.serving import serving_cache
from inference.tensors import parse_json_body
from registry.errors import ModelNotFound
from registry.models import MLModel

PREDICT_FIELDS = {"input_data", "skip_cache"}


_ERRORS = {
    400: "Invalid input: `code` names the rule (e.g. `invalid_shape`, `non_finite_value`) and the input.",
    401: UNAUTHENTICATED,
    403: "`missing_scope`: the key lacks `predict`; `permission_denied`: the session lacks the Django permission.",
    404: "No such model, version or alias (or no ready version of that name).",
    409: "`model_not_ready` or `model_archived`.",
    429: "`throttled`: the key spent its predict budget (THROTTLE_RATE_PREDICT); see Retry-After.",
    503: "`queue_full` or `model_overloaded`: retry after Retry-After seconds.",
    504: "`inference_timeout`: the run took longer than INFERENCE_TIMEOUT_SECONDS and was stopped.",
}


def _errors(*statuses: int) -> dict:
    return error_responses(_ERRORS, *statuses)


def check_body_size(content_length: int) -> None:
    if content_length > settings.MAX_REQUEST_BODY_BYTES:
        raise PayloadTooLarge(
            f"The request body is {content_length} bytes; the limit is {settings.MAX_REQUEST_BODY_BYTES} "
            "(MAX_REQUEST_BODY_BYTES). Send fewer rows per request, or use a batch job.",
            code="body_too_large",
        )


def parse_predict_body(body: bytes) -> tuple[object, bool]:
    """(input_data, skip_cache) from a predict request body."""
    document = parse_json_body(body, max_depth=settings.MAX_JSON_DEPTH)
    if not isinstance(document, dict):
        raise InvalidInput('The body must be a JSON object: {"input_data": {...}, "skip_cache": false}.')
    unexpected = sorted(set(document) - PREDICT_FIELDS)
    if unexpected:
        raise InvalidInput(
            f"Unknown field(s) {', '.join(map(repr, unexpected))}. Send input_data and optionally skip_cache.",
            code="unknown_field",
        )
    if "input_data" not in document:
        raise InvalidInput('input_data is required: {"input_data": {"<input name>": [...]}}.', code="missing_field")
    skip_cache = document.get("skip_cache", False)
    if not isinstance(skip_cache, bool):
        raise InvalidInput("skip_cache must be true or false.", code="invalid_field")
    return document["input_data"], skip_cache


def predict_from_body(*, model: MLModel, body: bytes, api_key, user) -> tuple[bytes, dict[str, str]]:
    """The whole predict exchange after authentication: body in, (JSON bytes, headers) out.

    Shared by the DRF view and the WSGI fast path (inference.fastpath), so both behave alike.
    """
    started = time.perf_counter()
    request_log.bind_model(model)
    timings = services.Timings()
    caller = {"model": model, "api_key": api_key, "user": user, "input_size": len(body), "timings": timings}
    tenant = cache_tenant(api_key=api_key, user=user)
    remembered = body_memo.get(model, body, tenant=tenant)
    if remembered is not None:
        cache_key, input_data = remembered
        timings.parse = (time.perf_counter() - started) * 1000
        outcome = services.predict_cached(cache_key=cache_key, input_data=input_data, **caller)
        if outcome is not None:
            return render_prediction(outcome)
    input_data, skip_cache = parse_predict_body(body)
    timings.parse = (time.perf_counter() - started) * 1000
    outcome = services.predict(input_data=input_data, skip_cache=skip_cache, **caller)
    if outcome.cache_key is not None:
        body_memo.put(model, body, outcome.cache_key, input_data, tenant=tenant)
    return render_prediction(outcome)


def render_prediction(outcome: services.PredictionOutcome) -> tuple[bytes, dict[str, str]]:
    started = time.perf_counter()
    request_log.bind_outcome(outcome)
    model = outcome.model
    body = {
        "id": outcome.id,
        "model_id": model.pk,
        "model_name": model.name,
        "model_version": model.version,
        "output_data": outcome.output_data,
        "inference_time_ms": outcome.inference_time_ms,
        "cached": outcome.cached,
        "created_at": outcome.created_at,
    }
    if outcome.warnings:
        body["warnings"] = outcome.warnings
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    outcome.timings.serialize = (time.perf_counter() - started) * 1000
    headers = {
        "Content-Type": "application/json",
        "X-Cache": "HIT" if outcome.cached else "MISS",
        "Server-Timing": outcome.timings.header(),
    }
    return content, headers


class PredictView(APIView):
    required_scopes = {"POST": Scope.PREDICT}
    throttle_classes = (KeyRateThrottle,)
    throttle_scopes = {"POST": "predict"}

    def model_for(self, request, **kwargs) -> MLModel:
        raise NotImplementedError

    def post(self, request, **kwargs):
        model = self.model_for(request, **kwargs)
        check_body_size(int(request.META.get("CONTENT_LENGTH") or 0))
        content, headers = predict_from_body(
            model=model,
            body=request.body,
            api_key=request.auth if isinstance(request.auth, APIKey) else None,
            user=request.user,
        )
        response = HttpResponse(content)
        for name, value in headers.items():
            response[name] = value
        return response


_predict_examples = [
    OpenApiExample(
        "iris",
        value={"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": False},
        request_only=True,
    )
]


class ModelPredictView(PredictView):
    @extend_schema(
        summary="Predict with a model version",
        request=PredictRequestSerializer,
        responses={200: PredictResponseSerializer, **_errors(400, 401, 403, 404, 409, 429, 503, 504)},
        examples=_predict_examples,
    )
    def post(self, request, **kwargs):
        return super().post(request, **kwargs)

    def model_for(self, request, *, model_id) -> MLModel:
        return serving_cache.by_id(model_id)


class NamedPredictView(PredictView):
    @extend_schema(
        summary="Predict with a model's production alias or latest ready version (or ?version=, ?alias=)",
        parameters=[
            OpenApiParameter("version", OpenApiTypes.STR, description="A version, e.g. 1.2.0."),
            OpenApiParameter("alias", OpenApiTypes.STR, description="An alias, e.g. staging (not with version)."),
        ],
        request=PredictRequestSerializer,
        responses={200: PredictResponseSerializer, **_errors(400, 401, 403, 404, 409, 429, 503, 504)},
        examples=_predict_examples,
    )
    def post(self, request, **kwargs):
        return super().post(request, **kwargs)

    def model_for(self, request, *, name) -> MLModel:
        query = request.query_params
        return serving_cache.by_name(name, query.get("version") or None, query.get("alias") or None)


class PredictionFilter(filters.FilterSet):
    cached = filters.TypedChoiceFilter(
        choices=[("true", "true"), ("false", "false")],
        coerce=lambda value: value == "true",
        help_text="true or false.",
    )
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Prediction
        fields = ("cached", "created_after", "created_before")


class ModelPredictionsView(generics.ListAPIView):
    """A model's prediction history, newest first: the key's own (a session with
    `inference.view_prediction` sees all)."""

    serializer_class = PredictionSerializer
    filterset_class = PredictionFilter
    filter_backends = (StrictFilterBackend,)
    required_scopes = {"GET": Scope.PREDICT}

    @extend_schema(
        summary="A model's predictions (yours), newest first",
        responses={200: PredictionSerializer(many=True), **_errors(400, 401, 403, 404)},
    )
    def get(self, request, *args, **kwargs):
        if not MLModel.objects.filter(pk=kwargs["model_id"]).exists():
            raise ModelNotFound("No model with this id.")
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no model id
            return Prediction.objects.none()
        return (
            Prediction.objects.visible_to(self.request)
            .filter(model_id=self.kwargs["model_id"])
            .select_related("api_key")
        )


class PredictionDetailView(generics.RetrieveAPIView):
    serializer_class = PredictionSerializer
    required_scopes = {"GET": Scope.PREDICT}
    lookup_url_kwarg = "prediction_id"

    @extend_schema(summary="One prediction (yours)", responses={200: PredictionSerializer, **_errors(401, 403, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        # Another key's prediction is a 404, exactly like one that does not exist.
        return Prediction.objects.visible_to(self.request).select_related("api_key")


class CacheMetricsSerializer(serializers.Serializer):
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    hit_rate = serializers.FloatField()


class CacheMetricsView(APIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.MANAGE}

    @extend_schema(
        summary="Prediction cache hits, misses and hit rate",
        responses={200: CacheMetricsSerializer, **_errors(401, 403)},
    )
    def get(self, request):
        return Response(prediction_cache.metrics())


class CacheMetricsResetView(APIView):
    required_scopes = {"POST": Scope.MANAGE}

    @extend_schema(
        summary="Reset the cache counters", request=None, responses={200: CacheMetricsSerializer, **_errors(401, 403)}
    )
    def post(self, request):
        prediction_cache.reset()
        return Response(prediction_cache.metrics())
