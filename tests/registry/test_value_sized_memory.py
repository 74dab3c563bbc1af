"""Validation flags models whose memory use is set by the values of their inputs
(registry.onnx_inspect.value_sized_allocations), and only those: such a model is served only
in an isolated, memory-capped process (tests/security/test_model_memory.py)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from registry.onnx_inspect import inspect_model, value_sized_allocations
from tests.inference.conftest import _cache_per_worker, register  # noqa: F401 (fixtures)
from tests.inference.memory_models import (
    make_constant_of_shape_in_branch_model,
    make_constant_of_shape_model,
    make_expand_model,
    make_mask_like_model,
    make_range_model,
    make_tile_model,
)
from tests.registry.onnx_factories import make_add_model, make_constant_of_shape_bomb, make_iris_model

FLAGGED = {
    "ConstantOfShape": (make_constant_of_shape_model, "ConstantOfShape"),
    "Expand": (make_expand_model, "Expand"),
    "Tile": (make_tile_model, "Tile"),
    "Range via Cast and Squeeze": (make_range_model, "Range"),
    "ConstantOfShape inside an If branch": (make_constant_of_shape_in_branch_model, "ConstantOfShape"),
}


@pytest.mark.parametrize("kind", FLAGGED)
def test_value_sized_models_are_flagged(kind):
    factory, op_type = FLAGGED[kind]
    report = inspect_model(factory())
    assert report["value_dependent_memory"] is True
    # The warning names the operator, so the admin's validation panel says why.
    assert any(op_type in warning and "resource_limit_exceeded" in warning for warning in report["warnings"])


@pytest.mark.parametrize(
    "factory",
    [make_add_model, make_iris_model, make_mask_like_model, make_constant_of_shape_bomb],
    ids=["add", "iris", "mask-sized-by-input-shape", "constant-shape"],
)
def test_models_sized_by_shapes_or_constants_are_not_flagged(factory):
    # make_constant_of_shape_bomb's size is a constant: no request changes it (a big one fails
    # validation's test run instead).
    assert value_sized_allocations(onnx.load_model_from_string(factory())) == []


def test_shipped_onnx_models_are_not_flagged_unless_they_size_by_an_input():
    """Every model file shipped in the onnx package (backend test data: converted PyTorch
    models, the light zoo, the simple ones) is traced; only the Expand ones whose shape is a
    graph input are flagged."""
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    paths = sorted(root.glob("**/*.onnx"))
    assert len(paths) > 100
    flagged = [
        path.parent.name for path in paths if value_sized_allocations(onnx.load(str(path), load_external_data=False))
    ]
    assert sorted(flagged) == [f"test_expand_shape_model{n}" for n in range(1, 5)]


@pytest.mark.django_db
def test_flag_is_stored_and_shown_in_the_api(register):  # noqa: F811 (the imported fixture)
    flagged = register(make_tile_model(), name="tiler")
    plain = register(make_add_model(), name="adder")
    assert (flagged["status"], flagged["value_dependent_memory"]) == ("ready", True)
    assert (plain["status"], plain["value_dependent_memory"]) == ("ready", False)
