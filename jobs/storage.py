"""Where a job's files live: ``JOB_STORAGE_PATH/<first 2 hex of the id>/<id hex>/``.

The folder comes from the job's id alone. A client's file name is kept in the database as a
label and never reaches a path: the input is ``input.<format>``, the output of attempt N is
``output-N.jsonl`` (written as ``.part`` first), so a redelivered run never writes into the
file of an earlier one, and only the attempt that wins the compare-and-set names its file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from django.conf import settings

_OUTPUT_NAME = re.compile(r"^output-\d+\.jsonl$")
_ATTEMPT = re.compile(r"^output-(\d+)\.jsonl")  # a finished output or its .part


def storage_root() -> Path:
    return Path(settings.JOB_STORAGE_PATH)


def temp_dir() -> Path:
    """Uploads in flight, on the same filesystem as the job folders (so moving is a rename)."""
    path = storage_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


class JobFiles:
    def __init__(self, job_id: uuid.UUID | str):
        self.job_id = uuid.UUID(str(job_id))

    @property
    def folder(self) -> Path:
        hex_id = self.job_id.hex
        return storage_root() / hex_id[:2] / hex_id

    def input_path(self, input_format: str) -> Path:
        if input_format not in {"jsonl", "csv", "npy"}:
            raise ValueError(f"no input file for format {input_format!r}")
        return self.folder / f"input.{input_format}"

    @staticmethod
    def output_name(attempt: int) -> str:
        return f"output-{int(attempt)}.jsonl"

    def output_path(self, name: str) -> Path:
        if not _OUTPUT_NAME.match(name):
            raise ValueError(f"not an output file name: {name!r}")
        return self.folder / name

    def adopt_input(self, source: Path, input_format: str) -> Path:
        """Move an uploaded temporary file into place (a rename on one filesystem)."""
        target = self.input_path(input_format)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except OSError:  # another filesystem: copy, then drop the temporary file
            shutil.copyfile(source, target)
            Path(source).unlink(missing_ok=True)
        os.chmod(target, 0o640)
        return target

    def share_input(self, other: JobFiles, input_format: str) -> Path:
        """Give this job the same input as ``other`` (inputs never change: a hard link will do)."""
        source, target = other.input_path(input_format), self.input_path(input_format)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return target

    def discard_earlier_outputs(self, attempt: int) -> None:
        """Remove the output files (finished or partial) of attempts before ``attempt``: lost
        runs, which can no longer complete the job (claiming it moved its attempt count on)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.glob("output-*"):
            number = _ATTEMPT.match(path.name)
            if number and int(number.group(1)) < attempt:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        remove_folder(self.folder)


def remove_folder(folder: Path) -> None:
    """Delete a job folder, and its two-letter parent once that is empty."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def folders_older_than(moment: float) -> list[tuple[uuid.UUID, Path]]:
    """(job id, folder) of every job folder last changed before ``moment`` (a timestamp)."""
    root = storage_root()
    found: list[tuple[uuid.UUID, Path]] = []
    if not root.is_dir():
        return found
    for shard in root.iterdir():
        if not shard.is_dir() or len(shard.name) != 2:
            continue
        for folder in shard.iterdir():
            try:
                job_id = uuid.UUID(hex=folder.name)
            except ValueError:
                continue
            if folder.stat().st_mtime < moment:
                found.append((job_id, folder))
    return found


def new_temp_file(suffix: str = ".upload"):
    return tempfile.NamedTemporaryFile(suffix=suffix, dir=temp_dir())  # noqa: SIM115 (the caller owns it)
