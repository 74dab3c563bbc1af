"""Monitoring errors, each with the code clients match on (rendered as ``{"code", "detail"}``)."""

from __future__ import annotations

from core.exceptions import Conflict, DomainError


class ReferenceColumns(DomainError):
    """A reference file's columns do not match the model's input (400, naming the column)."""

    code = "reference_columns"


class ReferenceFileMissing(DomainError):
    code = "reference_file_missing"


class ModelNotReady(Conflict):
    """A reference needs the version's inputs and outputs, known once it is validated."""

    code = "model_not_ready"


class InvalidThresholds(DomainError):
    code = "invalid_thresholds"
