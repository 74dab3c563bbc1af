"""Run a model in a child process whose memory is capped, so a request cannot grow the server.

A model flagged at validation (`MLModel.value_dependent_memory`: an operator's output size comes
from the request's values) could make ONNX Runtime allocate whatever a 40-byte request asks for,
and its arena keeps what it took. Such a model never runs in a server or worker process: it runs
in one child process per model and serving process, started with ``RLIMIT_DATA`` at the model
memory limit (MODEL_MEMORY_LIMIT_MB). An allocation past the limit fails inside the child;
ONNX Runtime reports it (``std::bad_alloc``), the child answers `ResourceLimitExceeded`, and
goes on serving. The child runs with ONNX Runtime's CPU arena off, so what a run allocated is
freed when the run ends (large blocks go straight back to the system). A child that dies
(the kernel's OOM killer, a crash in native code) or overruns the deadline (it is killed) is
replaced on the next request.

The pipe carries a small framed format (`encode` / `decode`): a JSON header describing the
values and the raw bytes of every numeric array. Nothing is pickled in either direction: the
child runs an untrusted model, and the parent must not execute whatever the child sends.

Django-free, like `registry.onnx_inspect`: the child is ``python -m inference.isolation``, which
sets its limits before importing numpy and ONNX Runtime; the parent (`IsolatedSession`) gets
its settings passed in by `inference.sessions`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from registry.sandbox import child_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_HEADER = struct.Struct("<QQ")  # header bytes, payload bytes
_SOCKET_BUFFER_BYTES = 8 * 2**20
_IOV_MAX = 512  # buffers per sendmsg call (Linux allows 1024)
# ONNX Runtime's and the C++ runtime's words for a failed allocation, and for an output that
# ONNX Runtime refuses to allocate at all (Tile, past 4 GB).
_OUT_OF_MEMORY_PHRASES = (
    "bad_alloc",
    "bad allocation",
    "failed to allocate memory",
    "out of memory",
    "exceeds the supported maximum",
)
_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16


class IsolationError(Exception):
    """A run in the child failed; ``code`` is the API's (see `inference.sessions`)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- the wire format ----------------------------------------------------------------------------


def encode(value: Any) -> list[bytes | memoryview]:
    """One message as buffers to send in order: a fixed-size prefix and the JSON header, then
    every numeric array's own memory (no copy); everything else is in the header. No pickle."""
    buffers: list[bytes | memoryview] = []
    tree = _encode_value(value, buffers)
    header = orjson.dumps({"value": tree, "sizes": [len(b) for b in buffers]})
    return [_HEADER.pack(len(header), sum(len(b) for b in buffers)) + header, *buffers]


def decode(header: bytes, payload: memoryview) -> Any:
    """The value of a message from its JSON header and its payload; arrays are views of it."""
    document = orjson.loads(header)
    buffers = []
    offset = 0
    for size in document["sizes"]:
        buffers.append(payload[offset : offset + size])
        offset += size
    if offset != len(payload):
        raise ValueError("the payload does not match the header")
    return _decode_value(document["value"], buffers)


def _encode_value(value: Any, buffers: list) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return {"str": [str(item) for item in value.ravel().tolist()], "shape": list(value.shape)}
        array = np.ascontiguousarray(value)
        dtype = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.str
        buffers.append(array.view(np.uint8).reshape(-1).data if array.size else b"")
        return {"nd": len(buffers) - 1, "dtype": dtype, "shape": list(array.shape)}
    if isinstance(value, np.generic):
        return {"py": value.item()}
    if isinstance(value, dict):
        return {"map": [[_encode_value(k, buffers), _encode_value(v, buffers)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return {"list": [_encode_value(item, buffers) for item in value]}
    if value is None or isinstance(value, bool | int | float | str):
        return {"py": value}
    raise TypeError(f"cannot send a {type(value).__name__}")


def _decode_value(tree: Any, buffers: list) -> Any:
    import numpy as np

    if "nd" in tree:
        if tree["dtype"] == "bfloat16":
            from ml_dtypes import bfloat16

            dtype = np.dtype(bfloat16)
        else:
            dtype = np.dtype(tree["dtype"])
        if dtype.kind == "O":
            raise ValueError("object arrays are sent as strings")
        # A view of the received payload (a bytearray of its own per message: writable, not shared).
        return np.frombuffer(buffers[tree["nd"]], dtype=dtype).reshape(tree["shape"])
    if "str" in tree:
        return np.array(tree["str"], dtype=object).reshape(tree["shape"])
    if "map" in tree:
        return {_decode_value(k, buffers): _decode_value(v, buffers) for k, v in tree["map"]}
    if "list" in tree:
        return [_decode_value(item, buffers) for item in tree["list"]]
    return tree["py"]


def _send(sock: socket.socket, value: Any) -> None:
    # Scatter-gather: the arrays go from their own memory to the socket, never joined first.
    views = [memoryview(b).cast("B") for b in encode(value) if len(b)]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0


def _receive(sock: socket.socket) -> Any:
    header_size, payload_size = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    header = _read_exactly(sock, header_size)
    return decode(header, memoryview(_read_exactly(sock, payload_size)))


def _read_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if not count:
            raise EOFError("the isolated process closed its pipe")
        received += count
    return buffer


# --- the parent's side --------------------------------------------------------------------------


class IsolatedSession:
    """A model served by a memory-capped child process; one run at a time.

    Started with the model's verified bytes; `run` sends feeds and returns the outputs, raising
    `IsolationError` (``resource_limit_exceeded``, ``inference_failed``, ``inference_timeout``).
    A child that died or was killed is started again on the next `run`.
    """

    def __init__(
        self,
        data: bytes,
        *,
        memory_mb: int,
        intra_op_threads: int,
        inter_op_threads: int,
        optimization_level: str,
        start_timeout: float,
        execution_mode: str = "sequential",
        execution_providers: Sequence[str] = ("CPUExecutionProvider",),
        label: str = "",
    ) -> None:
        self._data = data
        self.memory_mb = memory_mb
        # The model's ONNX Runtime settings (inference.sessions.RuntimeSettings), but for the
        # memory arena: always off here (see the module docstring).
        self._config = {
            "intra_op_threads": intra_op_threads,
            "inter_op_threads": inter_op_threads,
            "optimization_level": optimization_level,
            "execution_mode": execution_mode,
            "execution_providers": list(execution_providers),
        }
        self.start_timeout = start_timeout
        self.label = label
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.starts = 0
        with self._lock:
            self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def resident_bytes(self) -> int:
        """The child's resident memory now (0 when it is not running)."""
        pid = self.pid
        if pid is None:
            return 0
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def run(self, feeds: dict[str, Any], *, timeout: float) -> list[Any]:
        """The outputs of one run, in output order; past ``timeout`` seconds (0: none), waiting
        for the child included, the child is killed and the run fails with ``inference_timeout``."""
        deadline = time.monotonic() + timeout if timeout > 0 else None
        if not self._lock.acquire(timeout=timeout if timeout > 0 else -1):
            raise IsolationError(
                "inference_timeout", f"{self.label} was busy with other requests past the inference timeout."
            )
        try:
            if self._closed:
                raise IsolationError("inference_failed", f"{self.label} was unloaded; retry.")
            if self._process is None or self._process.poll() is not None:
                self._start()  # replaced after a crash or a kill: its start is not the run's time
                deadline = time.monotonic() + timeout if timeout > 0 else None
            return self._exchange({"op": "run", "feeds": feeds}, deadline)["values"]
        finally:
            if self._closed:
                self._stop()
            self._lock.release()

    def close(self) -> None:
        """Stop the child now, or after the run in progress."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._stop()
            finally:
                self._lock.release()

    # --- internals (under self._lock) ------------------------------------------------------------

    def _start(self) -> None:
        self._stop()
        parent_sock, child_sock = socket.socketpair()
        for sock in (parent_sock, child_sock):
            # Room for a whole request or reply in the kernel's buffer: a message then crosses in
            # one wake-up of the other side instead of one per 200 KB (the default).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER_BYTES)
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inference.isolation",
                    "--fd",
                    str(child_sock.fileno()),
                    "--memory-mb",
                    str(self.memory_mb),
                ],
                cwd=PROJECT_ROOT,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                pass_fds=(child_sock.fileno(),),
            )
        finally:
            child_sock.close()
        self._sock = parent_sock
        self.starts += 1
        reply = self._exchange(
            {"op": "load", "model": self._data, **self._config},
            time.monotonic() + self.start_timeout,
            starting=True,
        )
        self.input_names, self.output_names = reply["inputs"], reply["outputs"]

    def _exchange(self, request: dict, deadline: float | None, *, starting: bool = False) -> Any:
        import numpy as np

        sock = self._sock
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()) if deadline is not None else None)
            _send(sock, {**request, "model": np.frombuffer(request["model"], np.uint8)} if starting else request)
            reply = _receive(sock)
        except TimeoutError:
            self._stop()
            what = "starting" if starting else "running"
            raise IsolationError(
                "inference_timeout", f"{self.label} took longer than allowed {what} in its process and was stopped."
            ) from None
        except (EOFError, OSError, ValueError) as exc:
            if isinstance(exc, EOFError):  # it is exiting: let it finish, to read why
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=5)
            exited = self._process.poll() is not None  # by itself, not by our kill below
            status = self._stop()
            raise self._death(status if exited else None, starting) from exc
        if reply.get("ok"):
            return reply
        if starting:
            self._stop()
        raise IsolationError(reply.get("code", "inference_failed"), reply.get("detail", ""))

    def _death(self, status: int | None, starting: bool) -> IsolationError:
        """The error for a child that ended (``status``), or broke the protocol (None)."""
        if status is not None and status < 0 and -status == signal.SIGKILL:
            return IsolationError(
                "resource_limit_exceeded",
                f"The process running {self.label} was killed (the system ran out of memory) "
                f"{'while loading it' if starting else 'on this request'}.",
            )
        if status is None:
            how = "it broke the protocol and was stopped"
        elif status < 0:
            how = f"signal {signal.Signals(-status).name}"
        else:
            how = f"status {status}"
        return IsolationError(
            "inference_failed",
            f"The process running {self.label} ended ({how}) {'while loading it' if starting else 'on this request'}.",
        )

    def _stop(self) -> int | None:
        """Kill the child (if any) and reap it; its exit status."""
        status = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            status = self._process.wait()
            self._process = None
        return status


def _child_env() -> dict[str, str]:
    # Two malloc arenas: what a run freed goes back to the one the next run allocates from.
    return child_env(MALLOC_ARENA_MAX="2")


# --- the child's side ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.isolation")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    args = parser.parse_args(argv)
    _limit(args.memory_mb)
    # A stop signal for the whole process group (systemd, a terminal) must not end the runs
    # the server is draining: the server ends this process when it is done (EOF, or its exit).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    sock = socket.socket(fileno=args.fd)
    child = _Child(memory_mb=args.memory_mb)
    while True:
        try:
            request = _receive(sock)
        except EOFError:
            return 0  # the parent went away, or unloaded the model
        _send(sock, child.handle(request))


def _limit(memory_mb: int) -> None:
    # RLIMIT_DATA counts what the process can write to (heap, anonymous mappings), not the
    # address space reserved for thread stacks and malloc arenas (RLIMIT_AS would, and fail
    # spuriously with more threads), so the limit means memory actually usable.
    limit = memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exit_with_parent() -> None:
    """End this process once its parent is gone, even in the middle of a run (EOF on the pipe
    ends it between runs). Not PR_SET_PDEATHSIG: that fires when the parent's *thread* that
    started the child ends, and request and batching threads come and go."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Child:
    def __init__(self, *, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.session = None
        # A reply has to fit in the server process too: outputs are capped at a quarter of the
        # limit (the parent renders them, e.g. as JSON, at a multiple of their size).
        self.max_reply_bytes = memory_mb * 2**20 // 4

    def handle(self, request: dict) -> dict:
        try:
            if request.get("op") == "load":
                return self._load(request)
            return self._run(request["feeds"])
        except MemoryError as exc:
            return self._out_of_memory(exc)
        except Exception as exc:
            if any(phrase in str(exc).lower() for phrase in _OUT_OF_MEMORY_PHRASES):
                return self._out_of_memory(exc)
            return {"ok": False, "code": "inference_failed", "detail": _message(exc)}

    def _load(self, request: dict) -> dict:
        import onnxruntime as ort

        levels = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = request["intra_op_threads"]
        options.inter_op_num_threads = request["inter_op_threads"]
        options.graph_optimization_level = levels[request["optimization_level"]]
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if request.get("execution_mode") == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.enable_cpu_mem_arena = False  # what a run allocates is freed when it ends
        options.log_severity_level = 4
        data = request["model"].tobytes()
        providers = request.get("execution_providers") or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(data, options, providers=providers)
        return {
            "ok": True,
            "inputs": [node.name for node in self.session.get_inputs()],
            "outputs": [node.name for node in self.session.get_outputs()],
        }

    def _run(self, feeds: dict) -> dict:
        import numpy as np
        import onnxruntime as ort

        run_feeds = {}
        for name, value in feeds.items():
            if isinstance(value, np.ndarray) and value.dtype.name == "bfloat16":
                value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value.view(np.uint16), _BFLOAT16)
            run_feeds[name] = value
        options = ort.RunOptions()
        options.log_severity_level = 4
        values = self.session.run(None, run_feeds, options)
        size = sum(value.nbytes for value in values if isinstance(value, np.ndarray))
        if size > self.max_reply_bytes:
            return {
                "ok": False,
                "code": "resource_limit_exceeded",
                "detail": f"The outputs take {size} bytes, more than a quarter of the model's memory limit "
                f"({self.memory_mb} MB) allows.",
            }
        return {"ok": True, "values": values}

    def _out_of_memory(self, exc: BaseException) -> dict:
        return {
            "ok": False,
            "code": "resource_limit_exceeded",
            "detail": f"The model needed more than its memory limit of {self.memory_mb} MB on these inputs "
            f"({_message(exc, 200) or type(exc).__name__}).",
        }


def _message(exc: BaseException, limit: int = 500) -> str:
    message = " ".join(str(exc).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
