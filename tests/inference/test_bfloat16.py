"""BF16 inputs reach ONNX Runtime, whose numpy bridge has no bfloat16 of its own."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from onnx import TensorProto, helper

pytestmark = pytest.mark.django_db


def bfloat16_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.FLOAT)],
        "bf16",
        [helper.make_tensor_value_info("X", TensorProto.BFLOAT16, ["n"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_bfloat16_input_is_predicted(manage_client, client_for):
    upload = SimpleUploadedFile("m.onnx", bfloat16_model())
    model = manage_client.post(
        "/api/v1/models", {"name": "bf16", "version": "1.0.0", "file": upload}, format="multipart"
    )
    assert model.json()["status"] == "ready", model.json()
    assert model.json()["input_schema"][0]["datatype"] == "BF16"
    response = client_for("predict").post(
        f"/api/v1/models/{model.json()['id']}/predict", {"input_data": {"X": [1.5, 2.25, -3.0]}}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["output_data"]["Y"] == [1.5, 2.25, -3.0]
