"""registry.sandbox: the child process contains what a hostile model can do to the process
that inspects it (memory, CPU, crashes), and reports each outcome with its own code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import sandbox
from registry.sandbox import SandboxResult, inspect_in_sandbox
from tests.registry.onnx_factories import (
    make_add_model,
    make_busy_loop_model,
    make_constant_of_shape_bomb,
    make_external_data_model,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_path(tmp_path):
    """model_path(data) -> the path of a file holding ``data``."""

    def _write(data: bytes) -> Path:
        path = tmp_path / "model.onnx"
        path.write_bytes(data)
        return path

    return _write


def test_sandbox_accepts_a_valid_model(model_path):
    result = inspect_in_sandbox(model_path(make_add_model()), memory_mb=1024, timeout_seconds=30)

    assert result.ok, result.detail
    assert (result.code, result.detail) == (None, None)
    assert [entry["name"] for entry in result.report["input_schema"]] == ["X", "Y"]


def test_sandbox_passes_on_the_inspection_codes(model_path):
    result = inspect_in_sandbox(
        model_path(make_external_data_model("../../etc/passwd")), memory_mb=1024, timeout_seconds=30
    )

    assert (result.ok, result.report, result.code) == (False, None, "external_data_forbidden")
    assert "../../etc/passwd" in result.detail


def test_sandbox_rejects_random_bytes_as_invalid_model(model_path):
    data = bytes(range(256)) * 16

    result = inspect_in_sandbox(model_path(data), memory_mb=1024, timeout_seconds=30)

    assert (result.ok, result.code) == (False, "invalid_model")


def test_sandbox_rejects_constant_of_shape_bomb_as_resource_limit_exceeded(model_path):
    # What happens: onnxruntime does not constant-fold ConstantOfShape, so the session loads;
    # the dummy run then asks its arena for 4 * 10**11 bytes, malloc fails, and onnxruntime
    # raises "Failed to allocate memory for requested buffer" (an error, not a crash), which
    # inspect_model reports as resource_limit_exceeded. The child exits normally.
    result = inspect_in_sandbox(model_path(make_constant_of_shape_bomb()), memory_mb=1024, timeout_seconds=30)

    assert (result.ok, result.code) == (False, "resource_limit_exceeded")
    assert "Failed to allocate memory" in result.detail


def test_sandbox_memory_limit_stops_a_bomb_the_machine_could_satisfy(model_path):
    # 2 GiB is granted without a limit (this test would then pass with ok=True, slowly); the
    # child's RLIMIT_AS of 1024 MB is what makes the allocation fail.
    bomb = make_constant_of_shape_bomb((512, 1024, 1024))

    result = inspect_in_sandbox(model_path(bomb), memory_mb=1024, timeout_seconds=30)

    assert (result.ok, result.code) == (False, "resource_limit_exceeded")


def test_sandbox_times_out_before_the_child_can_finish(model_path):
    # Starting Python alone takes longer than 10 ms.
    result = inspect_in_sandbox(model_path(make_add_model()), memory_mb=1024, timeout_seconds=0.01)

    assert (result.ok, result.code) == (False, "validation_timeout")


def test_sandbox_stops_a_model_that_computes_forever(model_path):
    started = time.monotonic()

    result = inspect_in_sandbox(model_path(make_busy_loop_model()), memory_mb=1024, timeout_seconds=2)

    assert (result.ok, result.code) == (False, "validation_timeout")
    assert time.monotonic() - started < 10


def test_cpu_limit_ends_the_child_with_sigxcpu_and_reads_as_a_timeout(model_path):
    # The wall clock normally fires first, so drive the child directly to see its CPU limit.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "registry.onnx_inspect",
            "--memory-mb",
            "1024",
            "--cpu-seconds",
            "1",
            str(model_path(make_busy_loop_model())),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=False,
        timeout=30,
    )

    assert completed.returncode == -signal.SIGXCPU
    result = sandbox._result_from(completed, cpu_seconds=1)
    assert (result.ok, result.code) == (False, "validation_timeout")


# A model that segfaults onnxruntime is not at hand, so these feed the result translation
# real processes that die or misbehave the same way.


def test_child_killed_by_a_signal_reads_as_a_crash_naming_the_signal():
    completed = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
        capture_output=True,
        check=False,
    )

    result = sandbox._result_from(completed, cpu_seconds=10)

    assert (result.ok, result.code) == (False, "validation_crashed")
    assert "SIGSEGV" in result.detail


def test_child_without_a_json_result_reads_as_a_crash_with_its_stderr():
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; print('not json'); print('boom: it broke', file=sys.stderr)"],
        capture_output=True,
        check=False,
    )

    result = sandbox._result_from(completed, cpu_seconds=10)

    assert (result.ok, result.code) == (False, "validation_crashed")
    assert "boom: it broke" in result.detail


def test_child_result_needs_a_zero_exit_status():
    line = json.dumps({"ok": True, "report": {}})
    completed = subprocess.run(
        [sys.executable, "-c", f"print({line!r}); raise SystemExit(3)"], capture_output=True, check=False
    )

    result = sandbox._result_from(completed, cpu_seconds=10)

    assert result == SandboxResult(
        ok=False,
        report=None,
        code="validation_crashed",
        detail="The validation process exited with status 3 and no result.",
    )


def test_child_environment_carries_no_secrets_and_one_thread(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")

    env = sandbox.child_env()

    assert "DJANGO_SECRET_KEY" not in env
    assert env["OMP_NUM_THREADS"] == "1"
