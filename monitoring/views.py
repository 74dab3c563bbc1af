"""Drift API: /api/v1/models/{id}/drift, .../drift/thresholds and .../reference."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import parsers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from core.strict_input import UNAUTHENTICATED, error_responses
from monitoring import drift, services
from monitoring.models import DriftResult, Reference
from monitoring.reference import read_upload
from monitoring.serializers import (
    DriftSerializer,
    DriftThresholdsSerializer,
    ReferenceSerializer,
    ReferenceUploadSerializer,
)
from registry.errors import ModelNotFound
from registry.models import MLModel, PendingReference

_ERRORS = {
    400: (
        "`reference_columns` (a column that is not one of the model's inputs), `invalid_input_file`, "
        "`unsupported_format`, `invalid_row`, or out-of-range thresholds (`min_value`, `max_value`, "
        "`invalid_thresholds`)."
    ),
    401: UNAUTHENTICATED,
    403: "`missing_scope` or `permission_denied`.",
    404: (
        "No such model (`model_not_found`), or no reference yet (`reference_not_found`; `reference_pending`: the "
        "file given with the upload waits for the version's validation)."
    ),
    409: "`model_not_ready`: a reference needs a validated version.",
    413: "The file is over MAX_MODEL_SIZE_MB.",
}


def _errors(*statuses: int) -> dict:
    return error_responses(_ERRORS, *statuses)


def _model(model_id) -> MLModel:
    found = MLModel.objects.filter(pk=model_id).first()
    if found is None:
        raise ModelNotFound("No model with this id. List models with GET /api/v1/models.")
    return found


class DriftView(APIView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        summary="A version's drift: per window and feature, PSI, the test's p-value and the level",
        responses={200: DriftSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request, model_id):
        model = _model(model_id)
        reference = Reference.objects.filter(model=model).first()
        order = {window: index for index, window in enumerate(settings.DRIFT_WINDOWS)}
        results = sorted(
            DriftResult.objects.filter(model=model, window__in=list(order)), key=lambda result: order[result.window]
        )
        document = {
            "model_id": model.pk,
            "name": model.name,
            "version": model.version,
            "level": drift.worst(result.level for result in results),
            "thresholds": drift.thresholds_for(model.name),
            "reference": reference,
            "windows": results,
        }
        return Response(DriftSerializer(document).data)


class DriftThresholdsView(APIView):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.MANAGE}

    @extend_schema(
        summary="The drift thresholds of the model's name (its own, else the DRIFT_* defaults)",
        responses={200: DriftThresholdsSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request, model_id):
        return Response(drift.thresholds_for(_model(model_id).name))

    @extend_schema(
        summary="Set the drift thresholds of the model's name (every version); null resets one to the default",
        request=DriftThresholdsSerializer,
        responses={200: DriftThresholdsSerializer, **_errors(400, 401, 403, 404)},
    )
    def patch(self, request, model_id):
        model = _model(model_id)
        serializer = DriftThresholdsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(services.drift_thresholds_set(name=model.name, **serializer.validated_data))


class ReferenceView(APIView):
    required_scopes = {"GET": Scope.READ, "PUT": Scope.MANAGE, "DELETE": Scope.MANAGE}
    parser_classes = (parsers.MultiPartParser,)

    @extend_schema(
        summary="A version's reference: per feature, its bins and counts or class frequencies",
        responses={200: ReferenceSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request, model_id):
        model = _model(model_id)
        reference = Reference.objects.filter(model=model).first()
        if reference is None and PendingReference.objects.filter(model=model).exists():
            raise ModelNotFound(
                "This version's reference file (given with its upload) is summarised once the version is "
                f"validated; the version is {model.status}.",
                code="reference_pending",
            )
        if reference is None:
            raise ModelNotFound(
                "This version has no reference yet: upload one with PUT, or it is built from its first "
                f"{settings.DRIFT_REFERENCE_PREDICTIONS} recorded predictions.",
                code="reference_not_found",
            )
        return Response(ReferenceSerializer(reference).data)

    @extend_schema(
        summary="Upload (or replace) a version's reference file: JSON Lines, CSV or .npy, as a batch job's input",
        request={"multipart/form-data": ReferenceUploadSerializer},
        responses={200: ReferenceSerializer, **_errors(400, 401, 403, 404, 409, 413)},
    )
    def put(self, request, model_id):
        model = _model(model_id)
        serializer = ReferenceUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        path, is_copy = read_upload(upload)
        try:
            reference = services.reference_set_from_file(
                model=model,
                path=path,
                filename=upload.name or "",
                input_format=serializer.validated_data.get("input_format"),
            )
        finally:
            upload.close()
            if is_copy:
                path.unlink(missing_ok=True)
        return Response(ReferenceSerializer(reference).data)

    @extend_schema(
        summary="Forget a version's reference (it is built again from its first recorded predictions)",
        request=None,
        responses={204: None, **_errors(401, 403, 404)},
    )
    def delete(self, request, model_id):
        services.reference_delete(model=_model(model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
