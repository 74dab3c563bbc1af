"""A model's configuration in Triton's model_config shape (the ModelConfig of Triton's
model_config.proto, as JSON).

MINIMAL PLACEHOLDER: name, platform, max_batch_size and the tensors, enough for the gRPC
ModelConfig RPC (inference.grpc.service). The full mapping (dims without the batch dimension,
dynamic_batching, ...) is built for `GET /v2/models/{name}/config` in another branch, which
replaces this body; the signature stays.
"""

from __future__ import annotations

from inference.v2 import codec
from registry.models import MLModel


def triton_config(model: MLModel) -> dict:
    """Triton's model_config JSON for ``model`` (datatypes as "TYPE_FP32", dims with -1 for
    variable dimensions; only the tensors the v2 protocol carries)."""

    def tensors(schema: list[dict]) -> list[dict]:
        return [
            {"name": entry["name"], "data_type": f"TYPE_{_TRITON_TYPES.get(entry['datatype'], entry['datatype'])}",
             "dims": list(entry["shape"]) if entry.get("shape") is not None else [-1]}
            for entry in codec.tensor_entries(schema)
        ]  # fmt: skip

    return {
        "name": model.name,
        "platform": codec.PLATFORM,
        "max_batch_size": 0,
        "input": tensors(model.input_schema),
        "output": tensors(model.output_schema),
    }


# Where Triton's config names a datatype otherwise than the v2 protocol does.
_TRITON_TYPES = {"BYTES": "STRING"}
