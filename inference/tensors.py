"""JSON request bodies <-> numpy tensors for the inference API: parse, validate, convert, render.

This is the hot path of every prediction, so values are checked in bulk with numpy and never
element by element in Python unless a request is already known to be wrong. It is pure: no
Django, no database, no global state.

Every rejection is an `InvalidInput` (400) whose ``code`` is one of the following; those the
v2 codec and batch files share are worded in `core.tensor_checks`, and the datatypes are
`core.tensor_types`'s:

``parse_error``             the body is not UTF-8 JSON
``non_finite_value``        NaN or infinity: the literals ``NaN``/``Infinity`` (not JSON), a
                            number that overflows a 64-bit float (``1e400``), strings such as
                            ``"nan"`` or ``"-Infinity"`` in a numeric input, or ``null`` in a float
                            input when non-finite values are not allowed
``nesting_too_deep``        arrays/objects nested deeper than the limit
``invalid_input``           the inputs are not a JSON object, or an input's value is an object
``missing_input``           a model input is absent (all of them are listed)
``unknown_input``           a name the model does not have (the accepted names are listed)
``unsupported_input_type``  the input is not a tensor (sequence, map, ...) or has an element
                            type that cannot be sent as JSON
``invalid_dtype``           an element of the wrong JSON type: booleans or strings in a numeric
                            input, numbers in a BOOL or BYTES input, a fraction in an integer input
``integer_overflow``        an integer outside the input's datatype range (the range is named)
``value_out_of_range``      a finite number too large for a float input's datatype (1e39 for
                            FP32, 70000 for FP16), which would otherwise become infinity
``invalid_shape``           wrong rank, or a fixed dimension of another size
``ragged_array``            nested arrays of unequal lengths
``too_many_elements``       more elements across all inputs than allowed

Nesting depth counts arrays and objects: ``3`` has depth 0, ``[3]`` depth 1, ``{"x": [[3]]}``
depth 3.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import numpy as np
import orjson

from core.tensor_checks import (
    MAX_RANK,
    InvalidInput,
    check_shape,
    index_text,
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
from core.tensor_types import DTYPES, FLOAT_DATATYPES, FLOAT_MAX, INT_RANGES, is_supported

# Above this a float64 no longer holds every integer exactly, so a float there cannot stand for
# one specific integer (orjson also reads integers beyond the 64-bit range as floats).
_EXACT_FLOAT_INT = 2**53

_JSON_NAMES = {
    bool: "true/false",
    int: "integers",
    float: "numbers",
    str: "strings",
    type(None): "null",
    dict: "objects",
    list: "arrays",
}

# JSON bytes that open/close nesting or delimit strings; translate() deletes every other byte.
_STRUCTURAL_BYTES = b'[]{}"'
_OTHER_BYTES = bytes(b for b in range(256) if b not in _STRUCTURAL_BYTES)
_DEPTH_STEP = np.zeros(256, dtype=np.int32)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1

_WORD = re.compile(rb"[A-Za-z]+")

_DIGEST_VERSION = b"modelforge-tensor-digest-v1\n"


# --- the request body ---------------------------------------------------------------------


def parse_json_body(body: bytes, *, max_depth: int) -> Any:
    """Parse a JSON request body strictly.

    orjson does the parsing (C, no recursion in Python, its own depth cap of 1024) and already
    rejects the non-standard ``NaN``/``Infinity`` literals and numbers that overflow to
    infinity; this classifies those failures and enforces ``max_depth`` with a byte scan.
    Raises `InvalidInput` with ``parse_error``, ``non_finite_value`` or ``nesting_too_deep``.
    """
    if not isinstance(body, (bytes, bytearray)):
        body = bytes(body)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _parse_failure(body, exc, max_depth=max_depth) from None
    # At most one open per bracket: bodies with few brackets need no scan at all.
    if body.count(b"[") + body.count(b"{") > max_depth and _nesting_depth(body) > max_depth:
        raise InvalidInput(
            f"The JSON body nests arrays and objects more than {max_depth} levels deep. "
            "Send each input as an array with one level per tensor dimension.",
            code="nesting_too_deep",
        )
    return document


def _parse_failure(body: bytes, exc: orjson.JSONDecodeError, *, max_depth: int) -> InvalidInput:
    where = f"line {exc.lineno} column {exc.colno}"
    if "depth limit" in exc.msg:
        return InvalidInput(
            f"The JSON body nests arrays and objects more than {min(max_depth, 1024)} levels deep "
            f"({where}). Send each input as an array with one level per tensor dimension.",
            code="nesting_too_deep",
        )
    if "infinity" in exc.msg:
        return InvalidInput(
            f"The JSON body contains a number too large for a 64-bit float ({where}), e.g. 1e400, "
            "which would become infinity. Non-finite values are not accepted; send finite numbers.",
            code="non_finite_value",
        )
    # orjson stops at the first letter of NaN/Infinity (after any sign).
    word = _WORD.match(body, exc.pos)
    if word and word.group().lower() in (b"nan", b"inf", b"infinity"):
        return InvalidInput(
            f"The JSON body contains a NaN or Infinity literal ({where}); JSON has no such values "
            "and they are not accepted. Send finite numbers.",
            code="non_finite_value",
        )
    if not body.strip():
        return InvalidInput("The request body is empty. Send a JSON object.", code="parse_error")
    return InvalidInput(
        f"The request body is not valid JSON: {exc.msg} ({where}). Send a UTF-8 encoded JSON document.",
        code="parse_error",
    )


def _nesting_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in a body that is known to be valid JSON.

    Works on bytes in C and numpy, never on the parsed tree: escapes are removed, brackets
    inside strings are masked out by quote parity, and the depth is a cumulative sum.
    """
    if b"\\" in body:
        # In valid JSON a backslash only starts an escape of one character. Dropping the `\\`
        # pairs first (left to right, as a parser pairs them) leaves every `\"` a real escaped
        # quote, and after dropping those every remaining quote delimits a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = np.frombuffer(body.translate(None, _OTHER_BYTES), dtype=np.uint8)
    steps = _DEPTH_STEP[marks]
    inside_string = (np.cumsum(marks == ord('"'), dtype=np.int64) & 1).astype(bool)
    steps[inside_string] = 0
    return int(np.cumsum(steps).max(initial=0))


# --- inputs -------------------------------------------------------------------------------


def decode_inputs(
    input_data: Any,
    schema: list[dict],
    *,
    allow_non_finite: bool = False,
    max_elements: int,
    max_depth: int,
) -> dict[str, np.ndarray]:
    """Validate ``{input name: nested list or scalar}`` against a model's input schema and
    convert each value to the numpy array ONNX Runtime expects for it.

    Numbers become the input's dtype only when they fit it exactly: integers within the
    integer type's range (floats such as ``3.0`` count as integers), and for float types any
    number whose rounded value is finite. Booleans are accepted only by BOOL inputs, strings
    only by BYTES inputs (as an object array of str). With ``allow_non_finite``, ``null`` is
    NaN in float inputs (and NaN/infinity floats passed in from Python are kept); otherwise
    any non-finite value is rejected. Raises `InvalidInput` (codes in the module docstring).
    """
    if not isinstance(input_data, dict):
        raise InvalidInput(
            "The inputs must be a JSON object mapping each input name to its value, like "
            f'{{"{schema[0]["name"] if schema else "x"}": [[...]]}}; received {json_kind(input_data)}.',
            code="invalid_input",
        )
    accepted = [entry["name"] for entry in schema]
    known = set(accepted)
    unknown = [name for name in input_data if name not in known]
    if unknown:
        raise InvalidInput(
            f"Unknown input {names_text(unknown)}. This model accepts {names_text(accepted)}.",
            code="unknown_input",
            input_name=str(unknown[0]),
        )
    missing = [name for name in accepted if name not in input_data]
    if missing:
        raise missing_input(missing, accepted)

    arrays: dict[str, np.ndarray] = {}
    remaining = max_elements
    for entry in schema:
        name = entry["name"]
        array = _decode_one(
            entry,
            input_data[name],
            allow_non_finite=allow_non_finite,
            max_depth=max_depth,
            remaining=remaining,
            max_elements=max_elements,
        )
        remaining -= array.size
        arrays[name] = array
    return arrays


def _decode_one(
    entry: dict, value: Any, *, allow_non_finite: bool, max_depth: int, remaining: int, max_elements: int
) -> np.ndarray:
    if not is_supported(entry):
        raise unsupported_input_type(entry)
    name = entry["name"]
    datatype = entry["datatype"]
    if isinstance(value, dict):
        raise reject(
            "invalid_input",
            name,
            f"Input '{name}' must be a {datatype} value or a nested array of them, not a JSON object.",
        )

    # The first element at each level gives the depth and, for regular arrays, the shape:
    # enough to refuse deep or huge values before numpy builds anything.
    leading: list[int] = []
    node = value
    depth_limit = min(max_depth, MAX_RANK)
    while isinstance(node, (list, tuple)):
        if len(leading) == depth_limit:
            raise reject(
                "nesting_too_deep",
                name,
                f"Input '{name}' nests arrays more than {depth_limit} levels deep. Send one array "
                f"level per dimension (expected shape {shape_text(entry.get('shape'))}).",
            )
        leading.append(len(node))
        if not node:
            break
        node = node[0]
    if math.prod(leading) > remaining:
        raise too_many_elements(name, math.prod(leading), remaining, max_elements)

    if datatype == "BYTES":
        # dtype=object, or numpy would turn numbers into strings; it then keeps ragged rows
        # as list elements instead of failing.
        array = _build(name, value, dtype=object)
        types = set(map(type, array.flat))
        if list in types or tuple in types:
            raise _ragged(name)
        check_shape(name, entry.get("shape"), array.shape)
        result = _strings(name, array, types)
    else:
        array = _build(name, value)
        check_shape(name, entry.get("shape"), array.shape)
        if datatype == "BOOL":
            result = _bools(name, value, array)
        else:
            result = _numbers(name, datatype, value, array, allow_non_finite=allow_non_finite)
    if result.size > remaining:
        raise too_many_elements(name, result.size, remaining, max_elements)
    return result


def _build(name: str, value: Any, *, dtype: Any = None) -> np.ndarray:
    """numpy's conversion, with its element type inferred (never cast: numpy would turn "1.5"
    into 1.5) and its shape errors turned into ours."""
    try:
        array = np.array(value, dtype=dtype)
    except ValueError as exc:
        if "maximum number of dimension" in str(exc):
            raise reject(
                "nesting_too_deep", name, f"Input '{name}' nests arrays more than {MAX_RANK} levels deep."
            ) from None
        raise _ragged(name) from None
    return array


def _ragged(name: str) -> InvalidInput:
    return reject(
        "ragged_array",
        name,
        f"Input '{name}' is a ragged array: nested arrays at the same level must all have the same "
        "length, and numbers and arrays cannot be mixed at one level. Pad or split the rows.",
    )


def _strings(name: str, array: np.ndarray, types: set[type]) -> np.ndarray:
    if types - {str}:
        raise reject(
            "invalid_dtype",
            name,
            f"Input '{name}' is a string tensor (BYTES): every element must be a JSON string; "
            f"found {_type_list(types - {str})}. Quote the values.",
        )
    return array


def _bools(name: str, value: Any, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "b":
        return array
    if array.size == 0:
        return array.astype(np.bool_)
    raise reject(
        "invalid_dtype",
        name,
        f"Input '{name}' is BOOL: every element must be true or false; found "
        f"{_type_list(_leaf_types(value, array) - {bool})} (0 and 1 are not accepted).",
    )


def _numbers(name: str, datatype: str, value: Any, array: np.ndarray, *, allow_non_finite: bool) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "O":
        # null, objects, strings mixed with numbers, or integers beyond 64 bits.
        array = _numbers_from_objects(name, datatype, array, allow_non_finite=allow_non_finite)
    elif kind == "U":
        raise _strings_in_numbers(name, datatype, _leaves(value, array.ndim), allow_non_finite=allow_non_finite)
    elif kind == "b":
        raise _bools_in_numbers(name, datatype)
    elif kind not in "iuf":
        raise reject("invalid_dtype", name, f"Input '{name}' must hold {datatype} numbers.")
    elif (
        not isinstance(value, np.ndarray)  # arrays (.npy batches, binary tensors) hold no JSON booleans
        and array.size
        and ((array == 0) | (array == 1)).any()
        and bool in set(map(type, _leaves(value, array.ndim)))
    ):
        # numpy turns true/false among numbers into 1/0 silently; only 0 and 1 can be one.
        raise _bools_in_numbers(name, datatype)

    if datatype in FLOAT_DATATYPES:
        return _to_float(name, datatype, array, allow_non_finite=allow_non_finite)
    return _to_int(name, datatype, value, array)


def _numbers_from_objects(name: str, datatype: str, array: np.ndarray, *, allow_non_finite: bool) -> np.ndarray:
    types = set(map(type, array.flat))
    if bool in types:
        raise _bools_in_numbers(name, datatype)
    if str in types:
        raise _strings_in_numbers(name, datatype, array.flat, allow_non_finite=allow_non_finite)
    if types - {int, float, type(None)}:
        raise reject(
            "invalid_dtype",
            name,
            f"Input '{name}' must hold {datatype} numbers; found {_type_list(types - {int, float, type(None)})}.",
        )
    if type(None) in types:
        nulls = np.equal(array, None)
        if datatype not in FLOAT_DATATYPES:
            raise reject(
                "invalid_dtype",
                name,
                f"Input '{name}' is {datatype} and cannot hold null (at {index_text(array, nulls)}). "
                "Send an integer for every element.",
            )
        if not allow_non_finite:
            raise reject(
                "non_finite_value",
                name,
                f"Input '{name}' contains null (at {index_text(array, nulls)}), i.e. a missing or NaN value; "
                "non-finite values are not accepted. Send a number for every element.",
            )
        array[nulls] = math.nan
    # What is left are Python ints beyond 64 bits (maybe with floats): compare them exactly,
    # in Python. A rare path, so per-element loops are fine here.
    if datatype in INT_RANGES:
        _check_int_range(name, datatype, array, min(array.flat), max(array.flat))
        fractional = _mask(array, lambda x: isinstance(x, float) and not x.is_integer())
        if fractional.any():
            raise _not_whole(name, datatype, array, fractional)
        # orjson reads an integer literal outside the 64-bit range as a float, which may round
        # onto the boundary itself (-2**63 - 1 -> -2**63): a float at or past a 64-bit bound
        # can only be such an overflow, since an in-range integer arrives as an int.
        lowest, highest = INT_RANGES[datatype]
        if highest >= 2**63 - 1:
            boundary = _mask(array, lambda x: isinstance(x, float) and (x <= lowest or x >= highest))
            if boundary.any():
                raise reject(
                    "integer_overflow",
                    name,
                    f"Input '{name}' is {datatype}, which holds integers from {lowest} to {highest}; the value "
                    f"at {index_text(array, boundary)} is outside that range. Send values within that range.",
                )
        inexact = _mask(array, lambda x: isinstance(x, float) and abs(x) > _EXACT_FLOAT_INT)
        if inexact.any():
            raise reject(
                "invalid_dtype",
                name,
                f"Input '{name}' is {datatype} and holds a float beyond ±2**53 at {index_text(array, inexact)}, "
                "where floats no longer stand for one exact integer. Send every value as a plain JSON "
                "integer, without a decimal point or exponent.",
            )
        return array.astype(DTYPES[datatype])
    try:
        return array.astype(np.float64)
    except OverflowError:
        too_big = _mask(array, lambda x: isinstance(x, int) and abs(x) > FLOAT_MAX["FP64"])
        raise _out_of_range(name, datatype, array, too_big) from None


def _mask(array: np.ndarray, test: Callable[[Any], bool]) -> np.ndarray:
    return np.fromiter(map(test, array.flat), dtype=bool, count=array.size).reshape(array.shape)


def _to_float(name: str, datatype: str, array: np.ndarray, *, allow_non_finite: bool) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(DTYPES[datatype], copy=False)
    finite = np.isfinite(result)
    if finite.all():
        return result
    # Rare path: tell overflow (a finite number too big for the type) from a real NaN/inf.
    source_finite = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, dtype=bool)
    overflowed = source_finite & ~finite
    if overflowed.any():
        raise _out_of_range(name, datatype, array, overflowed)
    if not allow_non_finite:
        raise non_finite_values(name, array, ~finite)
    return result


def _to_int(name: str, datatype: str, value: Any, array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        return array.astype(DTYPES[datatype])
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise reject(
                "non_finite_value",
                name,
                f"Input '{name}' is {datatype} and cannot hold NaN or infinity (at {index_text(array, ~finite)}). "
                "Send integers.",
            )
        fractional = array != np.trunc(array)
        if fractional.any():
            raise _not_whole(name, datatype, array, fractional)
        if np.abs(array).max() > _EXACT_FLOAT_INT:
            # Beyond 2**53 a float64 no longer holds every integer, and numpy infers float64
            # for int64 and uint64 values together ([1, 2**64 - 1]): read the values exactly.
            return _numbers_from_objects(name, datatype, np.array(value, dtype=object), allow_non_finite=False)
    _check_int_range(name, datatype, array, int(array.min()), int(array.max()))
    return array.astype(DTYPES[datatype], copy=False)


def _check_int_range(name: str, datatype: str, array: np.ndarray, low: int | float, high: int | float) -> None:
    lowest, highest = INT_RANGES[datatype]
    if low >= lowest and high <= highest:
        return
    offending = high if high > highest else low
    raise reject(
        "integer_overflow",
        name,
        f"Input '{name}' is {datatype}, which holds integers from {lowest} to {highest}; the value at "
        f"{index_text(array, array == offending)} is {_number_text(offending)}. Send values "
        "within that range.",
    )


# --- rejections ------------------------------------------------------------------------------


def _bools_in_numbers(name: str, datatype: str) -> InvalidInput:
    return reject(
        "invalid_dtype",
        name,
        f"Input '{name}' is {datatype} and contains true/false; send numbers (1 and 0) instead.",
    )


def _strings_in_numbers(name: str, datatype: str, leaves: Iterable[Any], *, allow_non_finite: bool) -> InvalidInput:
    strings = [leaf for leaf in leaves if isinstance(leaf, str)]
    for text in strings:
        if _is_non_finite_text(text):
            hint = " Use null for a missing value (NaN)." if allow_non_finite and datatype in FLOAT_DATATYPES else ""
            return reject(
                "non_finite_value",
                name,
                f"Input '{name}' contains the string {short(repr(text))}, a non-finite number; NaN and "
                f"infinity are not accepted, as strings or otherwise.{hint} Send finite JSON numbers.",
            )
    return reject(
        "invalid_dtype",
        name,
        f"Input '{name}' is {datatype} and contains strings (e.g. {short(repr(strings[0]))}); send JSON "
        "numbers, without quotes.",
    )


def _is_non_finite_text(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _not_whole(name: str, datatype: str, array: np.ndarray, fractional: np.ndarray) -> InvalidInput:
    return reject(
        "invalid_dtype",
        name,
        f"Input '{name}' is {datatype} and needs integers; the value at {index_text(array, fractional)} is "
        f"{_number_text(array[fractional].flat[0])}. Send whole numbers (3 or 3.0, not 3.5).",
    )


def _out_of_range(name: str, datatype: str, array: np.ndarray, mask: np.ndarray) -> InvalidInput:
    return reject(
        "value_out_of_range",
        name,
        f"Input '{name}' is {datatype}, whose largest finite magnitude is {FLOAT_MAX[datatype]:g}; the "
        f"value at {index_text(array, mask)} is {_number_text(array[mask].flat[0])}, which would become "
        "infinity. Scale the values into range.",
    )


def _leaves(value: Any, ndim: int) -> Iterable[Any]:
    """The scalars of a nested list numpy found regular to depth ``ndim``, flattened in C."""
    if ndim == 0:
        return (value,)
    leaves: Iterable[Any] = value
    for _ in range(ndim - 1):
        leaves = chain.from_iterable(leaves)
    return leaves


def _leaf_types(value: Any, array: np.ndarray) -> set[type]:
    return set(map(type, array.flat if array.dtype == object else _leaves(value, array.ndim)))


def _number_text(number: Any) -> str:
    number = number.item() if isinstance(number, np.generic) else number
    text = str(number)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _type_list(types: set[type]) -> str:
    return ", ".join(sorted(_json_name(t) for t in types))


def _json_name(kind: type) -> str:
    return _JSON_NAMES.get(kind, kind.__name__)


# --- outputs ------------------------------------------------------------------------------


def encode_outputs(names: list[str], values: list, output_schema: list[dict]) -> tuple[dict, list[str]]:
    """Render ``session.run(None, ...)`` results as JSON-ready Python values.

    Tensors become nested lists (``.tolist()``: floats, ints, bools, str); NaN and infinity in
    float tensors become ``None``, with one warning per affected output. Sequences become
    lists and maps become dicts; a ZipMap output (a list of ``{label: probability}``) stays a
    list of dicts whose keys are strings: integer labels are rendered in decimal (``"0"``), as
    JSON object keys are strings anyway. ``output_schema`` supplies each output's declared
    datatype: BYTES outputs are rendered as text even when their elements arrive as bytes.
    Returns ``({name: value}, warnings)``.
    """
    declared = {entry["name"]: entry.get("datatype") for entry in output_schema}
    rendered: dict[str, Any] = {}
    warnings: list[str] = []
    for name, value in zip(names, values, strict=True):
        non_finite = [0]
        rendered[name] = _encode(value, non_finite, as_text=declared.get(name) == "BYTES")
        if non_finite[0]:
            plural = "s" if non_finite[0] != 1 else ""
            warnings.append(f"output '{name}': {non_finite[0]} non-finite value{plural} rendered as null")
    return rendered, warnings


def _encode(value: Any, non_finite: list[int], *, as_text: bool = False) -> Any:
    if isinstance(value, np.ndarray):
        return _encode_array(value, non_finite, as_text=as_text)
    if isinstance(value, dict):
        return {_json_key(key): _encode(item, non_finite) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            return _encode_maps(value, non_finite)
        return [_encode(item, non_finite, as_text=as_text) for item in value]
    if isinstance(value, np.generic):
        return _encode_array(np.asarray(value), non_finite, as_text=as_text)
    if isinstance(value, float) and not math.isfinite(value):
        non_finite[0] += 1
        return None
    if isinstance(value, bytes):
        return to_text(value)
    return value


def _encode_array(array: np.ndarray, non_finite: list[int], *, as_text: bool) -> Any:
    kind = array.dtype.kind
    if kind == "f" or array.dtype == DTYPES["BF16"]:
        finite = np.isfinite(array)
        if finite.all():
            return array.tolist()
        non_finite[0] += int(array.size - np.count_nonzero(finite))
        rendered = array.astype(np.float64).astype(object)
        rendered[~finite] = None
        return rendered.tolist()
    if kind in "biuU":
        return array.tolist()
    if kind == "S":
        return np.char.decode(array, "utf-8", errors="replace").tolist()
    if kind == "O":
        types = set(map(type, array.flat))
        if types <= {str}:  # what ONNX Runtime returns for tensor(string)
            return array.tolist()
        if as_text or types <= {str, bytes}:
            return _map_elements(array, to_text)
        return _map_elements(array, lambda item: _encode(item, non_finite))
    # Complex, datetime and other types JSON has no number for: their text.
    return _map_elements(array, str)


def _encode_maps(rows: list | tuple, non_finite: list[int]) -> list:
    """A ZipMap output: one ``{label: probability}`` dict per row, normally all with the same
    labels in the same order and finite values. That case is checked for all rows at once,
    in C, and the labels are rendered once; anything else goes row by row."""
    labels = tuple(rows[0])
    if set(map(type, rows)) == {dict} and all(map(labels.__eq__, map(tuple, rows))):
        values = list(chain.from_iterable(map(dict.values, rows)))
        if set(map(type, values)) <= {float, int} and all(map(math.isfinite, values)):
            rendered_labels = [_json_key(label) for label in labels]
            return [dict(zip(rendered_labels, row_values, strict=True)) for row_values in map(dict.values, rows)]
    return [_encode(row, non_finite) for row in rows]


def _map_elements(array: np.ndarray, convert: Callable[[Any], Any]) -> Any:
    rendered = np.empty(array.shape, dtype=object)
    for index, item in enumerate(array.flat):
        rendered.flat[index] = convert(item)
    return rendered.tolist()


def _json_key(key: Any) -> str:
    if isinstance(key, bytes):
        return to_text(key)
    return key if isinstance(key, str) else str(key.item() if isinstance(key, np.generic) else key)


# --- cache keys and examples -------------------------------------------------------------


def tensor_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 hex digest of validated inputs, for use as a cache key.

    Covers, per input in name order: the name, dtype, shape and the raw bytes (for string
    tensors, each element's UTF-8 prefixed by its length), each part framed so that no two
    different inputs can produce the same byte stream.
    """
    digest = hashlib.sha256(_DIGEST_VERSION)
    for name in sorted(arrays):
        array = arrays[name]
        header = orjson.dumps([name, array.dtype.str, array.dtype.name, list(array.shape)])
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        if array.dtype == object:
            for item in array.flat:
                encoded = str(item).encode("utf-8", errors="surrogatepass")
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
        else:
            # The header fixes the byte count. Viewed as bytes (numpy's buffer export refuses
            # float16 and bfloat16); a C-contiguous array is hashed without a copy.
            digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def example_input(schema: list[dict]) -> dict:
    """An ``input_data`` document the schema accepts: zeros, false or "" everywhere, variable
    dimensions 1, and a one-element list for an input of unknown rank. Raises `InvalidInput`
    (``unsupported_input_type``) for inputs that cannot be sent as JSON, as decoding would."""
    example: dict[str, Any] = {}
    for entry in schema:
        if not is_supported(entry):
            raise unsupported_input_type(entry)
        datatype = entry["datatype"]
        shape = [1] if entry.get("shape") is None else [d if d >= 0 else 1 for d in entry["shape"]]
        if datatype == "BYTES":
            value = np.full(shape, "", dtype=object)
        else:
            value = np.zeros(shape, dtype=np.float64 if datatype in FLOAT_DATATYPES else DTYPES[datatype])
        example[entry["name"]] = value.tolist()
    return example
