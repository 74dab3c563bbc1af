"""An embedded job thread (jobs without a broker, `make run`) that dies in the middle of a job is
replaced, and the job it held runs again to completion as a new attempt; the runner goes on
running jobs. The thread dies for real: `jobs.services.before_run` (the runner's test seam, called
with each claimed job) raises what an `except Exception` does not catch, as a library calling
`sys.exit()` would. Transactional: the runner's threads must see the rows the API commits."""

from __future__ import annotations

import threading

import pytest

from core.embedded_runner import runner
from jobs import services
from jobs.models import Job
from tests.jobs.api import create_inline, created, job_url, wait_finished
from tests.jobs.factories import iris_model, reference_outputs

pytestmark = pytest.mark.django_db(transaction=True)

ROW = [[5.1, 3.5, 1.4, 0.2]]


class ThreadKiller:
    """`before_run` that kills the thread running the first job it sees, and notes which
    thread ran each job."""

    def __init__(self, kills: int = 1):
        self.kills = kills
        self.killed: list[threading.Thread] = []
        self.ran_on: dict[str, list[threading.Thread]] = {}

    def __call__(self, job: Job) -> None:
        self.ran_on.setdefault(str(job.pk), []).append(threading.current_thread())
        if len(self.killed) < self.kills:
            self.killed.append(threading.current_thread())
            raise SystemExit("a library called sys.exit() inside a job thread")


def test_a_job_thread_that_dies_is_replaced_and_its_job_runs_again(jobs_client, make_model, settings, monkeypatch):
    settings.JOB_EMBEDDED_THREADS = 1  # nothing could run afterwards without the replacement
    iris = make_model(iris_model())
    killer = ThreadKiller()
    monkeypatch.setattr(services, "before_run", killer)

    job = created(create_inline(jobs_client, iris, {"X": ROW}))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 200, response.json()
    expected = reference_outputs(iris_model(), {"X": ROW})
    assert response.json()["output_data"]["label"] == expected["label"].tolist()

    detail = jobs_client.get(job_url(job["id"])).json()
    assert (detail["status"], detail["attempts"]) == ("completed", 2)  # the lost run counts as one
    dead, rerun = killer.ran_on[job["id"]]
    assert dead is killer.killed[0] and not dead.is_alive()
    assert rerun is not dead and rerun.name == dead.name  # its replacement, in the same slot
    assert runner.stats()["replaced"] == 1

    # The runner goes on: the next job runs once, on the replacement.
    after = created(create_inline(jobs_client, iris, {"X": ROW}))
    assert wait_finished(jobs_client, after["id"]).status_code == 200
    assert Job.objects.get(pk=after["id"]).attempts == 1
    assert killer.ran_on[after["id"]] == [rerun]


def test_a_job_that_kills_its_thread_every_time_fails_after_the_attempt_limit(
    jobs_client, make_model, settings, monkeypatch
):
    settings.JOB_EMBEDDED_THREADS = 1
    settings.JOB_MAX_ATTEMPTS = 3
    iris = make_model(iris_model())
    monkeypatch.setattr(services, "before_run", ThreadKiller(kills=1000))

    job = created(create_inline(jobs_client, iris, {"X": ROW}))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 409
    assert response.json()["error_code"] == "attempts_exhausted"
    assert Job.objects.get(pk=job["id"]).attempts == 3
    assert runner.stats()["replaced"] == 3

    monkeypatch.setattr(services, "before_run", None)
    after = created(create_inline(jobs_client, iris, {"X": ROW}))
    assert wait_finished(jobs_client, after["id"]).status_code == 200  # still serving jobs


def test_a_running_job_of_this_process_that_no_thread_holds_is_queued_again(jobs_client, make_model):
    """What the maintenance thread does when a dead thread's job could not be queued again at
    once (the database was unreachable then): running under this process's name, held by none
    of its threads."""
    iris = make_model(iris_model())
    job = created(create_inline(jobs_client, iris, {"X": ROW}))
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    assert runner.wait_idle(timeout=30)
    Job.objects.filter(pk=job["id"]).update(
        status=Job.Status.RUNNING, attempts=1, worker=runner.name, output_data=None, finished_at=None
    )
    assert services.jobs_recover() == 1
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    assert Job.objects.get(pk=job["id"]).attempts == 2
    assert services.jobs_recover() == 0
