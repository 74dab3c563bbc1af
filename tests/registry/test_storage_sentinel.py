"""A process whose storage settings cannot see this deployment's files is not ready.

`migrate` writes the sentinel (`_modelforge/sentinel.json`, holding the database's token) into
the model storage; readiness (/api/v1/ready, /v2/health/ready), /api/v1/health and
`check --deploy` verify it, or else find some of the files the database lists. A wrong folder
fails, saying what is wrong in the log and the check, and only a short reason to the
unauthenticated probe. One genuinely deleted file does not take the node out of service.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from inference.sessions import get_pool
from registry.models import DeploymentIdentity, MLModel
from registry.sentinel import deployment_token, sentinel_bytes, verdicts
from registry.storage import SENTINEL_NAME, ModelStore
from registry.tasks import confirm_model_file
from tests.granian_server import manage
from tests.inference.api import predict
from tests.registry.versions import scaled_version
from tests.s3_server import MotoServer, storage_options

pytestmark = pytest.mark.django_db

X = {"X": [[1.0, 2.0, 3.0]]}
NOT_OURS = "model storage does not hold this deployment's files (see the server log)"


@pytest.fixture
def predict_client(client_for):
    return client_for("read", "predict", name="predictor")


def ready(client) -> tuple[int, str]:
    response = client.get("/api/v1/ready")
    return response.status_code, response.json()["status"]


def sentinel_path(root: Path) -> Path:
    return root / SENTINEL_NAME


def elsewhere(settings, tmp_path) -> Path:
    """This process's storage settings now point at another (empty) folder."""
    folder = tmp_path / "another-folder"
    folder.mkdir()
    settings.MODEL_STORAGE_PATH = folder
    return folder


def test_migrate_writes_the_sentinel_with_the_databases_token(model_storage):
    sentinel_path(model_storage).unlink()
    out = io.StringIO()

    call_command("migrate", stdout=out)

    written = json.loads(sentinel_path(model_storage).read_bytes())
    assert written["deployment"] == str(DeploymentIdentity.objects.get().token)
    assert "Model storage sentinel written to the folder" in out.getvalue()


def test_migrate_leaves_another_deployments_sentinel_where_this_one_has_files(model_storage):
    scaled_version("scaler", "1.0.0", 2.0)
    foreign = sentinel_bytes("11111111-1111-4111-8111-111111111111")
    sentinel_path(model_storage).write_bytes(foreign)
    out = io.StringIO()

    call_command("migrate", stdout=out)

    assert sentinel_path(model_storage).read_bytes() == foreign
    assert "holds another deployment's sentinel and was left alone" in out.getvalue()


def test_migrate_of_a_database_without_files_takes_the_storage_over(model_storage):
    sentinel_path(model_storage).write_bytes(sentinel_bytes("11111111-1111-4111-8111-111111111111"))
    call_command("migrate", stdout=io.StringIO())
    assert json.loads(sentinel_path(model_storage).read_bytes())["deployment"] == deployment_token()


def test_the_right_storage_is_ready(api_client):
    scaled_version("scaler", "1.0.0", 2.0)
    assert ready(api_client) == (200, "ready")
    assert api_client.get("/v2/health/ready").status_code == 200
    assert api_client.get("/api/v1/health").json()["components"]["storage"]["ok"] is True


def test_a_node_started_on_another_folder_is_not_ready_and_says_why_in_the_log(settings, tmp_path, api_client, caplog):
    model = scaled_version("scaler", "1.0.0", 2.0)
    folder = elsewhere(settings, tmp_path)

    with caplog.at_level(logging.ERROR, logger="registry.sentinel"):
        assert ready(api_client) == (503, NOT_OURS)
    v2 = api_client.get("/v2/health/ready")
    assert (v2.status_code, v2.json()["code"]) == (503, "not_ready")
    assert NOT_OURS in v2.json()["error"]
    health = api_client.get("/api/v1/health")
    assert health.status_code == 503
    assert health.json()["components"]["storage"] == {"ok": False, "detail": NOT_OURS}
    for body in (v2.content, health.content, api_client.get("/api/v1/ready").content):
        assert str(folder).encode() not in body and model.file_sha256.encode() not in body

    logged = " ".join(record.getMessage() for record in caplog.records)
    assert f"the folder {folder}" in logged  # which storage,
    assert f"deployment {deployment_token()} was expected" in logged  # what was expected,
    assert model.file_sha256 in logged  # and what was looked for
    assert len([r for r in caplog.records if "model storage check failed" in r.getMessage()]) == 1


def test_a_node_on_another_folder_answers_503_and_never_marks_the_model(
    settings, tmp_path, predict_client, django_capture_on_commit_callbacks
):
    model = scaled_version("scaler", "1.0.0", 2.0)
    elsewhere(settings, tmp_path)
    with django_capture_on_commit_callbacks() as asked:
        response = predict(predict_client, model.pk, X)
    assert (response.status_code, response.json()["code"]) == (503, "model_file_unavailable")
    assert len(asked) == 1
    # The confirmation, run by a worker with the same wrong settings, refuses to judge.
    assert confirm_model_file(str(model.pk), model.file_sha256) == "unverified"
    model.refresh_from_db()
    assert model.status == MLModel.Status.READY


def test_a_database_without_files_is_ready_on_any_storage(settings, tmp_path, api_client):
    folder = elsewhere(settings, tmp_path)
    assert ready(api_client) == (200, "ready")
    assert not sentinel_path(folder).exists()  # a node never writes the sentinel it checks


def test_a_storage_without_sentinel_that_holds_the_files_is_ready(model_storage, api_client):
    """A deployment migrated before sentinels, between its upgrade and its next migrate."""
    scaled_version("scaler", "1.0.0", 2.0)
    sentinel_path(model_storage).unlink()
    assert ready(api_client) == (200, "ready")
    assert not sentinel_path(model_storage).exists()


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (sentinel_bytes("11111111-1111-4111-8111-111111111111"), "the sentinel of deployment 11111111-"),
        (b"\x00\xff not json", "a sentinel that cannot be read"),
        (b'{"deployment": 42}', "a sentinel that cannot be read"),
        (b"[]", "a sentinel that cannot be read"),
    ],
)
def test_a_foreign_or_unreadable_sentinel_without_the_files_fails_the_deploy_check(
    settings, tmp_path, api_client, content, found
):
    model = scaled_version("scaler", "1.0.0", 2.0)
    folder = elsewhere(settings, tmp_path)
    sentinel_path(folder).parent.mkdir(parents=True)
    sentinel_path(folder).write_bytes(content)

    assert ready(api_client) == (503, NOT_OURS)
    with pytest.raises(SystemCheckError) as failed:
        call_command("check", "--deploy", "--tag", "storage")
    message = str(failed.value)
    assert "registry.E001" in message
    assert f"the folder {folder}" in message and found in message
    assert ModelStore.name_for(model.file_sha256) in message


def test_the_deploy_check_passes_on_the_right_storage(model_storage):
    scaled_version("scaler", "1.0.0", 2.0)
    call_command("check", "--deploy", "--tag", "storage", stdout=io.StringIO())
    sentinel_path(model_storage).unlink()  # files found: still this deployment's storage
    call_command("check", "--deploy", "--tag", "storage", stdout=io.StringIO())


def test_the_deploy_check_without_a_migrated_database_only_informs(tmp_path):
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
    }
    result = manage(environment, "check", "--deploy", "--tag", "storage", "--fail-level", "WARNING", check=False)
    assert result.returncode == 0, result.stderr
    assert "registry.I001" in result.stdout + result.stderr


def test_one_deleted_file_keeps_the_node_ready_and_the_confirmation_takes_the_model_out(
    model_storage, api_client, predict_client
):
    model = scaled_version("scaler", "1.0.0", 2.0)
    ModelStore().path_for(model.file_sha256).unlink()

    response = predict(predict_client, model.pk, X)
    assert (response.status_code, response.json()["code"]) == (503, "model_file_unavailable")
    # Checked again at once: the sentinel is there, so the node serves on, saying it is degraded.
    assert ready(api_client) == (200, "ready; degraded: model files could not be read here lately (see /metrics)")

    assert confirm_model_file(str(model.pk), model.file_sha256) == "file_missing"
    assert ready(api_client)[0] == 200
    refused = predict(predict_client, model.pk, X)
    assert (refused.status_code, refused.json()["code"]) == (409, "model_not_ready")


def test_a_file_failure_checks_the_nodes_storage_again_at_once(model_storage, api_client, predict_client):
    """The whole storage gone from under a running node (sentinel and files): readiness says so
    at the first file it cannot read, not RECHECK_SECONDS later."""
    model = scaled_version("scaler", "1.0.0", 2.0)
    assert ready(api_client) == (200, "ready")  # verified, and remembered
    sentinel_path(model_storage).unlink()
    ModelStore().path_for(model.file_sha256).unlink()
    get_pool().clear()
    assert ready(api_client) == (200, "ready")  # not checked again yet

    assert predict(predict_client, model.pk, X).status_code == 503
    assert ready(api_client) == (503, NOT_OURS)


def test_metrics_count_the_files_a_node_could_not_read(model_storage, predict_client, client_for):
    from tests.inference.test_metrics import scrape, value

    model = scaled_version("counted", "1.0.0", 2.0)
    ModelStore().path_for(model.file_sha256).unlink()
    labels = {"model": "counted", "version": "1.0.0", "code": "file_missing"}
    before = value(scrape(client_for("read")), "modelforge_model_file_failures_total", **labels)
    for _ in range(2):
        assert predict(predict_client, model.pk, X).status_code == 503
    after = value(scrape(client_for("read")), "modelforge_model_file_failures_total", **labels)
    assert after == before + 2


# --- a storage that cannot be reached -------------------------------------------------------------


@pytest.fixture
def own_moto(tmp_path):
    server = MotoServer(tmp_path / "moto.log").start()
    yield server
    server.stop()


def test_a_storage_unreachable_at_start_is_not_ready_but_an_outage_later_is_served_through(
    settings, tmp_path, own_moto, api_client
):
    settings.STORAGES = {**settings.STORAGES, "models": storage_options(own_moto, own_moto.new_bucket())}
    settings.MODEL_CACHE_PATH = tmp_path / "cache"
    call_command("migrate", stdout=io.StringIO())  # the sentinel, in the bucket
    scaled_version("scaler", "1.0.0", 2.0)
    assert ready(api_client) == (200, "ready")

    own_moto.stop()
    verdicts.recheck()
    # It serves what it has loaded and cached.
    assert ready(api_client) == (200, "ready; degraded: model storage unreachable, serving what this node has")

    verdicts.forget()  # a process starting now
    assert ready(api_client) == (503, "model storage unreachable")
