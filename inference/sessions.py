"""A per-process pool of ONNX Runtime sessions, keyed by the model file's sha256.

Sessions load on first use (or at start-up for models flagged `preload`), are shared by all
threads (InferenceSession.run is thread-safe), warm up with one run, and are evicted least
recently used first when the pool passes its count or memory bound. Keying by sha256
means a re-upload never serves the old file: the new bytes are a new key. Models archived,
deleted or re-uploaded in another process are noticed by `sweep_stale`, a cheap query run at
most every SESSION_RECHECK_SECONDS, which evicts sessions no ready model uses any more.

A model flagged at validation (`value_dependent_memory`), or every model with
MODEL_ISOLATION=all, gets an `inference.isolation.IsolatedSession` instead: the session lives in
a child process capped at MODEL_MEMORY_LIMIT_MB. `LoadedSession.run` is the one place a session
runs (predict, /v2, jobs, batching, warm-up), whichever kind it is.

What a session costs is measured, not estimated from the file: the process grows by the
session's optimised graph (a 6 MB file with 200 000 nodes takes about 500 MB), its weights and
the warm-up run's buffers. The pool counts the growth of the bytes malloc has handed out
(glibc's mallinfo2), from before the session is created to after its warm-up run; resident
memory would under-count a session built in memory an earlier, evicted one freed (malloc reuses
it without the process growing). Where mallinfo2 is missing, resident memory it is; where that
is missing too, twice the file size. An isolated session counts its child's resident memory.
Allocations by other threads during a load are counted too: the figure errs high.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from django.conf import settings

from core import request_log
from inference import deadlines
from inference.errors import InferenceFailed, ModelFileUnavailable, ResourceLimitExceeded
from inference.isolation import IsolatedSession, IsolationError
from registry.models import MLModel
from registry.sentinel import verdicts
from registry.services import model_file_report
from registry.storage import ModelStore, StoredFileMismatch

logger = logging.getLogger(__name__)

_OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# Where resident memory cannot be read (no /proc): twice the file size, the old estimate.
MEMORY_FACTOR = 2
MEMORY_OVERHEAD_BYTES = 1024 * 1024
_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class LoadedSession:
    sha256: str
    session: ort.InferenceSession | None  # None when isolated
    input_names: list[str]
    output_names: list[str]
    estimated_bytes: int  # measured: see the module docstring
    isolated: IsolatedSession | None = None
    loaded_at: float = field(default_factory=time.time)

    def run(self, feeds: dict[str, np.ndarray], *, label: str = "") -> list[Any]:
        """The outputs of one run under the inference deadline, in process or in the model's
        capped child. Raises `InferenceTimeout`, `ResourceLimitExceeded` (422), `InferenceFailed`
        for the child's other failures, and ONNX Runtime's own errors for an in-process run."""
        if self.isolated is None:
            return deadlines.run(self.session, _bfloat16_as_ortvalues(feeds), label=label)
        try:
            return self.isolated.run(feeds, timeout=deadlines.current_timeout()[0])
        except IsolationError as exc:
            if exc.code == "resource_limit_exceeded":
                logger.warning("run refused at the memory limit", extra={"model": label})
                raise ResourceLimitExceeded(
                    f"{exc.detail} Send smaller inputs; the limit is MODEL_MEMORY_LIMIT_MB "
                    f"({self.isolated.memory_mb} MB)."
                ) from None
            if exc.code == "inference_timeout":
                raise deadlines.InferenceTimeout(
                    f"{exc.detail} (INFERENCE_TIMEOUT_SECONDS={settings.INFERENCE_TIMEOUT_SECONDS:g}). "
                    "Send fewer rows per request, or use a batch job."
                ) from None
            raise InferenceFailed(f"The model could not run on these inputs: {exc.detail}") from None

    def close(self) -> None:
        if self.isolated is not None:
            self.isolated.close()


def _bfloat16_as_ortvalues(feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    # ONNX Runtime's numpy bridge has no bfloat16: hand it the raw 16-bit words, typed.
    if not any(array.dtype.name == "bfloat16" for array in feeds.values()):
        return feeds
    return {
        name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), _BFLOAT16)
        if array.dtype.name == "bfloat16"
        else array
        for name, array in feeds.items()
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo2():
    try:
        function = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()


def allocated_bytes() -> int | None:
    """Bytes malloc has handed out and not got back (heap and mmapped chunks, every arena), or
    this process's resident memory where glibc cannot say, or None."""
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        return info.uordblks + info.hblkhd
    return resident_bytes()


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class SessionPool:
    def __init__(
        self,
        *,
        max_sessions: int,
        max_bytes: int,
        intra_op_threads: int,
        inter_op_threads: int,
        optimization_level: str,
        recheck_seconds: float,
    ):
        if optimization_level not in _OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization level must be one of {', '.join(_OPTIMIZATION_LEVELS)}")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.optimization_level = optimization_level
        self.recheck_seconds = recheck_seconds
        self._sessions: OrderedDict[str, LoadedSession] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._last_sweep = time.monotonic()

    # --- reads ---------------------------------------------------------------------------
    def get(self, model: MLModel) -> LoadedSession:
        """The session for a model's file, loading it (once, even under concurrency) if needed."""
        sha256 = model.file_sha256
        with self._lock:
            entry = self._sessions.get(sha256)
            if entry is not None:
                self._sessions.move_to_end(sha256)
                return entry
            load_lock = self._load_locks.setdefault(sha256, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._sessions.get(sha256)
            if entry is None:
                entry = self._load(model)
                with self._lock:
                    self._sessions[sha256] = entry
                    self._load_locks.pop(sha256, None)
                    self._enforce_bounds()
        return entry

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def stats(self) -> dict:
        with self._lock:
            return {
                "sessions": len(self._sessions),
                "estimated_bytes": sum(entry.estimated_bytes for entry in self._sessions.values()),
                "max_sessions": self.max_sessions,
                "max_bytes": self.max_bytes,
            }

    # --- writes --------------------------------------------------------------------------
    def evict(self, sha256: str) -> bool:
        with self._lock:
            entry = self._sessions.pop(sha256, None)
        if entry is not None:
            entry.close()
        return entry is not None

    def clear(self) -> None:
        with self._lock:
            entries = list(self._sessions.values())
            self._sessions.clear()
        for entry in entries:
            entry.close()

    def sweep_stale(self, *, force: bool = False) -> list[str]:
        """Evict sessions whose file no ready model uses any more (archived, deleted, replaced).

        Other processes change models without telling this one; this is how it finds out.
        """
        now = time.monotonic()
        if not force and now - self._last_sweep < self.recheck_seconds:
            return []
        self._last_sweep = now
        loaded = self.loaded()
        if not loaded:
            return []
        live = set(
            MLModel.objects.filter(file_sha256__in=loaded, status=MLModel.Status.READY).values_list(
                "file_sha256", flat=True
            )
        )
        stale = [sha256 for sha256 in loaded if sha256 not in live]
        for sha256 in stale:
            self.evict(sha256)
        if stale:
            logger.info("evicted stale sessions", extra={"count": len(stale)})
        return stale

    # --- internals -----------------------------------------------------------------------
    def _options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION_LEVELS[self.optimization_level]
        options.log_severity_level = 3
        return options

    def _load(self, model: MLModel) -> LoadedSession:
        # The file was validated as these exact bytes; anything else is never served. A storage
        # that is down (StorageUnavailable, 503) says nothing about the file: the model stays.
        # Nor does a file missing or changed as this process sees it: see `_unavailable`.
        try:
            data = ModelStore().read_verified(model.file_sha256)
        except FileNotFoundError:
            self._unavailable(model, "file_missing")
        except StoredFileMismatch:
            self._unavailable(model, "checksum_mismatch")
        if model.value_dependent_memory or settings.MODEL_ISOLATION == "all":
            return self._load_isolated(model, data)
        before = allocated_bytes()
        session = ort.InferenceSession(data, self._options(), providers=["CPUExecutionProvider"])
        entry = LoadedSession(
            sha256=model.file_sha256,
            session=session,
            input_names=[node.name for node in session.get_inputs()],
            output_names=[node.name for node in session.get_outputs()],
            estimated_bytes=len(data) * MEMORY_FACTOR + MEMORY_OVERHEAD_BYTES,
        )
        self._warm_up(model, entry)
        after = allocated_bytes()
        if before is not None and after is not None:
            # Never below the weights' size: memory freed by another thread meanwhile would hide it.
            entry.estimated_bytes = max(after - before, len(data))
        logger.info(
            "session loaded",
            extra={"model": str(model), "sha256": model.file_sha256, "resident_bytes": entry.estimated_bytes},
        )
        return entry

    def _load_isolated(self, model: MLModel, data: bytes) -> LoadedSession:
        try:
            isolated = IsolatedSession(
                data,
                memory_mb=settings.MODEL_MEMORY_LIMIT_MB,
                intra_op_threads=self.intra_op_threads,
                inter_op_threads=self.inter_op_threads,
                optimization_level=self.optimization_level,
                start_timeout=settings.VALIDATION_TIMEOUT_SECONDS,
                label=str(model),
            )
        except IsolationError as exc:
            if exc.code == "resource_limit_exceeded":
                raise ResourceLimitExceeded(
                    f"{model} does not load within MODEL_MEMORY_LIMIT_MB: {exc.detail}"
                ) from None
            raise InferenceFailed(f"{model} could not be loaded in its isolated process: {exc.detail}") from None
        entry = LoadedSession(
            sha256=model.file_sha256,
            session=None,
            input_names=isolated.input_names,
            output_names=isolated.output_names,
            estimated_bytes=0,
            isolated=isolated,
        )
        self._warm_up(model, entry)
        # What the child holds at rest: with its arena off, a run's buffers go back when it ends.
        entry.estimated_bytes = isolated.resident_bytes() or len(data) * MEMORY_FACTOR + MEMORY_OVERHEAD_BYTES
        logger.info(
            "isolated session loaded",
            extra={"model": str(model), "pid": isolated.pid, "resident_bytes": entry.estimated_bytes},
        )
        return entry

    @staticmethod
    def _unavailable(model: MLModel, code: str) -> None:
        """503 model_file_unavailable, the model's status unchanged: this process's view of the
        storage may be the wrong one (a wrong prefix, a restore, a partition). The registry logs
        and counts it, has this process's storage checked again (readiness), and asks a worker
        to confirm before the model is marked `error` for every node."""
        model_file_report(model=model, code=code)
        context = request_log.current()
        raise ModelFileUnavailable(model, request_id=context.id if context is not None else None)

    def _warm_up(self, model: MLModel, entry: LoadedSession) -> None:
        """One run on an example input, so the first real request does not pay for allocation."""
        from inference.tensors import decode_inputs, example_input

        try:
            feeds = decode_inputs(
                example_input(model.input_schema),
                model.input_schema,
                allow_non_finite=True,
                max_elements=10_000_000,
                max_depth=64,
            )
            entry.run(feeds, label=str(model))
        except Exception as exc:  # a model may reject zeros, or be slow; serving it is still fine
            logger.warning("warm-up run failed", extra={"model": str(model), "error": str(exc)[:200]})

    def _enforce_bounds(self) -> None:
        """Drop least recently used sessions until both bounds hold (always keep the newest)."""
        total = sum(entry.estimated_bytes for entry in self._sessions.values())
        while len(self._sessions) > 1 and (len(self._sessions) > self.max_sessions or total > self.max_bytes):
            _, dropped = self._sessions.popitem(last=False)
            total -= dropped.estimated_bytes
            dropped.close()  # an isolated one's child stops once its run in progress ends


_pool: SessionPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> SessionPool:
    """The process's pool, built from settings on first use."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = SessionPool(
                    max_sessions=settings.SESSION_POOL_MAX_SESSIONS,
                    max_bytes=settings.SESSION_POOL_MAX_MEMORY_MB * 1024 * 1024,
                    intra_op_threads=settings.ORT_INTRA_OP_THREADS,
                    inter_op_threads=settings.ORT_INTER_OP_THREADS,
                    optimization_level=settings.ORT_GRAPH_OPTIMIZATION,
                    recheck_seconds=settings.SESSION_RECHECK_SECONDS,
                )
    return _pool


def preload_flagged() -> int:
    """Check this process's model storage, then load sessions for every ready model flagged
    `preload`; returns how many loaded.

    Run by each server process at start: a storage that is not this deployment's is logged
    there, with what is wrong (registry.sentinel), and nothing is preloaded from it.
    """
    pool = get_pool()
    count = 0
    try:
        models = list(MLModel.objects.ready().filter(preload=True))
        verdict = verdicts.current()
    except Exception:  # no database yet (e.g. before migrate): nothing to preload
        logger.warning("preload skipped: the model list could not be read")
        return 0
    if not verdict.ok:
        logger.warning("preload skipped: the model storage check failed", extra={"reason": verdict.reason})
        return 0
    for model in models:
        try:
            pool.get(model)
            count += 1
        except Exception:
            logger.exception("preload failed", extra={"model": str(model)})
    return count
