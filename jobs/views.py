"""Jobs API: /api/v1/jobs, and /api/v1/health/celery.

Every job route needs the `predict` scope and sees only the caller's own jobs: another key's job
is a 404 on every route, exactly like a job that does not exist. An admin session needs the
Django permissions of the route instead, and with `jobs.view_job` sees every job
(access.permissions).
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, parsers, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from access.models import APIKey, Scope
from access.permissions import is_staff_request
from access.throttling import KeyRateThrottle
from core.celery_app import broker_configured
from core.embedded_runner import runner
from core.exceptions import PayloadTooLarge, error_body
from core.list_filters import StrictFilterBackend
from core.strict_input import UNAUTHENTICATED, ErrorSerializer, error_responses
from inference import routing
from inference.tensors import parse_json_body
from jobs import batch_io, monitoring, services
from jobs.errors import InvalidParameter, JobNotFound
from jobs.filters import JobFilter
from jobs.models import Job
from jobs.serializers import CeleryHealthSerializer, JobCreateSerializer, JobResultSerializer, JobSerializer
from jobs.storage import job_files
from registry.errors import ModelNotFound
from registry.models import MLModel

MAX_WAIT_SECONDS = 30
UUID_PATTERN = "[0-9a-fA-F-]{36}"


_ERRORS = {
    400: "Invalid request or input; `code` names the rule (e.g. `invalid_input_file`, `invalid_shape`).",
    401: UNAUTHENTICATED,
    403: "`missing_scope`: the key lacks `predict`; `permission_denied`: the session lacks the Django permission.",
    404: "No such job (or another key's), or no such model.",
    409: "Conflict with the job's or the model's status (e.g. `job_not_finished`, `model_not_ready`).",
    413: "The input file is over JOB_MAX_INPUT_FILE_MB (`input_file_too_large`) or the body over the limit.",
    429: "`throttled`: the key created too many jobs (THROTTLE_RATE_JOBS); see Retry-After.",
    503: "`storage_unavailable`: the bucket holding job files cannot be reached; nothing was stored, try again.",
}


def _errors(*statuses: int) -> dict:
    return error_responses(_ERRORS, *statuses)


class StrictJSONParser(parsers.BaseParser):
    """JSON bodies parsed as predict parses them: NaN/Infinity and over-deep nesting are 400s."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > settings.MAX_REQUEST_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body is {length} bytes; the limit is {settings.MAX_REQUEST_BODY_BYTES} "
                "(MAX_REQUEST_BODY_BYTES). Send large inputs as an input_file instead.",
                code="body_too_large",
            )
        return parse_json_body(stream.read(), max_depth=settings.MAX_JSON_DEPTH)


class _NoFormatOverride:
    """API settings in which `?format=` picks no renderer (on these routes it names a file format)."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name):
        return getattr(api_settings, name)


class JobContentNegotiation(DefaultContentNegotiation):
    settings = _NoFormatOverride()


def _model_for(data: dict, api_key) -> MLModel:
    if "model_id" in data:
        model = MLModel.objects.filter(pk=data["model_id"]).first()
        if model is None:
            raise ModelNotFound("No model with this id. List models with GET /api/v1/models.")
        return model
    # The rule predict uses: a version, an alias, or by default the production alias's version;
    # through an alias with a rollout, the version the job's key routes to (the job records it).
    return routing.route_named(
        name=data["model_name"], version=data.get("version"), alias=data.get("alias"), api_key=api_key
    )


def _int_parameter(request, name: str, *, maximum: int) -> int:
    raw = request.query_params.get(name, "0")
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= maximum:
        raise InvalidParameter(f"{name} must be a whole number of seconds from 0 to {maximum}; got {raw!r}.")
    return value


_job_id = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's id.")


@extend_schema_view(
    list=extend_schema(
        summary="Your jobs, newest first (filter by status, model, priority)",
        responses={200: JobSerializer(many=True), **_errors(400, 401, 403)},
    ),
    retrieve=extend_schema(
        summary="A job: status, progress, timings, attempts, error",
        parameters=[_job_id],
        responses={200: JobSerializer, **_errors(401, 403, 404)},
    ),
    destroy=extend_schema(
        summary="Delete a finished job and its files",
        parameters=[_job_id],
        responses={204: None, **_errors(401, 403, 404, 409)},
    ),
)
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer
    parser_classes = (StrictJSONParser, parsers.MultiPartParser)
    content_negotiation_class = JobContentNegotiation
    filterset_class = JobFilter
    filter_backends = (StrictFilterBackend,)
    lookup_value_regex = UUID_PATTERN
    http_method_names = ("get", "post", "delete", "head", "options")
    required_scopes = {
        action: Scope.PREDICT for action in ("list", "retrieve", "create", "destroy", "result", "cancel")
    }
    throttle_classes = (KeyRateThrottle,)
    throttle_scopes = {"create": "jobs"}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not broker_configured():
            runner.start()  # its maintenance picks up jobs an ended server process left (jobs_recover)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        queryset = Job.objects.visible_to(self.request).select_related("api_key", "user")
        if self.action == "list":
            queryset = queryset.defer("input_data", "output_data", "traceback")
        return queryset

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "staff": is_staff_request(self.request)}

    def get_object(self):
        try:
            return super().get_object()
        except Http404 as exc:
            raise JobNotFound("No job with this id. List your jobs with GET /api/v1/jobs.") from exc

    @extend_schema(
        summary="Create a job: inline JSON input, or an input file (multipart)",
        request={"application/json": JobCreateSerializer, "multipart/form-data": JobCreateSerializer},
        responses={
            202: OpenApiResponse(JobSerializer, description="Accepted; `Location` is the job's URL."),
            **_errors(400, 401, 403, 404, 409, 413, 429, 503),
        },
        examples=[
            OpenApiExample(
                "inline",
                value={
                    "model_name": "iris-classifier",
                    "input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]},
                    "priority": "high",
                },
                request_only=True,
                media_type="application/json",
            )
        ],
    )
    def create(self, request):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        job = services.job_create(
            model=_model_for(data, api_key),
            priority=data["priority"],
            input_data=data.get("input_data"),
            input_file=data.get("input_file"),
            input_format=data.get("input_format"),
            api_key=api_key,
            user=request.user if api_key is None else None,
        )
        body = JobSerializer(job, context=self.get_serializer_context()).data
        location = reverse("job-detail", args=[job.pk], request=request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    def perform_destroy(self, instance):
        services.job_delete(job=instance)

    @extend_schema(
        summary="Cancel a job: a queued one never runs, a running one stops",
        request=None,
        parameters=[_job_id],
        responses={200: JobSerializer, **_errors(401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job=self.get_object())
        return Response(JobSerializer(job, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="A job's result: 200 when completed, 202 while not finished, 409 when failed or cancelled",
        parameters=[
            _job_id,
            OpenApiParameter(
                "wait",
                OpenApiTypes.INT,
                description=f"Hold the request up to this many seconds (0-{MAX_WAIT_SECONDS}) until the job ends.",
            ),
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=["jsonl", "csv"],
                description="Batch jobs: stream the output file as JSON Lines or CSV instead.",
            ),
        ],
        responses={
            (200, "application/json"): JobResultSerializer,
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY, description="?format=jsonl"),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="?format=csv"),
            202: OpenApiResponse(JobSerializer, description="Not finished yet; retry later (see Retry-After)."),
            **_errors(400, 401, 403, 404, 503),
            409: OpenApiResponse(ErrorSerializer, description="`job_failed` (with `error_code`) or `job_cancelled`."),
        },
    )
    @action(detail=True, methods=["get"])
    def result(self, request, pk=None):
        wait = _int_parameter(request, "wait", maximum=MAX_WAIT_SECONDS)
        file_format = request.query_params.get("format")
        if file_format is not None and file_format not in ("jsonl", "csv"):
            raise InvalidParameter(f"format must be jsonl or csv; got {file_format!r}.")
        job = self.get_object()
        if file_format and not job.is_batch:
            raise InvalidParameter(
                "This job's input was inline, so its result is JSON only: drop ?format.", code="no_output_file"
            )
        job = services.job_wait(job=job, timeout=wait)
        if job.status == Job.Status.COMPLETED:
            if file_format:
                return self._output_file(job, file_format)
            return Response(self._result_body(job, request))
        if job.status == Job.Status.FAILED:
            body = error_body("job_failed", job.error_message or "The job failed.", error_code=job.error_code)
            return Response(body, status=status.HTTP_409_CONFLICT)
        if job.status == Job.Status.CANCELLED:
            body = error_body("job_cancelled", "The job was cancelled; it has no result.")
            return Response(body, status=status.HTTP_409_CONFLICT)
        body = JobSerializer(job, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "1"})

    @staticmethod
    def _result_body(job: Job, request) -> dict:
        body = {
            "id": job.pk,
            "status": job.status,
            "model_id": job.model_id,
            "model_name": job.model_name,
            "model_version": job.model_version,
            "warnings": job.warnings,
            "inference_time_ms": job.inference_time_ms,
            "finished_at": job.finished_at,
        }
        if job.is_batch:
            url = reverse("job-result", args=[job.pk], request=request)
            body["rows"] = job.progress_done
            body["downloads"] = {"jsonl": f"{url}?format=jsonl", "csv": f"{url}?format=csv"}
        else:
            body["output_data"] = job.output_data
        return body

    @staticmethod
    def _output_file(job: Job, file_format: str):
        """Streamed from the job's store (a file, or ranged reads of the object in the bucket):
        a bucket that cannot be reached is a 503 here, before the response starts."""
        try:
            handle = job_files(job.pk).open_output(job.output_file)  # FileResponse or export_csv closes it
        except FileNotFoundError as exc:
            raise JobNotFound("The job's output file no longer exists.") from exc
        if file_format == "jsonl":
            return FileResponse(
                handle, content_type="application/x-ndjson", as_attachment=True, filename=f"job-{job.pk}.jsonl"
            )
        response = StreamingHttpResponse(batch_io.export_csv(handle), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}.csv"'
        return response


class CeleryHealthView(APIView):
    """Not a probe (those need no key): workers, queues and their lengths, for operators."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        summary="Job workers: broker, workers answering a ping, queue lengths, unfinished jobs",
        responses={200: CeleryHealthSerializer, 503: CeleryHealthSerializer, **_errors(401, 403)},
    )
    def get(self, request):
        report, healthy = monitoring.celery_report()
        return Response(report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
