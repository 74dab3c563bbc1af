"""Errors of the inference path. Each is a `DomainError`, so the API renders it as
``{"code", "detail"}`` with the error's status. Rejected inputs are `core.tensor_checks.InvalidInput`,
their codes listed where they are raised (`inference.tensors`, `inference.v2.codec`)."""

from __future__ import annotations

from rest_framework import status

from core.exceptions import DomainError, ServiceUnavailable


class ModelNotReady(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "model_not_ready"


class ModelArchived(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "model_archived"


class ModelFileUnavailable(ServiceUnavailable):
    """This server cannot read the model's stored file now: missing, or not the bytes of its
    sha256, as this server sees the storage. One server's view is not the truth (a wrong prefix,
    a bucket being restored, a partition), so the model's status is left alone: 503 with
    Retry-After, and a worker confirms the fault before the model is marked `error`
    (registry.services.model_file_report). The client gets the request id; the log the rest."""

    code = "model_file_unavailable"
    RETRY_AFTER_SECONDS = 5

    def __init__(self, model, *, request_id: str | None = None):
        reference = f" (request {request_id}; the details are in the server log)" if request_id else ""
        super().__init__(
            f"{model}'s file cannot be read on this server right now{reference}. It is being checked; "
            f"try again in a few seconds."
        )
        self.retry_after = self.RETRY_AFTER_SECONDS


class InferenceFailed(DomainError):
    """The inputs passed validation but ONNX Runtime refused them (value-dependent checks)."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "inference_failed"


class ResourceLimitExceeded(DomainError):
    """The run needed more memory than the model may use (MODEL_MEMORY_LIMIT_MB) and was stopped
    in its isolated process (inference.isolation). 422: the input asked for it; smaller inputs work."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "resource_limit_exceeded"


class Overloaded(DomainError):
    """503 with a Retry-After header: the client should come back, not give up."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "overloaded"

    def __init__(self, detail: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    code = "queue_full"


class QueueTimeout(Overloaded):
    code = "queue_timeout"


class CacheUnavailable(Overloaded):
    code = "cache_unavailable"
