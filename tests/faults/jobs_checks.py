"""What the job faults check afterwards: every job completed exactly once (one attempt more
per kill, one output file, one stored task result), with the outputs ONNX Runtime gives."""

from __future__ import annotations

import time

import numpy as np
from django_celery_results.models import TaskResult

from jobs.models import Job
from jobs.storage import JobFiles
from tests.jobs.api import output_lines, result_url
from tests.jobs.factories import reference_outputs


def assert_completed_once(client, job_id: str, model: bytes, rows: np.ndarray, output: str, *, attempts: int) -> None:
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (Job.Status.COMPLETED, attempts)
    expected = reference_outputs(model, {"X": rows})[output]
    if job.output_file:  # a batch file: one output file, one line per row
        assert [path.name for path in JobFiles(job_id).folder.glob("output-*")] == [job.output_file]
        lines = output_lines(client, job_id)
        assert len(lines) == len(rows)
        np.testing.assert_allclose([line[output] for line in lines], expected, rtol=1e-5)
    else:  # inline input: the outputs are in the result
        np.testing.assert_allclose(client.get(result_url(job_id)).json()["output_data"][output], expected, rtol=1e-5)
    deadline = time.monotonic() + 10
    while not TaskResult.objects.filter(task_id=job_id).exists():
        assert time.monotonic() < deadline, "no task result stored"
        time.sleep(0.05)
    assert TaskResult.objects.filter(task_id=job_id, status="SUCCESS").count() == 1
