"""The registry REST API as a client sees it: /api/v1/models."""

from __future__ import annotations

import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from registry.models import MLModel
from registry.storage import SENTINEL_NAME
from tests.registry.onnx_factories import make_add_model, make_iris_model

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


def onnx_file(data: bytes, name: str = "model.onnx") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def stored_files(root) -> list:
    """The model files: not the uploads in flight (tmp/), nor the storage's sentinel."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp" and p != root / SENTINEL_NAME)


def temp_files(root) -> list:
    return sorted(p for p in (root / "tmp").iterdir())


@pytest.fixture
def registered(manage_client):
    """A ready model registered through the API."""

    def _register(name="adder", version="1.0.0", data=None, **extra):
        response = manage_client.post(
            MODELS,
            {"name": name, "version": version, "file": onnx_file(data or make_add_model()), **extra},
            format="multipart",
        )
        # 202: the validation runs in the background (at once in tests: see tests/conftest.py).
        assert response.status_code == 202, response.json()
        assert response["Location"].endswith(f"{MODELS}/{response.json()['id']}")
        return response.json()

    return _register


def test_create_json_makes_a_pending_model(manage_client):
    response = manage_client.post(
        MODELS, {"name": "iris", "version": "1.0.0", "description": "d", "tags": ["a", "b"]}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["tags"] == ["a", "b"]
    assert body["file_sha256"] == ""
    assert body["created_by"] == "key:ops"


def test_multipart_create_uploads_and_validates(registered, model_storage):
    body = registered(name="iris", data=make_iris_model(), tags="prod,sklearn")
    assert body["status"] == "ready"
    assert body["tags"] == ["prod", "sklearn"]
    assert [t["name"] for t in body["input_schema"]] == ["X"] or body["input_schema"]
    assert body["input_schema"][0]["datatype"] == "FP32"
    assert body["model_metadata"]["producer_name"] == "skl2onnx"
    assert len(body["file_sha256"]) == 64
    path = model_storage / body["file_sha256"][:2] / body["file_sha256"][2:4] / f"{body['file_sha256']}.onnx"
    assert path.is_file()
    assert temp_files(model_storage) == []


def test_multipart_create_with_a_broken_file_ends_in_error(manage_client):
    response = manage_client.post(
        MODELS, {"name": "bad", "version": "1.0.0", "file": onnx_file(b"not an onnx model")}, format="multipart"
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "error"
    assert body["error_code"] == "invalid_model"
    assert body["error_message"]


def test_storage_path_comes_from_the_hash_not_the_name(manage_client, model_storage):
    response = manage_client.post(
        MODELS, {"name": "..", "version": "1.0.0", "file": onnx_file(make_add_model())}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["name"]
    response = manage_client.post(
        MODELS,
        {"name": "x", "version": "1.0.0", "file": onnx_file(make_add_model(), name="../../../etc/evil.onnx")},
        format="multipart",
    )
    assert response.status_code == 202
    files = stored_files(model_storage)
    assert [f.name for f in files] == [f"{response.json()['file_sha256']}.onnx"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "../../x", "version": "1.0.0"}, "name"),
        ({"name": "a/b", "version": "1.0.0"}, "name"),
        ({"name": "", "version": "1.0.0"}, "name"),
        ({"name": "x" * 101, "version": "1.0.0"}, "name"),
        ({"name": "ok", "version": "1.0"}, "version"),
        ({"name": "ok", "version": "v1.0.0"}, "version"),
        ({"name": "ok", "version": "1.0.0", "tags": ["has space"]}, "tags"),
        ({"name": "ok", "version": "1.0.0", "status": "ready"}, "status"),
        ({"name": "ok", "version": "1.0.0", "file_sha256": "0" * 64}, "file_sha256"),
        ({"version": "1.0.0"}, "name"),
    ],
)
def test_create_rejects_bad_input_naming_the_field(manage_client, payload, field):
    response = manage_client.post(MODELS, payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body["errors"]
    assert body["detail"].startswith(field)
    assert MLModel.objects.count() == 0


def test_create_rejects_malformed_json(manage_client):
    response = manage_client.generic("POST", MODELS, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_duplicate_version_is_409(manage_client):
    assert manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json").status_code == 201
    response = manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_version"


@pytest.mark.django_db(transaction=True)
def test_racing_duplicate_creates_yield_exactly_one(make_key):
    _, raw = make_key("read", "manage")
    barrier = threading.Barrier(10)
    statuses: list[int] = []
    codes: list[str] = []

    def create():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        barrier.wait()
        try:
            response = client.post(MODELS, {"name": "race", "version": "1.0.0"}, format="json")
            statuses.append(response.status_code)
            codes.append(response.json().get("code", ""))
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 9
    assert codes.count("duplicate_version") == 9
    assert MLModel.objects.filter(name="race").count() == 1


def test_list_filters_searches_and_orders_by_semver(manage_client, read_client):
    for version in ["1.9.0", "1.10.0", "1.10.0-rc.1", "1.10.0-alpha", "0.1.0"]:
        manage_client.post(MODELS, {"name": "sem", "version": version, "tags": ["t"]}, format="json")
    manage_client.post(MODELS, {"name": "other", "version": "1.0.0", "description": "needle here"}, format="json")

    response = read_client.get(MODELS, {"name": "sem", "ordering": "-version"})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert [m["version"] for m in body["results"]] == ["1.10.0", "1.10.0-rc.1", "1.10.0-alpha", "1.9.0", "0.1.0"]

    assert read_client.get(MODELS, {"tag": "t"}).json()["count"] == 5
    assert read_client.get(MODELS, {"status": "pending"}).json()["count"] == 6
    assert read_client.get(MODELS, {"status": "ready"}).json()["count"] == 0
    assert [m["name"] for m in read_client.get(MODELS, {"search": "needle"}).json()["results"]] == ["other"]


def test_list_rejects_an_unknown_status_filter(read_client):
    response = read_client.get(MODELS, {"status": "bogus"})
    assert response.status_code == 400
    assert "status" in response.json()["errors"]


def test_get_and_unknown_ids(read_client, registered):
    body = registered()
    assert read_client.get(f"{MODELS}/{body['id']}").json()["id"] == body["id"]
    missing = read_client.get(f"{MODELS}/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"
    garbage = read_client.get(f"{MODELS}/not-a-uuid")
    assert garbage.status_code == 404
    assert garbage.json()["code"] == "not_found"


def test_patch_changes_description_and_tags_only(manage_client, registered):
    body = registered()
    url = f"{MODELS}/{body['id']}"
    response = manage_client.patch(url, {"description": "new", "tags": ["x"]}, format="json")
    assert response.status_code == 200
    assert response.json()["description"] == "new"
    assert response.json()["tags"] == ["x"]

    for field, value in [("status", "archived"), ("file_sha256", "0" * 64), ("input_schema", []), ("name", "n")]:
        response = manage_client.patch(url, {field: value}, format="json")
        assert response.status_code == 400, field
        assert response.json()["code"] == "read_only_field"
    fresh = manage_client.get(url).json()
    assert fresh["status"] == "ready"
    assert fresh["file_sha256"] == body["file_sha256"]
    assert manage_client.put(url, {"description": "x"}, format="json").status_code == 405


def test_upload_then_validate(manage_client, model_storage):
    model = manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json").json()
    url = f"{MODELS}/{model['id']}"

    not_yet = manage_client.post(f"{url}/validate")
    assert not_yet.status_code == 409
    assert not_yet.json()["code"] == "no_file"

    uploaded = manage_client.post(f"{url}/upload", {"file": onnx_file(make_add_model())}, format="multipart")
    assert uploaded.status_code == 200
    assert uploaded.json()["status"] == "uploaded"
    assert uploaded.json()["file_size"] == len(make_add_model())

    validated = manage_client.post(f"{url}/validate")
    assert validated.status_code == 202
    assert validated["Location"].endswith(url)
    assert validated.json()["status"] == "ready"
    assert validated.json()["input_schema"]
    assert temp_files(model_storage) == []


def test_upload_without_a_file_is_400_and_changes_nothing(manage_client):
    model = manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json").json()
    response = manage_client.post(f"{MODELS}/{model['id']}/upload", {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["errors"]
    assert MLModel.objects.get(pk=model["id"]).status == "pending"


def test_oversize_upload_is_413_and_leaves_nothing(manage_client, settings, model_storage):
    settings.MAX_MODEL_SIZE_MB = 1
    settings.MAX_MODEL_SIZE_BYTES = 1024 * 1024
    model = manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json").json()
    big = onnx_file(b"\0" * (1024 * 1024 + 10))
    response = manage_client.post(f"{MODELS}/{model['id']}/upload", {"file": big}, format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "model_too_large"
    assert stored_files(model_storage) == []
    assert temp_files(model_storage) == []
    assert MLModel.objects.get(pk=model["id"]).status == "pending"

    big.seek(0)
    response = manage_client.post(MODELS, {"name": "n", "version": "1.0.0", "file": big}, format="multipart")
    assert response.status_code == 413
    assert not MLModel.objects.filter(name="n").exists()
    assert temp_files(model_storage) == []


def test_upload_to_an_archived_model_is_refused_and_leaves_no_file(manage_client, registered, model_storage):
    body = registered()
    manage_client.post(f"{MODELS}/{body['id']}/archive")
    before = stored_files(model_storage)
    response = manage_client.post(
        f"{MODELS}/{body['id']}/upload", {"file": onnx_file(make_iris_model())}, format="multipart"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "model_archived"
    assert stored_files(model_storage) == before
    assert temp_files(model_storage) == []


def test_reupload_replaces_the_file_and_needs_validation_again(
    manage_client, registered, model_storage, django_capture_on_commit_callbacks
):
    # Only a version that has never been ready takes a new file (tests/security/test_registry_trust.py).
    body = registered(data=b"not an onnx model")
    assert body["status"] == "error"
    url = f"{MODELS}/{body['id']}"
    with django_capture_on_commit_callbacks(execute=True):
        response = manage_client.post(f"{url}/upload", {"file": onnx_file(make_iris_model())}, format="multipart")
    assert response.json()["status"] == "uploaded"
    assert response.json()["input_schema"] == []
    assert response.json()["file_sha256"] != body["file_sha256"]
    assert [f.stem for f in stored_files(model_storage)] == [response.json()["file_sha256"]]


def test_archive_keeps_and_lists_the_model(manage_client, registered):
    body = registered()
    response = manage_client.post(f"{MODELS}/{body['id']}/archive")
    assert response.status_code == 200
    assert response.json()["status"] == "archived"
    assert manage_client.get(MODELS, {"status": "archived"}).json()["count"] == 1
    assert manage_client.post(f"{MODELS}/{body['id']}/validate").json()["code"] == "model_archived"


def test_delete_removes_row_and_unshared_file(
    manage_client, registered, model_storage, django_capture_on_commit_callbacks
):
    first = registered(version="1.0.0")
    second = registered(version="1.0.1")  # same bytes: one shared file
    assert len(stored_files(model_storage)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.delete(f"{MODELS}/{first['id']}").status_code == 204
    assert len(stored_files(model_storage)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.delete(f"{MODELS}/{second['id']}").status_code == 204
    assert stored_files(model_storage) == []
    assert manage_client.get(f"{MODELS}/{second['id']}").status_code == 404


def test_versions_and_latest_by_name(manage_client, registered):
    registered(version="1.9.0")
    registered(version="1.10.0")
    manage_client.post(MODELS, {"name": "adder", "version": "2.0.0"}, format="json")  # pending

    versions = manage_client.get(f"{MODELS}/by-name/adder/versions").json()
    assert [m["version"] for m in versions["results"]] == ["2.0.0", "1.10.0", "1.9.0"]

    assert manage_client.get(f"{MODELS}/by-name/adder/latest").json()["version"] == "1.10.0"
    assert manage_client.get(f"{MODELS}/by-name/adder/latest?ready_only=false").json()["version"] == "2.0.0"
    assert manage_client.get(f"{MODELS}/by-name/adder/latest?ready_only=maybe").status_code == 400

    missing = manage_client.get(f"{MODELS}/by-name/nope/versions")
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"
    assert manage_client.get(f"{MODELS}/by-name/nope/latest").status_code == 404


def test_trailing_slash_is_optional(read_client):
    assert read_client.get(MODELS + "/").status_code == 200
    assert read_client.get(MODELS).status_code == 200
