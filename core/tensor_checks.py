"""Rejections of tensor inputs, worded once for every door that takes tensors: the JSON codec
(`inference.tensors`), the v2 codec (`inference.v2.codec`) and batch files (`jobs.batch_io`).

Each rejection is an `InvalidInput` (400) whose ``code`` is API (clients match on it) and whose
``input_name`` is the input concerned; the detail names the input and says what to change. The
codes each door raises are listed in its module docstring. Pure: no Django, no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rest_framework import status

from core.exceptions import DomainError

# numpy's own ceiling on array rank; deeper nesting cannot be a tensor at all.
MAX_RANK = 64

_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


class InvalidInput(DomainError):
    """The request body or its inputs cannot become tensors for the model (400).

    ``code`` names the rule that failed (``ragged_array``, ``integer_overflow``, ...) and
    ``input_name`` the offending input when there is one; the detail names it too and says
    what to change.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_input"

    def __init__(self, detail: str, *, code: str | None = None, input_name: str | None = None):
        super().__init__(detail, code=code)
        self.input_name = input_name


def reject(code: str, name: str, detail: str) -> InvalidInput:
    """The rejection of input ``name`` under rule ``code``."""
    return InvalidInput(detail, code=code, input_name=name)


# --- shapes -----------------------------------------------------------------------------------


def check_shape(name: str, expected: Sequence[int] | None, shape: Sequence[int], *, declared: bool = False) -> None:
    """Refuse a shape of another rank than the schema's, or with a fixed dimension of another
    size (-1 in ``expected`` is any size; ``expected`` None is any rank). ``declared``: the
    client stated the shape (v2) rather than it being read off nested arrays or a file."""
    if expected is None:
        return
    if len(shape) == len(expected):
        for want, got in zip(expected, shape, strict=True):
            if want != got and want != -1:
                break
        else:
            return
    raise _shape_mismatch(name, expected, shape, declared=declared)


def _shape_mismatch(name: str, expected: Sequence[int], shape: Sequence[int], *, declared: bool) -> InvalidInput:
    source = "the request declares" if declared else "received"
    if len(shape) != len(expected):
        hint = ""
        if len(shape) + 1 == len(expected) and expected[0] == -1:
            hint = " For a single example, add a leading batch dimension of 1 (a batch of one: wrap it in a list)."
        return reject(
            "invalid_shape",
            name,
            f"Input '{name}' expects shape {shape_text(expected)} (rank {len(expected)}, -1 = any size); "
            f"{source} {shape_text(shape)} (rank {len(shape)}).{hint}",
        )
    # A declared shape stands in the request beside the data; one read off nested arrays does
    # not, so the message points at the dimension that is off.
    where = ""
    if not declared:
        axis = next(axis for axis, (want, got) in enumerate(zip(expected, shape, strict=True)) if want not in (-1, got))
        where = f": dimension {axis} must be {expected[axis]}, not {shape[axis]}"
    return reject(
        "invalid_shape",
        name,
        f"Input '{name}' expects shape {shape_text(expected)} (-1 = any size); {source} {shape_text(shape)}{where}.",
    )


# --- names, types and sizes -------------------------------------------------------------------


def missing_input(missing: Sequence[str], accepted: Iterable[str]) -> InvalidInput:
    return reject(
        "missing_input",
        missing[0],
        f"Missing input {names_text(missing)}. This model needs {names_text(accepted)}.",
    )


def unsupported_input_type(entry: dict) -> InvalidInput:
    """An input that is not a tensor of a datatype in `core.tensor_types` (a sequence, a map,
    a float8 tensor, ...): no request can carry it."""
    name = entry["name"]
    return reject(
        "unsupported_input_type",
        name,
        f"Input '{name}' has type {entry.get('onnx_type')}, which cannot be sent in a request: only "
        "numeric, bool and string tensors can. Export the model with inputs of those types.",
    )


def too_many_elements(name: str, count: int, remaining: int, max_elements: int) -> InvalidInput:
    left = f" ({remaining} were left for it)" if remaining < max_elements else ""
    return reject(
        "too_many_elements",
        name,
        f"Input '{name}' has {count} elements, over the {max_elements} allowed across all inputs of one "
        f"request{left}. Split the batch into smaller requests.",
    )


def non_finite_values(name: str, array: np.ndarray, mask: np.ndarray) -> InvalidInput:
    """NaN or infinity where the model does not allow them; ``mask`` marks them in ``array``."""
    return reject(
        "non_finite_value",
        name,
        f"Input '{name}' contains NaN or infinity (at {index_text(array, mask)}); non-finite values "
        "are not accepted. Send finite numbers.",
    )


# --- strings ----------------------------------------------------------------------------------


def to_text(item: Any) -> str:
    """An element of a string tensor as text: bytes are decoded as UTF-8 (invalid bytes replaced)."""
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


# --- text for messages ------------------------------------------------------------------------


def names_text(names: Iterable[Any]) -> str:
    return ", ".join(f"'{name}'" for name in names) or "none"


def shape_text(shape: Sequence[int] | None) -> str:
    return "any shape" if shape is None else "[" + ", ".join(str(dim) for dim in shape) + "]"


def index_text(array: np.ndarray, mask: np.ndarray) -> str:
    """Where the first element ``mask`` marks is: ``index [0, 3]``."""
    hits = np.flatnonzero(mask)
    if array.ndim == 0 or not hits.size:
        return "the scalar value" if array.ndim == 0 else "some index"
    position = np.unravel_index(int(hits[0]), array.shape)
    return "index " + shape_text([int(i) for i in position])


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, for "received ..." in messages."""
    return _JSON_KINDS.get(type(value), "a number")


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
