"""Dynamic batching: concurrent requests merged into one run, split back exactly."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from inference.batching import BatchConfig, ModelBatcher
from inference.errors import QueueFull
from inference.sessions import LoadedSession

MODELS = "/api/v1/models"
RNG = np.random.default_rng(7)
WEIGHTS = RNG.standard_normal((8, 4)).astype(np.float32)
BIAS = RNG.standard_normal(4).astype(np.float32)


def _model(graph) -> bytes:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def dense_model() -> bytes:
    """Y = X @ W + b, X [-1, 8]: every output row depends on its input row only."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "b"], ["Y"])],
        "dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    return _model(graph)


def batch_sum_model() -> bytes:
    """Sums over the batch: merging requests would change every answer."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["Y"], keepdims=1)],
        "batch_sum",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])],
    )
    return _model(graph)


def gather_model() -> bytes:
    """Y = X[row, idx[row]]: an index out of range fails at run time, after validation."""
    graph = helper.make_graph(
        [helper.make_node("GatherElements", ["X", "idx"], ["Y"], axis=1)],
        "gather",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 1])],
    )
    return _model(graph)


def slow_model(iterations: int) -> bytes:
    """Adds 1 to X `iterations` times in a Loop: a model that keeps the scheduler busy."""
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[one],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "X"], ["Y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trip"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return _model(graph)


@pytest.fixture
def batched_model(make_key):
    """register(data, **batching) -> (model id, predict key); registered through the API."""
    _, manage_raw = make_key("read", "manage")
    _, predict_raw = make_key("predict")
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {manage_raw}")

    def register(data: bytes, name: str, **batching):
        upload = SimpleUploadedFile("m.onnx", data)
        response = admin.post(MODELS, {"name": name, "version": "1.0.0", "file": upload}, format="multipart")
        assert response.json()["status"] == "ready", response.json()
        model_id = response.json()["id"]
        patch = admin.patch(f"{MODELS}/{model_id}", {"batching": {"enabled": True, **batching}}, format="json")
        assert patch.status_code == 200, patch.json()
        assert patch.json()["batching"]["enabled"] is True
        return model_id, predict_raw

    return register


def counter(name: str, model: str) -> float:
    """The process's Prometheus counter modelforge_<name>_total of this model's 1.0.0."""
    return REGISTRY.get_sample_value(f"modelforge_{name}_total", {"model": model, "version": "1.0.0"}) or 0.0


def concurrent_predicts(model_id: str, key: str, inputs: list[dict]) -> list:
    """POST every input at once from its own thread; returns the responses in input order."""
    barrier = threading.Barrier(len(inputs))
    responses: list = [None] * len(inputs)

    def send(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        barrier.wait()
        try:
            responses[index] = client.post(
                f"{MODELS}/{model_id}/predict", {"input_data": inputs[index], "skip_cache": True}, format="json"
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_are_merged_and_split_back_exactly(batched_model):
    model_id, key = batched_model(dense_model(), "dense", max_batch_size=64, max_queue_delay_microseconds=200_000)
    before = {name: counter(name, "dense") for name in ("inferences", "rows", "executions")}
    sizes = [1, 3, 2, 5, 1, 4, 1, 2, 3, 1, 6, 2]
    rows = [RNG.standard_normal((n, 8)).astype(np.float32) for n in sizes]
    responses = concurrent_predicts(model_id, key, [{"X": r.tolist()} for r in rows])

    session = ort.InferenceSession(dense_model(), providers=["CPUExecutionProvider"])
    for response, X in zip(responses, rows, strict=True):
        assert response.status_code == 200, response.json()
        got = np.asarray(response.json()["output_data"]["Y"], dtype=np.float32)
        alone = session.run(None, {"X": X})[0]
        assert got.shape == alone.shape
        np.testing.assert_allclose(got, alone, rtol=1e-6, atol=1e-6)
    counters = {name: counter(name, "dense") - before[name] for name in before}
    assert counters["inferences"] == len(sizes)
    assert counters["rows"] == sum(sizes)
    assert counters["executions"] < len(sizes)  # some requests shared a run


@pytest.mark.django_db(transaction=True)
def test_a_failing_request_fails_alone(batched_model):
    model_id, key = batched_model(gather_model(), "gather", max_queue_delay_microseconds=200_000)
    X = [[1.0, 2.0, 3.0, 4.0]]
    inputs = [{"X": X, "idx": [[i % 4]]} for i in range(5)] + [{"X": X, "idx": [[7]]}]
    responses = concurrent_predicts(model_id, key, inputs)
    for i, response in enumerate(responses[:5]):
        assert response.status_code == 200, response.json()
        assert response.json()["output_data"]["Y"] == [[X[0][i % 4]]]
    assert responses[5].status_code == 400
    assert responses[5].json()["code"] == "inference_failed"


@pytest.mark.django_db(transaction=True)
def test_models_that_mix_rows_are_not_merged(batched_model):
    model_id, key = batched_model(batch_sum_model(), "batch-sum", max_queue_delay_microseconds=200_000)
    inputs = [{"X": [[float(i), 1.0]]} for i in range(6)]
    responses = concurrent_predicts(model_id, key, inputs)
    for i, response in enumerate(responses):
        assert response.status_code == 200
        assert response.json()["output_data"]["Y"] == [[i + 1.0]]


def _loaded(data: bytes) -> LoadedSession:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return LoadedSession(sha256="", session=session, input_names=[], output_names=[], estimated_bytes=0)


def test_a_full_queue_is_refused_at_once_with_retry_after():
    loaded = _loaded(slow_model(400_000))
    config = BatchConfig(
        max_batch_size=1, max_queue_delay_us=0, preferred_batch_size=None, max_queue_size=1, timeout_us=0
    )
    batcher = ModelBatcher(key="slow", session_provider=lambda: loaded, model_label=("slow", "1.0.0"), config=config)
    feeds = {"X": np.zeros((1, 1), dtype=np.float32)}
    results: list = []
    first = threading.Thread(target=lambda: results.append(batcher.run(feeds)))
    first.start()
    deadline = time.monotonic() + 10
    while batcher.waiting() or not batcher.busy:  # the scheduler has taken the first request
        assert time.monotonic() < deadline
        time.sleep(0.001)
    second = threading.Thread(target=lambda: results.append(batcher.run(feeds)))
    second.start()
    while batcher.waiting() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(QueueFull) as refused:
        batcher.run(feeds)
    assert refused.value.status_code == 503
    assert refused.value.retry_after >= 1
    first.join()
    second.join()
    assert [float(values[0][0][0]) for values, _, _ in results] == [400_000.0, 400_000.0]


def test_a_batch_runs_as_soon_as_late_arrivals_fill_it_to_its_preferred_size():
    # The delay is longer than the timeout: a scheduler that slept through the arrivals to the
    # delay's end would answer every request 503 (queue_timeout) instead.
    loaded = _loaded(dense_model())
    config = BatchConfig(
        max_batch_size=8, max_queue_delay_us=10_000_000, preferred_batch_size=4, max_queue_size=8, timeout_us=5_000_000
    )
    batcher = ModelBatcher(key="fill", session_provider=lambda: loaded, model_label=("fill", "1.0.0"), config=config)
    before = counter("executions", "fill")
    rows = [RNG.standard_normal((n, 8)).astype(np.float32) for n in (1, 1, 1, 1)]
    results: dict[int, object] = {}

    def send(index: int) -> None:
        try:
            results[index] = batcher.run({"X": rows[index]})[0][0]
        except Exception as exc:  # noqa: BLE001 (the assertion below shows it)
            results[index] = exc

    first = threading.Thread(target=send, args=(0,))
    first.start()
    deadline = time.monotonic() + 10
    while batcher.waiting():  # the scheduler has taken the first request and waits for more
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.05)
    late = [threading.Thread(target=send, args=(i,)) for i in (1, 2, 3)]
    for thread in late:
        thread.start()
    for thread in [first, *late]:
        thread.join()

    for index, X in enumerate(rows):
        assert isinstance(results[index], np.ndarray), results[index]
        np.testing.assert_allclose(results[index], loaded.session.run(None, {"X": X})[0], rtol=1e-6, atol=1e-6)
    assert counter("executions", "fill") - before == 1  # one run for the four


def test_a_request_still_short_of_the_batch_is_answered_at_its_timeout():
    # One request, a batch that wants 8 rows and a delay past the timeout: it is never woken
    # for more rows and waits out its timeout, answered 503 with Retry-After, not kept forever.
    from inference.errors import QueueTimeout

    loaded = _loaded(dense_model())
    config = BatchConfig(
        max_batch_size=8, max_queue_delay_us=5_000_000, preferred_batch_size=8, max_queue_size=4, timeout_us=200_000
    )
    batcher = ModelBatcher(key="short", session_provider=lambda: loaded, model_label=("short", "1.0.0"), config=config)
    with pytest.raises(QueueTimeout) as waited:
        batcher.run({"X": np.zeros((1, 8), dtype=np.float32)})
    assert waited.value.status_code == 503
    assert waited.value.retry_after >= 1
