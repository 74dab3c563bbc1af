"""The session pool behind predict: one ONNX Runtime session per file, dropped when no ready
model uses the file any more, and never built from a file that changed on disk."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from onnx import TensorProto, helper

from inference.sessions import SessionPool, get_pool
from registry.models import MLModel
from registry.storage import ModelStore
from registry.tasks import confirm_model_file
from tests.inference.api import MODELS, predict, predict_ok
from tests.inference.factories import make_add_model, make_int64_model, make_scaled_model

pytestmark = pytest.mark.django_db

X = {"X": [[1.0, 2.0, 3.0]]}


def upload(manage_client, model_id: str, data: bytes):
    file = SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")
    return manage_client.post(f"{MODELS}/{model_id}/upload", {"file": file}, format="multipart")


def test_versions_with_identical_bytes_share_one_session(ready_model, predict_client):
    first = ready_model(make_scaled_model(2.0), name="scaler", version="1.0.0")
    second = ready_model(make_scaled_model(2.0), name="twin", version="3.1.4")
    assert first["file_sha256"] == second["file_sha256"]

    predict_ok(predict_client, first["id"], X, skip_cache=True)
    predict_ok(predict_client, second["id"], X, skip_cache=True)

    assert get_pool().loaded() == [first["file_sha256"]]
    assert get_pool().stats()["sessions"] == 1


def test_archiving_drops_the_session_once_no_ready_model_uses_the_file(ready_model, predict_client, manage_client):
    first = ready_model(make_scaled_model(2.0), name="scaler", version="1.0.0")
    second = ready_model(make_scaled_model(2.0), name="scaler", version="1.0.1")
    sha = first["file_sha256"]
    predict_ok(predict_client, first["id"], X, skip_cache=True)

    assert manage_client.post(f"{MODELS}/{first['id']}/archive").status_code == 200
    assert get_pool().sweep_stale(force=True) == []  # 1.0.1 still serves the same file
    assert get_pool().loaded() == [sha]
    response = predict(predict_client, first["id"], X)
    assert response.status_code == 409
    assert response.json()["code"] == "model_archived"
    assert predict_ok(predict_client, second["id"], X, skip_cache=True)["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}

    assert manage_client.post(f"{MODELS}/{second['id']}/archive").status_code == 200
    assert get_pool().sweep_stale(force=True) == [sha]
    assert get_pool().loaded() == []
    for model in (first, second):
        response = predict(predict_client, model["id"], X)
        assert response.status_code == 409
        assert response.json()["code"] == "model_archived"
    assert get_pool().loaded() == []


def test_a_reupload_is_refused_and_the_session_keeps_serving(ready_model, predict_client, manage_client):
    # A version that has been ready keeps its file (a new file is a new version), so its
    # session is never stale because of an upload.
    model = ready_model(make_scaled_model(2.0), name="scaler")
    old_sha = model["file_sha256"]
    assert predict_ok(predict_client, model["id"], X)["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    assert get_pool().loaded() == [old_sha]

    refused = upload(manage_client, model["id"], make_scaled_model(5.0))
    assert (refused.status_code, refused.json()["code"]) == (409, "version_immutable")
    assert get_pool().sweep_stale(force=True) == []
    assert get_pool().loaded() == [old_sha]
    assert predict_ok(predict_client, model["id"], X)["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}


def test_a_file_changed_on_disk_is_refused_and_other_models_still_answer(ready_model, predict_client):
    tampered = ready_model(make_scaled_model(2.0), name="scaler")
    other = ready_model(make_int64_model(), name="ints")
    predict_ok(predict_client, tampered["id"], X)
    predict_ok(predict_client, other["id"], {"X": [[1, 2]]})

    ModelStore().path_for(tampered["file_sha256"]).write_bytes(make_scaled_model(1000.0))
    get_pool().clear()  # a fresh process, or the session evicted meanwhile

    response = predict(predict_client, tampered["id"], {"X": [[4.0, 5.0, 6.0]]})
    assert response.status_code == 503  # this server's view, until a worker confirms it
    assert response.json()["code"] == "model_file_unavailable"
    assert "scaler:1.0.0" in response.json()["detail"]
    assert confirm_model_file(tampered["id"], tampered["file_sha256"]) == "checksum_mismatch"
    again = predict(predict_client, tampered["id"], {"X": [[7.0, 8.0, 9.0]]}, skip_cache=True)
    assert again.status_code == 409  # never served, whatever it is marked meanwhile
    assert tampered["file_sha256"] not in get_pool().loaded()

    assert predict_ok(predict_client, other["id"], {"X": [[3, 4]]}, skip_cache=True)["output_data"]["Y"] == [[10, 13]]


def test_a_missing_file_is_503_then_refused_once_confirmed(ready_model, predict_client):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    ModelStore().path_for(model["file_sha256"]).unlink()

    response = predict(predict_client, model["id"], X)
    assert (response.status_code, response.json()["code"]) == (503, "model_file_unavailable")
    assert MLModel.objects.get(pk=model["id"]).status == MLModel.Status.READY

    assert confirm_model_file(model["id"], model["file_sha256"]) == "file_missing"
    refused = predict(predict_client, model["id"], X)
    assert (refused.status_code, refused.json()["code"]) == (409, "model_not_ready")
    assert "file_missing" in refused.json()["detail"]


def test_the_pool_evicts_the_least_recently_used_session_past_its_bound(ready_model, settings):
    models = [
        MLModel.objects.get(pk=ready_model(data, name=name)["id"])
        for name, data in (("a", make_scaled_model(2.0)), ("b", make_scaled_model(3.0)), ("c", make_add_model()))
    ]
    pool = SessionPool(
        max_sessions=2,
        max_bytes=1024**3,
        intra_op_threads=1,
        inter_op_threads=1,
        optimization_level=settings.ORT_GRAPH_OPTIMIZATION,
        recheck_seconds=60,
    )
    first, second, third = models

    assert pool.get(first) is pool.get(first)  # loaded once
    pool.get(second)
    pool.get(first)  # first is now the most recently used
    pool.get(third)

    assert pool.loaded() == [first.file_sha256, third.file_sha256]


def _add_chain(nodes: int, step: float) -> bytes:
    """Y = X + step + step + ... (``nodes`` Add nodes): a small file whose session is large."""
    names = ["X", *(f"t{i}" for i in range(1, nodes)), "Y"]
    graph = helper.make_graph(
        [helper.make_node("Add", [names[i], "step"], [names[i + 1]]) for i in range(nodes)],
        "chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("step", TensorProto.FLOAT, [], [step])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_the_pool_counts_what_a_session_really_costs(ready_model, settings):
    """A file of 5 000 nodes is about 120 KB; its session grows the process by some 20 MB (the
    graph ONNX Runtime builds from it), which the pool counts and evicts by, where twice the
    file size would have kept both sessions under a bound neither fits in."""
    first, second = (
        MLModel.objects.get(pk=ready_model(_add_chain(5_000, step), name=name)["id"])
        for name, step in (("chain-a", 1.0), ("chain-b", 2.0))
    )
    probe = SessionPool(
        max_sessions=4,
        max_bytes=1024**3,
        intra_op_threads=1,
        inter_op_threads=1,
        optimization_level=settings.ORT_GRAPH_OPTIMIZATION,
        recheck_seconds=60,
    )
    measured = probe.get(first).estimated_bytes
    assert measured > 20 * first.file_size
    assert probe.stats()["estimated_bytes"] == measured
    probe.clear()

    # Room for one such session, and for ten by the file-size estimate.
    pool = SessionPool(
        max_sessions=4,
        max_bytes=int(measured * 1.5),
        intra_op_threads=1,
        inter_op_threads=1,
        optimization_level=settings.ORT_GRAPH_OPTIMIZATION,
        recheck_seconds=60,
    )
    pool.get(first)
    pool.get(second)
    assert pool.loaded() == [second.file_sha256]
