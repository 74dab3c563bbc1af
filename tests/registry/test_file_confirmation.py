"""A model file one process cannot read is confirmed before anyone condemns the model.

The node that finds a file missing or changed answers 503 and leaves the model alone
(registry.services.model_file_report); the confirmation (the task `registry.confirm_file`, run
here in the test's thread as a worker runs it) reads the object from the storage itself, reads a
mismatch a second time, refuses to judge from a storage that is not this deployment's, and only
then marks the model `error`. A download damaged in transit is fetched again by the node itself.

The storages below that damage bytes stand for a network or disk outside our system: a transfer
gone wrong once, or always.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage

from inference.sessions import get_pool
from registry import services
from registry.models import MLModel
from registry.storage import ModelStore
from registry.tasks import confirm_model_file
from tests.inference.api import predict, predict_ok
from tests.registry.versions import scaled_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def predict_client(client_for):
    return client_for("read", "predict", name="predictor")


X = {"X": [[1.0, 2.0, 3.0]]}
Status = MLModel.Status


def _damaged(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


class FirstReadDamaged(FileSystemStorage):
    """The model folder, whose first read of each model file arrives damaged."""

    seen: ClassVar[set[str]] = set()

    def __init__(self, **kwargs):
        super().__init__(location=django_settings.MODEL_STORAGE_PATH, **kwargs)

    def _open(self, name, mode="rb"):
        data = super()._open(name, mode).read()
        if name.endswith(".onnx") and name not in self.seen:
            self.seen.add(name)
            data = _damaged(data)
        return ContentFile(data, name)


class RemoteFolder(Storage):
    """A remote storage over a folder (not a FileSystemStorage, so read through the node's cache
    as S3 is) whose downloads of model files arrive damaged: the first of each (`DAMAGE =
    "first"`) or every one (`"always"`)."""

    DAMAGE: ClassVar[str] = "first"
    seen: ClassVar[set[str]] = set()

    def __init__(self):
        self.folder = FileSystemStorage(location=django_settings.MODEL_STORAGE_PATH)

    @property
    def location(self) -> str:
        return self.folder.location

    def _open(self, name, mode="rb"):
        with self.folder.open(name, mode) as handle:
            data = handle.read()
        if name.endswith(".onnx") and (self.DAMAGE == "always" or name not in self.seen):
            self.seen.add(name)
            data = _damaged(data)
        return ContentFile(data, name)

    def _save(self, name, content):
        return self.folder._save(name, content)

    def exists(self, name):
        return self.folder.exists(name)

    def delete(self, name):
        self.folder.delete(name)

    def listdir(self, path):
        return self.folder.listdir(path)


def use_storage(settings, backend: type, tmp_path) -> None:
    backend.seen = set()
    settings.STORAGES = {**settings.STORAGES, "models": {"BACKEND": f"{__name__}.{backend.__name__}"}}
    settings.MODEL_CACHE_PATH = tmp_path / "cache"


def status_of(model: MLModel) -> tuple[str, str]:
    model.refresh_from_db()
    return model.status, model.error_code


def test_a_missing_file_confirmed_by_the_task_marks_the_model_error():
    model = scaled_version("scaler", "1.0.0", 2.0)
    ModelStore().path_for(model.file_sha256).unlink()

    assert confirm_model_file(str(model.pk), model.file_sha256) == "file_missing"

    assert status_of(model) == (Status.ERROR, "file_missing")
    assert "validate the version again" in model.error_message


def test_a_file_the_storage_still_holds_leaves_the_model_ready(django_capture_on_commit_callbacks):
    """The node's view was wrong (a wrong prefix, a passing fault): nothing changes."""
    model = scaled_version("scaler", "1.0.0", 2.0)
    with django_capture_on_commit_callbacks() as asked:
        services.model_file_report(model=model, code="file_missing")
    assert len(asked) == 1

    assert confirm_model_file(str(model.pk), model.file_sha256) == "present"
    assert status_of(model) == (Status.READY, "")


def test_a_changed_file_read_twice_marks_checksum_mismatch():
    model = scaled_version("scaler", "1.0.0", 2.0)
    path = ModelStore().path_for(model.file_sha256)
    path.write_bytes(_damaged(path.read_bytes()))

    assert confirm_model_file(str(model.pk), model.file_sha256) == "checksum_mismatch"
    assert status_of(model) == (Status.ERROR, "checksum_mismatch")


def test_a_mismatch_read_right_the_second_time_condemns_nothing(settings, tmp_path):
    model = scaled_version("scaler", "1.0.0", 2.0)
    use_storage(settings, FirstReadDamaged, tmp_path)

    assert confirm_model_file(str(model.pk), model.file_sha256) == "present"
    assert status_of(model) == (Status.READY, "")


def test_a_download_damaged_in_transit_is_fetched_again_and_served(settings, tmp_path, predict_client):
    use_storage(settings, RemoteFolder, tmp_path)
    model = scaled_version("scaler", "1.0.0", 2.0)
    ModelStore().forget_local(model.file_sha256)  # a node that never had it
    RemoteFolder.seen = set()

    answer = predict_ok(predict_client, model.pk, X)
    assert answer["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    assert status_of(model) == (Status.READY, "")


def test_a_download_damaged_every_time_is_503_and_marked_only_by_the_confirmation(
    settings, tmp_path, predict_client, django_capture_on_commit_callbacks
):
    use_storage(settings, RemoteFolder, tmp_path)
    model = scaled_version("scaler", "1.0.0", 2.0)
    ModelStore().forget_local(model.file_sha256)
    get_pool().clear()
    RemoteFolder.DAMAGE = "always"
    try:
        with django_capture_on_commit_callbacks() as asked:
            response = predict(predict_client, model.pk, X)
        assert (response.status_code, response.json()["code"]) == (503, "model_file_unavailable")
        assert len(asked) == 1
        assert status_of(model) == (Status.READY, "")
        assert not ModelStore().path_for(model.file_sha256).exists()  # no damaged copy kept

        assert confirm_model_file(str(model.pk), model.file_sha256) == "checksum_mismatch"
    finally:
        RemoteFolder.DAMAGE = "first"
    assert status_of(model) == (Status.ERROR, "checksum_mismatch")


def test_a_worker_whose_storage_is_not_this_deployments_condemns_nothing(settings, tmp_path, caplog):
    model = scaled_version("scaler", "1.0.0", 2.0)
    settings.MODEL_STORAGE_PATH = tmp_path / "another-folder"  # a worker started with other settings

    assert confirm_model_file(str(model.pk), model.file_sha256) == "unverified"

    assert status_of(model) == (Status.READY, "")
    assert any("not this deployment's" in record.getMessage() for record in caplog.records)


def test_confirmations_are_asked_once_per_model_and_file_in_a_window(django_capture_on_commit_callbacks):
    first = scaled_version("scaler", "1.0.0", 2.0)
    second = scaled_version("scaler", "1.1.0", 3.0)
    with django_capture_on_commit_callbacks() as asked:
        for _ in range(3):
            services.model_file_report(model=first, code="file_missing")
        services.model_file_report(model=first, code="checksum_mismatch")
        services.model_file_report(model=second, code="file_missing")
    assert len(asked) == 2


def test_a_model_no_longer_ready_or_with_another_file_is_left_alone():
    archived = scaled_version("scaler", "1.0.0", 2.0)
    MLModel.objects.filter(pk=archived.pk).update(status=Status.ARCHIVED)
    ModelStore().path_for(archived.file_sha256).unlink()
    assert confirm_model_file(str(archived.pk), archived.file_sha256) == "skipped"
    assert status_of(archived) == (Status.ARCHIVED, "")

    other = scaled_version("scaler", "1.1.0", 3.0)
    assert confirm_model_file(str(other.pk), archived.file_sha256) == "skipped"  # not its file
    assert status_of(other) == (Status.READY, "")


@pytest.mark.parametrize(
    ("model_id", "sha256"),
    [
        ("not-a-uuid", "0" * 64),
        ("", ""),
        ("00000000-0000-4000-8000-000000000000", "0" * 64),  # no such model
        ("' OR 1=1 --", "../../etc/passwd"),
    ],
)
def test_a_confirmation_with_bad_arguments_does_nothing(model_id, sha256):
    model = scaled_version("scaler", "1.0.0", 2.0)
    assert confirm_model_file(model_id, sha256) == "skipped"
    assert status_of(model) == (Status.READY, "")


def test_a_report_with_an_unknown_code_is_refused():
    model = scaled_version("scaler", "1.0.0", 2.0)
    with pytest.raises(ValueError, match="file_missing"):
        services.model_file_report(model=model, code="bogus")
