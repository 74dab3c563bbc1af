"""Where a job's files live: a folder on the local disk, or objects in the model storage's bucket.

Names come from the job's id alone: a client's file name is kept in the database as a label and
never reaches a path or a key. `job_files(job_id)` returns the store JOB_STORAGE_BACKEND names:

- `JobFiles` (``local``, the default): the folder ``JOB_STORAGE_PATH/<2 hex>/<id hex>/``. On
  several machines it must be one shared volume.
- `BucketJobFiles` (``s3``, the default when MODEL_STORAGE_BACKEND=s3): the objects
  ``<S3_JOBS_PREFIX>/<2 hex>/<id hex>/<name>`` in the model storage's bucket, through its
  boto3 connection (endpoint, credentials, timeouts, retries). No shared filesystem: each
  node's JOB_STORAGE_PATH only holds scratch files (an upload being checked, an output part).

A job has ``input.<format>`` and, for attempt N, ``output-N.jsonl``. Both stores do the same:

``store_input``   an uploaded, checked file (on this node's disk) becomes the input: a rename;
                  an upload in parts (boto3's managed transfer, reading the file part by part)
``share_input``   a retry's copy of a job gets the same input: a hard link; a server-side copy
``open_input``    a binary stream of the input. From the bucket every buffer fill is one ranged
                  GET, the next one read ahead meanwhile (`_ObjectReader`): memory is two
                  buffers, no connection is held between reads however long a chunk runs
``output_sink``   what attempt N writes its output to as it runs (`OutputSink`): the ``.part``
                  file; parts of a multipart upload sent as they fill (`_MultipartOutput`)
``open_output``   a binary stream of a finished output (for ``result``)
``remove``        everything of the job: files, objects, unfinished uploads

An attempt's output gets its name only once it is whole: the ``.part`` file is renamed, the
multipart upload completed or the one PUT of a small output made (until then no object
exists). Only the attempt whose final
compare-and-set wins is named on the job's row (jobs.services); a run that lost removes its
own output, and the winner first removes those of earlier attempts, finished or not (their
uploads aborted), so a lost attempt's output never becomes the result.

Failures of the bucket are registry's `StorageUnavailable` (503 storage_unavailable; the
endpoint, bucket and key go to the log, never to the client); a missing object is
FileNotFoundError, as a missing file is. boto3 is imported only when the bucket is used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings
from django.core.files.storage import storages

from registry.errors import StorageUnavailable
from registry.storage import _storage_call

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("jsonl", "csv", "npy")
_OUTPUT_NAME = re.compile(r"^output-\d+\.jsonl$")
_ATTEMPT = re.compile(r"^output-(\d+)\.jsonl")  # a finished output or its .part

# Multipart parts: S3 takes at most 10,000 parts of at least 5 MiB (but the last), so outputs
# up to 80 GB. An output part is gathered in a temporary file, not in memory.
PART_SIZE = 8 * 1024 * 1024
# One ranged GET per buffer fill when reading an object (and one more read ahead).
READ_BUFFER = 2 * 1024 * 1024


class OutputSink(Protocol):
    """Where an attempt writes its output: ``write`` as it goes, then ``commit`` (the output
    gets its final name, whole) or ``discard`` (nothing is left; never raises)."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...


def storage_root() -> Path:
    return Path(settings.JOB_STORAGE_PATH)


def temp_dir() -> Path:
    """This node's scratch: uploads in flight (on the same filesystem as the local job folders,
    so storing one is a rename) and output parts on their way to the bucket."""
    path = storage_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_temp_file(suffix: str = ".upload"):
    return tempfile.NamedTemporaryFile(suffix=suffix, dir=temp_dir())  # noqa: SIM115 (the caller owns it)


def output_name(attempt: int) -> str:
    return f"output-{int(attempt)}.jsonl"


def _input_name(input_format: str) -> str:
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"no input file for format {input_format!r}")
    return f"input.{input_format}"


def _check_output_name(name: str) -> str:
    if not _OUTPUT_NAME.match(name):
        raise ValueError(f"not an output file name: {name!r}")
    return name


def _earlier_attempt(name: str, attempt: int) -> bool:
    number = _ATTEMPT.match(name)
    return number is not None and int(number.group(1)) < attempt


def job_files(job_id: uuid.UUID | str) -> JobFiles | BucketJobFiles:
    """The files of a job, in the store JOB_STORAGE_BACKEND names."""
    return BucketJobFiles(job_id) if settings.JOB_STORAGE_BACKEND == "s3" else JobFiles(job_id)


def stored_job_ids(*, older_than: float) -> Iterator[uuid.UUID]:
    """The ids of jobs that have files, none of them changed since ``older_than`` (a
    timestamp): for the retention's search for files no row refers to any more."""
    if settings.JOB_STORAGE_BACKEND == "s3":
        return _bucket_job_ids(older_than)
    return _folder_job_ids(older_than)


# --- the local directory ----------------------------------------------------------------------


class JobFiles:
    """A job's files in its folder under JOB_STORAGE_PATH."""

    output_name = staticmethod(output_name)

    def __init__(self, job_id: uuid.UUID | str):
        self.job_id = uuid.UUID(str(job_id))

    @property
    def folder(self) -> Path:
        hex_id = self.job_id.hex
        return storage_root() / hex_id[:2] / hex_id

    def input_path(self, input_format: str) -> Path:
        return self.folder / _input_name(input_format)

    def output_path(self, name: str) -> Path:
        return self.folder / _check_output_name(name)

    def store_input(self, source: Path, input_format: str) -> None:
        """Move an uploaded temporary file into place (a rename on one filesystem)."""
        target = self.input_path(input_format)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except OSError:  # another filesystem: copy, then drop the temporary file
            shutil.copyfile(source, target)
            Path(source).unlink(missing_ok=True)
        os.chmod(target, 0o640)

    def share_input(self, other: JobFiles, input_format: str) -> None:
        """Give this job the same input as ``other`` (inputs never change: a hard link will do)."""
        source, target = other.input_path(input_format), self.input_path(input_format)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    def open_input(self, input_format: str) -> BinaryIO:
        return open(self.input_path(input_format), "rb")  # noqa: SIM115 (the caller closes it)

    def output_sink(self, name: str) -> OutputSink:
        return _PartFile(self.output_path(name))

    def open_output(self, name: str) -> BinaryIO:
        return open(self.output_path(name), "rb")  # noqa: SIM115 (the caller closes it)

    def discard_output(self, name: str) -> None:
        self.output_path(name).unlink(missing_ok=True)

    def discard_earlier_outputs(self, attempt: int) -> None:
        """Remove the output files (finished or partial) of attempts before ``attempt``: lost
        runs, which can no longer complete the job (claiming it moved its attempt count on)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.glob("output-*"):
            if _earlier_attempt(path.name, attempt):
                path.unlink(missing_ok=True)

    def remove(self) -> bool:
        """Delete the job's folder (and its two-letter parent once that is empty); returns
        whether there was one."""
        folder = self.folder
        if not folder.is_dir():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()
        return True


class _PartFile:
    """``output-N.jsonl.part``, renamed to ``output-N.jsonl`` on commit."""

    def __init__(self, final_path: Path):
        self.final_path = final_path
        self.part_path = final_path.with_name(final_path.name + ".part")
        self.part_path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.part_path, "wb")  # noqa: SIM115 (closed in commit/discard)

    def write(self, data: bytes) -> None:
        self._handle.write(data)

    def commit(self) -> None:
        """Flush to disk and give the file its final name (still unused by anyone: per attempt)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.part_path, self.final_path)

    def discard(self) -> None:
        self._handle.close()
        self.part_path.unlink(missing_ok=True)


def _folder_job_ids(older_than: float) -> Iterator[uuid.UUID]:
    root = storage_root()
    if not root.is_dir():
        return
    for shard in root.iterdir():
        if not shard.is_dir() or len(shard.name) != 2:
            continue
        for folder in shard.iterdir():
            try:
                job_id = uuid.UUID(hex=folder.name)
            except ValueError:
                continue
            with contextlib.suppress(FileNotFoundError):
                if folder.stat().st_mtime < older_than:
                    yield job_id


# --- the bucket -------------------------------------------------------------------------------


@contextlib.contextmanager
def _bucket_call(action: str) -> Iterator[None]:
    """registry's _storage_call (StorageUnavailable, details logged and kept from the client),
    with a missing object or upload as FileNotFoundError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    with _storage_call(action):
        try:
            yield
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}:
                raise FileNotFoundError(f"{action}: no such object") from exc
            raise
        except S3UploadFailedError as exc:
            # boto3's upload_file wraps the client's error in one _storage_call does not know.
            raise OSError(str(exc)) from exc


def _connection():
    """(boto3 client, bucket name) of the model storage (STORAGES["models"], django-storages):
    the same bucket, credentials, endpoint and client settings as the models."""
    storage = storages["models"]
    return storage.connection.meta.client, storage.bucket_name


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4)


def _root_prefix() -> str:
    return f"{settings.S3_JOBS_PREFIX}/"


class BucketJobFiles:
    """A job's files as objects under ``<S3_JOBS_PREFIX>/<2 hex>/<id hex>/`` in the bucket."""

    output_name = staticmethod(output_name)

    def __init__(self, job_id: uuid.UUID | str):
        self.job_id = uuid.UUID(str(job_id))
        hex_id = self.job_id.hex
        self.prefix = f"{_root_prefix()}{hex_id[:2]}/{hex_id}/"
        self.client, self.bucket = _connection()

    def key(self, name: str) -> str:
        return self.prefix + name

    def store_input(self, source: Path, input_format: str) -> None:
        """Upload the checked temporary file (in parts, read from the disk as they go), then
        delete it. StorageUnavailable leaves the temporary file to its owner."""
        with _bucket_call("storing the job's input file"):
            self.client.upload_file(
                str(source), self.bucket, self.key(_input_name(input_format)), Config=_transfer_config()
            )
        Path(source).unlink(missing_ok=True)

    def share_input(self, other: BucketJobFiles, input_format: str) -> None:
        """A server-side copy of ``other``'s input (in parts above PART_SIZE)."""
        name = _input_name(input_format)
        with _bucket_call("copying the job's input file"):
            self.client.copy(
                {"Bucket": self.bucket, "Key": other.key(name)}, self.bucket, self.key(name), Config=_transfer_config()
            )

    def open_input(self, input_format: str) -> BinaryIO:
        return self._open(_input_name(input_format), "reading the job's input file")

    def open_output(self, name: str) -> BinaryIO:
        return self._open(_check_output_name(name), "reading the job's output file")

    def _open(self, name: str, action: str) -> BinaryIO:
        key = self.key(name)
        with _bucket_call(action):
            size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        return io.BufferedReader(_ObjectReader(self.client, self.bucket, key, size, action), READ_BUFFER)

    def output_sink(self, name: str) -> OutputSink:
        return _MultipartOutput(self.client, self.bucket, self.key(_check_output_name(name)))

    def discard_output(self, name: str) -> None:
        """Delete a lost attempt's finished output; left for `remove` if the bucket fails."""
        with _logged("deleting a lost attempt's output"), _bucket_call("deleting the job's output file"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(_check_output_name(name)))

    def discard_earlier_outputs(self, attempt: int) -> None:
        """Delete the outputs of attempts before ``attempt`` and abort their unfinished uploads
        (a lost run's). Left for `remove` if the bucket fails: they are never the result."""
        with _logged("deleting earlier attempts' outputs"):
            self._delete(lambda name: _earlier_attempt(name, attempt))

    def remove(self) -> bool:
        """Delete every object of the job and abort its unfinished uploads; returns whether
        there was anything. Raises StorageUnavailable."""
        return self._delete(lambda name: True)

    def _delete(self, chosen: Callable[[str], bool]) -> bool:
        found = False
        with _bucket_call("deleting the job's files"):
            objects = self.client.get_paginator("list_objects_v2")
            for page in objects.paginate(Bucket=self.bucket, Prefix=self.prefix):
                names = [item["Key"][len(self.prefix) :] for item in page.get("Contents", ())]
                keys = [{"Key": self.key(name)} for name in names if chosen(name)]
                if keys:
                    found = True
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            uploads = self.client.get_paginator("list_multipart_uploads")
            for page in uploads.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", ()):
                    if chosen(upload["Key"][len(self.prefix) :]):
                        found = True
                        with contextlib.suppress(FileNotFoundError):  # finished or aborted meanwhile
                            self.client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
        return found


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Best-effort cleanup: a bucket that fails leaves garbage (never a result) for later."""
    try:
        yield
    except (StorageUnavailable, FileNotFoundError) as exc:
        logger.warning("job storage cleanup failed; left for the retention", extra={"action": what, "error": repr(exc)})


def _in_background() -> ThreadPoolExecutor:
    """One thread for a reader's read-ahead or a sink's uploads, so that the bucket's latency
    overlaps the job's work instead of adding to it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-files")


class _ObjectReader(io.RawIOBase):
    """An object read by ranged GETs of at most a buffer each, so no connection stays open
    between two reads however long a chunk takes. While the caller works on a block, the next
    one is fetched in the background: memory is two blocks at most."""

    def __init__(self, client, bucket: str, key: str, size: int, action: str):
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._size = size
        self._action = action
        self._position = 0
        self._ahead: tuple[int, Future] | None = None  # (start, the bytes from there)
        self._executor: ThreadPoolExecutor | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        data = self._take_ahead(wanted)
        if data is None:
            data = self._get(self._position, wanted)
        memoryview(buffer).cast("B")[: len(data)] = data
        self._position += len(data)
        if self._position < self._size:
            if self._executor is None:
                self._executor = _in_background()
            self._ahead = (self._position, self._executor.submit(copy_context().run, self._get, self._position, wanted))
        return len(data)

    def _take_ahead(self, wanted: int) -> bytes | None:
        """The block read ahead, if it starts here (a seek elsewhere drops it). Its errors are
        this read's."""
        if self._ahead is None:
            return None
        (start, fetching), self._ahead = self._ahead, None
        data = fetching.result()
        if start != self._position:
            return None
        return data[:wanted]  # a shorter read leaves the rest to be fetched again: rare

    def _get(self, start: int, length: int) -> bytes:
        with _bucket_call(self._action):
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{start + length - 1}"
            )
            with contextlib.closing(answer["Body"]) as body:
                data = body.read()
            if not data:
                raise OSError(f"the object ended at byte {start} of {self._size}")
        return data

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._ahead = None
        super().close()


class _MultipartOutput:
    """An attempt's output, sent to the bucket as it is written. Writes are gathered in a
    temporary file (not in memory); each time it holds PART_SIZE, it is sent as the next part of
    a multipart upload by a background thread while the job goes on writing into a new one (at
    most one part on its way: the next waits for it). `commit` sends the rest and completes the
    upload, which is when the object appears; an output smaller than one part is one PUT then.
    `discard` aborts the upload: nothing of the attempt remains."""

    def __init__(self, client, bucket: str, key: str):
        self._client, self._bucket, self._key = client, bucket, key
        self._spool: BinaryIO | None = None
        self._upload_id: str | None = None  # set by the sending thread; read after _wait()
        self._parts: list[dict] = []
        self._sending: Future | None = None
        self._executor: ThreadPoolExecutor | None = None

    def write(self, data: bytes) -> None:
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=temp_dir())  # noqa: SIM115 (closed by _send or _close)
        self._spool.write(data)
        if self._spool.tell() >= PART_SIZE:
            self._wait()
            if self._executor is None:
                self._executor = _in_background()
            spool, self._spool = self._spool, None
            self._sending = self._executor.submit(copy_context().run, self._send, spool)

    def _send(self, spool: BinaryIO) -> None:
        """The spool as the next part (the upload begun first if need be); closes the spool."""
        with spool, _bucket_call("writing the job's output file"):
            if self._upload_id is None:
                self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
            size = spool.tell()
            spool.seek(0)
            number = len(self._parts) + 1
            sent = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=spool,
                ContentLength=size,
            )
            self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def _wait(self) -> None:
        """The part on its way has arrived (or its error is raised here)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.result()

    def commit(self) -> None:
        try:
            self._wait()
            if self._upload_id is None:
                spool = self._spool or io.BytesIO()
                size = spool.tell()
                spool.seek(0)
                with _bucket_call("writing the job's output file"):
                    self._client.put_object(Bucket=self._bucket, Key=self._key, Body=spool, ContentLength=size)
                return
            if self._spool is not None and self._spool.tell():
                spool, self._spool = self._spool, None
                self._send(spool)
            with _bucket_call("writing the job's output file"):
                self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
                )
            self._upload_id = None
        finally:
            self._close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # the part on its way failed too: the abort is what matters
            self._wait()
        self._close()
        if self._upload_id is not None:
            with _logged("aborting an output upload"), _bucket_call("aborting the job's output upload"):
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None

    def _close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _bucket_job_ids(older_than: float) -> Iterator[uuid.UUID]:
    """Listed page by page: the keys come sorted, so a job's objects are consecutive and only
    one job is held at a time. Then the jobs with uploads begun before ``older_than``."""
    client, bucket = _connection()
    root = _root_prefix()

    def job_of(key: str) -> uuid.UUID | None:
        parts = key[len(root) :].split("/")
        try:
            return uuid.UUID(hex=parts[1]) if len(parts) == 3 and len(parts[0]) == 2 else None
        except ValueError:
            return None

    current: uuid.UUID | None = None
    newest = 0.0
    with _bucket_call("listing job files"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
            for item in page.get("Contents", ()):
                job_id = job_of(item["Key"])
                if job_id != current:
                    if current is not None and newest < older_than:
                        yield current
                    current, newest = job_id, 0.0
                newest = max(newest, item["LastModified"].timestamp())
        if current is not None and newest < older_than:
            yield current
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=root):
            for upload in page.get("Uploads", ()):
                job_id = job_of(upload["Key"])
                if job_id is not None and upload["Initiated"].timestamp() < older_than:
                    yield job_id
