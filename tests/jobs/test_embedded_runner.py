"""Jobs without a broker (`make run`): background threads of the server process run them,
through the same services as the Celery workers. Transactional tests: the runner's threads
must see the rows the API commits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime

import numpy as np
import pytest

from core.embedded_runner import runner
from jobs import services
from jobs.models import Job
from registry.models import MLModel
from tests.jobs.api import (
    create_file,
    create_inline,
    created,
    job_url,
    output_lines,
    result_url,
    wait_finished,
    wait_status,
)
from tests.jobs.factories import csv_bytes, iris_model, iris_rows, jsonl_bytes, npy_bytes, reference_outputs, slow_model

pytestmark = pytest.mark.django_db(transaction=True)


def assert_matches_reference(lines: list[dict], data: bytes, rows: np.ndarray) -> None:
    expected = reference_outputs(data, {"X": rows})
    assert len(lines) == len(rows)
    assert [line["label"] for line in lines] == expected["label"].tolist()
    np.testing.assert_allclose([line["probabilities"] for line in lines], expected["probabilities"], rtol=1e-5)


def test_inline_job_runs_in_the_background(jobs_client, make_model):
    iris = make_model(iris_model())
    rows = iris_rows(3)
    job = created(create_inline(jobs_client, iris, {"X": rows}))
    assert job["status"] in ("queued", "running", "completed")
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 200, response.json()
    body = response.json()
    expected = reference_outputs(iris_model(), {"X": rows})
    assert body["output_data"]["label"] == expected["label"].tolist()
    np.testing.assert_allclose(body["output_data"]["probabilities"], expected["probabilities"], rtol=1e-6)
    detail = jobs_client.get(job_url(job["id"])).json()
    assert detail["status"] == "completed"
    assert detail["attempts"] == 1
    assert detail["worker"] == runner.name
    assert detail["progress"] == {"done": 3, "total": 3}
    assert detail["queue_time_ms"] >= 0
    assert detail["inference_time_ms"] >= 0
    assert detail["started_at"] <= detail["finished_at"]


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "npy"])
def test_batch_file_runs_in_chunks_into_a_jsonl_output(jobs_client, make_model, settings, file_format):
    settings.JOB_CHUNK_ROWS = 64
    iris = make_model(iris_model())
    rows = iris_rows(1000, seed=3)
    content = {"jsonl": jsonl_bytes, "csv": csv_bytes, "npy": npy_bytes}[file_format](rows)
    job = created(create_file(jobs_client, iris, content, f"rows.{file_format}"))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["rows"] == 1000
    assert body["downloads"]["jsonl"].endswith(result_url(job["id"], format="jsonl"))
    assert_matches_reference(output_lines(jobs_client, job["id"]), iris_model(), rows)
    assert jobs_client.get(job_url(job["id"])).json()["progress"] == {"done": 1000, "total": 1000}


def test_output_streams_as_csv(jobs_client, make_model):
    iris = make_model(iris_model())
    rows = iris_rows(50)
    job = created(create_file(jobs_client, iris, jsonl_bytes(rows), "rows.jsonl"))
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    response = jobs_client.get(result_url(job["id"], format="csv"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="job-{job["id"]}.csv"'
    text = b"".join(response.streaming_content).decode()
    header, *lines = text.splitlines()
    assert header == "label,probabilities_0,probabilities_1,probabilities_2"
    expected = reference_outputs(iris_model(), {"X": rows})
    assert [int(line.split(",")[0]) for line in lines] == expected["label"].tolist()
    np.testing.assert_allclose(
        [[float(v) for v in line.split(",")[1:]] for line in lines], expected["probabilities"], rtol=1e-6
    )


def test_bad_row_fails_the_job_naming_the_row(jobs_client, make_model, settings):
    settings.JOB_CHUNK_ROWS = 100
    iris = make_model(iris_model())
    lines = jsonl_bytes(iris_rows(500)).splitlines(keepends=True)
    lines[344] = b'{"X": [5.1, 3.5, 1.4]}\n'  # row 345: three features
    job = created(create_file(jobs_client, iris, b"".join(lines), "rows.jsonl"))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 409
    assert response.json()["code"] == "job_failed"
    assert response.json()["error_code"] == "invalid_row"
    detail = jobs_client.get(job_url(job["id"])).json()
    assert detail["status"] == "failed"
    assert detail["error_message"].startswith("Row 345: Input 'X' expects shape [4]")
    assert detail["attempts"] == 1  # bad input is not retried
    assert detail["progress"]["done"] == 300  # the chunks before it were done


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"X": [1, 2, 3, 4]}\n\n{"X": [1, 2, 3, 4]}\n{"X": [1, 2, NaN, 4]}\n', "Row 3 (line 4): "),
        (b'{"X": [1, 2, 3, 4]}\n{"X": [1, 2, 3, 4]}\n{"X": [1, 2, 3, 4]\n', "Row 3: The line is not valid JSON"),
        (b'{"X": [1, 2, 3, 4]}\n{"X": [1, 2, 3, 4], "Z": 1}\n', "Row 2: unknown input(s) ['Z']"),
        (b'{"X": [1, 2, 3, 4]}\n{"X": [1, 2, "3", 4]}\n', "Row 2: Input 'X' is FP32 and contains strings"),
    ],
)
def test_bad_jsonl_rows_name_their_row(jobs_client, make_model, content, message):
    iris = make_model(iris_model())
    job = created(create_file(jobs_client, iris, content, "rows.jsonl"))
    assert wait_finished(jobs_client, job["id"]).status_code == 409
    assert jobs_client.get(job_url(job["id"])).json()["error_message"].startswith(message)


def test_bad_csv_cell_names_row_and_column(jobs_client, make_model):
    iris = make_model(iris_model())
    content = b"a,b,c,d\n1,2,3,4\n1,2,3,4\n1,2,oops,4\n"
    job = created(create_file(jobs_client, iris, content, "rows.csv"))
    assert wait_finished(jobs_client, job["id"]).status_code == 409
    detail = jobs_client.get(job_url(job["id"])).json()
    assert detail["error_message"] == "Row 3 (line 4): column 3 is 'oops', not a number."


def test_priorities_high_runs_before_normal_before_low(jobs_client, make_model, settings):
    settings.JOB_EMBEDDED_THREADS = 1
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    iris = make_model(iris_model(), name="iris")
    busy = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(60)), "busy.jsonl"))
    wait_status(jobs_client, busy["id"], lambda job: job["status"] == "running")
    order = [
        created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}, priority=priority))["id"]
        for priority in ("low", "low", "normal", "high")
    ]
    for job_id in [busy["id"], *order]:
        assert wait_finished(jobs_client, job_id).status_code == 200
    started = {job.pk.hex: job.started_at for job in Job.objects.all()}
    ran = sorted(order, key=lambda job_id: started[job_id.replace("-", "")])
    assert ran == [order[3], order[2], order[0], order[1]]


def test_cancel_before_the_run_means_it_never_runs(jobs_client, make_model, settings):
    settings.JOB_EMBEDDED_THREADS = 1
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    busy = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(30)), "busy.jsonl"))
    waiting = created(create_inline(jobs_client, slow, {"X": [[1, 2, 3, 4]]}))
    assert jobs_client.post(f"{job_url(waiting['id'])}/cancel").json()["status"] == "cancelled"
    assert wait_finished(jobs_client, busy["id"]).status_code == 200
    assert runner.wait_idle(timeout=10)
    job = Job.objects.get(pk=waiting["id"])
    assert (job.status, job.attempts, job.started_at) == (Job.Status.CANCELLED, 0, None)
    assert jobs_client.get(result_url(waiting["id"])).json()["code"] == "job_cancelled"


def test_cancel_during_the_run_stops_it(jobs_client, make_model, settings):
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(400)), "rows.jsonl"))
    running = wait_status(jobs_client, job["id"], lambda j: j["status"] == "running" and j["progress"]["done"] > 0)
    assert running["progress"]["done"] % 10 == 0  # saved after every chunk
    response = jobs_client.post(f"{job_url(job['id'])}/cancel")
    assert response.json()["status"] == "cancelled"
    assert runner.wait_idle(timeout=10)  # the run stopped at its next chunk, not after 40 of them
    stopped = Job.objects.get(pk=job["id"])
    assert stopped.status == Job.Status.CANCELLED
    assert stopped.progress_done < 400
    assert stopped.output_file == ""
    assert not list(settings.JOB_STORAGE_PATH.rglob("output-*"))


def test_wait_returns_as_soon_as_the_job_ends(jobs_client, make_model, settings):
    """About 2 s of work: by then the waiter's own re-reads are 1.6-2 s apart, so an answer
    within a fraction of a second comes from the finish notification."""
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(200)), "rows.jsonl"))
    started = time.monotonic()
    response = jobs_client.get(result_url(job["id"], wait=25))
    answered = datetime.now().astimezone()
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    finished = datetime.fromisoformat(response.json()["finished_at"].replace("Z", "+00:00"))
    assert (answered - finished).total_seconds() < 0.75
    assert elapsed < 20


def test_wait_is_woken_by_the_finish_not_by_polling(jobs_client, make_model, settings):
    """Polling alone re-reads the job 0.1, 0.3, 0.7, 1.5, 3.1 and 5.1 s into the wait: a job
    ending 3.3 s in would be seen 1.8 s late. The finish notification answers at once."""
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(2_000)), "rows.jsonl"))
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append((jobs_client.get(result_url(job["id"], wait=20)), time.monotonic()))
    )
    started = time.monotonic()
    waiter.start()
    time.sleep(3.3)
    services.job_cancel(job=Job.objects.get(pk=job["id"]))
    cancelled = time.monotonic()
    waiter.join(timeout=20)
    response, answered = answers[0]
    assert response.json()["code"] == "job_cancelled"
    assert answered - cancelled < 0.5, (answered - started, cancelled - started)


def test_wait_gives_up_after_n_seconds(jobs_client, make_model, settings):
    settings.JOB_CHUNK_ROWS = 10
    slow = make_model(slow_model(), name="slow")
    # 200 chunks of a model that takes a tenth of a second or more per run: far longer than
    # the wait on any machine; cancelled below.
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(2_000)), "rows.jsonl"))
    started = time.monotonic()
    response = jobs_client.get(result_url(job["id"], wait=1))
    held = time.monotonic() - started
    assert response.status_code == 202, response.content[:300]
    assert response.json()["status"] in ("queued", "running")
    assert held >= 1  # held for the whole second it was asked to wait, then answered
    jobs_client.post(f"{job_url(job['id'])}/cancel")
    assert wait_finished(jobs_client, job["id"]).json()["code"] == "job_cancelled"


def test_soft_time_limit_fails_the_job_between_chunks(jobs_client, make_model, settings):
    settings.JOB_CHUNK_ROWS = 10
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 0.3
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(300)), "rows.jsonl"))
    assert wait_finished(jobs_client, job["id"]).status_code == 409
    failed = Job.objects.get(pk=job["id"])
    assert failed.error_code == "time_limit_exceeded"
    assert 0 < failed.progress_done < 300
    assert not list(settings.JOB_STORAGE_PATH.rglob("output-*"))


def test_jobs_of_an_ended_server_process_are_run_again(jobs_client, make_model):
    iris = make_model(iris_model())
    job = created(create_file(jobs_client, iris, jsonl_bytes(iris_rows(20)), "rows.jsonl"))
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    # Two jobs another server process on this host held when it ended: one running, one queued.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = runner.name.rpartition(":")[0] + ":" + ended.stdout.strip()
    running = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    queued = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    assert runner.wait_idle(timeout=10)
    Job.objects.filter(pk=running["id"]).update(
        status=Job.Status.RUNNING, attempts=1, worker=holder, output_data=None, finished_at=None
    )
    Job.objects.filter(pk=queued["id"]).update(
        status=Job.Status.QUEUED, attempts=0, worker=holder, output_data=None, finished_at=None
    )
    assert services.jobs_recover() == 2
    for job_id, attempts in ((running["id"], 2), (queued["id"], 1)):
        assert wait_finished(jobs_client, job_id).status_code == 200
        assert Job.objects.get(pk=job_id).attempts == attempts
    assert services.jobs_recover() == 0  # this process's own jobs are never taken


def test_empty_csv_cells_are_missing_values_for_models_that_take_nan(jobs_client, make_model):
    iris = make_model(iris_model())
    MLModel.objects.filter(pk=iris.pk).update(allow_non_finite=True)
    content = b"a,b,c,d\n5.1,3.5,1.4,0.2\n5.1,,1.4,0.2\n"
    job = created(create_file(jobs_client, iris, content, "rows.csv"))
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    first, second = output_lines(jobs_client, job["id"])
    assert None not in first["probabilities"]
    assert second["probabilities"] == [None, None, None]  # NaN in, NaN out: rendered as null
    warnings = jobs_client.get(job_url(job["id"])).json()["warnings"]
    assert warnings == ["output 'probabilities': 3 non-finite values rendered as null"]
