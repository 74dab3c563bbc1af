"""Benchmark: what running a model in its memory-capped child process costs per request.

The same session run, in process (`LoadedSession.run` on an `InferenceSession`) and isolated
(`inference.isolation.IsolatedSession`: a pipe round trip, the inputs and outputs copied both
ways), alternating A/B/A/B so that a machine's changing load hits both alike. Per round: the
median of N sequential runs; printed: every round, the median of the rounds and the ratio.

Cases: the iris classifier (one row, ZipMap output: a list of dicts on the wire), a float MLP
with 1 000 rows of 64 features (256 KB in, 32 KB out), and a ConstantOfShape model (the kind
that is isolated by default) answering 1 MB.

    .venv/bin/python bench/isolation.py [--rounds 4] [--runs 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import machine  # noqa: E402
from inference.isolation import IsolatedSession  # noqa: E402
from tests.inference.memory_models import make_constant_of_shape_model  # noqa: E402
from tests.registry.onnx_factories import make_iris_model  # noqa: E402


def mlp_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 8)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["Y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


CASES = {
    "iris, 1 row (ZipMap)": (
        lambda: make_iris_model(zipmap=True),
        {"X": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)},
    ),
    "MLP, 1000 x 64 rows": (mlp_model, {"X": np.random.default_rng(1).standard_normal((1000, 64)).astype(np.float32)}),
    "ConstantOfShape, 1 MB out": (make_constant_of_shape_model, {"shape": np.array([512, 512], dtype=np.int64)}),
}


def per_run_us(run, feeds, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run(feeds)
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(machine())
    for label, (factory, feeds) in CASES.items():
        data = factory()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        isolated = IsolatedSession(
            data,
            memory_mb=1024,
            intra_op_threads=1,
            inter_op_threads=1,
            optimization_level="all",
            start_timeout=60,
            label=label,
        )
        a_runner = partial(session.run, None)
        b_runner = partial(isolated.run, timeout=30)
        for runner in (a_runner, b_runner):  # warm both
            per_run_us(runner, feeds, 20)
        a_rounds, b_rounds = [], []
        for _ in range(args.rounds):
            a_rounds.append(per_run_us(a_runner, feeds, args.runs))
            b_rounds.append(per_run_us(b_runner, feeds, args.runs))
        a, b = statistics.median(a_rounds), statistics.median(b_rounds)
        print(f"{label}")
        print("  in process (us):", " ".join(f"{x:.0f}" for x in a_rounds), f"median {a:.0f}")
        print("  isolated   (us):", " ".join(f"{x:.0f}" for x in b_rounds), f"median {b:.0f}")
        print(f"  isolated costs +{b - a:.0f} us per run, x{b / a:.2f}")
        isolated.close()


if __name__ == "__main__":
    main()
