"""The same name and version uploaded twice at once (REFERENCE §5): one wins with a ready
model, the other gets 409 duplicate_version; one row, one stored file, no temp file left,
and the winner serves."""

from __future__ import annotations

import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from registry.models import MLModel
from tests.inference.factories import make_scaled_model
from tests.security.battery import assert_still_serves, via_fastpath

pytestmark = pytest.mark.django_db(transaction=True)

RACERS = 4


def test_same_name_and_version_uploaded_at_once_one_wins(make_key, model_storage):
    _, manage = make_key("read", "manage", name="ops")
    barrier = threading.Barrier(RACERS)
    answers: list = []

    def upload(factor: float) -> None:
        # Different bytes per racer: the loser's file must not replace or join the winner's.
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {manage}")
        file = SimpleUploadedFile("model.onnx", make_scaled_model(factor), content_type="application/octet-stream")
        barrier.wait()
        try:
            answers.append(
                client.post("/api/v1/models", {"name": "race", "version": "1.0.0", "file": file}, format="multipart")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(float(index + 2),)) for index in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] + [409] * (RACERS - 1), [answer.content[:200] for answer in answers]
    assert {answer.json()["code"] for answer in answers if answer.status_code == 409} == {"duplicate_version"}
    (winner,) = [answer.json() for answer in answers if answer.status_code == 202]
    assert winner["status"] == "ready"
    assert MLModel.objects.filter(name="race").count() == 1
    sha = winner["file_sha256"]
    assert [path.name for path in model_storage.rglob("*.onnx")] == [f"{sha}.onnx"]
    assert list((model_storage / "tmp").iterdir()) == []
    _, predict = make_key("predict")
    reply = assert_still_serves(via_fastpath, winner["id"], predict, row={"X": [[1.0, 2.0, 3.0]]})
    factor = reply["output_data"]["Y"][0][0]
    assert factor in {float(index + 2) for index in range(RACERS)}
