"""Waiting for a background validation, for tests that talk to a real server or worker.

An upload answers 202 with status `validating`; the outcome is a later state of the model,
so tests wait for that state (never for a time): `read()` is called until the model it
returns is no longer validating. The bound is only a safety net for a loaded CI machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

VALIDATION_BOUND_SECONDS = 180


def wait_validated(read: Callable[[], Any], *, bound: float = VALIDATION_BOUND_SECONDS) -> Any:
    """The first value of `read()` (a model dict or row, anything with a status) whose status
    is not `validating`."""
    deadline = time.monotonic() + bound
    while True:
        model = read()
        status = model["status"] if isinstance(model, dict) else model.status
        if status != "validating":
            return model
        assert time.monotonic() < deadline, f"still validating after {bound} s: {model}"
        time.sleep(0.1)
