"""A drift reference file given with the model's upload (API multipart create and upload, the
admin's add form): kept by the registry as a server-named blob until the version is validated,
then summarised by monitoring (on `model.validated`, or by the drift run) and discarded. One
that does not fit the version's inputs leaves the version ready and says why on the reference."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import batch_io
from monitoring import services
from monitoring.models import DriftResult, Reference
from registry import reference_files
from registry.demo import build_iris_onnx
from registry.models import MLModel, PendingReference
from tests.monitoring.drift_data import COLUMNS, as_csv, iris_rows

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


@pytest.fixture(autouse=True)
def _one_window(settings):
    settings.DRIFT_WINDOWS = ["1h"]


def onnx_upload() -> SimpleUploadedFile:
    return SimpleUploadedFile("iris.onnx", build_iris_onnx(), content_type="application/octet-stream")


def reference_upload(content: bytes, filename: str = "reference.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(filename, content, content_type="application/octet-stream")


def kept_blobs(model_storage) -> list[str]:
    root = model_storage / reference_files.PREFIX
    return sorted(path.name for path in root.rglob("*") if path.is_file()) if root.exists() else []


def register(client, content: bytes, filename: str = "reference.csv", **fields):
    body = {"name": "iris", "version": "1.0.0", "file": onnx_upload(), "reference": reference_upload(content, filename)}
    return client.post(MODELS, {**body, **fields}, format="multipart")


def test_a_reference_given_with_the_upload_is_the_version_s_reference_once_validated(
    manage_client, read_client, model_storage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = register(manage_client, as_csv(iris_rows(200, seed=1)))
        assert response.status_code == 202, response.json()
        model_id = response.json()["id"]
        # Validated (at once in the tests), its `model.validated` not yet out: the file waits.
        waiting = read_client.get(f"{MODELS}/{model_id}/reference")
        assert waiting.status_code == 404 and waiting.json()["code"] == "reference_pending"
        pending = PendingReference.objects.get(model_id=model_id)
        assert (pending.filename, pending.size) == ("reference.csv", len(as_csv(iris_rows(200, seed=1))))
        assert kept_blobs(model_storage) == [pending.sha256]  # server-named: the hash, not the client's name

    assert MLModel.objects.get(pk=model_id).status == MLModel.Status.READY
    body = read_client.get(f"{MODELS}/{model_id}/reference").json()
    assert (body["source"], body["filename"], body["rows"], body["status"]) == ("file", "reference.csv", 200, "ready")
    assert {"X[0]", "X[1]", "X[2]", "X[3]", "label"} <= {feature["name"] for feature in body["features"]}
    assert not PendingReference.objects.exists()
    assert kept_blobs(model_storage) == []  # discarded once summarised

    # And drift is judged against it.
    (result,) = services.drift_compute(model=MLModel.objects.get(pk=model_id))
    assert result.window == "1h"


def test_the_upload_action_takes_a_reference_with_its_declared_format(
    manage_client, read_client, django_capture_on_commit_callbacks
):
    created = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0"}, format="json").json()
    content = as_csv(iris_rows(120, seed=2))
    response = manage_client.post(
        f"{MODELS}/{created['id']}/upload",
        {"file": onnx_upload(), "reference": reference_upload(content, "samples.txt"), "reference_format": "csv"},
        format="multipart",
    )
    assert response.status_code == 200, response.json()
    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.post(f"{MODELS}/{created['id']}/validate").json()["status"] == "ready"
    body = read_client.get(f"{MODELS}/{created['id']}/reference").json()
    assert (body["filename"], body["rows"], body["status"]) == ("samples.txt", 120, "ready")


def test_a_reference_that_does_not_fit_leaves_the_version_ready_and_says_why_naming_the_column(
    manage_client, read_client, ops_user, client, model_storage, django_capture_on_commit_callbacks
):
    rows = iris_rows(20, seed=1)
    with_species = np.hstack([rows, np.zeros((20, 1), dtype=np.float32)])
    with django_capture_on_commit_callbacks(execute=True):
        response = register(manage_client, as_csv(with_species, header=(*COLUMNS, "species")))
    model_id = response.json()["id"]

    assert read_client.get(f"{MODELS}/{model_id}").json()["status"] == "ready"
    response = read_client.get(f"{MODELS}/{model_id}/reference")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["error_code"], body["rows"], body["features"]) == (
        "failed", "reference_columns", 0, [],
    )  # fmt: skip
    assert "'species'" in body["error"]
    assert kept_blobs(model_storage) == [] and not PendingReference.objects.exists()

    # No drift against a reference that failed, and the run goes on.
    assert services.drift_run()["failed"] == 0
    assert not DriftResult.objects.filter(model_id=model_id).exists()
    drift = read_client.get(f"{MODELS}/{model_id}/drift").json()
    assert drift["reference"]["error_code"] == "reference_columns"

    client.force_login(ops_user)
    reference = Reference.objects.get(model_id=model_id)
    page = client.get(f"/admin/monitoring/reference/{reference.pk}/change/").content.decode()
    assert "reference_columns" in page and "species" in page

    # A reference that fits replaces it.
    good = SimpleUploadedFile("good.csv", as_csv(iris_rows(150, seed=3)))
    replaced = manage_client.put(f"{MODELS}/{model_id}/reference", {"file": good}, format="multipart").json()
    assert (replaced["status"], replaced["error_code"], replaced["rows"]) == ("ready", "", 150)


def test_the_drift_run_summarises_a_reference_whose_event_was_missed(manage_client, read_client):
    # Outside django_capture_on_commit_callbacks the test's transaction never commits: no
    # `model.validated` reaches monitoring, as when a process ends between the two.
    model_id = register(manage_client, as_csv(iris_rows(150, seed=4))).json()["id"]
    assert PendingReference.objects.filter(model_id=model_id).exists()
    assert services.drift_run()["references"] == 1
    assert read_client.get(f"{MODELS}/{model_id}/reference").json()["rows"] == 150
    assert not PendingReference.objects.exists()


@pytest.mark.parametrize(
    ("extra", "field", "code"),
    [
        ({"reference_format": "parquet"}, "reference_format", None),  # not a format
        ({"reference_format": "csv", "reference": None}, "reference_format", None),  # a format without a file
    ],
)
def test_bad_reference_fields_are_400_and_register_nothing(manage_client, model_storage, extra, field, code):
    body = {"name": "iris", "version": "1.0.0", "file": onnx_upload(), "reference": reference_upload(b"1,2,3,4\n")}
    body.update(extra)
    body = {name: value for name, value in body.items() if value is not None}
    response = manage_client.post(MODELS, body, format="multipart")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    assert MLModel.objects.count() == 0 and kept_blobs(model_storage) == []


def test_a_reference_whose_format_cannot_be_told_is_400_and_registers_nothing(manage_client, model_storage):
    response = register(manage_client, as_csv(iris_rows(10, seed=1)), filename="samples.txt")
    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_format"
    assert "reference_format" in response.json()["detail"]
    assert MLModel.objects.count() == 0 and kept_blobs(model_storage) == []


def test_a_reference_without_the_model_file_is_400(manage_client):
    response = manage_client.post(
        MODELS, {"name": "iris", "version": "1.0.0", "reference": reference_upload(b"1,2,3,4\n")}, format="multipart"
    )
    assert response.status_code == 400
    assert "reference" in response.json()["errors"]
    assert MLModel.objects.count() == 0


def test_the_admin_registers_a_model_with_a_reference_file(
    ops_user, client, read_client, django_capture_on_commit_callbacks
):
    client.force_login(ops_user)
    form = {
        "name": "iris",
        "version": "1.0.0",
        "description": "",
        "tags": "",
        "file": onnx_upload(),
        "reference": reference_upload(as_csv(iris_rows(110, seed=5)), "ref.csv"),
        "reference_format": "",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/registry/mlmodel/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    model = MLModel.objects.get(name="iris", version="1.0.0")
    assert model.status == MLModel.Status.READY
    reference = Reference.objects.get(model=model)
    assert (reference.filename, reference.rows, reference.error_code) == ("ref.csv", 110, "")

    form["reference"], form["version"] = reference_upload(b"1,2,3,4\n", "ref.txt"), "1.1.0"
    form["file"] = onnx_upload()
    page = client.post("/admin/registry/mlmodel/add/", form)
    assert page.status_code == 200
    assert "Cannot tell the file" in page.content.decode()
    assert not MLModel.objects.filter(version="1.1.0").exists()


def test_deleting_a_version_discards_its_waiting_reference_file(
    manage_client, model_storage, django_capture_on_commit_callbacks
):
    created = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0"}, format="json").json()
    response = manage_client.post(
        f"{MODELS}/{created['id']}/upload",
        {"file": onnx_upload(), "reference": reference_upload(as_csv(iris_rows(10, seed=1)))},
        format="multipart",
    )
    assert response.status_code == 200
    assert len(kept_blobs(model_storage)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.delete(f"{MODELS}/{created['id']}").status_code == 204
    assert kept_blobs(model_storage) == []


def test_the_registry_takes_the_formats_a_batch_job_takes():
    assert reference_files.FORMATS == batch_io.FORMATS
    assert reference_files.SUFFIXES == batch_io.SUFFIXES
