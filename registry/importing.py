"""Bulk registration from a local folder or manifest (the `import_models` command).

Reading a source only builds a list of entries; every write then goes through
registry.services, exactly as an API upload does. Sources are local files only: REFERENCE.md §3
forbids registration from URLs (TorchServe CVE-2023-43654), and a file is read only if it lies,
after resolving symlinks and '..', inside the source folder (the manifest's folder for a
manifest), so a planted symlink or a crafted manifest cannot pull /etc/shadow into the store.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import os
import re
import stat
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError

from core.exceptions import DomainError
from registry import services
from registry.errors import ImportSourceError, ModelTooLarge
from registry.models import MLModel, Tag
from registry.storage import CHUNK_SIZE
from registry.versioning import parse_version

MANIFEST_FIELDS = ("name", "version", "path", "description", "tags")
REQUIRED_FIELDS = ("name", "version", "path")
CSV_TAG_SEPARATOR = ";"  # neither ';' nor ',' can occur in a tag, and ';' needs no CSV quoting
LAYOUT_FILE = "model.onnx"
LAYOUTS = f"NAME/VERSION/{LAYOUT_FILE} or NAME-VERSION.onnx (e.g. iris-classifier-1.2.0.onnx)"

# Any "scheme://": http, https, s3, gs, file, ... The check is on the raw text, before any path
# handling, so "file:///etc/passwd" is refused as a URL rather than treated as a local path.
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")

Status = MLModel.Status


class Outcome(enum.StrEnum):
    IMPORTED = "imported"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ImportEntry:
    """One model the source asks for, or the reason it cannot be read (``problem``)."""

    where: str  # where in the source it came from: a relative path or "manifest.csv line 3"
    root: Path  # the resolved folder the file must stay inside
    name: str = ""
    version: str = ""
    path: Path | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    problem: str = ""

    @property
    def title(self) -> str:
        if self.name or self.version:
            return f"{self.name} {self.version}".strip()
        return self.where


@dataclass(frozen=True)
class ImportResult:
    entry: ImportEntry
    outcome: Outcome
    detail: str = ""  # the model's status when it worked, the reason when it failed
    kept_error_row: bool = False  # validation failed and the row stays, with status error


class EntryFailed(Exception):
    """This entry cannot be imported; the others go on."""


# --- reading a source -------------------------------------------------------------------------


def read_source(source: str | os.PathLike) -> list[ImportEntry]:
    """The entries of a folder or a .csv/.json manifest, in a stable order.

    Raises ImportSourceError when the source itself is unusable (missing, a URL, a malformed
    manifest); problems with single entries are recorded on the entries instead.
    """
    text = os.fspath(source)
    if _URL.match(text):
        raise ImportSourceError(f"{text} is a URL; import_models reads local files only. Download it first.")
    path = Path(text)
    if path.is_dir():
        return _scan_directory(path)
    if not path.exists():
        raise ImportSourceError(f"{text}: no such file or folder.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv_manifest(path)
    if suffix == ".json":
        return _read_json_manifest(path)
    raise ImportSourceError(f"{text} is neither a folder nor a manifest (a .csv or .json file).")


def _scan_directory(source: Path) -> list[ImportEntry]:
    root = source.resolve()
    entries: list[ImportEntry] = []

    def unreadable(error: OSError) -> None:
        where = _relative(Path(error.filename or root), root)
        entries.append(ImportEntry(where=where, root=root, problem=f"cannot read this folder: {error.strerror}"))

    # followlinks=False: a symlinked folder is never entered. One that leads outside is reported;
    # one that stays inside names files the walk reaches through their real path anyway.
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        for dirname in dirnames:
            folder = here / dirname
            if folder.is_symlink() and not _inside(Path(os.path.realpath(folder)), root):
                entries.append(
                    ImportEntry(
                        where=_relative(folder, root),
                        root=root,
                        problem="a symlink to a folder outside the source folder; not followed",
                    )
                )
        for filename in filenames:
            if filename.lower().endswith(".onnx"):
                entries.append(_directory_entry(here / filename, root))
    return sorted(entries, key=lambda entry: entry.where)


def _directory_entry(path: Path, root: Path) -> ImportEntry:
    parts = path.relative_to(root).parts
    where = "/".join(parts)
    if len(parts) == 3 and parts[2] == LAYOUT_FILE:
        return ImportEntry(where=where, root=root, name=parts[0], version=parts[1], path=path)
    if len(parts) == 1:
        split = split_file_name(path.name[: -len(".onnx")])
        if split is None:
            return ImportEntry(
                where=where,
                root=root,
                problem=f"the file name has no '-' followed by a semantic version; expected {LAYOUTS}",
            )
        name, version = split
        return ImportEntry(where=where, root=root, name=name, version=version, path=path)
    return ImportEntry(where=where, root=root, problem=f"not a recognised layout; expected {LAYOUTS}")


def split_file_name(stem: str) -> tuple[str, str] | None:
    """("iris-classifier", "1.2.0") from "iris-classifier-1.2.0": the first '-' after which a
    semantic version (starting with a digit) runs to the end; None when there is none."""
    for index, char in enumerate(stem):
        rest = stem[index + 1 :]
        if char != "-" or index == 0 or not rest[:1] or rest[0] not in string.digits:
            continue
        try:
            parse_version(rest)
        except ValueError:
            continue
        return stem[:index], rest
    return None


def _read_csv_manifest(manifest: Path) -> list[ImportEntry]:
    base = manifest.parent.resolve()
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None:
                raise ImportSourceError(f"{manifest} is empty; the first line must be the header {_header()}.")
            columns = [column.strip() for column in header]
            _check_columns(columns, str(manifest))
            entries = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                where = f"{manifest.name} line {reader.line_num}"
                if len(cells) > len(columns):
                    raise ImportSourceError(f"{where} has {len(cells)} cells but the header has {len(columns)}.")
                row = dict(zip(columns, cells, strict=False))
                tags = [tag.strip() for tag in row.get("tags", "").split(CSV_TAG_SEPARATOR) if tag.strip()]
                entries.append(
                    _manifest_entry(
                        base,
                        where,
                        name=row.get("name", "").strip(),
                        version=row.get("version", "").strip(),
                        raw_path=row.get("path", ""),
                        description=row.get("description", ""),
                        tags=tags,
                    )
                )
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ImportSourceError(f"{manifest} is not a readable UTF-8 CSV file: {exc}") from exc
    except OSError as exc:
        raise ImportSourceError(f"cannot read {manifest}: {exc.strerror}") from exc
    return entries


def _header() -> str:
    return ",".join(MANIFEST_FIELDS)


def _check_columns(columns: list[str], where: str) -> None:
    unknown = [column for column in columns if column not in MANIFEST_FIELDS]
    missing = [column for column in REQUIRED_FIELDS if column not in columns]
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    if unknown or missing or duplicated:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if duplicated:
            problems.append(f"repeated column(s) {', '.join(duplicated)}")
        raise ImportSourceError(
            f"{where}: {'; '.join(problems)}. The fields are {_header()} (description and tags optional)."
        )


def _read_json_manifest(manifest: Path) -> list[ImportEntry]:
    base = manifest.parent.resolve()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImportSourceError(f"{manifest} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ImportSourceError(f"cannot read {manifest}: {exc.strerror}") from exc
    if not isinstance(data, list):
        raise ImportSourceError(f"{manifest} must hold a JSON list of objects with the keys {_header()}.")
    entries = []
    for number, item in enumerate(data, start=1):
        where = f"{manifest.name} entry {number}"
        if not isinstance(item, dict):
            raise ImportSourceError(f"{where} is not an object with the keys {_header()}.")
        _check_columns(list(item), where)
        for key in ("name", "version", "path", "description"):
            if key in item and not isinstance(item[key], str):
                raise ImportSourceError(f"{where}: '{key}' must be a string.")
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ImportSourceError(f"{where}: 'tags' must be a list of strings.")
        entries.append(
            _manifest_entry(
                base,
                where,
                name=item["name"].strip(),
                version=item["version"].strip(),
                raw_path=item["path"],
                description=item.get("description", ""),
                tags=[tag.strip() for tag in tags],
            )
        )
    return entries


def _manifest_entry(
    base: Path, where: str, *, name: str, version: str, raw_path: str, description: str, tags: list[str]
) -> ImportEntry:
    fields = dict(where=where, root=base, name=name, version=version, description=description, tags=tuple(tags))
    if _URL.match(raw_path):
        return ImportEntry(
            **fields,
            problem=f"'{raw_path.strip()}' is a URL; import_models reads local files only. Download it first.",
        )
    if not raw_path.strip():
        return ImportEntry(**fields, problem="no path given")
    # Relative paths are relative to the manifest's folder; an absolute one replaces it.
    return ImportEntry(**fields, path=base / raw_path.strip())


# --- importing --------------------------------------------------------------------------------


def import_entries(entries: Iterable[ImportEntry], *, dry_run: bool = False) -> Iterator[ImportResult]:
    """Register each entry through the services, yielding one result per entry as it ends.

    An existing name + version with the same bytes is skipped, with other bytes it is a conflict.
    A file that fails validation keeps its row with status error, as a multipart create does.
    With ``dry_run`` files are only hashed and compared: no row and no stored file is written.
    """
    planned: dict[tuple[str, str], str] = {}  # dry run: what earlier entries would have registered
    for entry in entries:
        try:
            _check_entry(entry)
            if dry_run:
                yield _plan(entry, planned)
            else:
                yield _import(entry)
        except EntryFailed as exc:
            yield ImportResult(entry, Outcome.FAILED, str(exc))


def _check_entry(entry: ImportEntry) -> None:
    """The API's rules for names, versions, descriptions and tags, before any file is read."""
    if entry.problem:
        raise EntryFailed(entry.problem)
    try:
        MLModel(name=entry.name, version=entry.version, description=entry.description).clean_fields(
            exclude=[f.name for f in MLModel._meta.fields if f.name not in ("name", "version", "description")]
        )
    except ValidationError as exc:
        field_name, messages = next(iter(exc.message_dict.items()))
        raise EntryFailed(f"{field_name}: {messages[0]}") from exc
    for tag in entry.tags:
        try:
            Tag(name=tag).clean_fields(exclude=["id"])
        except ValidationError as exc:
            raise EntryFailed(f"tag '{tag}': {exc.messages[0]}") from exc


def _import(entry: ImportEntry) -> ImportResult:
    with _open_model_file(entry) as handle:
        try:
            staged = services.stage_stream(handle)
        except ModelTooLarge as exc:
            raise EntryFailed(exc.detail) from exc
    registered = False
    try:
        existing = MLModel.objects.filter(name=entry.name, version=entry.version).first()
        if existing is not None:
            return _compare(entry, staged.sha256, existing=existing)
        model = services.model_register(
            name=entry.name,
            version=entry.version,
            staged=staged,
            description=entry.description,
            tags=entry.tags,
            inline=True,  # a command, not a serving thread: validate here and report the outcome
        )
        registered = True
    except DomainError as exc:  # e.g. the same name + version registered meanwhile by someone else
        raise EntryFailed(exc.detail) from exc
    except ValidationError as exc:
        raise EntryFailed("; ".join(exc.messages)) from exc
    finally:
        if not registered:
            services.staged_cleanup(staged)
    if model.status == Status.READY:
        return ImportResult(entry, Outcome.IMPORTED, model.status)
    if model.status == Status.ERROR:
        return ImportResult(
            entry,
            Outcome.FAILED,
            f"validation failed ({model.error_code}): {model.error_message}",
            kept_error_row=True,
        )
    return ImportResult(entry, Outcome.FAILED, f"ended with status {model.status}; validate it again")


def _plan(entry: ImportEntry, planned: dict[tuple[str, str], str]) -> ImportResult:
    with _open_model_file(entry) as handle:
        sha256 = _hash_capped(handle)
    key = (entry.name, entry.version)
    if key in planned:
        if planned[key] == sha256:
            return ImportResult(entry, Outcome.SKIPPED, "listed earlier in this source with the same file")
        raise EntryFailed(
            f"conflict: listed earlier in this source with sha256 {planned[key]}, this file has sha256 {sha256}"
        )
    existing = MLModel.objects.filter(name=entry.name, version=entry.version).first()
    if existing is not None:
        return _compare(entry, sha256, existing=existing)
    planned[key] = sha256
    return ImportResult(entry, Outcome.IMPORTED, "not validated in a dry run")


def _compare(entry: ImportEntry, sha256: str, *, existing: MLModel) -> ImportResult:
    """The result for a name + version that is already registered."""
    if not existing.file_sha256:
        raise EntryFailed(
            f"conflict: {existing} is registered without a file (status {existing.status}); "
            "upload to it through the API or delete it first"
        )
    if existing.file_sha256 != sha256:
        raise EntryFailed(
            f"conflict: {existing} is registered with sha256 {existing.file_sha256}, this file has sha256 "
            f"{sha256}; register it under a new version"
        )
    if existing.status == Status.ERROR:
        # Skipping would turn a broken model into a clean run; report the earlier failure again.
        raise EntryFailed(
            f"registered earlier with this file, which failed validation ({existing.error_code}): "
            f"{existing.error_message}"
        )
    return ImportResult(entry, Outcome.SKIPPED, f"same file already registered, {existing.status}")


def _open_model_file(entry: ImportEntry) -> BinaryIO:
    """Open the entry's file read-only: a regular file inside ``entry.root`` once resolved."""
    assert entry.path is not None
    real = Path(os.path.realpath(entry.path))
    if not _inside(real, entry.root):
        raise EntryFailed(
            f"{entry.path} leads to {real}, outside {entry.root}; import_models reads only files inside "
            "the source folder (the manifest's folder for a manifest) and does not follow symlinks or '..' "
            "out of it"
        )
    try:
        # O_NOFOLLOW: a file swapped for a symlink after realpath() is refused, not followed.
        # O_NONBLOCK: a FIFO planted under a model's name must not hang the import (regular files
        # ignore the flag).
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise EntryFailed(f"no file at {entry.path}") from exc
    except OSError as exc:
        raise EntryFailed(f"cannot open {entry.path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EntryFailed(f"{entry.path} is not a regular file")
    return os.fdopen(fd, "rb")


def _hash_capped(handle: BinaryIO) -> str:
    """The sha256 of a stream, with the upload size cap that stage_stream applies."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK_SIZE):
        size += len(chunk)
        if size > settings.MAX_MODEL_SIZE_BYTES:
            raise EntryFailed(ModelTooLarge(settings.MAX_MODEL_SIZE_MB).detail)
        digest.update(chunk)
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)
