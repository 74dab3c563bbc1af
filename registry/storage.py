"""Content-addressed model storage: a file's place comes from its sha256, never from a name.

Objects are named ``ab/cd/<sha256>.onnx`` in the Django storage ``STORAGES["models"]``: a
folder under MODEL_STORAGE_PATH by default (`ModelFileStorage`), or an S3-compatible bucket
through django-storages when MODEL_STORAGE_BACKEND=s3. Objects are immutable once stored, so
two versions with the same bytes share one.

Everything that opens a model (the session pool, the validation sandbox) needs a local file.
On a filesystem store that is the stored file itself. On a remote store it is a copy in the
local cache MODEL_CACHE_PATH, laid out the same way: downloaded to a temporary file while
hashed, renamed into place only when the sha256 matches, and bounded to MODEL_CACHE_MAX_MB
(least recently used copies go first). Uploads are staged and hashed in a ``tmp/`` folder on
the same filesystem as their final local place, so every local move is an atomic rename.

A missing or mismatched file is what this process sees, not yet a fact: `check_object` reads the
object from the storage itself for the confirmation (registry.services.model_file_confirm).
Beside the objects, ``_modelforge/sentinel.json`` says which deployment's files these are
(registry.sentinel).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages

from core import request_log
from registry.errors import StorageUnavailable

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_SIZE = 1024 * 1024
PRUNE_GRACE_SECONDS = 60
# Beside the content-addressed objects (``ab/cd/...``, so never one of them): the object that
# says which deployment's files these are (registry.sentinel).
SENTINEL_NAME = "_modelforge/sentinel.json"
SENTINEL_MAX_BYTES = 4096


class ModelFileStorage(FileSystemStorage):
    """FileSystemStorage rooted at MODEL_STORAGE_PATH, read when used (as Django's own default
    storage reads MEDIA_ROOT), so a changed setting applies without rebuilding the storage."""

    @property
    def base_location(self):
        return self._value_or_setting(self._location, settings.MODEL_STORAGE_PATH)

    @property
    def location(self):
        return os.path.abspath(self.base_location)


class StoredFileMismatch(Exception):
    """The bytes in storage do not hash to the name they are stored under."""


def _remote_errors() -> tuple[type[BaseException], ...]:
    """What a storage call raises when the storage (not the object) is the problem."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is in base.txt
        return (OSError,)
    return (BotoCoreError, ClientError, OSError)


@contextlib.contextmanager
def _storage_call(action: str) -> Iterator[None]:
    """Turn any failure of the storage itself into StorageUnavailable (503 storage_unavailable);
    a missing object stays FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _remote_errors() as exc:
        # The error itself names the endpoint, the bucket and the object key: for the log (with
        # the request id), never for the client, who gets the id to quote.
        logger.error("model storage failed", extra={"action": action, "error": str(exc)[:300]})
        context = request_log.current()
        reference = f" (request {context.id}; the details are in the server log)" if context is not None else ""
        raise StorageUnavailable(
            f"The model storage is unavailable: {action} failed{reference}. Nothing was changed; try again "
            "when it is back."
        ) from exc


class ModelStore:
    def __init__(self):
        self.storage = storages["models"]
        # A filesystem store is its own local copy; any other backend is read through the cache.
        self.is_local = isinstance(self.storage, FileSystemStorage)
        self.cache_root = Path(self.storage.location if self.is_local else settings.MODEL_CACHE_PATH)

    @staticmethod
    def name_for(sha256: str) -> str:
        if not _SHA256.match(sha256):
            raise ValueError("a storage key is a lowercase hex sha256")
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.onnx"

    @property
    def temp_dir(self) -> Path:
        path = self.cache_root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path_for(self, sha256: str) -> Path:
        """Where this node keeps the file locally: the store itself, or the cached copy."""
        return self.cache_root / self.name_for(sha256)

    def exists(self, sha256: str) -> bool:
        with _storage_call("exists"):
            return self.storage.exists(self.name_for(sha256))

    def put_file(self, temp_path: str | os.PathLike, sha256: str) -> Path:
        """Store a fully written, hashed temporary file; returns its local path.

        A filesystem store renames it into place (same filesystem, atomic). A remote store
        uploads it first (StorageUnavailable, and the temporary file removed, if that fails),
        then keeps it as this node's cached copy.
        """
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp_path, 0o644)
        if not self.is_local:
            try:
                with open(temp_path, "rb") as handle, _storage_call("upload"):
                    self.storage.save(self.name_for(sha256), File(handle))
            except BaseException:
                Path(temp_path).unlink(missing_ok=True)
                raise
        os.replace(temp_path, target)
        if not self.is_local:
            self.prune_cache(keep=sha256)
        return target

    def fetch(self, sha256: str) -> Path:
        """A local file with the object's bytes, downloading it into the cache if needed.

        A downloaded copy is verified before it is renamed into place. One that does not hash
        to the sha256 is downloaded once more (a transfer can go wrong) before StoredFileMismatch
        says the stored bytes are not the sha256's; FileNotFoundError when there is no object.
        Neither condemns the model: this node's view may be the wrong one (see
        registry.services.model_file_report).
        """
        target = self.path_for(sha256)
        if self.is_local:
            if not target.is_file():
                raise FileNotFoundError(target)
            return target
        if target.is_file():
            with contextlib.suppress(FileNotFoundError):  # pruned meanwhile: download again
                os.utime(target)  # least recently used = oldest mtime
                return target
        try:
            self._download(sha256, target)
        except StoredFileMismatch:
            logger.warning(
                "a downloaded model file did not match its sha256; downloading it again", extra={"sha256": sha256}
            )
            self._download(sha256, target)
        logger.info("model file fetched into the cache", extra={"sha256": sha256})
        self.prune_cache(keep=sha256)
        return target

    def _download(self, sha256: str, target: Path) -> None:
        """Download the object into a temporary file while hashing it; rename it to `target`
        only if it hashes to `sha256` (StoredFileMismatch otherwise, and nothing is kept)."""
        fd, temp_name = tempfile.mkstemp(dir=self.temp_dir, suffix=".fetch")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, _storage_call("download"), self.storage.open(self.name_for(sha256)) as src:
                while chunk := src.read(CHUNK_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise StoredFileMismatch(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, target)
        finally:
            Path(temp_name).unlink(missing_ok=True)

    def check_object(self, sha256: str) -> str:
        """What the storage itself holds under the sha256's name, read from it and hashed, never
        from this node's cached copy: ``present``, ``missing`` or ``mismatch`` (read and hashed a
        second time before it is said). StorageUnavailable when the storage cannot say."""
        outcome = self._hash_object(sha256)
        if outcome == "mismatch":
            logger.warning("stored model file did not match its sha256; reading it again", extra={"sha256": sha256})
            outcome = self._hash_object(sha256)
        return outcome

    def _hash_object(self, sha256: str) -> str:
        try:
            with _storage_call("verify"), self.storage.open(self.name_for(sha256)) as src:
                found = hashlib.file_digest(src, "sha256").hexdigest()
        except FileNotFoundError:
            return "missing"
        return "present" if found == sha256 else "mismatch"

    def read_verified(self, sha256: str) -> bytes:
        """The object's bytes, checked against the sha256 (StoredFileMismatch otherwise).

        A cached copy that went bad is local damage, not the object's: it is dropped and
        fetched once more before the object is declared corrupt.
        """
        data = self._read_local(sha256)
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
        if self.is_local:
            raise StoredFileMismatch(sha256)
        logger.warning("cached model copy did not match its sha256; fetching again", extra={"sha256": sha256})
        self.forget_local(sha256)
        data = self._read_local(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoredFileMismatch(sha256)
        return data

    def _read_local(self, sha256: str) -> bytes:
        """fetch() then read. A cached copy can be pruned by another thread or process between
        the two: that is no missing object, so fetch again (a FileNotFoundError from fetch
        itself is the object missing)."""
        for _ in range(2):
            path = self.fetch(sha256)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                if self.is_local:
                    raise
        return self.fetch(sha256).read_bytes()

    def write_stream(self, stream: BinaryIO, *, max_bytes: int) -> tuple[str, int, Path]:
        """Copy a stream into a temporary file while hashing it.

        Returns (sha256, size, temp_path). Raises FileTooLarge, leaving nothing behind, when the
        stream exceeds ``max_bytes``.
        """
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self.temp_dir, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_SIZE):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size, Path(name)

    def read_bytes(self, sha256: str) -> bytes:
        return self.fetch(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        """Delete the object and this node's copy (other nodes' copies age out of their caches)."""
        with _storage_call("delete"):
            self.storage.delete(self.name_for(sha256))
        self.forget_local(sha256)

    def check(self) -> tuple[bool, str]:
        """For /api/v1/health: can the storage be listed (at most 256 prefixes, no object read)?
        Listing, not a HEAD of some key, so that a missing bucket counts as down."""
        try:
            with _storage_call("health check"):
                self.storage.listdir("")
        except FileNotFoundError:
            return False, "missing: the storage folder or bucket does not exist"
        except StorageUnavailable as exc:
            return False, f"unreachable: {exc.__cause__.__class__.__name__}"
        return True, "ok" if not self.is_local else "ok: local filesystem"

    def describe(self) -> str:
        """Where this storage is, for the log and `check --deploy` (never for a client: it
        names the bucket and the endpoint)."""
        if self.is_local:
            return f"the folder {self.storage.location}"
        bucket = getattr(self.storage, "bucket_name", None)
        if bucket is None:
            return f"the {self.storage.__class__.__name__} storage at {getattr(self.storage, 'location', '?')}"
        endpoint = getattr(self.storage, "endpoint_url", None)
        at = f" at {endpoint}" if endpoint else ""
        return f"the bucket '{bucket}'{at}, prefix '{self.storage.location}'"

    def read_sentinel(self) -> bytes | None:
        """The sentinel object's bytes (registry.sentinel), or None when there is none."""
        try:
            with _storage_call("sentinel read"), self.storage.open(SENTINEL_NAME) as handle:
                return handle.read(SENTINEL_MAX_BYTES)
        except FileNotFoundError:
            return None

    def write_sentinel(self, data: bytes) -> None:
        """Put the sentinel object in place of any earlier one."""
        if self.is_local:
            # FileSystemStorage.save would pick another name beside an existing file.
            target = Path(self.storage.path(SENTINEL_NAME))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(dir=self.temp_dir, suffix=".sentinel")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.chmod(temp_name, 0o644)
                with _storage_call("sentinel write"):
                    os.replace(temp_name, target)
            finally:
                Path(temp_name).unlink(missing_ok=True)
            return
        with _storage_call("sentinel write"):
            self.storage.save(SENTINEL_NAME, ContentFile(data))  # file_overwrite: the same key

    def forget_local(self, sha256: str) -> None:
        if not self.is_local:
            self.path_for(sha256).unlink(missing_ok=True)

    def prune_cache(self, *, keep: str = "") -> int:
        """Delete the least recently used cached copies until the cache fits MODEL_CACHE_MAX_MB.

        Returns how many went. Loaded sessions do not need their file, so any copy may go but
        the one just fetched (``keep``) and those used in the last PRUNE_GRACE_SECONDS, which a
        reader (a session load, the validation sandbox) may be opening right now: the bound is
        exceeded for that long rather than a file pulled from under a reader.
        """
        if self.is_local:
            return 0
        recent = time.time() - PRUNE_GRACE_SECONDS
        files = []
        for path in self.cache_root.glob("??/??/*.onnx"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        limit = settings.MODEL_CACHE_MAX_MB * 1024 * 1024
        removed = 0
        for mtime, size, path in sorted(files):
            if total <= limit:
                break
            if path.stem == keep or mtime > recent:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            logger.info("pruned the model cache", extra={"removed": removed})
        return removed


class FileTooLarge(Exception):
    def __init__(self, max_bytes: int):
        super().__init__(f"larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def sha256_of_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
