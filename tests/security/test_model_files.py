"""Uploaded models are untrusted input (REFERENCE §3, §5): every hostile or broken file is
refused with its exact code, the server keeps serving the model it already had, and nothing
of the refused upload is served or left in the temp folder."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from registry.models import MLModel
from registry.storage import SENTINEL_NAME
from tests.registry.onnx_factories import (
    make_add_model,
    make_busy_loop_model,
    make_constant_of_shape_bomb,
    make_custom_domain_model,
    make_external_data_model,
    make_iris_model,
    make_unsupported_opset_model,
)
from tests.security.battery import assert_still_serves, model_snapshot, via_django, via_fastpath

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


@pytest.fixture
def serving(ready_model, make_key):
    """A ready iris model and a predict key: what must keep answering through every attack."""
    model = ready_model(make_iris_model(zipmap=False), name="iris")
    return model, make_key("read", "predict", name="caller")[1]


def upload(client, data: bytes, *, name: str = "hostile", version: str = "1.0.0", filename: str = "model.onnx"):
    file = SimpleUploadedFile(filename, data, content_type="application/octet-stream")
    return client.post(MODELS, {"name": name, "version": version, "file": file}, format="multipart")


def temp_files(storage) -> list:
    return list((storage / "tmp").iterdir())


def assert_refused(manage_client, serving, model_storage, data: bytes, code: str) -> None:
    """The upload is answered (202, the row in status error with ``code``), never served,
    leaves no temp file, and the model that was there still answers on both paths."""
    model, key = serving
    response = upload(manage_client, data)
    assert response.status_code == 202, response.content[:500]
    body = response.json()
    assert (body["status"], body["error_code"]) == ("error", code), body
    assert body["error_message"]
    assert temp_files(model_storage) == []
    predict = via_django(f"{MODELS}/{body['id']}/predict", b'{"input_data": {"X": [[1, 2, 3]]}}', key=key)
    assert (predict.status, predict.code) == (409, "model_not_ready")
    for send in (via_django, via_fastpath):
        assert_still_serves(send, model["id"], key)
    assert MLModel.objects.get(pk=model["id"]).status == "ready"


_VALID = make_add_model()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"this is not a protobuf \xff\xfe" * 10, id="malformed"),
        pytest.param(_VALID[: len(_VALID) // 2], id="truncated"),
        pytest.param(os.urandom(4096), id="random"),
        pytest.param(b"", id="empty"),
    ],
)
def test_broken_file_is_invalid_model(manage_client, serving, model_storage, data):
    assert_refused(manage_client, serving, model_storage, data, "invalid_model")


@pytest.mark.parametrize("site", ["initializer", "constant_attr"])
@pytest.mark.parametrize(
    "location",
    ["../../etc/passwd", "subdir/../../etc/passwd", "/etc/passwd"],
    ids=["parent", "subdir-parent", "absolute"],
)
def test_external_data_path_is_refused(manage_client, serving, model_storage, location, site):
    assert_refused(
        manage_client, serving, model_storage, make_external_data_model(location, on=site), "external_data_forbidden"
    )


@pytest.mark.parametrize("site", ["initializer", "constant_attr"])
def test_ort_memory_address_marker_is_refused(manage_client, serving, model_storage, site):
    data = make_external_data_model("*/_ORT_MEM_ADDR_/*", on=site)
    assert_refused(manage_client, serving, model_storage, data, "external_data_forbidden")


def test_custom_domain_node_is_refused(manage_client, serving, model_storage):
    assert_refused(manage_client, serving, model_storage, make_custom_domain_model(), "custom_op_forbidden")


def test_constant_of_shape_bomb_is_stopped_by_the_sandbox(manage_client, serving, model_storage, settings):
    # 400 GB asked for; the sandbox's address-space limit ends the child, not the server.
    settings.VALIDATION_MEMORY_MB = 1024
    assert_refused(manage_client, serving, model_storage, make_constant_of_shape_bomb(), "resource_limit_exceeded")


def test_model_onnx_runtime_cannot_load_is_refused(manage_client, serving, model_storage):
    assert_refused(manage_client, serving, model_storage, make_unsupported_opset_model(), "runtime_load_failed")


def test_model_that_computes_forever_is_stopped_by_the_sandbox(manage_client, serving, model_storage, settings):
    settings.VALIDATION_TIMEOUT_SECONDS = 3
    assert_refused(manage_client, serving, model_storage, make_busy_loop_model(), "validation_timeout")


def test_registration_from_a_url_is_refused(manage_client, serving, tmp_path):
    """No import from URLs (TorchServe CVE-2023-43654): the API has no such field, and
    import_models reads local files only."""
    model, key = serving
    before = model_snapshot()
    response = manage_client.post(
        MODELS, {"name": "remote", "version": "1.0.0", "url": "http://169.254.169.254/latest"}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (400, "read_only_field")
    with pytest.raises(CommandError, match="is a URL; import_models reads local files only"):
        call_command("import_models", "http://169.254.169.254/model.onnx")
    assert model_snapshot() == before
    assert_still_serves(via_fastpath, model["id"], key)


def test_oversize_upload_is_413_and_leaves_nothing(manage_client, serving, model_storage, settings):
    model, key = serving
    settings.MAX_MODEL_SIZE_BYTES = 64 * 1024
    before = model_snapshot()
    files_before = sorted(model_storage.rglob("*.onnx"))
    response = upload(manage_client, b"\0" * (64 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "model_too_large"
    assert model_snapshot() == before
    assert sorted(model_storage.rglob("*.onnx")) == files_before
    assert temp_files(model_storage) == []
    assert_still_serves(via_fastpath, model["id"], key)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../../x", "invalid"),
        ("subdir/../../etc/passwd", "invalid"),
        ("/etc/passwd", "invalid"),
        ("..", "invalid"),
        ("a\\b", "invalid"),
        ("x\x00y", "null_characters_not_allowed"),
    ],
)
def test_traversal_like_model_name_is_400_naming_the_field(manage_client, serving, model_storage, name, code):
    model, key = serving
    before = model_snapshot()
    response = upload(manage_client, _VALID, name=name)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert "name" in response.json()["errors"]
    assert model_snapshot() == before
    assert temp_files(model_storage) == []
    assert_still_serves(via_django, model["id"], key)


@pytest.mark.parametrize("filename", ["../../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini", "subdir/../../x.onnx"])
def test_traversal_like_file_name_is_only_a_label(manage_client, serving, model_storage, filename):
    """The stored path comes from the sha256: the client's file name never reaches the disk."""
    model, key = serving
    response = upload(manage_client, _VALID, name="adder", filename=filename)
    assert response.status_code == 202
    sha = response.json()["file_sha256"]
    assert response.json()["status"] == "ready"
    assert (model_storage / sha[:2] / sha[2:4] / f"{sha}.onnx").is_file()
    stored = {
        path.name for path in model_storage.rglob("*") if path.is_file() and path != model_storage / SENTINEL_NAME
    }
    assert stored == {f"{sha}.onnx", f"{model['file_sha256']}.onnx"}
    assert_still_serves(via_fastpath, model["id"], key)


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "..", "%2e%2e"])
def test_traversal_like_names_in_urls_are_404(read_client, serving, name):
    model, key = serving
    for url in (f"{MODELS}/by-name/{name}/versions", f"{MODELS}/by-name/{name}/latest"):
        response = read_client.get(url)
        assert response.status_code == 404, url
        assert response.json()["code"] in {"model_not_found", "not_found"}
    reply = via_fastpath(f"{MODELS}/by-name/{name}/predict", b'{"input_data": {"X": [[1, 2, 3, 4]]}}', key=key)
    assert reply.status == 404
    assert_still_serves(via_fastpath, model["id"], key)
