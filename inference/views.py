"""Inference API under /api/v1: predict, prediction history, cache metrics.

The predict views are a door of the serving exchange (inference.exchange), which parses and
renders with orjson (inference.protocols.JsonPredict): this is the hot path, and DRF's parsers
and renderers would add work without adding checks. Their routes are in inference.routes.
"""

from __future__ import annotations

import json

import orjson
from django.http import HttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from access.principals import Credential
from core.body_reading import content_length
from core.datetime_filters import UtcIsoDateTimeFilter
from core.exceptions import DomainError
from core.list_filters import StrictFilterBackend
from core.strict_input import UNAUTHENTICATED, error_responses
from inference import exchange
from inference.cache import prediction_cache
from inference.exchange import Protocol
from inference.models import Prediction
from inference.serializers import PredictionSerializer, PredictRequestSerializer, PredictResponseSerializer
from inference.tensors import example_input
from registry.errors import ModelNotFound
from registry.models import MLModel

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


class PredictFormRenderer(BrowsableAPIRenderer):
    """The browsable API's page for predict: its raw-data form starts with a body the model
    accepts (one row of zeros from its input schema), or with what was just posted, to edit and
    send again."""

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        if form is not None and method == "POST":
            form.fields["_content"].initial = view.form_body(request)
        return form


# The /api/v1 door of the serving exchange (inference.exchange): DRF authenticates (a key, or a
# session with its CSRF check) and the exchange does the rest, authorization included. The route
# table (inference.routes) gives each view its protocol and how its path names the model. (A
# comment, not a docstring: DRF would publish a docstring as the operation's description.)
#
# The exchange answers in JSON bytes. A request that prefers HTML (the browsable API's form,
# posted by its script with `Accept: text/html`) gets the same answer as the browsable API's
# page: otherwise its script, finding no HTML, reloads the URL with a GET, which shows a 405.
class PredictView(APIView):
    required_scopes = {"POST": Scope.PREDICT}
    parser_classes = (JSONParser,)  # what the form offers; the exchange parses the body itself
    renderer_classes = (JSONRenderer, PredictFormRenderer)
    protocol: Protocol | None = None
    ref = None

    def check_permissions(self, request):
        if request.method != "POST":  # a POST is authorized by the exchange, with the rest of its edge
            super().check_permissions(request)

    def post(self, request, **kwargs):
        reply = exchange.answer(
            Credential.from_request(request),
            self.ref(kwargs, request.query_params),
            exchange.Incoming(
                content_length(request.META.get("CONTENT_LENGTH")),
                lambda: request.body,
                {name.lower(): request.headers.get(name) for name in self.protocol.headers},
            ),
            self.protocol,
        )
        if isinstance(getattr(request, "accepted_renderer", None), BrowsableAPIRenderer):
            headers = {name: value for name, value in reply.headers.items() if name.lower() != "content-type"}
            return Response(orjson.loads(reply.content), status=reply.status, headers=headers)
        return HttpResponse(reply.content, status=reply.status, headers=reply.headers)

    def form_body(self, request) -> str:
        """The predict form's body: the one just posted, else one row of zeros for the model's
        inputs (an empty input_data when the model cannot be served or takes no JSON input)."""
        if request.method == "POST" and request.body:
            return request.body.decode("utf-8", "replace")
        try:
            model = self.protocol.resolve(self.ref(self.kwargs, request.query_params))
            example = example_input(model.input_schema)
        except DomainError:
            example = {}
        return json.dumps({"input_data": example, "skip_cache": False}, indent=4)


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
        parameters=[OpenApiParameter("model_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        request=PredictRequestSerializer,
        responses={200: PredictResponseSerializer, **_errors(400, 401, 403, 404, 409, 429, 503, 504)},
        examples=_predict_examples,
    )
    def post(self, request, **kwargs):
        return super().post(request, **kwargs)


class NamedPredictView(PredictView):
    @extend_schema(
        summary="Predict with a model's production alias or latest ready version (or ?version=, ?alias=)",
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("version", OpenApiTypes.STR, description="A version, e.g. 1.2.0."),
            OpenApiParameter("alias", OpenApiTypes.STR, description="An alias, e.g. staging (not with version)."),
        ],
        request=PredictRequestSerializer,
        responses={200: PredictResponseSerializer, **_errors(400, 401, 403, 404, 409, 429, 503, 504)},
        examples=_predict_examples,
    )
    def post(self, request, **kwargs):
        return super().post(request, **kwargs)


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
