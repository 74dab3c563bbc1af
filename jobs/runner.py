"""The embedded job runner: jobs without a broker.

With CELERY_BROKER_URL empty (the `make run` default) jobs run in a small pool of background
threads of the server process (JOB_EMBEDDED_THREADS), highest priority first, then oldest
first. They go through the same services as on Celery (`job_claim`, `job_execute`,
`job_record_failure`), so the API behaves the same; transient failures are retried after the
same backoff, the soft time limit is checked between chunks, and a timer thread runs the
sweeper and the retention cleanup that Celery beat runs otherwise.

What a process holds in memory ends with it. The job rows name the process holding them
(``embedded@host:pid``), so another server process on the host (or the next one after a
restart) queues again the jobs of a process that is gone.

A thread that dies (anything escaping a job's run that is not an ``Exception``: a
``SystemExit`` from a library, an error in the runner's own bookkeeping) is replaced at once
by a new one, and the job it held is queued again as a new attempt (JOB_MAX_ATTEMPTS bounds a
job that kills its thread every time). Should that requeue fail, the maintenance thread finds
the job later: running under this process's name, held by no thread of it.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from jobs import services
from jobs.models import Job
from registry import services as registry_services

logger = logging.getLogger(__name__)

CLEANUP_INTERVAL_SECONDS = 3600
_STOP = ""

# A test seam: called in the runner thread with each job it has claimed, just before the run.
# Tests set it to make a thread die for real in the middle of a job.
before_run: Callable[[Job], None] | None = None


class EmbeddedRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pid: int | None = None
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._workers: dict[int, threading.Thread] = {}  # index -> the job thread of that slot
        self._held: dict[int, str] = {}  # index -> id of the job that thread is taking or running
        self._replaced = 0
        self._running = 0
        self._outstanding = 0  # queued here and not yet finished

    @property
    def name(self) -> str:
        return f"embedded@{socket.gethostname()}:{os.getpid()}"

    # --- control -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads in this process, once (again after a fork: threads do not survive one)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.PriorityQueue()
            self._running = self._outstanding = 0
            self._workers, self._held, self._replaced = {}, {}, 0
            for index in range(settings.JOB_EMBEDDED_THREADS):
                self._spawn(index)
            self._threads = []
            if settings.JOB_SWEEP_INTERVAL_SECONDS > 0:
                self._threads.append(threading.Thread(target=self._maintain, name="job-maintenance", daemon=True))
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the worker threads finish their current job and end (tests; interpreter exit)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            self._pid = None  # from now on a thread that ends is not replaced
            workers = list(self._workers.values())
        for _ in workers:
            self._queue.put((-1, next(self._order), _STOP))
        for thread in workers:
            thread.join(timeout)

    def _spawn(self, index: int) -> None:
        """Start the job thread of slot ``index`` (with the lock held, or before any thread runs)."""
        thread = threading.Thread(target=self._worker_main, args=(index,), name=f"job-runner-{index}", daemon=True)
        self._workers[index] = thread
        thread.start()

    def ensure_threads(self) -> int:
        """Start a new thread for every slot whose thread is gone (it died and its own
        replacement failed); returns how many were started."""
        if self._pid != os.getpid():
            return 0
        with self._lock:
            dead = [index for index, thread in self._workers.items() if not thread.is_alive()]
            for index in dead:
                self._spawn(index)
                self._replaced += 1
        if dead:
            logger.error("embedded job threads found dead were started again", extra={"count": len(dead)})
        return len(dead)

    def submit(self, job_id, priority: str, *, delay: float | None = None) -> None:
        """Queue a job (after ``delay`` seconds). Claiming decides whether it still runs."""
        if delay:
            timer = threading.Timer(delay, self.submit, args=(job_id, priority))
            timer.daemon = True
            timer.start()
            return
        self.start()
        self.ensure_threads()
        with self._lock:
            self._outstanding += 1
        self._queue.put((Job.PRIORITY_RANK.get(priority, 1), next(self._order), str(job_id)))

    def submit_call(self, work: Callable[[], object]) -> None:
        """Run ``work()`` on these threads, ahead of normal and low jobs (other apps' background
        work without a broker: a registry validation)."""
        self.start()
        with self._lock:
            self._outstanding += 1
        self._queue.put((Job.PRIORITY_RANK[Job.Priority.HIGH], next(self._order), work))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued or running here; False if that took too long."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def stats(self) -> dict[str, int]:
        return {
            "threads": settings.JOB_EMBEDDED_THREADS,
            "queued": max(self._outstanding - self._running, 0) if self._pid == os.getpid() else 0,
            "running": self._running,
            "replaced": self._replaced,  # threads that died and were started again
        }

    # --- threads -----------------------------------------------------------------------------
    def _worker_main(self, index: int) -> None:
        """A job thread: `_work` until told to stop. Whatever kills it (BaseException included,
        so a stray SystemExit too) starts its replacement and hands its job back to the queue."""
        try:
            self._work(index)
        except BaseException:
            logger.exception("embedded job thread died; starting another")
            with self._lock:
                job_id = self._held.pop(index, None)  # died outside a job's run, holding one
                if self._pid == os.getpid() and self._workers.get(index) is threading.current_thread():
                    self._spawn(index)
                    self._replaced += 1
            if job_id is not None and not callable(job_id):
                self._requeue(job_id)

    def _requeue(self, job_id: str) -> None:
        """Queue again the job a dead thread was running (a new attempt, as after a lost
        Celery worker). If the database cannot be reached now, `recover` does it later."""
        try:
            job = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, worker=self.name).first()
            if job is not None and services.job_requeue(job=job):
                services.job_enqueue(job_id=job.pk)
                logger.warning("job of a dead embedded job thread queued again", extra={"job": job_id})
        except Exception:
            logger.exception("could not queue again the job of a dead job thread", extra={"job": job_id})
        finally:
            connection.close()

    def _work(self, index: int) -> None:
        while True:
            _, _, job_id = self._queue.get()
            if job_id == _STOP:
                return
            with self._lock:
                self._running += 1
                self._held[index] = job_id  # before the claim: `recover` must not take it meanwhile
            try:
                if callable(job_id):  # work of another app (submit_call)
                    job_id()
                else:
                    self._process(job_id)
            except Exception:
                logger.exception("embedded job runner error", extra={"job": str(job_id)})
            except BaseException:
                # This thread dies (`_worker_main` replaces it). Its job goes back to the queue
                # first, so that it is never neither queued nor running (`wait_idle`). Another
                # app's work (a validation) is left to that app's sweeper.
                with self._lock:
                    self._held.pop(index, None)
                if not callable(job_id):
                    self._requeue(job_id)
                raise
            finally:
                with self._idle:
                    self._running -= 1
                    self._outstanding -= 1
                    self._idle.notify_all()
                connection.close()  # this thread's connection; the next job opens a fresh one
            with self._lock:
                self._held.pop(index, None)

    def _process(self, job_id: str) -> None:
        """What the Celery task does: claim, run, record a failure (and retry it later)."""
        job = services.job_claim(job_id=job_id, worker=self.name)
        if job is None:
            return
        if before_run is not None:
            before_run(job)
        try:
            services.job_execute(job=job, deadline=time.monotonic() + settings.CELERY_TASK_SOFT_TIME_LIMIT)
        except services.JobSuperseded:
            return
        except Exception as exc:
            delay = services.job_record_failure(job=job, exc=exc)
            if delay is not None:
                self.submit(job.pk, job.priority, delay=delay)

    def _maintain(self) -> None:
        last_cleanup = 0.0
        while True:
            try:
                self.ensure_threads()
                self.recover()
                services.jobs_sweep()
                registry_services.validations_sweep()
                if time.monotonic() - last_cleanup >= CLEANUP_INTERVAL_SECONDS:
                    services.jobs_cleanup()
                    last_cleanup = time.monotonic()
            except Exception:
                logger.exception("embedded job maintenance failed")
            finally:
                connection.close()
            time.sleep(settings.JOB_SWEEP_INTERVAL_SECONDS)

    def recover(self) -> int:
        """Queue here the jobs that another, ended server process on this host held, and those
        running under this process's name that none of its threads holds (a thread died and its
        job could not be queued again then)."""
        prefix = f"embedded@{socket.gethostname()}:"
        held = (
            Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING], worker__startswith=prefix)
            .exclude(worker=self.name)
            .only("pk", "status", "attempts", "worker")
        )
        with self._lock:
            holding = {str(job_id) for job_id in self._held.values()}
        orphans = [
            job
            for job in Job.objects.filter(status=Job.Status.RUNNING, worker=self.name).only(
                "pk", "status", "attempts", "worker"
            )
            if str(job.pk) not in holding
        ]
        recovered = 0
        for job in [*held, *orphans]:
            if job.worker != self.name and _process_alive(job.worker.rpartition(":")[2]):
                continue
            if job.status == Job.Status.RUNNING and not services.job_requeue(job=job):
                continue
            recovered += services.job_enqueue(job_id=job.pk)
        if recovered:
            logger.info("jobs of ended server processes queued again", extra={"count": recovered})
        return recovered


def _process_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's process
    return True


runner = EmbeddedRunner()
