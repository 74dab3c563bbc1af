"""Registry errors, each with the code clients match on."""

from __future__ import annotations

from core.exceptions import Conflict, DomainError, NotFound, PayloadTooLarge, ServiceUnavailable


class ModelNotFound(NotFound):
    code = "model_not_found"


class DuplicateVersion(Conflict):
    code = "duplicate_version"


class InvalidTransition(Conflict):
    code = "invalid_status"


class ModelArchived(Conflict):
    code = "model_archived"


class VersionImmutable(Conflict):
    """A version that has been ready keeps its file for good: a new file is a new version."""

    code = "version_immutable"


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


class StorageUnavailable(ServiceUnavailable):
    """The model storage (a filesystem or an S3-compatible bucket) cannot be reached or refused
    the call: nothing was registered, retry when it is back."""

    code = "storage_unavailable"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class InvalidAlias(DomainError):
    code = "invalid_alias"


class ModelNotReady(Conflict):
    """An alias may only be pointed at a ready version."""

    code = "model_not_ready"


class ModelAliased(Conflict):
    """A version an alias points at is not archived or deleted; the detail names the aliases."""

    code = "model_aliased"


class StoredFileInvalid(Conflict):
    """The stored file of a version is gone (`file_missing`) or no longer hashes to its
    sha256 (`checksum_mismatch`)."""

    code = "checksum_mismatch"


class ConflictingParameters(DomainError):
    code = "conflicting_parameters"


class InvalidRollout(DomainError):
    """A rollout setting that cannot be: a weight outside 0-100 (`invalid_weight`), a candidate
    or shadow of another name (`other_name`), the primary itself (`candidate_is_primary`,
    `shadow_is_primary`), a weight without a candidate (`no_candidate`), ..."""

    code = "invalid_rollout"


class RolloutNotFound(NotFound):
    code = "rollout_not_found"


class RolloutInProgress(Conflict):
    """An alias with a rollout is moved by promoting or aborting it, not by alias_set."""

    code = "rollout_in_progress"


class ReferenceFormat(DomainError):
    """A reference file given with an upload whose format cannot be told (400)."""

    code = "unsupported_format"
