"""Drift reference files given with a model's upload, kept until the version is validated.

The registry sits below monitoring: it cannot summarise a reference (that needs the version's
inputs, known after validation, and monitoring's code). It keeps the file as a server-named
blob, ``references/ab/cd/<sha256>`` in the model storage (``STORAGES["models"]``: the folder
under MODEL_STORAGE_PATH, or the bucket), and records it on the version
(registry.models.PendingReference); monitoring reads it when the version is ready and then
discards it. The client's file name is a label in the row, never part of a path or a key.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages

from registry.storage import ModelStore, _storage_call

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PREFIX = "references"

# The formats a reference file may have: a batch job's input formats (jobs.batch_io.FORMATS and
# SUFFIXES; jobs sits above the registry, so they are repeated here and a test keeps them equal).
FORMATS = ("jsonl", "csv", "npy")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".npy": "npy"}


def name_for(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError("a reference file's key is a lowercase hex sha256")
    return f"{PREFIX}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def store(path: Path, sha256: str) -> None:
    """Keep a hashed temporary file (an upload) as the blob ``sha256``; the temporary file is
    removed. The same bytes twice are one blob."""
    storage = storages["models"]
    name = name_for(sha256)
    try:
        with _storage_call("store a reference file"):
            if not storage.exists(name):
                with open(path, "rb") as handle:
                    storage.save(name, File(handle))
    finally:
        Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def local_path(sha256: str) -> Iterator[Path]:
    """A local file with the blob's bytes: the stored file itself on a filesystem store, else
    a temporary copy (removed afterwards). FileNotFoundError if the blob is gone."""
    storage = storages["models"]
    name = name_for(sha256)
    if isinstance(storage, FileSystemStorage):
        path = Path(storage.path(name))
        if not path.is_file():
            raise FileNotFoundError(name)
        yield path
        return
    with tempfile.NamedTemporaryFile(dir=ModelStore().temp_dir, suffix=".reference", delete=False) as copy:
        try:
            with _storage_call("read a reference file"), storage.open(name, "rb") as source:
                shutil.copyfileobj(source, copy, 1024 * 1024)
        except BaseException:
            Path(copy.name).unlink(missing_ok=True)
            raise
    try:
        yield Path(copy.name)
    finally:
        Path(copy.name).unlink(missing_ok=True)


def delete(sha256: str) -> None:
    with _storage_call("delete a reference file"):
        storages["models"].delete(name_for(sha256))
