"""ModelInfer as a protocol of the serving exchange (inference.exchange): a serialized
``inference.ModelInferRequest`` in, a serialized ``inference.ModelInferResponse`` out.

The message names its model, so it is parsed in `resolve`, which the exchange calls once the
caller is authorized and within its budget: nothing is parsed for a caller without a key or
the scope. Its size was bounded by grpc itself (max_receive_message_length, set to
MAX_REQUEST_BODY_BYTES: inference.grpc.server).

Inputs follow /v2's rules with the same checks and messages (inference.v2.codec): the model's
datatype exactly, a shape of its rank, the element limit, NaN and infinity only where the model
allows them. Each input carries its data one way: all of them in ``raw_input_contents`` (one
entry per input, in order; what tritonclient sends), or each in its typed ``contents`` field
(``fp32_contents`` for FP32, ...; FP16 and BF16 have none and must be raw). Outputs always come
back in ``raw_output_contents``, as Triton answers.

Errors are the /v2 error table (inference.v2.protocol.v2_problem) as a `Reply` whose status the
door (inference.grpc.service) maps to a gRPC status code: the detail, and the code in the
``modelforge-code`` trailing metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from core.tensor_checks import InvalidInput, reject
from inference import services
from inference.exchange import Decoded, Incoming, ModelRef, Protocol, Reply
from inference.v2 import codec
from inference.v2.protocol import v2_problem, v2_resolve
from registry.models import MLModel

CODE_METADATA = "modelforge-code"

# The typed contents field of each datatype (FP16 and BF16 have none: they travel raw).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(sorted(set(CONTENTS_FIELDS.values())))


@dataclass
class _Request:
    id: str
    outputs: list[codec.RequestedOutput]


def parse(message_type: type, body: bytes) -> Any:
    """A protobuf message from its bytes; bytes that are not one are a 400 ``parse_error``."""
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise InvalidInput(
            f"The message is not a valid {message_type.DESCRIPTOR.full_name} ({exc}). Send the serialized "
            "protobuf message of this method.",
            code="parse_error",
        ) from None


def parameters_of(parameters) -> dict[str, Any]:
    """A protobuf parameter map (InferParameter or ModelRepositoryParameter values) as plain
    values, as /v2's JSON ``parameters`` would hold them."""
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "", None) for key, value in parameters.items()}


def problem_reply(exc: Exception) -> Reply:
    """A failure as the door sends it: status, the detail as the content, the code and any
    Retry-After as headers."""
    found = v2_problem(exc)
    return Reply(found.status, found.detail.encode(), {CODE_METADATA: found.code, **found.headers})


class GrpcInfer(Protocol):
    """One call's ModelInfer (the message is held from the start: it names the model)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.message: Any = None

    def resolve(self, ref: ModelRef) -> MLModel:
        self.message = parse(service_pb2.ModelInferRequest, self.body)
        return v2_resolve(self.message.model_name, self.message.model_version or None)

    def decode(self, model: MLModel, body: bytes, incoming: Incoming) -> Decoded:
        message = self.message
        parameters = parameters_of(message.parameters)
        skip_cache = codec.flag(parameters, "skip_cache", "the request's parameters")
        feeds = self._feeds(model, message)
        outputs = codec.requested_outputs(
            [{"name": item.name, "parameters": parameters_of(item.parameters)} for item in message.outputs] or None,
            model.output_schema,
            binary_default=True,
        )
        return Decoded(
            feeds,
            history_input=lambda: codec.feeds_as_json(feeds, model.input_schema),
            input_size=len(body),
            skip_cache=skip_cache,
            requested_outputs=[output.name for output in outputs],
            exact=True,  # raw outputs are the values themselves
            request=_Request(message.id, outputs),
        )

    @staticmethod
    def _feeds(model: MLModel, message) -> dict:
        by_name = {entry["name"]: entry for entry in model.input_schema}
        raw = message.raw_input_contents
        if raw and len(raw) != len(message.inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs. With raw contents, "
                "send one entry per input, in the order of inputs.",
                code="invalid_request",
            )
        received: dict = {}
        remaining = settings.MAX_INPUT_ELEMENTS
        for position, tensor in enumerate(message.inputs):
            name = tensor.name
            datatype, shape, count = codec.check_input(
                name,
                tensor.datatype,
                list(tensor.shape),
                by_name,
                received,
                remaining=remaining,
                max_elements=settings.MAX_INPUT_ELEMENTS,
            )
            codec.refuse_shared_memory(parameters_of(tensor.parameters), f"input '{name}'")
            sent = [field for field in _ALL_FIELDS if len(getattr(tensor.contents, field))]
            if raw:
                if sent:
                    raise reject(
                        "invalid_request",
                        name,
                        f"Input '{name}' has both contents ({sent[0]}) and raw_input_contents. Send its data one "
                        "way: every input in raw_input_contents, or each in its typed contents.",
                    )
                array = codec.decode_tensor(
                    name, datatype, shape, raw[position], allow_non_finite=model.allow_non_finite
                )
            else:
                array = _typed(name, datatype, shape, tensor.contents, sent, model.allow_non_finite)
            received[name] = array
            remaining -= count
        return codec.ordered_feeds(received, by_name)

    def encode(self, outcome: services.PredictionOutcome, decoded: Decoded | None) -> tuple[bytes, dict[str, str]]:
        request = decoded.request
        values = outcome.values if outcome.values is not None else outcome.output_data
        model = outcome.model
        response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for output in request.outputs:
            array = codec.output_array(output.datatype, values[output.name], outcome.shapes.get(output.name))
            response.outputs.add(name=output.name, datatype=output.datatype, shape=array.shape)
            response.raw_output_contents.append(codec.tensor_bytes(output.datatype, array))
        return response.SerializeToString(), {}

    def error(self, exc: Exception) -> Reply:
        return problem_reply(exc)


def _typed(name: str, datatype: str, shape: list[int], contents, sent: list[str], allow_non_finite: bool):
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise reject(
            "missing_data",
            name,
            f"Input '{name}' is {datatype}, which has no typed contents field: send it in raw_input_contents "
            "(little-endian bytes).",
        )
    other = [sent_field for sent_field in sent if sent_field != field]
    if other:
        raise reject(
            "invalid_request",
            name,
            f"Input '{name}' is {datatype}: send its elements in contents.{field} (or raw_input_contents); "
            f"it has {other[0]}.",
        )
    values = getattr(contents, field)
    if not values and math.prod(shape):
        raise reject(
            "missing_data",
            name,
            f"Input '{name}' has no data. Send its elements in contents.{field}, or every input's bytes in "
            "raw_input_contents.",
        )
    return codec.decode_elements(
        name, datatype, shape, values, allow_non_finite=allow_non_finite, max_depth=settings.MAX_JSON_DEPTH
    )
