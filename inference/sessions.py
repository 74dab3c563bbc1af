"""A per-process pool of ONNX Runtime sessions, keyed by the model file's sha256 and the model's
runtime settings (`RuntimeSettings`: its own ONNX Runtime settings, else the ORT_* ones).

Sessions load on first use (or at start-up for models flagged `preload`), are shared by all
threads (InferenceSession.run is thread-safe), run the model's warm-up (warmup_count runs,
before any request may use them: requests arriving meanwhile wait, and `model_ready` says no),
and are evicted least recently used first when the pool passes its count or memory bound. A
model with sessions_per_process > 1 holds that many sessions in one entry; runs take them in
turn. Keying by sha256 means a re-upload never serves the old file: the new bytes are a new
key; keying by the settings means a settings change builds new sessions. Models archived,
deleted, re-uploaded or given new settings in another process are noticed by `sweep_stale`, a
cheap query run at most every SESSION_RECHECK_SECONDS (and on the next request after any
registry write: core.invalidation), which evicts sessions no ready model uses any more.

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
import functools
import hashlib
import itertools
import logging
import operator
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from django.conf import settings
from django.db import connection
from prometheus_client import Counter

from core import invalidation, request_log
from core.tensor_checks import InvalidInput
from core.tensor_types import DTYPES, FLOAT_DATATYPES, INT_RANGES, is_supported
from core.threads import Restartable
from inference import deadlines
from inference.errors import InferenceFailed, ModelFileUnavailable, ResourceLimitExceeded
from inference.isolation import IsolatedSession, IsolationError
from inference.serving import SERVING_FIELDS
from registry.models import MLModel, execution_providers
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
_EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}

# The model fields RuntimeSettings reads (but the provider list and the sample: see `runtime`).
_runtime_fields = operator.attrgetter(
    "ort_graph_optimization_level",
    "ort_intra_op_threads",
    "ort_inter_op_threads",
    "ort_execution_mode",
    "ort_enable_cpu_mem_arena",
    "sessions_per_process",
    "warmup_count",
    "warmup_data",
)

WARMUP_RUNS = Counter(
    "modelforge_warmup_runs",
    "Warm-up runs of newly loaded sessions (each session of a model runs its warmup_count).",
    ["model", "version"],
)


@dataclass(frozen=True)
class RuntimeSettings:
    """How a model's sessions are built and warmed up: its own settings (registry.models, the
    ``ort_*``, ``sessions_per_process`` and ``warmup_*`` fields), empty ones filled from the
    server's ORT_* settings. Sessions are keyed by the file and `digest`, so a change of any of
    these is a new key: every process builds the sessions again on its next request (the old
    ones are swept, `SessionPool.sweep_stale`)."""

    graph_optimization_level: str
    intra_op_threads: int
    inter_op_threads: int
    execution_mode: str
    enable_cpu_mem_arena: bool
    execution_providers: tuple[str, ...]
    sessions: int
    warmup_count: int
    warmup_data: str
    warmup_sample: Any = field(default=None, compare=False, hash=False)

    @classmethod
    def of(cls, model: MLModel, defaults: SessionPool) -> RuntimeSettings:
        arena = getattr(model, "ort_enable_cpu_mem_arena", None)
        intra = getattr(model, "ort_intra_op_threads", None)
        inter = getattr(model, "ort_inter_op_threads", None)
        return cls(
            graph_optimization_level=getattr(model, "ort_graph_optimization_level", "") or defaults.optimization_level,
            intra_op_threads=defaults.intra_op_threads if intra is None else intra,
            inter_op_threads=defaults.inter_op_threads if inter is None else inter,
            execution_mode=getattr(model, "ort_execution_mode", "") or "sequential",
            enable_cpu_mem_arena=True if arena is None else arena,
            execution_providers=tuple(execution_providers(getattr(model, "ort_execution_providers", None) or [])),
            sessions=max(1, getattr(model, "sessions_per_process", 1) or 1),
            warmup_count=getattr(model, "warmup_count", 1),
            warmup_data=getattr(model, "warmup_data", "zero") or "zero",
            warmup_sample=getattr(model, "warmup_sample", None),
        )

    @functools.cached_property
    def digest(self) -> str:
        """A short digest of every setting (the warm-up sample's content included)."""
        document = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION_LEVELS[self.graph_optimization_level]
        options.execution_mode = _EXECUTION_MODES[self.execution_mode]
        options.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        options.log_severity_level = 3
        return options

    def as_dict(self) -> dict:
        """The settings as applied, for the pool's stats and the model's /config."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "warmup_sample"} | {
            "execution_providers": list(self.execution_providers)
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
    runtime: RuntimeSettings | None = None
    # The model's further sessions (sessions_per_process > 1), of the same kind as the first:
    # runs take them in turn, so concurrent requests spread over them.
    replicas: list = field(default_factory=list)
    _turn: Any = field(default_factory=itertools.count, repr=False)

    def run(self, feeds: dict[str, np.ndarray], *, label: str = "") -> list[Any]:
        """The outputs of one run under the inference deadline, in process or in the model's
        capped child. Raises `InferenceTimeout`, `ResourceLimitExceeded` (422), `InferenceFailed`
        for the child's other failures, and ONNX Runtime's own errors for an in-process run."""
        return self.run_on(next(self._turn) % self.count, feeds, label=label)

    @property
    def count(self) -> int:
        """How many sessions this entry holds (the model's sessions_per_process)."""
        return 1 + len(self.replicas)

    def run_on(self, index: int, feeds: dict[str, np.ndarray], *, label: str = "") -> list[Any]:
        """As `run`, on the entry's session number ``index`` (0 is the first)."""
        if self.isolated is None:
            session = self.session if index == 0 else self.replicas[index - 1]
            return deadlines.run(session, _bfloat16_as_ortvalues(feeds), label=label)
        isolated = self.isolated if index == 0 else self.replicas[index - 1]
        try:
            return isolated.run(feeds, timeout=deadlines.current_timeout()[0])
        except IsolationError as exc:
            if exc.code == "resource_limit_exceeded":
                logger.warning("run refused at the memory limit", extra={"model": label})
                raise ResourceLimitExceeded(
                    f"{exc.detail} Send smaller inputs; the limit is MODEL_MEMORY_LIMIT_MB ({isolated.memory_mb} MB)."
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
            for replica in self.replicas:
                replica.close()


def _bfloat16_as_ortvalues(feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    # ONNX Runtime's numpy bridge has no bfloat16: hand it the raw 16-bit words, typed.
    # Compared by kind first: a dtype's `name` is computed in Python, on every run.
    if not any(array.dtype.kind == "V" and array.dtype.name == "bfloat16" for array in feeds.values()):
        return feeds
    return {
        name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), _BFLOAT16)
        if array.dtype.kind == "V" and array.dtype.name == "bfloat16"
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
        # The server-wide defaults (ORT_* settings) of settings a model leaves empty.
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.optimization_level = optimization_level
        self.recheck_seconds = recheck_seconds
        # Keyed by (file sha256, RuntimeSettings.digest): new settings are a new key.
        self._sessions: OrderedDict[tuple[str, str], LoadedSession] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._last_sweep = time.monotonic()
        self._sweep_due = threading.Event()  # wakes the sweeper thread (`sweep_stale`)
        self._sweeper = Restartable(self._sweep_forever, "session-sweeper")
        self._runtime_memo: dict[tuple, tuple[Any, RuntimeSettings]] = {}

    # --- reads ---------------------------------------------------------------------------
    def runtime(self, model: MLModel) -> RuntimeSettings:
        """The settings a model's sessions are built with in this pool.

        Every request asks (its session's key), and building them and their digest costs
        ~17 us: they are remembered by the row's raw values. The warm-up sample (a JSON value,
        unhashable) counts by identity, and is kept in the memo so that its id is not reused;
        rows are never changed in place once served (registry writes load new rows).
        """
        sample = model.warmup_sample
        raw = (_runtime_fields(model), tuple(model.ort_execution_providers or ()), id(sample))
        found = self._runtime_memo.get(raw)
        if found is not None and found[0] is sample:
            return found[1]
        runtime = RuntimeSettings.of(model, self)
        if len(self._runtime_memo) >= 1024:
            self._runtime_memo.clear()
        self._runtime_memo[raw] = (sample, runtime)
        return runtime

    def key(self, model: MLModel) -> tuple[str, str]:
        return model.file_sha256, self.runtime(model).digest

    def get(self, model: MLModel) -> LoadedSession:
        """The session for a model's file and settings, loading and warming it up (once, even
        under concurrency: requests arriving meanwhile wait for the warm-up) if needed."""
        key = self.key(model)
        with self._lock:
            entry = self._sessions.get(key)
            if entry is not None:
                self._sessions.move_to_end(key)
                return entry
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._sessions.get(key)
            if entry is None:
                try:
                    entry = self._load(model)
                except BaseException:
                    with self._lock:
                        self._load_locks.pop(key, None)
                    raise
                with self._lock:
                    self._sessions[key] = entry
                    self._load_locks.pop(key, None)
                    self._enforce_bounds()
        return entry

    def state(self, model: MLModel) -> str:
        """``ready`` (loaded and warmed up in this process), ``loading`` (being loaded or warmed
        up now) or ``unloaded``."""
        key = self.key(model)
        with self._lock:
            if key in self._sessions:
                return "ready"
            lock = self._load_locks.get(key)
        return "loading" if lock is not None and lock.locked() else "unloaded"

    def loaded(self) -> list[str]:
        """The files whose sessions are loaded, least recently used first."""
        with self._lock:
            return list(dict.fromkeys(sha256 for sha256, _ in self._sessions))

    def stats(self) -> dict:
        """The pool's size and bounds, and each loaded entry: its file, the settings its
        sessions were built with, how many sessions it holds and when it was loaded."""
        with self._lock:
            return {
                "sessions": len(self._sessions),
                "estimated_bytes": sum(entry.estimated_bytes for entry in self._sessions.values()),
                "max_sessions": self.max_sessions,
                "max_bytes": self.max_bytes,
                "entries": [
                    {
                        "sha256": sha256,
                        "runtime": entry.runtime.as_dict() if entry.runtime is not None else None,
                        "sessions": entry.count,
                        "loaded_at": entry.loaded_at,
                    }
                    for (sha256, _), entry in self._sessions.items()
                ],
            }

    # --- writes --------------------------------------------------------------------------
    def evict(self, sha256: str) -> bool:
        """Drop every session of this file (whatever its settings)."""
        with self._lock:
            keys = [key for key in self._sessions if key[0] == sha256]
            entries = [self._sessions.pop(key) for key in keys]
        for entry in entries:
            entry.close()
        return bool(entries)

    def clear(self) -> None:
        with self._lock:
            entries = list(self._sessions.values())
            self._sessions.clear()
        for entry in entries:
            entry.close()

    def recheck_soon(self) -> None:
        """Make the next `sweep_stale` look (a registry write anywhere: core.invalidation)."""
        self._last_sweep = float("-inf")

    def sweep_stale(self, *, force: bool = False) -> list[str]:
        """Evict sessions no ready model uses any more: archived, deleted, replaced, or built
        with settings the model no longer has. Returns the evicted files' sha256.

        Other processes change models without telling this one; this is how it finds out.
        Every request calls it; it looks every SESSION_RECHECK_SECONDS, and at once after a
        registry write anywhere (`recheck_soon`). The periodic look is a query, and a query on
        a request thread waits for the database: under load, with the history's writes, up to
        hundreds of milliseconds (the p99 of issue 18). So the request only wakes this pool's
        sweeper thread for it, and goes on; the look after a registry write (rare, and about a
        change the request may depend on) and a forced one happen on the caller's thread.
        """
        now = time.monotonic()
        if not force and now - self._last_sweep < self.recheck_seconds:
            return []
        periodic = not force and self._last_sweep != float("-inf") and self.recheck_seconds > 0
        self._last_sweep = now
        if periodic:
            self._wake_sweeper()
            return []
        return self._sweep()

    def _wake_sweeper(self) -> None:
        self._sweep_due.set()
        self._sweeper.ensure()

    def _sweep_forever(self) -> None:
        while True:
            self._sweep_due.wait()
            self._sweep_due.clear()
            try:
                self._sweep()
            except Exception:  # the next look tries again
                logger.exception("sweeping stale sessions failed")
            finally:
                connection.close()  # looks are seconds apart: no connection held between them

    def _sweep(self) -> list[str]:
        with self._lock:
            keys = list(self._sessions)
        if not keys:
            return []
        ready = MLModel.objects.filter(
            file_sha256__in={sha256 for sha256, _ in keys}, status=MLModel.Status.READY
        ).only(*SERVING_FIELDS)
        live = {self.key(model) for model in ready}
        stale = [key for key in keys if key not in live]
        with self._lock:
            entries = [self._sessions.pop(key) for key in stale if key in self._sessions]
        for entry in entries:
            entry.close()
        if stale:
            logger.info("evicted stale sessions", extra={"count": len(stale)})
        return [sha256 for sha256, _ in stale]

    # --- internals -----------------------------------------------------------------------
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
        runtime = self.runtime(model)
        if model.value_dependent_memory or settings.MODEL_ISOLATION == "all":
            return self._load_isolated(model, data, runtime)
        before = allocated_bytes()
        sessions = [
            ort.InferenceSession(data, runtime.options(), providers=list(runtime.execution_providers))
            for _ in range(runtime.sessions)
        ]
        session = sessions[0]
        entry = LoadedSession(
            sha256=model.file_sha256,
            session=session,
            input_names=[node.name for node in session.get_inputs()],
            output_names=[node.name for node in session.get_outputs()],
            estimated_bytes=(len(data) * MEMORY_FACTOR + MEMORY_OVERHEAD_BYTES) * runtime.sessions,
            runtime=runtime,
            replicas=sessions[1:],
        )
        self._warm_up(model, entry)
        after = allocated_bytes()
        if before is not None and after is not None:
            # Never below the weights' size: memory freed by another thread meanwhile would hide it.
            entry.estimated_bytes = max(after - before, len(data) * runtime.sessions)
        logger.info(
            "session loaded",
            extra={
                "model": str(model),
                "sha256": model.file_sha256,
                "resident_bytes": entry.estimated_bytes,
                "runtime": runtime.as_dict(),
            },
        )
        return entry

    def _load_isolated(self, model: MLModel, data: bytes, runtime: RuntimeSettings) -> LoadedSession:
        children = []
        try:
            for _ in range(runtime.sessions):
                children.append(
                    IsolatedSession(
                        data,
                        memory_mb=settings.MODEL_MEMORY_LIMIT_MB,
                        intra_op_threads=runtime.intra_op_threads,
                        inter_op_threads=runtime.inter_op_threads,
                        optimization_level=runtime.graph_optimization_level,
                        execution_mode=runtime.execution_mode,
                        execution_providers=list(runtime.execution_providers),
                        start_timeout=settings.VALIDATION_TIMEOUT_SECONDS,
                        label=str(model),
                    )
                )
        except IsolationError as exc:
            for child in children:
                child.close()
            if exc.code == "resource_limit_exceeded":
                raise ResourceLimitExceeded(
                    f"{model} does not load within MODEL_MEMORY_LIMIT_MB: {exc.detail}"
                ) from None
            raise InferenceFailed(f"{model} could not be loaded in its isolated process: {exc.detail}") from None
        isolated = children[0]
        entry = LoadedSession(
            sha256=model.file_sha256,
            session=None,
            input_names=isolated.input_names,
            output_names=isolated.output_names,
            estimated_bytes=0,
            isolated=isolated,
            runtime=runtime,
            replicas=children[1:],
        )
        self._warm_up(model, entry)
        # What the children hold at rest: with their arena off, a run's buffers go back when it ends.
        entry.estimated_bytes = sum(child.resident_bytes() for child in children) or (
            len(data) * MEMORY_FACTOR + MEMORY_OVERHEAD_BYTES
        ) * len(children)
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
        """The model's warm-up (warmup_count runs on warmup_data) on each of its new sessions,
        before any request may use them, so the first requests do not pay for allocation and
        the model answers ready only once it is done (`model_ready`)."""
        runtime = entry.runtime
        if not runtime.warmup_count:
            return
        try:
            feeds = warmup_feeds(model.input_schema, runtime.warmup_data, runtime.warmup_sample)
        except Exception as exc:  # a sample that no longer fits, an input that cannot be built
            logger.warning("warm-up skipped", extra={"model": str(model), "error": str(exc)[:200]})
            return
        runs = WARMUP_RUNS.labels(model.name, model.version)
        for index in range(entry.count):
            for _ in range(runtime.warmup_count):
                try:
                    entry.run_on(index, feeds, label=str(model))
                except Exception as exc:  # a model may reject zeros, or be slow; serving it is still fine
                    logger.warning("warm-up run failed", extra={"model": str(model), "error": str(exc)[:200]})
                    return
                runs.inc()
        logger.info(
            "session warmed up",
            extra={"model": str(model), "runs": runtime.warmup_count * entry.count, "data": runtime.warmup_data},
        )

    def _enforce_bounds(self) -> None:
        """Drop least recently used sessions until both bounds hold (always keep the newest)."""
        total = sum(entry.estimated_bytes for entry in self._sessions.values())
        while len(self._sessions) > 1 and (len(self._sessions) > self.max_sessions or total > self.max_bytes):
            _, dropped = self._sessions.popitem(last=False)
            total -= dropped.estimated_bytes
            dropped.close()  # an isolated one's child stops once its run in progress ends


def warmup_feeds(schema: list[dict], data: str, sample: Any = None) -> dict[str, np.ndarray]:
    """A model's warm-up input as feeds: ``zero`` (inference.tensors.example_input: zeros of each
    input's type, variable dimensions 1), ``random`` (values within each input's type: floats in
    [0, 1), integers over the type's range, random booleans and short strings), or ``sample``
    (the input_data document stored with the model, decoded as predict decodes)."""
    from inference.tensors import decode_inputs, example_input

    if data == "random":
        rng = np.random.default_rng()
        feeds = {}
        for entry in schema:
            if not is_supported(entry):
                continue
            datatype = entry["datatype"]
            shape = [1] if entry.get("shape") is None else [d if d >= 0 else 1 for d in entry["shape"]]
            if datatype in FLOAT_DATATYPES:
                value = rng.random(shape).astype(DTYPES[datatype])
            elif datatype in INT_RANGES:
                low, high = INT_RANGES[datatype]
                value = rng.integers(low, high, size=shape, dtype=DTYPES[datatype], endpoint=True)
            elif datatype == "BOOL":
                value = rng.random(shape) < 0.5
            else:
                value = np.array([f"w{n}" for n in rng.integers(0, 1000, size=int(np.prod(shape)))], dtype=object)
                value = value.reshape(shape)
            feeds[entry["name"]] = value
        return feeds
    document = sample if data == "sample" and sample is not None else example_input(schema)
    return decode_inputs(document, schema, allow_non_finite=True, max_elements=10_000_000, max_depth=64)


def check_warmup_sample(sample: Any, schema: list[dict]) -> None:
    """400 (the decoder's code, e.g. missing_input, invalid_shape) unless ``sample`` is an
    input_data document this model takes: registry.services asks before storing one."""
    try:
        warmup_feeds(schema, "sample", sample)
    except InvalidInput as exc:
        raise InvalidInput(f"The warm-up sample does not fit the model: {exc.detail}", code=exc.code) from None


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
                # A registry write anywhere (settings, archive, re-upload) makes the next
                # request look for sessions built for a model state that is gone.
                invalidation.on_change("models", _pool.recheck_soon)
    return _pool


def model_ready(model: MLModel) -> bool:
    """Whether a servable model answers ready in this process (/v2 model ready, gRPC ModelReady):
    its sessions loaded and warmed up. Not while another thread loads or warms them up (a request
    arriving then waits for that: `SessionPool.get`); a model not loaded here is loaded now, so
    the answer comes once its warm-up is done. Load failures raise as a request's would."""
    pool = get_pool()
    state = pool.state(model)
    if state == "loading":
        return False
    if state == "unloaded":
        pool.get(model)
    return True


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
