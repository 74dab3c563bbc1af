"""manage.py import_models: register the models of a local folder or manifest in one go."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from registry import services
from registry.importing import split_file_name
from registry.models import MLModel
from registry.storage import SENTINEL_NAME
from tests.registry.onnx_factories import make_add_model, make_iris_model

pytestmark = pytest.mark.django_db

NAME_RULE = "A model name is 1-100 characters"


def run_import(*args: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `manage.py import_models ARGS`."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_models", *map(str, args), stdout=out, stderr=err)
    except CommandError as exc:
        assert exc.returncode == 1
        err.write(str(exc))
        return 1, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def broken_model() -> bytes:
    return random.Random(1234).randbytes(512)


def write_manifest(folder: Path, kind: str, rows: list[dict]) -> Path:
    """A manifest of ``kind`` ("csv" or "json"); tags are given as lists."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        path = folder / "manifest.json"
        path.write_text(json.dumps(rows))
        return path
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "version", "path", "description", "tags"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "tags": ";".join(row.get("tags", []))})
    return path


def stored_files(root: Path) -> list[Path]:
    """The model files: not the uploads in flight (tmp/), nor the storage's sentinel."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp" and p != root / SENTINEL_NAME)


def temp_files(root: Path) -> list[Path]:
    return sorted((root / "tmp").iterdir())


def register(name: str, version: str, data: bytes) -> MLModel:
    return services.model_register(name=name, version=version, staged=services.stage_stream(io.BytesIO(data)))


@pytest.fixture
def both_layouts(tmp_path) -> Path:
    source = tmp_path / "source"
    write(source / "adder" / "1.0.0" / "model.onnx", make_add_model())
    write(source / "iris-classifier-1.2.0.onnx", make_iris_model())
    write(source / "README.txt", b"not a model, ignored")
    return source


def test_directory_in_both_layouts_imports_ready_models_with_schemas(both_layouts, model_storage):
    status, out, err = run_import(both_layouts)

    assert status == 0, out + err
    assert "imported adder 1.0.0 (ready)" in out
    assert "imported iris-classifier 1.2.0 (ready)" in out
    assert "imported 2, skipped 0, failed 0" in out
    adder = MLModel.objects.get(name="adder", version="1.0.0")
    iris = MLModel.objects.get(name="iris-classifier", version="1.2.0")
    assert adder.status == iris.status == MLModel.Status.READY
    assert [spec["name"] for spec in adder.input_schema] == ["X", "Y"]
    assert iris.input_schema[0]["name"] == "X" and iris.output_schema
    assert len(stored_files(model_storage)) == 2
    assert temp_files(model_storage) == []


def test_importing_twice_skips_everything_and_exits_0(both_layouts, model_storage):
    assert run_import(both_layouts)[0] == 0

    status, out, _ = run_import(both_layouts)

    assert status == 0
    assert "skipped adder 1.0.0 (same file already registered, ready)" in out
    assert "skipped iris-classifier 1.2.0" in out
    assert "imported 0, skipped 2, failed 0" in out
    assert MLModel.objects.count() == 2
    assert temp_files(model_storage) == []


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("iris-classifier-1.2.0", ("iris-classifier", "1.2.0")),
        ("resnet-50-2.0.0", ("resnet-50", "2.0.0")),
        ("bert-1.0.0-rc.1", ("bert", "1.0.0-rc.1")),
        ("bert-1.0.0+build.5", ("bert", "1.0.0+build.5")),
        ("iris-1.0", None),
        ("iris", None),
        ("-1.0.0", None),
    ],
)
def test_file_name_splits_at_the_first_dash_before_a_semver(stem, expected):
    assert split_file_name(stem) == expected


def test_files_in_no_layout_fail_with_a_reason(tmp_path):
    source = tmp_path / "source"
    write(source / "model.onnx", make_add_model())
    write(source / "nested" / "adder-1.0.0.onnx", make_add_model())
    write(source / "iris" / "latest" / "model.onnx", make_add_model())

    status, out, _ = run_import(source)

    assert status == 1
    assert "failed model.onnx: the file name has no '-' followed by a semantic version" in out
    assert "failed nested/adder-1.0.0.onnx: not a recognised layout" in out
    assert "failed iris latest (iris/latest/model.onnx): version: 'latest' is not a semantic version" in out
    assert "imported 0, skipped 0, failed 3" in out
    assert not MLModel.objects.exists()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_manifest_imports_good_models_and_reports_conflict_and_broken_file(tmp_path, model_storage, kind):
    existing = register("adder", "1.0.0", make_add_model())
    folder = tmp_path / "bundle"
    write(folder / "files" / "iris.onnx", make_iris_model())
    write(folder / "files" / "other-adder.onnx", make_iris_model())  # different bytes, same name+version
    write(folder / "broken.onnx", broken_model())
    manifest = write_manifest(
        folder,
        kind,
        [
            {
                "name": "iris",
                "version": "1.0.0",
                "path": "files/iris.onnx",
                "description": "Iris, logistic regression",
                "tags": ["tabular", "sklearn"],
            },
            {"name": "adder", "version": "1.0.0", "path": "files/other-adder.onnx", "description": "", "tags": []},
            {"name": "broken", "version": "0.1.0", "path": str(folder / "broken.onnx"), "description": "", "tags": []},
        ],
    )

    status, out, err = run_import(manifest)

    assert status == 1
    assert "imported iris 1.0.0 (ready)" in out
    assert "imported 1, skipped 0, failed 2" in out
    assert f"registered with sha256 {existing.file_sha256}" in out
    assert "failed broken 0.1.0" in out and "validation failed (invalid_model)" in out
    assert "kept with status error" in out
    assert "2 of 3 model(s) failed" in err
    iris = MLModel.objects.get(name="iris")
    assert iris.status == MLModel.Status.READY
    assert iris.description == "Iris, logistic regression"
    assert sorted(iris.tags.values_list("name", flat=True)) == ["sklearn", "tabular"]
    broken = MLModel.objects.get(name="broken")
    assert broken.status == MLModel.Status.ERROR and broken.error_code == "invalid_model"
    existing.refresh_from_db()
    assert existing.file_sha256 != iris.file_sha256  # the conflict left the registered model alone
    assert temp_files(model_storage) == []


def test_a_model_that_failed_validation_fails_again_on_the_next_run(tmp_path):
    source = tmp_path / "source"
    write(source / "broken-1.0.0.onnx", broken_model())
    assert run_import(source)[0] == 1

    status, out, _ = run_import(source)

    assert status == 1
    assert "registered earlier with this file, which failed validation (invalid_model)" in out
    assert MLModel.objects.count() == 1


def test_dry_run_writes_no_rows_and_no_files(both_layouts, tmp_path, model_storage):
    register("adder", "1.0.0", make_add_model())
    write(both_layouts / "adder" / "2.0.0" / "model.onnx", make_add_model())
    write(both_layouts / "iris" / "1.0.0" / "model.onnx", make_iris_model())
    write(both_layouts / "adder-1.0.0.onnx", make_iris_model())  # conflicts with the registered adder
    rows_before, files_before = MLModel.objects.count(), stored_files(model_storage)

    status, out, _ = run_import(both_layouts, "--dry-run")

    assert status == 1
    assert "would skip adder 1.0.0 (same file already registered, ready)" in out
    assert "would import adder 2.0.0" in out
    assert "would import iris 1.0.0" in out
    assert "would import iris-classifier 1.2.0" in out
    assert "would fail adder 1.0.0 (adder-1.0.0.onnx): conflict" in out
    assert "Dry run, nothing written: would import 3, skip 1, fail 1" in out
    assert MLModel.objects.count() == rows_before
    assert stored_files(model_storage) == files_before
    assert temp_files(model_storage) == []


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_manifest_refuses_url_paths(tmp_path, kind):
    urls = ["https://example.com/iris.onnx", "s3://bucket/iris.onnx", "file:///etc/passwd", "HTTP://x/y.onnx"]
    rows = [{"name": f"remote{i}", "version": "1.0.0", "path": url, "tags": []} for i, url in enumerate(urls)]
    manifest = write_manifest(tmp_path, kind, rows)

    status, out, _ = run_import(manifest)

    assert status == 1
    for url in urls:
        assert f"'{url}' is a URL; import_models reads local files only" in out
    assert not MLModel.objects.exists()


def test_a_url_as_source_is_a_command_error():
    status, _, err = run_import("https://example.com/manifest.csv")

    assert status == 1
    assert "is a URL; import_models reads local files only" in err


def test_manifest_paths_stay_inside_the_manifest_folder(tmp_path):
    outside = write(tmp_path / "elsewhere" / "adder.onnx", make_add_model())
    folder = tmp_path / "bundle"
    (folder / "link.onnx").parent.mkdir(parents=True)
    (folder / "link.onnx").symlink_to(outside)
    rows = [
        {"name": "dotdot", "version": "1.0.0", "path": "../elsewhere/adder.onnx"},
        {"name": "absolute", "version": "1.0.0", "path": str(outside)},
        {"name": "symlink", "version": "1.0.0", "path": "link.onnx"},
    ]
    manifest = write_manifest(folder, "json", rows)

    status, out, _ = run_import(manifest)

    assert status == 1
    for number, row in enumerate(rows, start=1):
        assert f"failed {row['name']} 1.0.0 (manifest.json entry {number}): " in out
    per_model_lines = out.split("Failures:")[0]
    assert per_model_lines.count(f"leads to {outside}, outside {folder}") == 3
    assert "imported 0, skipped 0, failed 3" in out
    assert not MLModel.objects.exists()


def test_symlinks_out_of_a_scanned_folder_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "adder.onnx", make_add_model())
    write(outside / "1.0.0" / "model.onnx", make_add_model())
    source = tmp_path / "source"
    write(source / "adder" / "1.0.0" / "model.onnx", make_add_model())
    (source / "leak-1.0.0.onnx").symlink_to(outside / "adder.onnx")
    (source / "leakdir").symlink_to(outside, target_is_directory=True)
    (source / "alias-1.0.0.onnx").symlink_to(source / "adder" / "1.0.0" / "model.onnx")  # stays inside

    status, out, _ = run_import(source)

    assert status == 1
    assert "failed leak 1.0.0 (leak-1.0.0.onnx):" in out and "outside" in out
    assert "failed leakdir: a symlink to a folder outside the source folder; not followed" in out
    assert "imported alias 1.0.0 (ready)" in out
    assert "imported adder 1.0.0 (ready)" in out
    assert set(MLModel.objects.values_list("name", flat=True)) == {"adder", "alias"}


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_manifest_name_with_path_parts_fails_the_name_rule(tmp_path, model_storage, kind):
    write(tmp_path / "adder.onnx", make_add_model())
    rows = [{"name": "../../x", "version": "1.0.0", "path": "adder.onnx", "tags": []}]
    manifest = write_manifest(tmp_path, kind, rows)

    status, out, _ = run_import(manifest)

    assert status == 1
    assert f"failed ../../x 1.0.0 (manifest.{kind} " in out
    assert f"name: {NAME_RULE}" in out
    assert not MLModel.objects.exists()
    assert stored_files(model_storage) == []


def test_manifest_bad_version_tag_and_missing_file_fail_with_reasons(tmp_path):
    write(tmp_path / "adder.onnx", make_add_model())
    rows = [
        {"name": "a", "version": "v1", "path": "adder.onnx"},
        {"name": "b", "version": "1.0.0", "path": "adder.onnx", "tags": ["has space"]},
        {"name": "c", "version": "1.0.0", "path": "missing.onnx"},
        {"name": "d", "version": "1.0.0", "path": "adder.onnx"},
    ]
    manifest = write_manifest(tmp_path, "json", rows)

    status, out, _ = run_import(manifest)

    assert status == 1
    assert "failed a v1 (manifest.json entry 1): version: 'v1' is not a semantic version" in out
    assert "failed b 1.0.0 (manifest.json entry 2): tag 'has space': A tag is" in out
    assert "failed c 1.0.0 (manifest.json entry 3): no file at" in out
    assert "imported d 1.0.0 (ready)" in out
    assert "imported 1, skipped 0, failed 3" in out


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("manifest.json", "[{", "is not valid JSON"),
        ("manifest.json", '{"name": "x"}', "must hold a JSON list"),
        ("manifest.json", '[{"name": "x", "version": "1.0.0"}]', "missing column(s) path"),
        ("manifest.json", '[{"name": "x", "version": "1.0.0", "path": "a", "tags": "t"}]', "'tags' must be a list"),
        ("manifest.csv", "name,version\nx,1.0.0\n", "missing column(s) path"),
        ("manifest.csv", "name,version,path,colour\n", "unknown column(s) colour"),
        ("manifest.csv", "name,version,path\nx,1.0.0,a.onnx,extra\n", "line 2 has 4 cells"),
        ("manifest.csv", "", "is empty"),
        ("models.txt", "", "neither a folder nor a manifest"),
    ],
)
def test_malformed_manifest_is_a_command_error(tmp_path, file_name, content, message):
    manifest = tmp_path / file_name
    manifest.write_text(content)

    status, _, err = run_import(manifest)

    assert status == 1
    assert message in err
    assert not MLModel.objects.exists()


def test_a_fifo_named_like_a_model_fails_without_blocking(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    os.mkfifo(source / "pipe-1.0.0.onnx")

    status, out, _ = run_import(source)

    assert status == 1
    assert "failed pipe 1.0.0 (pipe-1.0.0.onnx):" in out and "is not a regular file" in out


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_file_over_the_size_cap_fails_and_leaves_nothing(tmp_path, settings, model_storage, dry_run):
    settings.MAX_MODEL_SIZE_MB = 1
    settings.MAX_MODEL_SIZE_BYTES = 1024
    source = tmp_path / "source"
    write(source / "big-1.0.0.onnx", b"x" * 2048)

    status, out, _ = run_import(source, *(["--dry-run"] if dry_run else []))

    assert status == 1
    assert "big 1.0.0 (big-1.0.0.onnx): The model file is larger than the 1 MB limit" in out
    assert not MLModel.objects.exists()
    assert stored_files(model_storage) == []
    assert temp_files(model_storage) == []


def test_missing_source_is_a_command_error(tmp_path):
    status, _, err = run_import(tmp_path / "nope")

    assert status == 1
    assert "no such file or folder" in err
