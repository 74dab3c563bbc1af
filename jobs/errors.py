"""Job errors, each with the code clients match on (rendered as ``{"code", "detail"}``)."""

from __future__ import annotations

from core.exceptions import Conflict, DomainError, NotFound, PayloadTooLarge


class JobNotFound(NotFound):
    code = "job_not_found"


class JobNotFinished(Conflict):
    """Deleting (or reading the output of) a job that is still pending, queued or running."""

    code = "job_not_finished"


class JobFinished(Conflict):
    """Cancelling a job that already completed or failed."""

    code = "job_finished"


class JobFailed(Conflict):
    code = "job_failed"


class JobCancelled(Conflict):
    code = "job_cancelled"


class InvalidInputFile(DomainError):
    """The input file is not the declared format, or does not fit the model (400)."""

    code = "invalid_input_file"


class UnsupportedFormat(DomainError):
    code = "unsupported_format"


class InputFileTooLarge(PayloadTooLarge):
    code = "input_file_too_large"

    def __init__(self, max_mb: int):
        super().__init__(
            f"The input file is larger than the {max_mb} MB limit (JOB_MAX_INPUT_FILE_MB). Split it into several jobs."
        )


class UnsupportedOutput(DomainError):
    """A model output without one entry per input row: it cannot be split into output rows."""

    code = "unsupported_output"


class ModelDeleted(DomainError):
    code = "model_deleted"


class NotRetryable(Conflict):
    code = "job_not_retryable"


class InvalidParameter(DomainError):
    code = "invalid_parameter"


class BadRow(DomainError):
    """One row of a batch input cannot be used: the job fails, naming the row.

    ``row`` is 1-based and counts data rows (blank lines and a CSV header do not count);
    ``line`` is the line in the file, when that is something else.
    """

    code = "invalid_row"

    def __init__(self, row: int, detail: str, *, line: int | None = None, rule: str | None = None):
        where = f"Row {row}" + (f" (line {line})" if line is not None and line != row else "")
        super().__init__(f"{where}: {detail}")
        self.row = row
        self.rule = rule
