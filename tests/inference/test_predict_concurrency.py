"""Many predictions at once on one model, from threads, as a threaded server runs them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection
from numpy.testing import assert_allclose
from rest_framework.test import APIClient

from inference.history import history
from inference.models import Prediction
from inference.sessions import get_pool
from tests.inference.api import predict
from tests.inference.factories import make_iris_model, reference_run

THREADS = 50


@pytest.mark.django_db(transaction=True)
def test_parallel_predictions_each_get_their_own_answer(ready_model, make_key):
    data = make_iris_model(zipmap=False)
    model = ready_model(data, name="iris")
    _, raw_key = make_key("predict", name="load")
    rows = np.random.default_rng(50).uniform(0.1, 8.0, size=(THREADS, 2, 4)).astype(np.float32)
    barrier = threading.Barrier(THREADS)
    answers: dict[int, tuple[int, dict]] = {}

    def call(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        try:
            barrier.wait(timeout=30)
            response = predict(client, model["id"], {"X": rows[index]})
            answers[index] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(answers) == list(range(THREADS))
    for index, (status, body) in answers.items():
        assert status == 200, body
        assert body["cached"] is False
        expected = reference_run(data, {"X": rows[index]})
        assert body["output_data"]["label"] == expected["label"].tolist(), index
        assert_allclose(body["output_data"]["probabilities"], expected["probabilities"], rtol=1e-6, err_msg=str(index))
    # The first requests raced to load the session: it was loaded once and shared.
    assert get_pool().loaded() == [model["file_sha256"]]
    assert history.flush() == THREADS
    assert Prediction.objects.filter(model_id=model["id"]).count() == THREADS
