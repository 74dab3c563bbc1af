"""The jobs API's contract, without running jobs: creation and its validation, scopes, and who
sees which job. (These tests run inside a transaction, so a created job is never handed to a
runner: it stays pending.)"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from jobs.models import Job
from registry import services as registry_services
from registry.models import MLModel
from tests.jobs.api import (
    JOBS,
    create_file,
    create_inline,
    created,
    job_url,
    result_url,
)
from tests.jobs.factories import csv_bytes, iris_model, iris_rows, jsonl_bytes, make_add_model, npy_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def iris(make_model) -> MLModel:
    return make_model(iris_model(), name="iris")


def error(response, status: int) -> str:
    assert response.status_code == status, response.content[:2000]
    body = response.json()
    assert set(body) >= {"code", "detail"}, body
    return body["code"]


def test_create_inline_job_is_202_with_location(jobs_client, iris):
    response = create_inline(jobs_client, iris, {"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, priority="high")
    body = created(response)
    assert response["Location"] == f"http://testserver{job_url(body['id'])}"
    assert body["status"] == "pending"  # handed to a runner only once committed
    assert body["priority"] == "high"
    assert body["model_id"] == str(iris.pk)
    assert (body["model_name"], body["model_version"]) == ("iris", "1.0.0")
    assert body["owner"] == "key:jobs-a"
    assert body["input"] == {"format": "json", "rows": 2, "filename": "", "size_bytes": None}
    assert body["progress"] == {"done": 0, "total": 2}
    assert body["attempts"] == 0
    assert "traceback" not in body
    assert body["result_url"].endswith(result_url(body["id"]))


def test_create_by_model_name_uses_the_latest_ready_version(jobs_client, make_model):
    make_model(iris_model(), name="iris", version="1.0.0")
    newer = make_model(iris_model(), name="iris", version="1.10.0")
    response = jobs_client.post(JOBS, {"model_name": "iris", "input_data": {"X": [[1, 2, 3, 4]]}}, format="json")
    assert created(response)["model_id"] == str(newer.pk)
    response = jobs_client.post(
        JOBS, {"model_name": "iris", "version": "1.0.0", "input_data": {"X": [[1, 2, 3, 4]]}}, format="json"
    )
    assert created(response)["model_version"] == "1.0.0"


@pytest.mark.parametrize(
    ("filename", "content", "rows", "input_format"),
    [
        ("rows.jsonl", jsonl_bytes(iris_rows(25)), 25, "jsonl"),
        ("rows.csv", csv_bytes(iris_rows(30)), 30, "csv"),
        ("rows.csv", csv_bytes(iris_rows(30), header=False), 30, "csv"),
        ("rows.npy", npy_bytes(iris_rows(40)), 40, "npy"),
        ("rows.npy", npy_bytes(iris_rows(40).astype(np.float64)), 40, "npy"),
        ("upload.bin", jsonl_bytes(iris_rows(5)), 5, "jsonl"),  # with input_format below
    ],
)
def test_create_file_job_counts_rows_and_stores_the_file_by_job_id(
    jobs_client, iris, settings, filename, content, rows, input_format
):
    extra = {"input_format": input_format} if filename == "upload.bin" else {}
    body = created(create_file(jobs_client, iris, content, filename, **extra))
    assert body["input"] == {"format": input_format, "rows": rows, "filename": filename, "size_bytes": len(content)}
    assert body["progress"] == {"done": 0, "total": rows}
    stored = sorted(p for p in settings.JOB_STORAGE_PATH.rglob("*") if p.is_file())
    job_id = body["id"].replace("-", "")
    assert [p.relative_to(settings.JOB_STORAGE_PATH).as_posix() for p in stored] == [
        f"{job_id[:2]}/{job_id}/input.{input_format}"
    ]
    assert stored[0].read_bytes() == content


def test_client_file_name_never_reaches_a_path(jobs_client, iris, settings):
    body = created(create_file(jobs_client, iris, jsonl_bytes(iris_rows(3)), "../../../etc/passwd.jsonl"))
    assert body["input"]["filename"] == "passwd.jsonl"  # a label only
    for path in settings.JOB_STORAGE_PATH.rglob("*"):
        assert "passwd" not in path.name
        assert path.resolve().is_relative_to(settings.JOB_STORAGE_PATH.resolve())


# --- bad requests, each with its exact status and code ----------------------------------------


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        ("rows.jsonl", b"this is not json\n", "invalid_input_file"),
        ("rows.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n", "invalid_input_file"),
        ("rows.jsonl", b'{"Z": [1, 2, 3, 4]}\n', "invalid_input_file"),
        ("rows.jsonl", b"", "invalid_input_file"),
        ("rows.jsonl", b"\n  \n", "invalid_input_file"),
        ("rows.jsonl", b"\xff\xfe\x00garbage", "invalid_input_file"),
        ("rows.jsonl", b'{"X": [1, 2, 3]}\n', "invalid_shape"),
        ("rows.jsonl", b'{"X": [1, 2, 3, NaN]}\n', "invalid_input_file"),
        ("rows.csv", b"1,2,3,4\n1,2,3\n", "invalid_input_file"),
        ("rows.csv", b"a,b,c,d\nx,2,3,4\n", "invalid_input_file"),
        ("rows.csv", b"a,b,c\n1,2,3\n", "invalid_input_file"),
        ("rows.csv", b"a,b,c,d\n", "invalid_input_file"),
        ("rows.csv", b"1,2,3,4\n\xff\xfe,1,1,1\n", "invalid_input_file"),
        ("rows.npy", b"\x93NUMPY garbage that is not a header", "invalid_input_file"),
        ("rows.npy", bytes(range(256)), "invalid_input_file"),
        ("rows.npy", npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True), "invalid_input_file"),
        ("rows.npy", npy_bytes(np.zeros((3, 5), dtype=np.float32)), "invalid_input_file"),
        ("rows.npy", npy_bytes(np.zeros((0, 4), dtype=np.float32)), "invalid_input_file"),
        ("rows.npy", npy_bytes(np.array(["a", "b"])), "invalid_input_file"),
        ("rows.npy", npy_bytes(iris_rows(100))[:-10], "invalid_input_file"),
        ("rows.xlsx", b"1,2,3,4\n", "unsupported_format"),
        ("rows", b"1,2,3,4\n", "unsupported_format"),
    ],
)
def test_malformed_input_file_is_400_and_leaves_nothing(jobs_client, iris, settings, filename, content, code):
    assert error(create_file(jobs_client, iris, content, filename), 400) == code
    assert not Job.objects.exists()
    assert not [p for p in settings.JOB_STORAGE_PATH.rglob("*") if p.is_file()]


def test_npz_archive_is_not_a_npy_file(jobs_client, iris):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, X=iris_rows(3))
    assert error(create_file(jobs_client, iris, buffer.getvalue(), "rows.npy"), 400) == "invalid_input_file"


def test_csv_and_npy_need_a_single_input_model(jobs_client, make_model):
    adder = make_model(make_add_model(), name="adder")  # two inputs, X and Y
    assert error(create_file(jobs_client, adder, b"1,2,3\n", "rows.csv"), 400) == "unsupported_format"
    assert error(create_file(jobs_client, adder, npy_bytes(np.zeros((2, 3))), "r.npy"), 400) == "unsupported_format"
    # JSON Lines carry every input by name.
    body = created(create_file(jobs_client, adder, b'{"X": [1, 2, 3], "Y": [4, 5, 6]}\n', "rows.jsonl"))
    assert body["input"]["rows"] == 1


def test_oversize_input_file_is_413_while_streaming(jobs_client, iris, settings):
    settings.JOB_MAX_INPUT_FILE_MB = 1
    settings.JOB_MAX_INPUT_FILE_BYTES = 2048
    response = create_file(jobs_client, iris, jsonl_bytes(iris_rows(200)), "rows.jsonl")
    assert error(response, 413) == "input_file_too_large"
    assert not Job.objects.exists()
    assert not [p for p in settings.JOB_STORAGE_PATH.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"input_data": {"X": [[1, 2, 3, 4]]}}', 400, "model_required"),
        (b'{"model_id": "%s"}', 400, "input_required"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3]]}}', 400, "invalid_shape"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3, NaN]]}}', 400, "non_finite_value"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3, 1e400]]}}', 400, "non_finite_value"),
        (b'{"model_id": "%s", "input_data": {"Z": [[1, 2, 3, 4]]}}', 400, "unknown_input"),
        (b'{"model_id": "%s", "input_data": [[1, 2, 3, 4]]}', 400, "invalid_input"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3, 4]]}, "priority": "urgent"}', 400, "invalid_choice"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3, 4]]}, "status": "completed"}', 400, "read_only_field"),
        (b'{"model_id": "%s", "input_data": {"X": [[1, 2, 3, 4]]}, "attempts": 0}', 400, "read_only_field"),
        (b'{"model_id": "%s", "input_data": {"X": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}}", 400, "nesting_too_deep"),
        (b'{"model_id": "%s", "input_data": ', 400, "parse_error"),
        (
            b'{"model_id": "00000000-0000-0000-0000-000000000000", "input_data": {"X": [[1, 2, 3, 4]]}}',
            404,
            "model_not_found",
        ),
        (b'{"model_name": "nope", "input_data": {"X": [[1, 2, 3, 4]]}}', 404, "model_not_found"),
        (b'{"model_name": "iris", "version": "9.9.9", "input_data": {"X": [[1, 2, 3, 4]]}}', 404, "model_not_found"),
    ],
)
def test_bad_json_create_is_rejected_with_its_code(jobs_client, iris, body, status, code):
    if b"%s" in body:
        body = body.replace(b"%s", str(iris.pk).encode())
    response = jobs_client.generic("POST", JOBS, body, content_type="application/json")
    assert error(response, status) == code
    assert not Job.objects.exists()


def test_json_body_over_the_limit_is_413(jobs_client, iris, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    response = create_inline(jobs_client, iris, {"X": iris_rows(10)})
    assert error(response, 413) == "body_too_large"


def test_both_inputs_at_once_is_400(jobs_client, iris):
    upload = jsonl_bytes(iris_rows(2))
    response = create_file(jobs_client, iris, upload, "rows.jsonl", input_data='{"X": [[1, 2, 3, 4]]}')
    assert error(response, 400) == "input_required"


def test_model_that_is_not_ready_is_409(jobs_client, make_model):
    pending = registry_services.model_create(name="later", version="1.0.0")
    assert error(create_inline(jobs_client, pending, {"X": [[1, 2, 3, 4]]}), 409) == "model_not_ready"
    archived = registry_services.model_archive(model=make_model(iris_model(), name="old"))
    assert error(create_inline(jobs_client, archived, {"X": [[1, 2, 3, 4]]}), 409) == "model_archived"
    rows = jsonl_bytes(iris_rows(2))
    assert error(create_file(jobs_client, pending, rows, "rows.jsonl"), 409) == "model_not_ready"


def test_job_routes_need_the_predict_scope(client_for, api_client, jobs_client, iris):
    job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    reader = client_for("read", "manage", name="no-predict")
    for method, url in [
        ("get", JOBS),
        ("post", JOBS),
        ("get", job_url(job["id"])),
        ("get", result_url(job["id"])),
        ("post", f"{job_url(job['id'])}/cancel"),
        ("delete", job_url(job["id"])),
    ]:
        assert error(getattr(reader, method)(url), 403) == "missing_scope", (method, url)
        assert error(getattr(api_client, method)(url), 401) == "not_authenticated", (method, url)


def test_another_keys_job_is_404_on_every_route(jobs_client, other_client, iris):
    mine = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    theirs = created(create_inline(other_client, iris, {"X": [[1, 2, 3, 4]]}))
    Job.objects.filter(pk=theirs["id"]).update(status=Job.Status.COMPLETED, output_data={"label": [0]})
    for method, url in [
        ("get", job_url(theirs["id"])),
        ("get", result_url(theirs["id"])),
        ("get", result_url(theirs["id"], format="jsonl")),
        ("post", f"{job_url(theirs['id'])}/cancel"),
        ("delete", job_url(theirs["id"])),
    ]:
        assert error(getattr(jobs_client, method)(url), 404) == "job_not_found", (method, url)
    assert [job["id"] for job in jobs_client.get(JOBS).json()["results"]] == [mine["id"]]
    assert Job.objects.get(pk=theirs["id"]).status == Job.Status.COMPLETED  # untouched


def test_unknown_job_is_404(jobs_client):
    assert error(jobs_client.get(job_url("00000000-0000-0000-0000-000000000000")), 404) == "job_not_found"


def test_staff_session_sees_every_job_and_tracebacks(client, ops_user, jobs_client, iris):
    job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    Job.objects.filter(pk=job["id"]).update(
        status=Job.Status.FAILED, error_code="internal_error", traceback="Traceback (most recent call last): ..."
    )
    assert "traceback" not in jobs_client.get(job_url(job["id"])).json()  # never for keys
    client.force_login(ops_user)
    body = client.get(job_url(job["id"])).json()
    assert body["traceback"].startswith("Traceback")
    assert [j["id"] for j in client.get(JOBS).json()["results"]] == [job["id"]]
    # Staff may create jobs too; the user is recorded as the owner.
    body = orjson.dumps({"model_id": str(iris.pk), "input_data": {"X": [[1, 2, 3, 4]]}})
    response = client.post(JOBS, body, content_type="application/json")
    assert created(response)["owner"] == "ops"


def test_list_is_newest_first_and_filters(jobs_client, make_model):
    iris = make_model(iris_model(), name="iris")
    adder = make_model(make_add_model(), name="adder")
    first = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}, priority="low"))
    second = created(create_inline(jobs_client, adder, {"X": [[1, 2, 3]], "Y": [[1, 2, 3]]}, priority="high"))
    third = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    Job.objects.filter(pk=third["id"]).update(status=Job.Status.CANCELLED)

    def ids(query: str = "") -> list[str]:
        response = jobs_client.get(JOBS + query)
        assert response.status_code == 200, response.json()
        return [job["id"] for job in response.json()["results"]]

    assert ids() == [third["id"], second["id"], first["id"]]
    assert ids("?priority=high") == [second["id"]]
    assert ids(f"?model={iris.pk}") == [third["id"], first["id"]]
    assert ids("?status=cancelled") == [third["id"]]
    assert ids(f"?status=pending&model={iris.pk}") == [first["id"]]
    assert error(jobs_client.get(JOBS + "?status=bogus"), 400) == "invalid_filter"


@pytest.mark.parametrize("query", ["wait=31", "wait=-1", "wait=soon", "format=xml"])
def test_bad_result_parameters_are_400(jobs_client, iris, query):
    job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    assert error(jobs_client.get(f"{result_url(job['id'])}?{query}"), 400) == "invalid_parameter"


def test_result_states_without_waiting(jobs_client, iris):
    job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    response = jobs_client.get(result_url(job["id"]))
    assert response.status_code == 202
    assert response["Retry-After"] == "1"
    assert response.json()["status"] == "pending"
    # An inline job has no output file to stream.
    assert error(jobs_client.get(result_url(job["id"], format="csv")), 400) == "no_output_file"

    Job.objects.filter(pk=job["id"]).update(
        status=Job.Status.FAILED, error_code="invalid_row", error_message="Row 3: bad."
    )
    response = jobs_client.get(result_url(job["id"]))
    assert error(response, 409) == "job_failed"
    assert response.json()["error_code"] == "invalid_row"
    assert response.json()["detail"] == "Row 3: bad."
    Job.objects.filter(pk=job["id"]).update(status=Job.Status.CANCELLED)
    assert error(jobs_client.get(result_url(job["id"])), 409) == "job_cancelled"


def test_cancel_and_delete_follow_the_status(jobs_client, iris, settings, django_capture_on_commit_callbacks):
    job = created(create_file(jobs_client, iris, jsonl_bytes(iris_rows(3)), "rows.jsonl"))
    assert error(jobs_client.delete(job_url(job["id"])), 409) == "job_not_finished"
    response = jobs_client.post(f"{job_url(job['id'])}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert jobs_client.post(f"{job_url(job['id'])}/cancel").status_code == 200  # again: no-op
    with django_capture_on_commit_callbacks(execute=True):  # files go once the delete commits
        assert jobs_client.delete(job_url(job["id"])).status_code == 204
    assert not Job.objects.exists()
    assert not [p for p in settings.JOB_STORAGE_PATH.rglob("*") if p.is_file()]


def test_cancelling_a_finished_job_is_409(jobs_client, iris):
    job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    Job.objects.filter(pk=job["id"]).update(status=Job.Status.COMPLETED, output_data={})
    assert error(jobs_client.post(f"{job_url(job['id'])}/cancel"), 409) == "job_finished"


def test_format_query_parameter_selects_no_renderer(jobs_client, iris):
    """DRF reads ?format= as a renderer override; on job routes it names a file format."""
    response = jobs_client.get(JOBS + "?format=jsonl")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_schema_describes_the_job_routes(read_client):
    schema = read_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = orjson.loads(schema.content)["paths"]
    for path in ("/api/v1/jobs/", "/api/v1/jobs/{id}/", "/api/v1/jobs/{id}/result/", "/api/v1/jobs/{id}/cancel/"):
        assert path in paths  # the router's optional trailing slash is shown as a slash
    assert "/api/v1/health/celery" in paths


def test_celery_health_without_a_broker_reports_the_embedded_runner(read_client, jobs_client, api_client):
    response = read_client.get("/api/v1/health/celery")
    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "embedded"
    assert body["status"] == "healthy"
    assert [queue["name"] for queue in body["queues"]] == ["high", "normal", "low"]
    assert body["workers"][0]["name"].startswith("embedded@")
    assert error(jobs_client.get("/api/v1/health/celery"), 403) == "missing_scope"
    assert error(api_client.get("/api/v1/health/celery"), 401) == "not_authenticated"


def test_unknown_field_in_multipart_is_400(jobs_client, iris):
    response = create_file(jobs_client, iris, jsonl_bytes(iris_rows(2)), "rows.jsonl", colour="blue")
    assert error(response, 400) == "read_only_field"
