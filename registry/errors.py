"""Registry errors, each with the code clients match on."""

from __future__ import annotations

from modelforge_site.exceptions import Conflict, DomainError, NotFound, PayloadTooLarge


class ModelNotFound(NotFound):
    code = "model_not_found"


class DuplicateVersion(Conflict):
    code = "duplicate_version"


class InvalidTransition(Conflict):
    code = "invalid_status"


class ModelArchived(Conflict):
    code = "model_archived"


class NoFile(Conflict):
    code = "no_file"


class ModelTooLarge(PayloadTooLarge):
    code = "model_too_large"

    def __init__(self, max_mb: int):
        super().__init__(
            f"The model file is larger than the {max_mb} MB limit (MAX_MODEL_SIZE_MB). Upload a smaller file."
        )


class ImportSourceError(DomainError):
    code = "invalid_source"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class InvalidAlias(DomainError):
    code = "invalid_alias"


class ModelNotReady(Conflict):
    """An alias may only be pointed at a ready version."""

    code = "model_not_ready"


class ModelAliased(Conflict):
    code = "model_aliased"


class ConflictingParameters(DomainError):
    code = "conflicting_parameters"
