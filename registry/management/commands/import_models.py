"""manage.py import_models SOURCE: register every .onnx model in a folder or a manifest."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter
from tqdm import tqdm

from registry import importing
from registry.errors import ImportSourceError
from registry.importing import Outcome


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option order, with the description's line breaks kept."""


class Command(BaseCommand):
    help = f"""Register the ONNX models in SOURCE: upload each file and validate it, as the API does.

SOURCE is a local folder or a manifest file; URLs are refused.

A folder may use either layout (other files are ignored; an .onnx file in neither layout fails):
  NAME/VERSION/model.onnx
  NAME-VERSION.onnx          split at the first '-' followed by a semantic version:
                             iris-classifier-1.2.0.onnx is iris-classifier 1.2.0
Symlinks that lead out of the folder are not followed.

A manifest is a .csv file with the header
  {importing._header()}
(description and tags may be left out; tags are separated by '{importing.CSV_TAG_SEPARATOR}' within their cell,
e.g. "iris;tabular"), or a .json file holding a list of objects with those keys (tags a list).
A relative path is relative to the manifest's folder; every path must lie inside that folder
(after resolving '..' and symlinks), so a manifest cannot pull in files from elsewhere on disk.

A name + version already registered with the same bytes is skipped; with other bytes it is a
conflict and fails. A file that fails validation fails, and its row stays with status error
(as after an API upload) so the reason can be read in the API and the admin.
Exit status 1 if any model failed, 0 otherwise."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("source", help="A folder of models, or a .csv or .json manifest.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read the source and hash the files; report what would happen, write nothing.",
        )

    def handle(self, *args, source: str, dry_run: bool, verbosity: int, **options):
        try:
            entries = importing.read_source(source)
        except ImportSourceError as exc:
            raise CommandError(exc.detail) from exc
        if not entries:
            self.stdout.write(f"No .onnx models found in {source}.")
            return

        counts = dict.fromkeys(Outcome, 0)
        failures: list[importing.ImportResult] = []
        kept_error_rows = 0
        progress = tqdm(
            total=len(entries),
            unit="model",
            file=_ProgressStream(self.stderr),
            disable=verbosity == 0 or not self.stderr.isatty(),
        )
        with progress:
            for result in importing.import_entries(entries, dry_run=dry_run):
                counts[result.outcome] += 1
                if result.outcome == Outcome.FAILED:
                    failures.append(result)
                    kept_error_rows += result.kept_error_row
                if verbosity > 0:
                    progress.clear()
                    self.stdout.write(self._line(result, dry_run=dry_run))
                progress.update(1)

        if dry_run:
            self.stdout.write(
                f"Dry run, nothing written: would import {counts[Outcome.IMPORTED]}, "
                f"skip {counts[Outcome.SKIPPED]}, fail {counts[Outcome.FAILED]}"
            )
        else:
            self.stdout.write(
                f"imported {counts[Outcome.IMPORTED]}, skipped {counts[Outcome.SKIPPED]}, "
                f"failed {counts[Outcome.FAILED]}"
            )
        if failures:
            self.stdout.write("Failures:")
            for result in failures:
                self.stdout.write(f"  {_label(result)}: {result.detail}")
            if kept_error_rows:
                self.stdout.write(
                    f"{kept_error_rows} model(s) that failed validation are kept with status error, as after "
                    "an API upload; delete them, or register a fixed file under a new version."
                )
            raise CommandError(f"{len(failures)} of {len(entries)} model(s) failed.")

    @staticmethod
    def _line(result: importing.ImportResult, *, dry_run: bool) -> str:
        verb = {
            Outcome.IMPORTED: "would import" if dry_run else "imported",
            Outcome.SKIPPED: "would skip" if dry_run else "skipped",
            Outcome.FAILED: "would fail" if dry_run else "failed",
        }[result.outcome]
        if result.outcome == Outcome.FAILED:
            return f"{verb} {_label(result)}: {result.detail}"
        return f"{verb} {result.entry.title} ({result.detail})"


def _label(result: importing.ImportResult) -> str:
    """The model and, when that differs, where in the source it came from."""
    entry = result.entry
    return entry.title if entry.title == entry.where else f"{entry.title} ({entry.where})"


class _ProgressStream:
    """Lets tqdm draw on the command's stderr, which appends newlines and colours by default."""

    def __init__(self, wrapper):
        self._wrapper = wrapper

    def write(self, text: str) -> None:
        self._wrapper.write(text, style_func=lambda plain: plain, ending="")

    def flush(self) -> None:
        self._wrapper.flush()
