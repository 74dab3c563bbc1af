"""Run `registry.onnx_inspect` on an untrusted model file in a resource-limited child process.

A hostile or broken model can segfault ONNX Runtime (onnxruntime #4349, #23258) or make it
allocate without bound (onnxruntime #28730). Inside a child process, with the address space and
CPU time capped by the child itself, either only ends the child; the web or Celery worker
that asked gets a `SandboxResult` saying so.

Django-free: the caller passes the limits in (from settings).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The child runs `python -m registry.onnx_inspect` from here, so the package imports without
# depending on the parent's sys.path or working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Only these variables reach the child: the worker's environment carries database URLs and
# secret keys, which a process parsing attacker-supplied protobuf has no use for.
_INHERITED_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")

# One thread for every numeric library: RLIMIT_AS counts each thread's stack and malloc arena,
# and extra threads would let a model burn CPU time faster than the wall clock shows.
_CHILD_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

_STDERR_TAIL_CHARS = 2000
# ONNX Runtime colours its log lines; the detail ends up in JSON and the admin.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of a sandboxed inspection: a report when ``ok``, else a ``code`` and ``detail``."""

    ok: bool
    report: dict[str, Any] | None
    code: str | None
    detail: str | None


def inspect_in_sandbox(path: str | os.PathLike[str], *, memory_mb: int, timeout_seconds: float) -> SandboxResult:
    """Inspect the model file at ``path`` in a child process limited to ``memory_mb`` of address
    space and ``timeout_seconds`` of wall-clock time (and as many CPU seconds, rounded up).

    Never raises for anything the model does: rejections come back with the codes of
    `registry.onnx_inspect`, plus ``validation_timeout`` (wall clock or CPU limit) and
    ``validation_crashed`` (killed by a signal, or no readable result).
    """
    if memory_mb <= 0 or timeout_seconds <= 0:
        raise ValueError("memory_mb and timeout_seconds must be positive")
    # The CPU limit is a backstop for the wall clock; with one thread it rarely fires first.
    cpu_seconds = max(1, math.ceil(timeout_seconds))
    command = [
        sys.executable,
        "-m",
        "registry.onnx_inspect",
        "--memory-mb",
        str(memory_mb),
        "--cpu-seconds",
        str(cpu_seconds),
        os.fspath(Path(path).resolve()),
    ]
    try:
        # No preexec_fn: it is unsafe in a threaded parent (the web server). The child sets
        # its own limits before importing anything large.
        completed = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has already killed (SIGKILL) and reaped the child.
        return _failure(
            "validation_timeout",
            f"Validating the model took longer than {timeout_seconds:g} seconds and was stopped.",
        )
    return _result_from(completed, cpu_seconds=cpu_seconds)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child that handles an untrusted model (this sandbox, and the
    memory-capped runner of inference.isolation): no secrets, one thread per numeric library."""
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.update(_CHILD_THREAD_ENV)
    env.update(extra)
    return env


def _result_from(completed: subprocess.CompletedProcess[bytes], *, cpu_seconds: int) -> SandboxResult:
    """Translate the child's exit and its one JSON line into a result."""
    if completed.returncode < 0:
        signal_number = -completed.returncode
        if signal_number == signal.SIGXCPU:
            return _failure(
                "validation_timeout",
                f"Validating the model used more than {cpu_seconds} seconds of CPU time and was stopped.",
            )
        reason = f"The validation process was killed by {_signal_name(signal_number)}"
        if signal_number == signal.SIGKILL:
            reason += " (the machine may have run out of memory)"
        return _failure("validation_crashed", _with_output(reason, completed.stderr))

    outcome = _parse_outcome(completed.stdout) if completed.returncode == 0 else None
    if outcome is None:
        reason = f"The validation process exited with status {completed.returncode} and no result"
        return _failure("validation_crashed", _with_output(reason, completed.stderr))
    return outcome


def _parse_outcome(stdout: bytes) -> SandboxResult | None:
    # The result is the last line; native libraries may have written before it.
    lines = stdout.decode("utf-8", errors="replace").strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    if not isinstance(outcome, dict):
        return None
    if outcome.get("ok") is True and isinstance(outcome.get("report"), dict):
        return SandboxResult(ok=True, report=outcome["report"], code=None, detail=None)
    if outcome.get("ok") is False and isinstance(outcome.get("code"), str) and isinstance(outcome.get("detail"), str):
        return _failure(outcome["code"], outcome["detail"])
    return None


def _failure(code: str, detail: str) -> SandboxResult:
    return SandboxResult(ok=False, report=None, code=code, detail=detail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _with_output(reason: str, stderr: bytes) -> str:
    """The reason plus the end of the child's stderr, where a crash leaves its last words."""
    text = _ANSI_ESCAPE.sub("", stderr.decode("utf-8", errors="replace")).strip()
    return f"{reason}. Last output: {text[-_STDERR_TAIL_CHARS:]}" if text else f"{reason}."
