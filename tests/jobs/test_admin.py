"""Jobs in the admin: a read-only list of what the system wrote; cancel and retry go through the
services."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from jobs import services
from jobs.models import Job
from jobs.storage import JobFiles
from tests.jobs.factories import iris_model, iris_rows, jsonl_bytes, uploaded_input

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:jobs_job_changelist")


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


@pytest.fixture
def jobs(make_model, make_key, settings):
    iris = make_model(iris_model())
    api_key, _ = make_key("predict", name="billing")

    def _job(status: str = Job.Status.PENDING, **fields) -> Job:
        job = services.job_create(
            model=iris, input_file=uploaded_input(jsonl_bytes(iris_rows(10))), api_key=api_key, priority="high"
        )
        Job.objects.filter(pk=job.pk).update(status=status, **fields)
        job.refresh_from_db()
        return job

    return _job


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_changelist_shows_status_progress_model_owner_without_n_plus_one(admin_client, jobs):
    jobs(Job.Status.RUNNING, progress_done=4)
    admin_client.get(CHANGELIST)  # warm up sessions, content types
    with CaptureQueriesContext(connection) as one:
        admin_client.get(CHANGELIST)
    for _ in range(4):
        jobs(Job.Status.FAILED, error_code="invalid_row")
    with CaptureQueriesContext(connection) as five:
        response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert ">Running</span>" in html and ">Failed</span>" in html  # the status in words
    assert "4 / 10 (40%)" in html
    assert "iris:1.0.0" in html
    assert "key:billing" in html
    assert len(five) == len(one)


def test_jobs_are_read_only_in_the_admin(admin_client, jobs):
    job = jobs(Job.Status.FAILED, traceback="Traceback (most recent call last):\n  <boom>")
    assert admin_client.get(reverse("admin:jobs_job_add")).status_code == 403
    page = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;boom&gt;" in html  # escaped
    assert 'name="_save"' not in html


def test_cancel_action_confirms_then_goes_through_the_service(admin_client, jobs):
    queued, finished = jobs(Job.Status.QUEUED), jobs(Job.Status.COMPLETED, output_file="output-1.jsonl")
    selected = {"action": "cancel_jobs", "_selected_action": [queued.pk, finished.pk]}
    confirmation = admin_client.post(CHANGELIST, selected)
    assert confirmation.status_code == 200
    html = confirmation.content.decode()
    assert "Cancel job?" in html and str(queued.pk)[:8] in html and str(finished.pk)[:8] not in html
    assert "1 selected job already finished is left as it is." in html
    assert Job.objects.get(pk=queued.pk).status == Job.Status.QUEUED  # nothing changes before confirming

    response = admin_client.post(CHANGELIST, {**selected, "post": "yes"}, follow=True)
    assert "Cancelled 1 job(s); 1 had already finished." in messages_of(response)
    assert Job.objects.get(pk=queued.pk).status == Job.Status.CANCELLED
    assert Job.objects.get(pk=finished.pk).status == Job.Status.COMPLETED


def test_retry_action_creates_a_new_job_with_the_same_input(admin_client, jobs):
    failed = jobs(Job.Status.FAILED, error_code="internal_error")
    running = jobs(Job.Status.RUNNING)
    response = admin_client.post(
        CHANGELIST, {"action": "retry_jobs", "_selected_action": [failed.pk, running.pk]}, follow=True
    )
    shown = messages_of(response)
    assert "Queued 1 new job(s)." in shown
    assert any("Only failed or cancelled jobs can be retried" in message for message in shown)
    retry = Job.objects.exclude(pk__in=[failed.pk, running.pk]).get()
    assert (retry.api_key_id, retry.priority, retry.model_id) == (failed.api_key_id, "high", failed.model_id)
    assert retry.progress_total == 10
    assert Job.objects.get(pk=failed.pk).status == Job.Status.FAILED  # the old job stays as it ended
    original = JobFiles(failed.pk).input_path("jsonl").read_bytes()
    assert JobFiles(retry.pk).input_path("jsonl").read_bytes() == original


def test_delete_removes_finished_jobs_only(admin_client, jobs, django_capture_on_commit_callbacks):
    finished = jobs(Job.Status.CANCELLED)
    running = jobs(Job.Status.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST,
            {"action": "delete_selected", "_selected_action": [finished.pk, running.pk], "post": "yes"},
            follow=True,
        )
    assert any("not finished were kept" in message for message in messages_of(response))
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]
    assert not JobFiles(finished.pk).folder.exists()


def job_page(admin_client, job: Job):
    return admin_client.get(reverse("admin:jobs_job_change", args=[job.pk]))


def test_job_page_refreshes_while_active_with_a_progress_bar_and_a_cancel_button(admin_client, jobs):
    running = jobs(Job.Status.RUNNING, progress_done=4)
    html = job_page(admin_client, running).content.decode()
    assert '<meta http-equiv="refresh" content="2">' in html
    assert "Job running" in html and '<progress max="10" value="4"' in html and "4 / 10 (40%)" in html
    cancel_url = reverse("admin:jobs_job_cancel", args=[running.pk])
    assert f'href="{cancel_url}"' in html and "Retry as a new job" not in html

    response = admin_client.post(cancel_url, {"confirm": "yes"}, follow=True)
    assert Job.objects.get(pk=running.pk).status == Job.Status.CANCELLED
    html = response.content.decode()
    assert f"Job {str(running.pk)[:8]} is cancelled." in html
    assert 'http-equiv="refresh"' not in html  # finished: no more reloading
    assert ">Retry as a new job</button>" in html


def test_job_page_retry_queues_a_new_job_and_shows_it(admin_client, jobs):
    failed = jobs(Job.Status.FAILED, error_code="inference_timeout", error_message="The run took too long.")
    html = job_page(admin_client, failed).content.decode()
    assert "Error <code>inference_timeout</code>: The run took too long." in html
    assert ">Retry as a new job</button>" in html
    response = admin_client.post(reverse("admin:jobs_job_retry", args=[failed.pk]))
    retry = Job.objects.exclude(pk=failed.pk).get()
    assert response["Location"] == reverse("admin:jobs_job_change", args=[retry.pk])
    assert Job.objects.get(pk=failed.pk).status == Job.Status.FAILED
    completed = jobs(Job.Status.COMPLETED, output_file="output-1.jsonl")
    refused = admin_client.post(reverse("admin:jobs_job_retry", args=[completed.pk]), follow=True)
    assert any("Only failed or cancelled jobs can be retried" in text for text in messages_of(refused))
    assert admin_client.get(reverse("admin:jobs_job_retry", args=[failed.pk])).status_code == 405


def test_job_buttons_need_the_change_permission(client, jobs, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user(username="viewer", password="viewer-password-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    queued = jobs(Job.Status.QUEUED)
    html = job_page(client, queued).content.decode()
    assert "Cancel job" not in html
    assert client.post(reverse("admin:jobs_job_cancel", args=[queued.pk]), {"confirm": "yes"}).status_code == 403
    assert client.get(reverse("admin:jobs_job_cancel", args=[queued.pk])).status_code == 403
    assert Job.objects.get(pk=queued.pk).status == Job.Status.QUEUED
    actions = client.get(CHANGELIST).content.decode()
    assert "cancel_jobs" not in actions


@pytest.mark.parametrize("code", ["invalid_row", "invalid_input_file", "unsupported_output"])
def test_a_job_that_failed_on_its_input_is_not_offered_a_retry(admin_client, jobs, code):
    failed = jobs(Job.Status.FAILED, error_code=code, error_message="Row 3: the model takes 4 values, not 2.")

    html = job_page(admin_client, failed).content.decode()

    assert f"Error <code>{code}</code>: Row 3: the model takes 4 values, not 2." in html
    assert "Retry as a new job" not in html
    # Nor by a POST of the page's old form, nor by the list's action.
    refused = admin_client.post(reverse("admin:jobs_job_retry", args=[failed.pk]), follow=True)
    assert messages_of(refused) == [
        f"Not retried: This job failed on its input ({code}): another run would fail the same way. Fix the input "
        "and create a new job."
    ]
    action = admin_client.post(CHANGELIST, {"action": "retry_jobs", "_selected_action": [failed.pk]}, follow=True)
    assert messages_of(action) == [f"{str(failed.pk)[:8]}: not retried, it failed on its input ({code})."]
    assert Job.objects.count() == 1


def test_job_page_has_one_model_row_linked_to_the_version_and_the_input_size_in_units(admin_client, jobs):
    job = jobs(Job.Status.COMPLETED, output_file="output-1.jsonl", input_size=1_536_000)

    html = job_page(admin_client, job).content.decode()

    model_url = reverse("admin:registry_mlmodel_change", args=[job.model_id])
    assert html.count("<label>Model:</label>") == 1
    assert f'<a href="{model_url}">iris:1.0.0</a>' in html
    assert "1.5\xa0MB" in html and "1536000" not in html

    Job.objects.filter(pk=job.pk).update(model=None)  # the version was deleted since
    assert "iris:1.0.0 (deleted)" in job_page(admin_client, job).content.decode()


def test_the_job_list_refreshes_itself_only_while_a_listed_job_is_active(admin_client, jobs):
    done = jobs(Job.Status.COMPLETED, output_file="output-1.jsonl")
    html = admin_client.get(CHANGELIST).content.decode()
    assert 'id="mf-refreshing"' not in html and "location.reload" not in html

    running = jobs(Job.Status.RUNNING, progress_done=4)
    html = admin_client.get(CHANGELIST).content.decode()
    assert "This list refreshes every 2 seconds while a job it shows is queued or running." in html
    assert "window.location.reload()" in html

    # Filtered to finished jobs only: nothing listed will change.
    html = admin_client.get(CHANGELIST + "?status__exact=completed").content.decode()
    assert 'id="mf-refreshing"' not in html
    assert str(done.pk)[:8] in html and str(running.pk)[:8] not in html
