"""Errors of the inference path. Each is a `DomainError`, so the API renders it as
``{"code", "detail"}`` with the error's status. Rejected inputs are `core.tensor_checks.InvalidInput`,
their codes listed where they are raised (`inference.tensors`, `inference.v2.codec`)."""

from __future__ import annotations

from rest_framework import status

from core.exceptions import DomainError


class ModelNotReady(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "model_not_ready"


class ModelArchived(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "model_archived"


class ModelIntegrityError(DomainError):
    """The stored file is missing or no longer matches its sha256: it is never served."""

    status_code = status.HTTP_409_CONFLICT
    code = "checksum_mismatch"

    @classmethod
    def mismatch(cls, model) -> ModelIntegrityError:
        return cls(f"{model}'s stored file no longer matches its sha256 and is not served. Upload it again.")

    @classmethod
    def missing(cls, model) -> ModelIntegrityError:
        return cls(f"{model}'s stored file is missing. Upload it again.", code="file_missing")


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
