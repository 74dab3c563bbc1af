"""What a gRPC client sees when the call is wrong: the status code for the REST status, the same
message as /v2 answers, the machine-readable code in the `modelforge-code` trailing metadata,
and nothing parsed before the key and its scope are checked. The server still answers after
each one."""

from __future__ import annotations

import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from access.keys import InvalidKey
from tests.v2 import live_server
from tests.v2.conftest import BearerKey

pytestmark = pytest.mark.e2e

INFER = "/inference.GRPCInferenceService/ModelInfer"


def key(servers, scope: str = "predict") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {servers.keys[scope]}"),)


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def request(model: str, *inputs: service_pb2.ModelInferRequest.InferInputTensor, raw=()) -> bytes:
    message = service_pb2.ModelInferRequest(model_name=model, inputs=inputs, raw_input_contents=raw)
    return message.SerializeToString()


def fp32(name: str, shape: list[int], **contents) -> service_pb2.ModelInferRequest.InferInputTensor:
    return service_pb2.ModelInferRequest.InferInputTensor(
        name=name, datatype="FP32", shape=shape, contents=service_pb2.InferTensorContents(**contents)
    )


def refused(channel, body: bytes, metadata=()) -> grpc.RpcError:
    """The error of a raw ModelInfer call (bytes in, no serializer: any bytes can be sent)."""
    with pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(INFER)(body, metadata=metadata, timeout=30)
    return error.value


def code_of(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata())["modelforge-code"]


def still_serving(channel, servers) -> None:
    x = np.ones((1, 3), np.float32)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    response = stub.ModelInfer(
        service_pb2.ModelInferRequest(
            model_name="scaled", inputs=[fp32("X", [1, 3], fp32_contents=x.reshape(-1).tolist())]
        ),
        metadata=key(servers),
        timeout=30,
    )
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [2.0, 2.0, 2.0]


# --- the key and its scope -------------------------------------------------------------------------


def test_no_key_is_unauthenticated_before_the_message_is_parsed(channel, servers):
    error = refused(channel, b"\xff\xff\xff not a protobuf message")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Authorization: Bearer" in error.details()
    assert code_of(error) == "not_authenticated"


def test_malformed_message_is_invalid_argument(channel, servers):
    error = refused(channel, b"\xff\xff\xff not a protobuf message", key(servers))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("The message is not a valid inference.ModelInferRequest")
    assert code_of(error) == "parse_error"
    still_serving(channel, servers)


def test_wrong_key_is_unauthenticated(servers):
    client = grpcclient.InferenceServerClient(servers.grpc)
    client.register_plugin(BearerKey("abcdefgh." + "x" * 32))
    with pytest.raises(grpcclient.InferenceServerException) as error:
        client.infer("scaled", [tensor("X", np.zeros((1, 3), np.float32), "FP32")])
    assert error.value.status() == "StatusCode.UNAUTHENTICATED"
    assert error.value.message() == str(InvalidKey.default_detail)
    with pytest.raises(grpcclient.InferenceServerException) as metadata:
        client.get_model_metadata("scaled")
    assert metadata.value.status() == "StatusCode.UNAUTHENTICATED"


def test_a_key_without_the_scope_is_permission_denied(grpc_for):
    reader = grpc_for("read")
    with pytest.raises(grpcclient.InferenceServerException) as infer:
        reader.infer("scaled", [tensor("X", np.zeros((1, 3), np.float32), "FP32")])
    assert infer.value.status() == "StatusCode.PERMISSION_DENIED"
    assert infer.value.message() == "This API key lacks the 'predict' scope needed here."
    with pytest.raises(grpcclient.InferenceServerException) as metadata:
        reader.get_model_metadata("scaled")
    assert metadata.value.status() == "StatusCode.PERMISSION_DENIED"
    assert grpc_for(None).is_server_ready()  # the health and server metadata stay open


# --- the model ----------------------------------------------------------------------------------------


def test_unknown_model_and_version_are_not_found(triton_grpc):
    x = [tensor("X", np.zeros((1, 3), np.float32), "FP32")]
    with pytest.raises(grpcclient.InferenceServerException) as unknown:
        triton_grpc.infer("no-such-model", x)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert unknown.value.message() == "Unknown model 'no-such-model'."
    with pytest.raises(grpcclient.InferenceServerException) as version:
        triton_grpc.infer("scaled", x, model_version="9.9.9")
    assert version.value.status() == "StatusCode.NOT_FOUND"
    assert "no version '9.9.9'" in version.value.message()
    with pytest.raises(grpcclient.InferenceServerException) as metadata:
        triton_grpc.get_model_metadata("no-such-model")
    assert metadata.value.status() == "StatusCode.NOT_FOUND"


# --- the tensors ---------------------------------------------------------------------------------------


def test_wrong_datatype_and_shape_are_invalid_argument_with_the_rest_message(triton_grpc):
    with pytest.raises(grpcclient.InferenceServerException) as datatype:
        triton_grpc.infer("iris", [tensor("X", np.zeros((1, 4), np.float64), "FP64")])
    assert datatype.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert datatype.value.message() == (
        "Input 'X' is FP32; the request declares FP64. Send FP32 data (numpy float32): datatypes are not converted."
    )
    with pytest.raises(grpcclient.InferenceServerException) as shape:
        triton_grpc.infer("iris", [tensor("X", np.zeros((1, 5), np.float32), "FP32")])
    assert shape.value.message() == "Input 'X' expects shape [-1, 4] (-1 = any size); the request declares [1, 5]."


def test_nan_is_refused_where_the_model_refuses_it(triton_grpc, channel, servers):
    x = np.array([[1.0, np.nan, 2.0]], dtype=np.float32)
    with pytest.raises(grpcclient.InferenceServerException) as raw:
        triton_grpc.infer("scaled", [tensor("X", x, "FP32")])
    assert raw.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "NaN or infinity (at index [0, 1])" in raw.value.message()
    typed = refused(channel, request("scaled", fp32("X", [1, 3], fp32_contents=x.reshape(-1).tolist())), key(servers))
    assert typed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(typed) == "non_finite_value"


def test_raw_contents_not_matching_shape_and_datatype(channel, servers):
    error = refused(
        channel, request("scaled", fp32("X", [2, 3]), raw=[np.zeros(5, np.float32).tobytes()]), key(servers)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(error) == "binary_size_mismatch"
    assert error.details() == (
        "Input 'X' is FP32 with shape [2, 3]: 6 elements of 4 bytes, i.e. 24 bytes; its binary data has 20. "
        "Check the shape and datatype."
    )


def test_contents_and_raw_for_one_input_are_refused(channel, servers):
    both = fp32("X", [1, 3], fp32_contents=[1.0, 2.0, 3.0])
    error = refused(channel, request("scaled", both, raw=[np.ones(3, np.float32).tobytes()]), key(servers))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(error) == "invalid_request"
    assert "has both contents (fp32_contents) and raw_input_contents" in error.details()


def test_typed_contents_of_another_datatype_or_count(channel, servers):
    wrong_field = fp32("X", [1, 3], int_contents=[1, 2, 3])
    error = refused(channel, request("scaled", wrong_field), key(servers))
    assert code_of(error) == "invalid_request"
    assert "send its elements in contents.fp32_contents" in error.details()
    short = refused(channel, request("scaled", fp32("X", [2, 3], fp32_contents=[1.0, 2.0])), key(servers))
    assert code_of(short) == "invalid_shape"
    assert short.details() == (
        "Input 'X' declares shape [2, 3], i.e. 6 elements, but its data holds 2. Send exactly the declared "
        "number of elements, in row-major order."
    )


def test_typed_contents_are_served(channel, servers):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    text = service_pb2.ModelInferRequest.InferInputTensor(
        name="text",
        datatype="BYTES",
        shape=[2],
        contents=service_pb2.InferTensorContents(bytes_contents=[b"setosa", "été".encode()]),
    )
    response, call = stub.ModelInfer.with_call(
        service_pb2.ModelInferRequest(model_name="strings", inputs=[text], id="typed-1"),
        metadata=(*key(servers), ("x-request-id", "grpc-test-typed-1")),
        timeout=30,
    )
    assert response.id == "typed-1"
    assert [output.name for output in response.outputs] == ["label", "echo"]
    echo = response.raw_output_contents[1]
    assert echo == b"".join(len(word).to_bytes(4, "little") + word for word in (b"setosa", "été".encode()))
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-test-typed-1"


def test_too_many_elements(channel, servers):
    # One element over the limit (the live server's default MAX_INPUT_ELEMENTS), declared only.
    error = refused(channel, request("scaled", fp32("X", [333_334, 3])), key(servers))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(error) == "too_many_elements"


def test_an_oversized_message_is_resource_exhausted(channel, servers):
    body = request("scaled", fp32("X", [1, 3]), raw=[b"\0" * (live_server.MAX_BODY_BYTES + 1)])
    error = refused(channel, body, key(servers))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving(channel, servers)


def test_a_compressed_message_over_the_limit_once_decompressed_is_resource_exhausted(channel, servers):
    # A few kilobytes of gzip that inflate past MAX_REQUEST_BODY_BYTES.
    body = request("scaled", fp32("X", [1, 3]), raw=[b"\0" * (live_server.MAX_BODY_BYTES + 1)])
    with pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(INFER)(body, metadata=key(servers), timeout=30, compression=grpc.Compression.Gzip)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving(channel, servers)


# --- what the server records ---------------------------------------------------------------------------


def metric(servers, outcome: str) -> float:
    metrics_request = urllib.request.Request(  # noqa: S310 (our own loopback server)
        f"http://{servers.rest}/metrics", headers={"Authorization": f"Bearer {servers.keys['read']}"}
    )
    with urllib.request.urlopen(metrics_request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    wanted = f'modelforge_requests_total{{model="two-inputs",outcome="{outcome}",version="1.0.0"}}'
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def test_calls_are_counted_in_the_metrics(triton_grpc, servers):
    ok, refused_before = metric(servers, "ok"), metric(servers, "client_error")
    x, k = np.ones((1, 2), np.float32), np.array([3], np.int64)
    triton_grpc.infer("two-inputs", [tensor("X", x, "FP32"), tensor("K", k, "INT64")], parameters={"skip_cache": True})
    with pytest.raises(grpcclient.InferenceServerException):
        triton_grpc.infer("two-inputs", [tensor("X", x, "FP32")])  # K missing
    # The gRPC process adds its counts to the shared files within inference.metrics.FLUSH_SECONDS.
    deadline = time.monotonic() + 30
    while (metric(servers, "ok"), metric(servers, "client_error")) != (ok + 1, refused_before + 1):
        assert time.monotonic() < deadline, (metric(servers, "ok"), metric(servers, "client_error"))
        time.sleep(0.1)
