"""Does this process's model storage hold what the database says it holds?

A process started with the wrong S3_PREFIX, S3_BUCKET, endpoint or MODEL_STORAGE_PATH sees an
empty or foreign storage: every model file is "missing" to it, though the files are where the
other nodes find them. Such a node must neither serve (readiness fails) nor blame the models
(registry.services.model_file_confirm refuses to condemn from it).

The check: the database keeps one token (`DeploymentIdentity`), and `manage.py migrate` writes
it into the storage as the sentinel object ``_modelforge/sentinel.json`` (`sentinel_write`,
from post_migrate). A storage is this deployment's when

- its sentinel holds the database's token; or else
- the database lists no file yet (nothing to find: a new deployment); or else
- at least one of a few files the database lists (of versions not in error, newest first) is
  there (a sentinel lost or never written: `migrate` writes it again).

Only `migrate` writes the sentinel (with the deployment's own settings, before the new code
serves: readiness waits for migrations): a node never writes one into the storage it checks,
so a node started with a wrong prefix cannot make that prefix look right.

Anything else fails, naming the storage (bucket, prefix, endpoint or folder), the sentinel
expected and found, and the files looked for: in the log and in `check --deploy`, never in the
readiness body, which unauthenticated callers read. A storage that cannot be reached says
nothing about which storage it is: that verdict is `unreachable`.

`verdicts` keeps each process's last verdict for RECHECK_SECONDS (readiness asks often); a
model file this node cannot read asks for a new one at once (`verdicts.recheck`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.utils import timezone

from registry.errors import StorageUnavailable
from registry.models import DeploymentIdentity, MLModel
from registry.storage import SENTINEL_NAME, ModelStore

logger = logging.getLogger(__name__)

# How many of the database's files are looked for when the sentinel does not answer.
SAMPLE_SIZE = 5
RECHECK_SECONDS = 30.0
# How long readiness still says "degraded" after a model file could not be read here.
FILE_FAILURE_NOTE_SECONDS = 60.0

# Verdict states: the first three pass.
VERIFIED, NO_FILES, FOUND_FILES = "verified", "no_files", "found_files"
MISMATCH, UNREACHABLE = "mismatch", "unreachable"


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str  # short, for the readiness probe: no bucket, endpoint or path
    detail: str  # everything, for the log and check --deploy

    @property
    def ok(self) -> bool:
        return self.state in (VERIFIED, NO_FILES, FOUND_FILES)


def deployment_token() -> str:
    """The database's token, created on first use (a database flushed or migrated before the
    table existed has none yet; two processes creating it at once agree on the winner's)."""
    found = DeploymentIdentity.objects.filter(pk=1).values_list("token", flat=True).first()
    if found is None:
        try:
            with transaction.atomic():
                found = DeploymentIdentity.objects.create(pk=1).token
        except IntegrityError:
            found = DeploymentIdentity.objects.values_list("token", flat=True).get(pk=1)
    return str(found)


def sentinel_bytes(token: str) -> bytes:
    document = {
        "deployment": token,
        "written_at": timezone.now().isoformat(),
        "about": "Written by ModelForge (manage.py migrate). Every process checks that its model storage holds "
        "this token, the one in its database, before it serves. Do not delete or edit.",
    }
    return json.dumps(document, indent=2).encode()


def _token_in(data: bytes | None) -> str | None:
    """The token a sentinel holds; '' for one that cannot be read; None for no sentinel."""
    if data is None:
        return None
    try:
        token = json.loads(data).get("deployment")
    except (ValueError, AttributeError):
        return ""
    return token if isinstance(token, str) else ""


def sentinel_write(*, store: ModelStore | None = None, replace: bool = False) -> str:
    """Write this deployment's sentinel into the storage if it holds none (or, with `replace`,
    another's); returns what was done: ``written``, ``present`` or ``foreign`` (left alone).
    StorageUnavailable when the storage cannot be reached."""
    store = store or ModelStore()
    token = deployment_token()
    found = _token_in(store.read_sentinel())
    if found == token:
        return "present"
    if found is not None and not replace:
        return "foreign"
    store.write_sentinel(sentinel_bytes(token))
    logger.info("model storage sentinel written", extra={"storage": store.describe(), "deployment": token})
    return "written"


def verify(*, store: ModelStore | None = None) -> Verdict:
    """The verdict on this process's storage, checked now (see the module docstring)."""
    store = store or ModelStore()
    where = store.describe()
    try:
        token = deployment_token()
        found = _token_in(store.read_sentinel())
        if found == token:
            return Verdict(VERIFIED, "ok", f"{where} holds this deployment's sentinel ({token}).")
        files = list(
            MLModel.objects.exclude(file_sha256="")
            .exclude(status=MLModel.Status.ERROR)
            .order_by("-updated_at")
            .values_list("file_sha256", flat=True)[: SAMPLE_SIZE * 4]
        )
        files = list(dict.fromkeys(files))[:SAMPLE_SIZE]
        if not files:
            return Verdict(NO_FILES, "ok", f"{where}: the database lists no model file yet.")
        present = [sha256 for sha256 in files if store.exists(sha256)]
        if present:
            if found is not None:
                logger.warning(
                    "model storage holds another deployment's sentinel, and this one's files: two deployments "
                    "share it (a delete in one removes the files of the other's identical versions)",
                    extra={"storage": where, "deployment": token, "found": found},
                )
            return Verdict(FOUND_FILES, "ok", f"{where} holds {len(present)} of {len(files)} model files checked.")
    except StorageUnavailable as exc:
        cause = exc.__cause__.__class__.__name__ if exc.__cause__ else "error"
        return Verdict(UNREACHABLE, "model storage unreachable", f"{where} could not be read ({cause}).")
    sentinel = {None: "no sentinel", "": "a sentinel that cannot be read"}.get(
        found, f"the sentinel of deployment {found}"
    )
    _, listing = store.check()
    names = ", ".join(store.name_for(sha256) for sha256 in files)
    detail = (
        f"The model storage is not this deployment's: {where} holds {sentinel} where {SENTINEL_NAME} with "
        f"deployment {token} was expected, and none of the {len(files)} newest model files the database lists "
        f"({names}). Listing it: {listing}. Check MODEL_STORAGE_BACKEND, S3_BUCKET, S3_PREFIX and S3_ENDPOINT_URL "
        "(or MODEL_STORAGE_PATH) against the other nodes'; if this is the right storage, run manage.py migrate "
        "to write the sentinel."
    )
    return Verdict(MISMATCH, "model storage does not hold this deployment's files (see the server log)", detail)


class Verdicts:
    """Each process's last verdict per storage, at most RECHECK_SECONDS old, and whether that
    storage was ever verified here (an outage after that does not take the node out of
    service: it serves what it has loaded and cached; one from the start does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, Verdict]] = {}
        self._verified: set[str] = set()
        self._stale: set[str] = set()
        self._file_failed_at = -FILE_FAILURE_NOTE_SECONDS

    def current(self, *, store: ModelStore | None = None, max_age: float = RECHECK_SECONDS) -> Verdict:
        store = store or ModelStore()
        where = store.describe()
        now = time.monotonic()
        with self._lock:
            last = self._last.get(where)
            if last is not None and where not in self._stale and now - last[0] < max_age:
                return last[1]
            self._stale.discard(where)
            verdict = verify(store=store)
            self._last[where] = (time.monotonic(), verdict)
            if verdict.ok:
                self._verified.add(where)
        if verdict.ok:
            if last is not None and not last[1].ok:
                logger.warning("model storage check passes again", extra={"storage": where, "state": verdict.state})
        elif last is None or last[1].state != verdict.state:
            logger.error("model storage check failed: %s", verdict.detail, extra={"storage": where})
        return verdict

    def recheck(self, *, store: ModelStore | None = None) -> None:
        """A model file could not be read here: the next `current` checks again, and readiness
        reports the node degraded for FILE_FAILURE_NOTE_SECONDS."""
        with self._lock:
            self._stale.add((store or ModelStore()).describe())
            self._file_failed_at = time.monotonic()

    def ready(self) -> tuple[bool, str]:
        """For the readiness probes: (ok, short reason); a passing one says "ok" or why the node
        is degraded but still serving."""
        store = ModelStore()
        verdict = self.current(store=store)
        if not verdict.ok:
            if verdict.state == UNREACHABLE and store.describe() in self._verified:
                return True, "degraded: model storage unreachable, serving what this node has"
            return False, verdict.reason
        if time.monotonic() - self._file_failed_at < FILE_FAILURE_NOTE_SECONDS:
            return True, "degraded: model files could not be read here lately (see /metrics)"
        return True, "ok"

    def forget(self) -> None:
        with self._lock:
            self._last.clear()
            self._verified.clear()
            self._stale.clear()
            self._file_failed_at = -FILE_FAILURE_NOTE_SECONDS


verdicts = Verdicts()


def after_migrate(sender, *, using: str, plan=None, verbosity: int = 1, stdout=None, **kwargs) -> None:
    """post_migrate: write the sentinel into the storage this `migrate` is configured with.

    Not on a flush (it sends post_migrate too, without a plan), nor for another database. A
    storage holding another deployment's sentinel keeps it, unless this database lists no file
    yet (a new or reset database taking over its storage). A storage that cannot be reached
    does not fail the migration: readiness and `check --deploy` say so.
    """
    if plan is None or using != DEFAULT_DB_ALIAS:
        return
    store = ModelStore()
    where = store.describe()
    try:
        outcome = sentinel_write(store=store, replace=not MLModel.objects.exclude(file_sha256="").exists())
    except StorageUnavailable as exc:
        cause = exc.__cause__.__class__.__name__ if exc.__cause__ else "error"
        message = f"The model storage sentinel was not written: {where} could not be read ({cause})."
        logger.error(message)
        if stdout is not None and verbosity >= 1:
            stdout.write(f"  {message} Nodes will not be ready until it is; run migrate again.\n")
        return
    if outcome == "foreign":
        message = (
            f"{where} holds another deployment's sentinel and was left alone: check the storage settings "
            "(nodes are ready only if they find this database's files there)."
        )
        logger.error(message)
        if stdout is not None and verbosity >= 1:
            stdout.write(f"  {message}\n")
    elif outcome == "written" and stdout is not None and verbosity >= 1:
        stdout.write(f"  Model storage sentinel written to {where}.\n")
