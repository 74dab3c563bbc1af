"""Open Inference Protocol v2 bodies <-> numpy tensors: decompress, unframe, validate, encode.

Pure like `inference.tensors` (no settings, no database): limits come in as arguments. Every
rejection is a `DomainError` that says what to fix; the views render it as ``{"error": ...}``:
`InvalidInput` (400), `PayloadTooLarge` (413) or `UnsupportedEncoding` (415).

Framing (Triton's binary tensor extension, ../shared/REFERENCE.md §1):

- no ``Inference-Header-Content-Length``: the body is the JSON request;
- ``Inference-Header-Content-Length: N`` (N > 0): the first N bytes are the JSON request, the
  rest the binary inputs, back to back in the order the JSON lists them, each exactly its
  ``parameters.binary_data_size`` bytes;
- ``Inference-Header-Content-Length: 0``: the whole body is one raw tensor for a model with a
  single input; its shape is the input's, with at most one variable dimension deduced from
  the byte count (a BYTES input must hold exactly one element: the whole body).

Tensor bytes are little-endian and row-major; a BOOL is one byte, 0 or 1; a BYTES element is a
4-byte little-endian length followed by that many bytes. ONNX string tensors hold text, so BYTES
inputs must be UTF-8 (they reach ONNX Runtime as str, as JSON strings do).

The same rules as JSON apply to binary data: the declared datatype must be the model's exactly
(no conversion), the shape must fit the model's rank and fixed dimensions and hold exactly the
elements sent, NaN and infinity are refused unless the model allows non-finite values, and the
element limit counts every input. The rejections both codecs share are worded once, in
`core.tensor_checks`; the datatypes and their sizes are `core.tensor_types`'s.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from rest_framework import status

from core.exceptions import DomainError, PayloadTooLarge
from core.tensor_checks import (
    MAX_RANK,
    InvalidInput,
    check_shape,
    json_kind,
    missing_input,
    names_text,
    non_finite_values,
    reject,
    shape_text,
    short,
    to_text,
    too_many_elements,
    unsupported_input_type,
)
from core.tensor_types import DATATYPES, DTYPES, FLOAT_DATATYPES, ITEM_SIZES, TYPES, is_supported
from inference.tensors import decode_inputs, encode_outputs, parse_json_body

HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORM = "onnxruntime_onnx"

_LENGTH = struct.Struct("<I")
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


class UnsupportedEncoding(DomainError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_encoding"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    datatype: str
    binary: bool


@dataclass
class InferRequest:
    """A validated request: the feeds for the session and the outputs to send back, in order."""

    feeds: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    id: str | None = None
    skip_cache: bool = False

    @property
    def wants_binary(self) -> bool:
        return any(output.binary for output in self.outputs)


# --- the body ---------------------------------------------------------------------------------


def read_body(body: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` (gzip or deflate) undone.

    Decompression stops one byte past ``limit``, so a small compressed body (a "zip bomb")
    cannot make the server allocate more than the body limit; that is a 413.
    """
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return _inflate(body, wbits=31, limit=limit, coding="gzip")
    if coding == "deflate":
        # HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2), which is what tritonclient
        # sends; some clients send a bare deflate stream, recognisable by its missing header.
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        return _inflate(body, wbits=15 if zlib_header else -15, limit=limit, coding="deflate")
    raise UnsupportedEncoding(
        f"Content-Encoding '{content_encoding}' is not supported. Send the body uncompressed, or "
        "compressed with gzip or deflate."
    )


def _inflate(body: bytes, *, wbits: int, limit: int, coding: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    data = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise InvalidInput(
                f"The body is not valid {coding} data ({exc}). Compress the whole body with {coding}, "
                "or drop the Content-Encoding header.",
                code="invalid_encoding",
            ) from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The body decompresses to more than {limit} bytes, the limit (MAX_REQUEST_BODY_BYTES). "
                "Send fewer or smaller tensors per request.",
                code="body_too_large",
            )
        parts.append(chunk)
        if not inflater.eof:
            raise InvalidInput(
                f"The {coding} body ends before its compressed data does. Send the whole compressed body.",
                code="invalid_encoding",
            )
        data = inflater.unused_data
        # A gzip body may hold several members back to back (RFC 1952 §2.2).
        if not data or coding != "gzip":
            break
    if data:
        raise InvalidInput(
            f"The {coding} body has {len(data)} bytes after the end of its compressed data. Send only "
            "the compressed body.",
            code="invalid_encoding",
        )
    return b"".join(parts)


def _header_length(value: str | None, body_size: int) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the size in bytes of the JSON header at the start of the body, "
            f"a whole number; received {value[:40]!r}.",
            code="invalid_header_length",
        )
    length = int(text)
    if length > body_size:
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length}, but the body has only {body_size} bytes (after decompression). "
            "Send the size of the JSON header, then the JSON header and the binary tensors.",
            code="invalid_header_length",
        )
    return length


# --- requests -----------------------------------------------------------------------------------


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    *,
    inputs: list[dict],
    outputs: list[dict],
    allow_non_finite: bool,
    max_elements: int,
    max_depth: int,
) -> InferRequest:
    """Validate an infer request body (already decompressed) against a model's input and
    output schema (`registry.onnx_inspect` entries) and build the session's feeds."""
    length = _header_length(header_length, len(body))
    if length == 0:
        return _raw_request(body, inputs, outputs, allow_non_finite=allow_non_finite, max_elements=max_elements)
    # The binary part is only viewed: each tensor is read from the body's own bytes.
    header, binary = (body, memoryview(b"")) if length is None else (body[:length], memoryview(body)[length:])
    document = _parse_header(header, framed=length is not None, max_depth=max_depth)

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f'"id" must be a string; received {json_kind(request_id)}.', code="invalid_request")
    parameters = _object(document.get("parameters"), 'the request\'s "parameters"')
    binary_default = flag(parameters, "binary_data_output", 'the request\'s "parameters"')
    skip_cache = flag(parameters, "skip_cache", 'the request\'s "parameters"')

    feeds = _inputs(
        document.get("inputs"),
        binary,
        inputs,
        allow_non_finite=allow_non_finite,
        max_elements=max_elements,
        max_depth=max_depth,
    )
    return InferRequest(
        feeds=feeds,
        outputs=requested_outputs(document.get("outputs"), outputs, binary_default=binary_default),
        id=request_id,
        skip_cache=skip_cache,
    )


def _parse_header(header: bytes, *, framed: bool, max_depth: int) -> dict:
    try:
        document = parse_json_body(header, max_depth=max_depth)
    except InvalidInput as exc:
        if exc.code != "parse_error" or not header.strip():
            raise
        hint = (
            f" {HEADER_LENGTH} says the JSON header is the first {len(header)} bytes; check that it counts "
            "exactly the JSON header's bytes."
            if framed
            else f" If binary tensors follow the JSON, send {HEADER_LENGTH} with the JSON header's size in bytes."
        )
        raise InvalidInput(exc.detail + hint, code="parse_error") from None
    if not isinstance(document, dict):
        raise InvalidInput(
            'The request must be a JSON object: {"inputs": [{"name", "shape", "datatype", "data"}, ...]}; '
            f"received {json_kind(document)}.",
            code="invalid_request",
        )
    return document


def _inputs(
    items: Any,
    binary: memoryview,
    schema: list[dict],
    *,
    allow_non_finite: bool,
    max_elements: int,
    max_depth: int,
) -> dict[str, np.ndarray]:
    if not isinstance(items, list):
        raise InvalidInput(
            '"inputs" must be a list of tensors, each {"name", "shape", "datatype", "data"} (or '
            '"parameters": {"binary_data_size": ...} for binary data); '
            f"received {json_kind(items) if items is not None else 'nothing'}.",
            code="invalid_request",
        )
    by_name = {entry["name"]: entry for entry in schema}
    received: dict[str, np.ndarray] = {}
    remaining = max_elements
    offset = 0
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(
                f'inputs[{position}] must be an object with a "name" (a string), "shape", "datatype" and "data".',
                code="invalid_request",
            )
        name = item["name"]
        datatype, shape, count = check_input(
            name,
            item.get("datatype"),
            item.get("shape"),
            by_name,
            received,
            remaining=remaining,
            max_elements=max_elements,
        )
        parameters = _object(item.get("parameters"), f"input '{name}' parameters")
        refuse_shared_memory(parameters, f"input '{name}'")
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise reject(
                    "invalid_request",
                    name,
                    f"Input '{name}' has both \"data\" and a binary_data_size. Send its data one way: "
                    "in JSON, or as binary bytes after the JSON header.",
                )
            if type(size) is not int or size < 0:
                raise reject(
                    "invalid_request",
                    name,
                    f"Input '{name}': binary_data_size must be a non-negative integer (bytes); received {size!r}.",
                )
            if offset + size > len(binary):
                raise reject(
                    "binary_size_mismatch",
                    name,
                    f"Input '{name}' declares binary_data_size {size}, but only {len(binary) - offset} bytes of "
                    f"binary data are left after the JSON header and the earlier binary inputs. Send "
                    f"{HEADER_LENGTH} with the JSON header's exact size, then each binary input's bytes in "
                    "the order the JSON lists them.",
                )
            array = decode_tensor(
                name, datatype, shape, binary[offset : offset + size], allow_non_finite=allow_non_finite
            )
            offset += size
        elif "data" in item:
            array = _json_tensor(
                name,
                datatype,
                shape,
                item["data"],
                allow_non_finite=allow_non_finite,
                max_depth=max_depth,
                budget=remaining,
            )
        else:
            raise reject(
                "missing_data",
                name,
                f"Input '{name}' has no data. Send \"data\" (a flat or nested JSON array), or the bytes after "
                f'the JSON header with "parameters": {{"binary_data_size": <bytes>}}.',
            )
        received[name] = array
        remaining -= count

    if offset != len(binary):
        raise InvalidInput(
            f"The body has {len(binary)} bytes after the JSON header, but the binary inputs declare "
            f"{offset} (their binary_data_size). Send exactly the declared bytes, and check {HEADER_LENGTH}.",
            code="binary_size_mismatch",
        )
    return ordered_feeds(received, by_name)


def check_input(
    name: str,
    datatype: Any,
    shape: Any,
    by_name: dict[str, dict],
    received: dict[str, np.ndarray],
    *,
    remaining: int,
    max_elements: int,
) -> tuple[str, list[int], int]:
    """The checks an input passes before its data is read, whatever carries it (JSON, binary
    data, a gRPC message): sent once, known to the model (``by_name``, its schema entries), the
    model's datatype exactly, a shape of its rank and fixed dimensions, and within the elements
    the request has left. Returns (datatype, shape, element count)."""
    if name in received:
        raise reject("duplicate_input", name, f"Input '{name}' is sent twice. Send each input once.")
    entry = by_name.get(name)
    if entry is None:
        raise reject("unknown_input", name, f"Unknown input '{name}'. This model's inputs: {names_text(by_name)}.")
    datatype = _check_datatype(entry, datatype)
    shape = _shape(name, shape, max_elements)
    check_shape(name, entry.get("shape"), shape, declared=True)
    count = math.prod(shape)
    if count > remaining:
        raise too_many_elements(name, count, remaining, max_elements)
    return datatype, shape, count


def ordered_feeds(received: dict[str, np.ndarray], by_name: dict[str, dict]) -> dict[str, np.ndarray]:
    """Every input the model has, in its order; refuses a request missing one."""
    missing = [name for name in by_name if name not in received]
    if missing:
        raise missing_input(missing, by_name)
    return {name: received[name] for name in by_name}


def _check_datatype(entry: dict, declared: Any) -> str:
    if not is_supported(entry):
        raise unsupported_input_type(entry)
    name, expected = entry["name"], entry["datatype"]
    if not isinstance(declared, str) or declared not in TYPES:
        raise reject(
            "invalid_datatype",
            name,
            f"Input '{name}' declares datatype {declared!r}, which is not a v2 datatype (one of "
            f"{', '.join(DATATYPES)}). This input is {expected}.",
        )
    if declared != expected:
        raise reject(
            "datatype_mismatch",
            name,
            f"Input '{name}' is {expected}; the request declares {declared}. Send {expected} data "
            f"({TYPES[expected].made_with}): datatypes are not converted.",
        )
    return declared


def _shape(name: str, value: Any, max_elements: int) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(type(dim) is int and dim >= 0 for dim in value):
        raise reject(
            "invalid_shape",
            name,
            f"Input '{name}' needs a \"shape\": a list of at most {MAX_RANK} non-negative integers such as "
            f"[1, 4]; received {short(_json_text(value))}.",
        )
    too_big = [dim for dim in value if dim > max_elements]
    if too_big:
        raise reject(
            "too_many_elements",
            name,
            f"Input '{name}' declares a dimension of {too_big[0]}, over the {max_elements} elements allowed "
            "in one request. Split the batch into smaller requests.",
        )
    return value


def _json_tensor(
    name: str, datatype: str, shape: list[int], data: Any, *, allow_non_finite: bool, max_depth: int, budget: int
) -> np.ndarray:
    """JSON ``data`` (row-major, flat or nested) checked element by element as /api/v1 does.

    ``budget`` (the elements the request has left, at least the declared count) bounds what
    is built before the count is compared, so ragged data is still reported as ragged.
    """
    count = math.prod(shape)
    entry = {"name": name, "datatype": datatype, "kind": "tensor", "shape": None}
    try:
        array = decode_inputs(
            {name: data}, [entry], allow_non_finite=allow_non_finite, max_elements=budget, max_depth=max_depth
        )[name]
    except InvalidInput as exc:
        if exc.code != "too_many_elements":
            raise
        array = None
    if array is None or array.size != count:
        held = "more" if array is None else str(array.size)
        raise reject(
            "invalid_shape",
            name,
            f"Input '{name}' declares shape {shape_text(shape)}, i.e. {count} elements, but its data holds {held}. "
            "Send exactly the declared number of elements, in row-major order.",
        )
    return array.reshape(shape)


def decode_elements(
    name: str, datatype: str, shape: list[int], values: Sequence[Any], *, allow_non_finite: bool, max_depth: int
) -> np.ndarray:
    """A tensor sent as a flat list of elements (a gRPC request's typed ``contents``), checked as
    JSON ``data`` is: the declared element count, each element fitting the datatype (BYTES
    elements are UTF-8 text), NaN and infinity only where the model allows them."""
    if datatype == "BYTES":
        texts = []
        for index, item in enumerate(values):
            try:
                texts.append(str(item, "utf-8") if isinstance(item, bytes | bytearray | memoryview) else item)
            except UnicodeDecodeError:
                raise _not_utf8(name, index) from None
        values = texts
    return _json_tensor(
        name,
        datatype,
        shape,
        list(values),
        allow_non_finite=allow_non_finite,
        max_depth=max_depth,
        budget=max(len(values), math.prod(shape)),
    )


def decode_tensor(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview, *, allow_non_finite: bool = True
) -> np.ndarray:
    """One binary tensor, exactly ``raw``, as the numpy array ONNX Runtime takes for it."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(shape)
    expected = count * ITEM_SIZES[datatype]
    if len(raw) != expected:
        raise reject(
            "binary_size_mismatch",
            name,
            f"Input '{name}' is {datatype} with shape {shape_text(shape)}: {count} elements of {ITEM_SIZES[datatype]} "
            f"bytes, i.e. {expected} bytes; its binary data has {len(raw)}. Check the shape and datatype.",
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.size and octets.max() > 1:
            raise reject(
                "invalid_bool",
                name,
                f"Input '{name}' is BOOL, one byte per element, 0 (false) or 1 (true); byte "
                f"{int(np.flatnonzero(octets > 1)[0])} is {int(octets[octets > 1][0])}.",
            )
        array = octets.view(np.bool_)
    elif datatype == "BF16":
        array = np.frombuffer(raw, dtype="<u2").astype(np.uint16, copy=False).view(DTYPES["BF16"])
    else:
        native = DTYPES[datatype]
        array = np.frombuffer(raw, dtype=native.newbyteorder("<")).astype(native, copy=False)
    array = array.reshape(shape)
    if datatype in FLOAT_DATATYPES and not allow_non_finite:
        finite = np.isfinite(array)
        if not finite.all():
            raise non_finite_values(name, array, ~finite)
    return array


def _bytes_elements(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """BYTES elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    elements = np.empty(count, dtype=object)
    end = len(raw)
    offset = 0
    for index in range(count):
        length = _LENGTH.unpack_from(raw, offset)[0] if offset + 4 <= end else end
        offset += 4
        if offset + length > end:
            raise reject(
                "binary_size_mismatch",
                name,
                f"Input '{name}' declares {count} BYTES elements, but its {end} bytes of binary data end inside "
                f"element {index}. Each element is a 4-byte little-endian length, then that many bytes.",
            )
        try:
            elements[index] = str(raw[offset : offset + length], "utf-8")
        except UnicodeDecodeError:
            raise _not_utf8(name, index) from None
        offset += length
    if offset != end:
        raise reject(
            "binary_size_mismatch",
            name,
            f"Input '{name}' declares {count} BYTES elements; its binary data has {end - offset} bytes left "
            "after them. Check the shape and binary_data_size.",
        )
    return elements


def _raw_request(
    body: bytes, schema: list[dict], outputs: list[dict], *, allow_non_finite: bool, max_elements: int
) -> InferRequest:
    """``Inference-Header-Content-Length: 0``: the body is the model's only input, raw."""
    if len(schema) != 1:
        raise InvalidInput(
            f"A raw binary body ({HEADER_LENGTH}: 0) is for models with one input; this model has "
            f"{len(schema)} ({names_text([entry['name'] for entry in schema])}). Send a JSON header describing "
            "each input.",
            code="invalid_raw_request",
        )
    entry = schema[0]
    name, declared = entry["name"], entry.get("shape")
    datatype = _check_datatype(entry, entry.get("datatype"))
    if declared is None:
        raise reject(
            "invalid_raw_request",
            name,
            f"Input '{name}' has no fixed rank, so the shape of a raw binary body cannot be deduced. Send a "
            "JSON header with the shape.",
        )
    if datatype == "BYTES":
        if -1 in declared or math.prod(declared) != 1:
            raise reject(
                "invalid_raw_request",
                name,
                f"A raw binary body for a BYTES input is one element (the whole body), but input '{name}' has "
                f"shape {shape_text(declared)}. Send a JSON header with the shape.",
            )
        try:
            text = str(body, "utf-8")
        except UnicodeDecodeError:
            raise _not_utf8(name, 0) from None
        array = np.empty(1, dtype=object)
        array[0] = text
        feeds = {name: array.reshape(declared)}
    else:
        variable = [axis for axis, dim in enumerate(declared) if dim == -1]
        if len(variable) > 1:
            raise reject(
                "invalid_raw_request",
                name,
                f"Input '{name}' has shape {shape_text(declared)}: with more than one variable dimension the shape "
                "of a raw binary body cannot be deduced. Send a JSON header with the shape.",
            )
        shape = list(declared)
        if variable:
            row = math.prod(dim for dim in declared if dim != -1) * ITEM_SIZES[datatype]
            if row == 0 or len(body) % row:
                raise reject(
                    "binary_size_mismatch",
                    name,
                    f"Input '{name}' is {datatype} with shape {shape_text(declared)}: a raw body must be a whole "
                    f"number of {row}-byte steps along the variable dimension; it has {len(body)} bytes.",
                )
            shape[variable[0]] = len(body) // row
        if math.prod(shape) > max_elements:
            raise too_many_elements(name, math.prod(shape), max_elements, max_elements)
        feeds = {name: decode_tensor(name, datatype, shape, body, allow_non_finite=allow_non_finite)}
    return InferRequest(feeds=feeds, outputs=requested_outputs(None, outputs, binary_default=False))


def requested_outputs(items: Any, schema: list[dict], *, binary_default: bool) -> list[RequestedOutput]:
    """The outputs to send back; without a list (or with an empty one), every tensor output."""
    if items is None or items == []:
        return [RequestedOutput(entry["name"], entry["datatype"], binary_default) for entry in tensor_entries(schema)]
    if not isinstance(items, list):
        raise InvalidInput(
            f'"outputs" must be a list of {{"name": ...}} objects; received {json_kind(items)}.',
            code="invalid_request",
        )
    by_name = {entry["name"]: entry for entry in schema}
    requested: list[RequestedOutput] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(
                f'outputs[{position}] must be an object with a "name" (a string).', code="invalid_request"
            )
        name = item["name"]
        entry = by_name.get(name)
        if entry is None:
            raise InvalidInput(
                f"Unknown output '{name}'. This model's outputs: {names_text(by_name)}.", code="unknown_output"
            )
        if not is_supported(entry):
            raise InvalidInput(
                f"Output '{name}' has type {entry.get('onnx_type')}, which the v2 protocol cannot carry; "
                "/api/v1 predict returns it as JSON.",
                code="unsupported_output_type",
            )
        if any(output.name == name for output in requested):
            raise InvalidInput(f"Output '{name}' is requested twice. Request each output once.", code="invalid_request")
        parameters = _object(item.get("parameters"), f"output '{name}' parameters")
        refuse_shared_memory(parameters, f"output '{name}'")
        if "classification" in parameters:
            raise InvalidInput(
                "The classification extension is not supported. Request the output itself and take the top "
                "classes on the client.",
                code="unsupported_parameter",
            )
        binary = flag(parameters, "binary_data", f"output '{name}' parameters")
        # The output's own binary_data wins over the request's binary_data_output.
        requested.append(
            RequestedOutput(name, entry["datatype"], binary if "binary_data" in parameters else binary_default)
        )
    return requested


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object; received {json_kind(value)}.", code="invalid_request")
    return value


def flag(parameters: dict, key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} in {where} must be true or false; received {value!r}.", code="invalid_request")
    return value


def refuse_shared_memory(parameters: dict, what: str) -> None:
    if any(key in parameters for key in _SHARED_MEMORY):
        raise InvalidInput(
            f"{what} uses shared memory, which this server does not support. Send the tensor in the body.",
            code="unsupported_parameter",
        )


# --- responses ----------------------------------------------------------------------------------


def output_array(datatype: str, value: Any, shape: Sequence[int] | None) -> np.ndarray:
    """An output as an array of its datatype: the session's own array, or one rebuilt from the
    JSON form the prediction cache keeps (exact: floats there are the values' shortest decimal
    form, and entries that hold a null for a non-finite value are not used where exactness
    matters, see `services.infer`)."""
    if isinstance(value, np.ndarray):
        array = value
    elif datatype in FLOAT_DATATYPES:
        array = np.array(value, dtype=np.float64).astype(DTYPES[datatype])  # null -> NaN
    else:
        array = np.array(value, dtype=DTYPES[datatype])
    if shape is not None and list(array.shape) != list(shape):
        array = array.reshape(shape)
    return array


def tensor_bytes(datatype: str, array: np.ndarray) -> bytes:
    """A tensor on the wire: little-endian, row-major; BOOL one byte; BYTES length-prefixed."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(item)) + item for item in map(_utf8, array.reshape(-1)))
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.bool_).view(np.uint8).tobytes()
    if datatype == "BF16":
        return np.ascontiguousarray(array, dtype=DTYPES["BF16"]).view(np.uint16).astype("<u2", copy=False).tobytes()
    native = DTYPES[datatype]
    return np.ascontiguousarray(array, dtype=native).astype(native.newbyteorder("<"), copy=False).tobytes()


def json_data(datatype: str, array: np.ndarray) -> list:
    """A tensor's elements as a flat JSON list (row-major); NaN and infinity become null."""
    flat = array.reshape(-1)
    if datatype in FLOAT_DATATYPES:
        finite = np.isfinite(flat)
        if datatype == "BF16" or not finite.all():
            flat = flat.astype(np.float64)
        if not finite.all():
            flat = flat.astype(object)
            flat[~finite] = None
        return flat.tolist()
    if datatype == "BYTES":
        return [item if isinstance(item, str) else to_text(item) for item in flat]
    return flat.tolist()


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[RequestedOutput, np.ndarray]],
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is only JSON)."""
    rendered: list[dict] = []
    blobs: list[bytes] = []
    for requested, array in outputs:
        tensor: dict[str, Any] = {"name": requested.name, "datatype": requested.datatype, "shape": list(array.shape)}
        if requested.binary:
            blob = tensor_bytes(requested.datatype, array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = json_data(requested.datatype, array)
        rendered.append(tensor)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = rendered
    header = orjson.dumps(document)
    if not any(requested.binary for requested, _ in outputs):
        return header, None
    return header + b"".join(blobs), len(header)


def tensor_entries(schema: list[dict]) -> list[dict]:
    """The schema entries the protocol can carry: tensors with a v2 datatype."""
    return [entry for entry in schema if is_supported(entry)]


def tensor_metadata(entry: dict) -> dict:
    """``{"name", "datatype", "shape"}`` with -1 for variable dimensions. An input of unknown rank
    has no shape the protocol can state; it is shown as [-1]."""
    shape = entry.get("shape")
    return {"name": entry["name"], "datatype": entry["datatype"], "shape": [-1] if shape is None else list(shape)}


def feeds_as_json(feeds: dict[str, np.ndarray], schema: list[dict]) -> dict[str, Any]:
    """Feeds as the JSON ``input_data`` the prediction history records (NaN as null)."""
    return encode_outputs(list(feeds), list(feeds.values()), schema)[0]


# --- messages -----------------------------------------------------------------------------------


def _not_utf8(name: str, index: int) -> InvalidInput:
    return reject(
        "invalid_utf8",
        name,
        f"Element {index} of input '{name}' is not UTF-8 text; ONNX string tensors hold text. "
        "Encode the strings as UTF-8.",
    )


def _utf8(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return str(item).encode("utf-8", errors="surrogatepass")


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)
