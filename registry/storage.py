"""Content-addressed model storage: a file's place comes from its sha256, never from a name.

Layout under MODEL_STORAGE_PATH: ``ab/cd/<sha256>.onnx``. Files are immutable once stored, so
two versions with the same bytes share one file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_SIZE = 1024 * 1024


class ModelStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or settings.MODEL_STORAGE_PATH)

    @property
    def temp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("a storage key is a lowercase hex sha256")
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.onnx"

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, temp_path: str | os.PathLike, sha256: str) -> Path:
        """Move a fully written temporary file (same filesystem) into place, atomically."""
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, target)
        return target

    def write_stream(self, stream: BinaryIO, *, max_bytes: int) -> tuple[str, int, Path]:
        """Copy a stream into a temporary file in the store while hashing it.

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
        return self.path_for(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)


class FileTooLarge(Exception):
    def __init__(self, max_bytes: int):
        super().__init__(f"larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def sha256_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
