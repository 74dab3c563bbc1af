"""The bar: a receiver on loopback subscribed to every event type gets each once, signed, from
the real producers (a model uploaded and validated, one that fails, an alias set, a job that
completes and one that fails, the threshold watch); drift and rollout events, produced by apps
built elsewhere, are raised directly."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from core import events
from core.embedded_runner import runner
from core.events import EVENT_TYPES
from inference.models import ServingMinute
from monitoring.threshold_watch import threshold_watch
from registry.models import MLModel
from tests.jobs.api import create_file, create_inline, created, wait_finished
from tests.jobs.factories import iris_rows, jsonl_bytes
from tests.registry.onnx_factories import make_iris_model
from tests.registry.test_models_api import onnx_file
from webhooks import services

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_event_type_arrives_once_signed(manage_client, client_for, receiver, settings, tmp_path):
    settings.JOB_STORAGE_PATH = tmp_path / "jobs"
    services.subscription_create(
        name="everything", url=receiver.url(), event_types=list(EVENT_TYPES), secret=receiver.secret
    )

    # model.validated, model.failed: uploads validated by the registry.
    iris = manage_client.post(
        "/api/v1/models",
        {"name": "iris", "version": "1.0.0", "file": onnx_file(make_iris_model(zipmap=False))},
        format="multipart",
    ).json()
    assert iris["status"] == "ready"
    broken = manage_client.post(
        "/api/v1/models", {"name": "bad", "version": "1.0.0", "file": onnx_file(b"not onnx")}, format="multipart"
    ).json()
    assert broken["status"] == "error"

    # alias.moved: the alias created.
    response = manage_client.put("/api/v1/models/by-name/iris/aliases/production", {"version": "1.0.0"}, format="json")
    assert response.status_code in (200, 201), response.json()

    # job.completed and job.failed, on the embedded runner.
    jobs = client_for("predict", name="jobs")
    good = created(create_inline(jobs, iris["id"], {"X": [[5.1, 3.5, 1.4, 0.2]]}))
    assert wait_finished(jobs, good["id"]).status_code == 200
    settings.JOB_CHUNK_ROWS = 100
    lines = jsonl_bytes(iris_rows(300)).splitlines(keepends=True)
    lines[250] = b'{"X": [5.1, 3.5, 1.4]}\n'  # three features: the job fails at this row
    bad = created(create_file(jobs, iris["id"], b"".join(lines), "rows.jsonl"))
    assert wait_finished(jobs, bad["id"]).status_code == 409

    # threshold.crossed: half the requests of the last minute were server errors.
    ServingMinute.objects.create(
        model=MLModel.objects.get(pk=iris["id"]),
        minute=timezone.now().replace(second=0, microsecond=0),
        requests=100,
        errors=50,
        server_errors=50,
        le_1=100,
    )
    assert threshold_watch() == {"judged": 1, "crossed": 1}

    # Drift and rollouts: their producers are built elsewhere.
    for event_type in EVENT_TYPES:
        if event_type.startswith(("drift.", "rollout.")):
            events.emit(event_type, {"name": "iris", "version": "1.0.0"})

    received = receiver.wait_for(lambda items: len(items) >= len(EVENT_TYPES))
    runner.wait_idle()
    assert len(receiver.received) == len(EVENT_TYPES)
    assert Counter(item.event_type for item in received) == dict.fromkeys(EVENT_TYPES, 1)
    assert all(item.signature_ok for item in received)
    by_type = {item.event_type: item.event["data"] for item in received}
    assert by_type["model.validated"] == {
        "model_id": iris["id"],
        "name": "iris",
        "version": "1.0.0",
        "status": "ready",
    }
    assert by_type["model.failed"]["error_code"] == "invalid_model"
    assert by_type["alias.moved"] == {
        "name": "iris",
        "alias": "production",
        "action": "created",
        "from_version": None,
        "to_version": "1.0.0",
        "actor": "key:ops",
    }
    assert (by_type["job.completed"]["job_id"], by_type["job.completed"]["status"]) == (good["id"], "completed")
    assert (by_type["job.failed"]["job_id"], by_type["job.failed"]["error_code"]) == (bad["id"], "invalid_row")
    crossed = by_type["threshold.crossed"]
    assert (crossed["name"], crossed["version"], crossed["from_level"], crossed["to_level"]) == (
        "iris",
        "1.0.0",
        "green",
        "red",
    )
    assert crossed["reason"].startswith("server-error rate 50.0%")
