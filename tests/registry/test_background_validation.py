"""Validation runs in the background, never in the request (issue 15): a multipart create and
POST .../validate answer 202 with status `validating` and the model's URL, and the outcome
comes later, from the embedded runner's threads without a broker (as `make run` does) or from
a real Celery worker with one. A delivery is claimed once; the sweeper hands over again what a
down broker or a lost worker left behind.

These tests commit (transactional), so that the runner's threads and the worker see the rows,
and turn off the tests' eager validation (tests/conftest.py).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from core.embedded_runner import runner
from registry import services
from registry.models import MLModel
from tests.inference.factories import make_scaled_model
from tests.jobs.conftest import _jobs, celery_stack, celery_worker, point_celery_at  # noqa: F401 (fixtures)
from tests.registry.polling import wait_validated

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = "/api/v1/models"
Status = MLModel.Status


@pytest.fixture(autouse=True)
def _in_the_background(settings):
    settings.VALIDATION_EAGER = False
    settings.JOB_EMBEDDED_THREADS = 1


def onnx_file(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")


def read(client, model_id: str):
    return lambda: client.get(f"{MODELS}/{model_id}").json()


@pytest.fixture
def held_runner():
    """The embedded runner's only thread, held until the test releases it: whatever is handed
    over meanwhile waits in its queue (a busy runner), deterministically."""
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(120)

    runner.submit(hold)
    assert holding.wait(60)
    yield release
    release.set()


def test_multipart_create_answers_202_validating_and_the_runner_validates_later(manage_client, held_runner):
    response = manage_client.post(
        MODELS, {"name": "scaler", "version": "1.0.0", "file": onnx_file(make_scaled_model(2.0))}, format="multipart"
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "validating"
    assert (body["input_schema"], body["validated_at"]) == ([], None)
    assert response["Location"] == f"http://testserver{MODELS}/{body['id']}"
    waiting = MLModel.objects.get(pk=body["id"])
    assert (waiting.status, waiting.validation_started_at) == (Status.VALIDATING, None)  # not taken yet

    held_runner.set()
    done = wait_validated(read(manage_client, body["id"]))
    assert done["status"] == "ready"
    assert [spec["name"] for spec in done["input_schema"]] == ["X"]
    row = MLModel.objects.get(pk=body["id"])
    assert row.validation_attempts == 1
    assert row.first_ready_at is not None


def test_revalidate_answers_202_and_ends_ready_again(manage_client):
    created = manage_client.post(
        MODELS, {"name": "scaler", "version": "1.0.0", "file": onnx_file(make_scaled_model(2.0))}, format="multipart"
    ).json()
    assert wait_validated(read(manage_client, created["id"]))["status"] == "ready"

    response = manage_client.post(f"{MODELS}/{created['id']}/validate")

    assert response.status_code == 202
    assert response["Location"].endswith(f"{MODELS}/{created['id']}")
    assert response.json()["status"] in ("validating", "ready")  # the runner may already be done
    assert wait_validated(read(manage_client, created["id"]))["status"] == "ready"


def test_a_broken_file_ends_in_error_with_its_code(manage_client):
    created = manage_client.post(
        MODELS, {"name": "broken", "version": "1.0.0", "file": onnx_file(b"not onnx")}, format="multipart"
    ).json()
    assert created["status"] == "validating"
    done = wait_validated(read(manage_client, created["id"]))
    assert (done["status"], done["error_code"]) == ("error", "invalid_model")
    assert done["error_message"]


def test_a_second_delivery_does_nothing(manage_client, held_runner):
    created = manage_client.post(
        MODELS, {"name": "scaler", "version": "1.0.0", "file": onnx_file(make_scaled_model(2.0))}, format="multipart"
    ).json()
    again = manage_client.post(f"{MODELS}/{created['id']}/validate")  # asked twice: handed over twice
    assert (again.status_code, again.json()["status"]) == (202, "validating")

    held_runner.set()
    assert runner.wait_idle(timeout=120)
    row = MLModel.objects.get(pk=created["id"])
    assert (row.status, row.validation_attempts) == (Status.READY, 1)  # one run, one outcome
    assert services.model_validation_run(model_id=row.pk) is None  # a late copy finds nothing to do


def test_the_sweeper_hands_over_a_validation_the_broker_never_got(manage_client, settings):
    # The broker is down: nothing listens on port 1. The setting alone is not enough: this
    # process's Celery app keeps its own connections, and with them a message would reach the
    # real broker and the session's shared worker (tests/jobs/conftest.py).
    from core.celery_app import app

    dead = "redis://127.0.0.1:1/0"
    previous = app.conf.broker_read_url, app.conf.broker_write_url, app.conf.broker_transport_options
    settings.CELERY_BROKER_URL = dead
    point_celery_at(dead, "", settings)
    try:
        response = manage_client.post(
            MODELS,
            {"name": "scaler", "version": "1.0.0", "file": onnx_file(make_scaled_model(2.0))},
            format="multipart",
        )
    finally:
        app.conf.update(broker_read_url=previous[0], broker_write_url=previous[1], broker_transport_options=previous[2])
        app.close()
        app.amqp._producer_pool = None
    assert (response.status_code, response.json()["status"]) == (202, "validating")  # accepted all the same
    model_id = response.json()["id"]
    assert MLModel.objects.get(pk=model_id).validation_started_at is None

    settings.CELERY_BROKER_URL = ""  # the broker is "back" (here: the embedded runner)
    assert services.validations_sweep() == {"waiting": 0, "stuck": 0}  # within the grace period
    later = timezone.now() + timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS + 1)
    assert services.validations_sweep(now=later) == {"waiting": 1, "stuck": 0}

    validated = wait_validated(read(manage_client, model_id))
    assert validated["status"] == "ready", validated


def test_the_sweeper_hands_over_a_validation_whose_worker_was_lost(manage_client, settings):
    model = services.model_create(name="scaler", version="1.0.0")
    model = services.model_upload(model=model, staged=services.stage_uploaded_file(onnx_file(make_scaled_model(2.0))))
    # What a worker killed mid-run leaves: validating, taken (attempt 1) long ago, no outcome.
    taken = timezone.now() - timedelta(seconds=settings.VALIDATION_STUCK_AFTER_SECONDS + 1)
    MLModel.objects.filter(pk=model.pk).update(
        status=Status.VALIDATING, validation_started_at=taken, validation_attempts=1
    )
    assert services.validations_sweep() == {"waiting": 0, "stuck": 1}
    assert runner.wait_idle(timeout=120)

    row = MLModel.objects.get(pk=model.pk)
    assert (row.status, row.validation_attempts) == (Status.READY, 2)


def test_a_recent_take_is_left_to_its_run_and_exhausted_attempts_fail(settings):
    model = services.model_create(name="scaler", version="1.0.0")
    model = services.model_upload(model=model, staged=services.stage_uploaded_file(onnx_file(make_scaled_model(2.0))))
    MLModel.objects.filter(pk=model.pk).update(
        status=Status.VALIDATING, validation_started_at=timezone.now(), validation_attempts=1
    )
    assert services.model_validation_run(model_id=model.pk) is None  # another run holds it
    assert services.validations_sweep() == {"waiting": 0, "stuck": 0}
    assert MLModel.objects.get(pk=model.pk).status == Status.VALIDATING

    lost = timezone.now() - timedelta(seconds=settings.VALIDATION_STUCK_AFTER_SECONDS + 1)
    MLModel.objects.filter(pk=model.pk).update(
        validation_started_at=lost, validation_attempts=settings.JOB_MAX_ATTEMPTS
    )
    assert services.model_validation_run(model_id=model.pk) is None
    row = MLModel.objects.get(pk=model.pk)
    assert (row.status, row.error_code) == (Status.ERROR, "validation_crashed")
    assert f"after {settings.JOB_MAX_ATTEMPTS} attempts" in row.error_message


def test_a_validation_on_a_celery_worker(celery_worker, manage_client):  # noqa: F811 (the fixture)
    response = manage_client.post(
        MODELS, {"name": "scaler", "version": "1.0.0", "file": onnx_file(make_scaled_model(2.0))}, format="multipart"
    )
    assert (response.status_code, response.json()["status"]) == (202, "validating")

    done = wait_validated(read(manage_client, response.json()["id"]))
    assert done["status"] == "ready"
    assert [spec["name"] for spec in done["input_schema"]] == ["X"]
    assert "registry.validate[" in celery_worker.log()  # it ran there, not here
