"""A reference point, not a server to deploy: the leanest Python batching server we could write.

It answers one thing, a /v2 infer request with one binary FP32 input and a binary output, with
none of ModelForge's per-request work (no key, no validation beyond the shape, no cache, no
history, no metrics, no logs). It runs under granian's native RSGI interface, one asyncio loop
per process, with the model run in a thread (ONNX Runtime releases the GIL):

- BATCH=1: continuous batching. A request queues its rows; when no run is in progress, everything
  queued (up to MAX_BATCH rows) is concatenated and run at once, and the outputs are split back.
  No waiting for a batch to fill: while one run goes on, the next batch gathers.
- BATCH=0: every request is its own run, RUN_THREADS runs at a time.

`wsgi_app` is the same under granian's WSGI interface, as ModelForge is served: a request per
blocking thread, the batch run by one scheduler thread (continuous as above).

bench/batching.py runs both beside ModelForge to show how far batching can go on the machine at
hand: whatever ratio these servers reach is an upper bound for a Python server that does more
work per request.

WORK_US=N adds N microseconds of interpreter work (a busy loop holding the GIL) to every request,
standing in for a real server's checks and counts: bench/budget.py uses it to find how much
per-request work batching can carry before a target ratio is lost.

    MODEL_PATH=model.onnx BATCH=1 granian --interface rsgi bench.lean_server:app
    MODEL_PATH=model.onnx BATCH=1 granian --interface wsgi --blocking-threads 16 bench.lean_server:wsgi_app
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import orjson

_options = ort.SessionOptions()
_options.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "1"))
_options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL_PATH"], _options, providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
OUTPUT = os.environ.get("OUTPUT", session.get_outputs()[-1].name)
BATCH = os.environ.get("BATCH", "1") == "1"
MAX_BATCH = int(os.environ.get("MAX_BATCH", "32"))
WORK_SECONDS = int(os.environ.get("WORK_US", "0")) / 1e6
runner = ThreadPoolExecutor(int(os.environ.get("RUN_THREADS", "1")), thread_name_prefix="lean-run")


class _Queued(NamedTuple):
    rows: np.ndarray
    future: asyncio.Future


_queue: deque[_Queued] = deque()
_running = False


def _run(rows: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT], {INPUT: rows})[0]


def _take(queue: deque) -> list:
    """The next batch, in arrival order: as many queued requests as fit in MAX_BATCH rows (a
    larger request runs alone)."""
    batch, total = [], 0
    while queue and (not batch or total + queue[0].rows.shape[0] <= MAX_BATCH):
        batch.append(queue.popleft())
        total += batch[-1].rows.shape[0]
    return batch


def _run_merged(batch: list) -> list[np.ndarray]:
    """One run over the batch's rows, split back into each request's share of the output."""
    if len(batch) == 1:
        return [_run(batch[0].rows)]
    output = _run(np.concatenate([item.rows for item in batch]))
    return np.split(output, np.cumsum([item.rows.shape[0] for item in batch])[:-1])


async def _drain() -> None:
    """Run what is queued, batch after batch, until the queue is empty."""
    global _running
    loop = asyncio.get_running_loop()
    _running = True
    try:
        while _queue:
            batch = _take(_queue)
            try:
                outputs = await loop.run_in_executor(runner, _run_merged, batch)
            except Exception as exc:
                for item in batch:
                    item.future.set_exception(exc)
                continue
            for item, output in zip(batch, outputs, strict=True):
                item.future.set_result(output)
    finally:
        _running = False


async def _infer(rows: np.ndarray) -> np.ndarray:
    loop = asyncio.get_running_loop()
    if not BATCH:
        return await loop.run_in_executor(runner, _run, rows)
    future = loop.create_future()
    _queue.append(_Queued(rows, future))
    if not _running:
        loop.create_task(_drain())
    return await future


def _work() -> None:
    """WORK_US of interpreter time, as a real server's per-request Python work would take."""
    if WORK_SECONDS:
        end = time.perf_counter() + WORK_SECONDS
        while time.perf_counter() < end:
            pass


def _parse(body: bytes, header_length: str | None) -> tuple[dict, np.ndarray]:
    _work()
    length = int(header_length or "")
    header = orjson.loads(body[:length])
    return header, np.frombuffer(body[length:], dtype="<f4").reshape(header["inputs"][0]["shape"])


async def app(scope, protocol):
    if scope.method != "POST":
        protocol.response_bytes(200, [("content-type", "application/json")], b'{"live": true}')
        return
    body = await protocol()
    try:
        header, rows = _parse(body, scope.headers.get("inference-header-content-length"))
        output = await _infer(rows)
    except Exception as exc:  # a reference server: say what went wrong, as a 400
        protocol.response_bytes(400, [("content-type", "application/json")], orjson.dumps({"error": str(exc)}))
        return
    headers, content = _reply(header, output)
    protocol.response_bytes(200, headers, content)


def _reply(header: dict, output: np.ndarray) -> tuple[list[tuple[str, str]], bytes]:
    raw = output.astype("<f4", copy=False).tobytes()
    reply = orjson.dumps(
        {
            "model_name": header.get("model_name", "model"),
            "outputs": [
                {
                    "name": OUTPUT,
                    "datatype": "FP32",
                    "shape": list(output.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        }
    )
    headers = [("content-type", "application/octet-stream"), ("inference-header-content-length", str(len(reply)))]
    return headers, reply + raw


# --- the same under WSGI: request threads, one scheduler thread --------------------------------
class _Waiting:
    __slots__ = ("rows", "done", "output", "error")

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.done = threading.Event()
        self.output: np.ndarray | None = None
        self.error: BaseException | None = None


_waiting: deque[_Waiting] = deque()
_ready = threading.Condition()


def _schedule() -> None:
    while True:
        with _ready:
            while not _waiting:
                _ready.wait()
            batch = _take(_waiting)
        try:
            outputs = _run_merged(batch)
        except Exception as exc:
            for item in batch:
                item.error = exc
                item.done.set()
            continue
        for item, output in zip(batch, outputs, strict=True):
            item.output = output
            item.done.set()


_scheduler: threading.Thread | None = None
_scheduler_lock = threading.Lock()


def _infer_blocking(rows: np.ndarray) -> np.ndarray:
    global _scheduler
    if not BATCH:
        return _run(rows)
    if _scheduler is None:
        with _scheduler_lock:
            if _scheduler is None:
                _scheduler = threading.Thread(target=_schedule, name="lean-batcher", daemon=True)
                _scheduler.start()
    item = _Waiting(rows)
    with _ready:
        _waiting.append(item)
        _ready.notify()
    item.done.wait()
    if item.error is not None:
        raise item.error
    return item.output


def wsgi_app(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("content-type", "application/json")])
        return [b'{"live": true}']
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        header, rows = _parse(body, environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
        output = _infer_blocking(rows)
    except Exception as exc:
        start_response("400 Bad Request", [("content-type", "application/json")])
        return [orjson.dumps({"error": str(exc)})]
    headers, content = _reply(header, output)
    start_response("200 OK", headers)
    return [content]
