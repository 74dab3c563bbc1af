"""Which features drift watches, per tensor, and the statistics on known distributions
(monitoring.features, monitoring.distributions): pure, no database."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring import features as F
from monitoring.distributions import (
    OTHER,
    ReferenceClasses,
    ReferenceNumbers,
    Reservoir,
    WindowClasses,
    WindowNumbers,
    compare,
)


def _tensor(name, datatype, shape):
    return {"name": name, "datatype": datatype, "shape": shape, "kind": "tensor", "onnx_type": "tensor"}


def test_each_kind_of_tensor_gives_its_features():
    plan = F.plan_features(
        [_tensor("X", "FP32", [-1, 3]), _tensor("image", "UINT8", [-1, 28, 28]), _tensor("wide", "FP32", [-1, -1])],
        [
            _tensor("label", "INT64", [-1]),
            _tensor("name", "BYTES", [-1, 1]),
            _tensor("score", "FP32", [-1, 1]),
            {"name": "zipmap", "datatype": None, "shape": None, "kind": "sequence", "onnx_type": "seq(map)"},
        ],
        max_features=20,
    )
    described = [(f.name, f.source, f.kind, f.statistic) for f in plan.features]
    assert described == [
        ("X[0]", "input", "numeric", "column"),
        ("X[1]", "input", "numeric", "column"),
        ("X[2]", "input", "numeric", "column"),
        ("image (mean)", "input", "numeric", "mean"),
        ("wide (mean)", "input", "numeric", "mean"),
        ("label", "output", "categorical", "value"),
        ("name", "output", "categorical", "value"),
        ("score", "output", "numeric", "value"),
    ]
    assert plan.skipped == ["output 'zipmap' (seq(map)): not a tensor"]


def test_values_are_read_from_arrays_and_from_recorded_json_alike():
    column = F.Feature("X[1]", "input", "X", F.NUMERIC, "column", 1)
    rows = [[1.0, 2.0], [3.0, None], [5.0, 6.0]]
    assert np.array_equal(F.numbers(column, rows), [2.0, np.nan, 6.0], equal_nan=True)
    assert np.array_equal(F.numbers(column, np.array(rows, dtype=float)), [2.0, np.nan, 6.0], equal_nan=True)
    ragged = [[1.0, 2.0], [3.0], [5.0, 6.0]]
    assert F.numbers(column, ragged).tolist() == [2.0, 6.0]
    mean = F.Feature("image (mean)", "input", "image", F.NUMERIC, "mean")
    assert F.numbers(mean, [[[1, 3], [5, 7]], [[0, 0], [0, 2]]]).tolist() == [4.0, 0.5]
    assert F.categories([[1], [2], [True]]) == ["1", "2", "True"]


def test_reservoir_keeps_a_uniform_sample_of_bounded_size():
    reservoir = Reservoir(1000, np.random.default_rng(0))
    for start in range(0, 100_000, 7_000):
        reservoir.add(np.arange(start, min(start + 7_000, 100_000), dtype=float))
    sample = reservoir.sample()
    assert len(sample) == 1000 and reservoir.seen == 100_000
    # Uniform over 0..99,999: each tenth holds about a tenth of the sample.
    counts = np.bincount((sample // 10_000).astype(int), minlength=10)
    assert counts.min() > 60 and counts.max() < 140


@pytest.mark.parametrize(("shift", "drifted"), [(0.0, False), (1.0, True)])
def test_psi_and_ks_tell_a_shifted_normal_from_the_same_one(shift, drifted):
    rng = np.random.default_rng(1)
    reference = ReferenceNumbers(rng)
    for _ in range(5):
        reference.add(rng.normal(0, 1, 4_000))
    summary = reference.summary()
    assert len(summary["counts"]) == 10 and sum(summary["counts"]) == 20_000
    assert summary["mean"] == pytest.approx(0, abs=0.05) and summary["std"] == pytest.approx(1, abs=0.05)
    window = WindowNumbers(summary, rng)
    window.add(rng.normal(shift, 1, 2_000))
    numbers = compare(summary, window)
    assert numbers["rows"] == 2_000 and numbers["test"] == "ks"
    assert (numbers["psi"] > 0.25) is drifted and (numbers["p_value"] < 1e-6) is drifted
    assert (numbers["psi"] < 0.02) is not drifted and (numbers["p_value"] > 0.01) is not drifted


def test_classes_unknown_to_the_reference_count_as_other_and_move_the_chi_square():
    reference = ReferenceClasses()
    reference.add(["a"] * 500 + ["b"] * 500)
    summary = reference.summary()
    assert summary["categories"] == ["a", "b"] and summary["counts"] == [500, 500]
    window = WindowClasses(summary)
    window.add(["a"] * 100 + ["b"] * 50 + ["c"] * 50)
    numbers = compare(summary, window)
    assert numbers["categories"] == ["a", "b", OTHER]
    assert numbers["window_counts"] == [100, 50, 50] and numbers["reference_counts"] == [500, 500, 0]
    assert numbers["test"] == "chi2" and numbers["p_value"] < 1e-6 and numbers["psi"] > 0.25
