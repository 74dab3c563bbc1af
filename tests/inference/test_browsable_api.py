"""The browsable API for a staff user signed in to the admin: every route the API lists opens as
a page (its data, or a 405 with the form for the methods it takes), and the predict form shows
the prediction.

The form's script posts the raw body with `Accept: text/html; q=1.0, */*` and the CSRF token in
X-CSRFToken (rest_framework/js/ajax-form.js, csrf.js), and puts the HTML it gets in place of the
page; an answer that is not HTML makes it reload the URL with a GET. These tests send what the
script sends.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from inference.history import history
from inference.models import Prediction
from jobs.models import Job
from monitoring import services as monitoring_services
from registry import services
from registry.models import MLModel
from tests.registry.onnx_factories import make_iris_model
from webhooks import services as webhook_services

pytestmark = pytest.mark.django_db

SCRIPT_ACCEPT = "text/html; q=1.0, */*"  # what the browsable API's form script sends
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def iris(ready_model):
    return ready_model(make_iris_model(zipmap=False), name="Iris")


@pytest.fixture
def browser(ops_user) -> Client:
    """A signed-in staff user's browser, with Django's CSRF check on as in production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(ops_user)
    return client


def csrf_token(client: Client, page_url: str) -> str:
    page = client.get(page_url, HTTP_ACCEPT=BROWSER_ACCEPT).content.decode()
    token = re.search(r'"csrfToken": "([^"]+)"', page)
    assert token, "the browsable API page carries no CSRF token for its forms"
    return token.group(1)


def post_form(client: Client, url: str, body: str):
    """What the page's script sends when the raw-data form's POST button is pressed."""
    return client.post(
        url, body, content_type="application/json", HTTP_ACCEPT=SCRIPT_ACCEPT, HTTP_X_CSRFTOKEN=csrf_token(client, url)
    )


def textarea(page: str) -> str:
    found = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "no raw-data form on the page"
    return html.unescape(found.group(1))


def response_json(page: str):
    """The JSON the browsable page shows as the response."""
    block = re.search(r'<div class="response-info".*?<pre[^>]*>(.*?)</pre>', page, re.S)
    assert block, page[:2000]
    return json.loads(html.unescape(block.group(1).rpartition("</span>")[2]))  # after the headers


def test_posting_the_predict_form_shows_the_prediction_page(browser, iris):
    url = f"/api/v1/models/{iris['id']}/predict"
    opened = browser.get(url, HTTP_ACCEPT=BROWSER_ACCEPT)
    # A POST-only route: its page says so, and carries the form, ready with a body the model takes.
    assert opened.status_code == 405
    page = opened.content.decode()
    assert json.loads(textarea(page)) == {"input_data": {"X": [[0.0, 0.0, 0.0, 0.0]]}, "skip_cache": False}
    assert '<option value="application/json" selected>application/json</option>' in page

    body = json.dumps({"input_data": {"X": [ROW]}})
    answer = post_form(browser, url, body)

    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/html")
    page = answer.content.decode()
    assert "HTTP 200 OK" in page
    shown = response_json(page)
    assert (shown["model_name"], shown["model_version"], shown["output_data"]["label"]) == ("Iris", "1.0.0", [0])
    assert "X-Cache:" in page and "Server-Timing:" in page  # the exchange's headers, shown too
    assert json.loads(textarea(page)) == {"input_data": {"X": [ROW]}}  # to edit and send again
    history.flush()
    assert Prediction.objects.get().user.username == "ops"  # recorded like any prediction


def test_the_by_name_predict_form_and_a_refused_body_show_the_error_page(browser, iris):
    url = "/api/v1/models/by-name/Iris/predict?version=1.0.0"

    answer = post_form(browser, url, json.dumps({"input_data": {"X": [[5.1, 3.5]]}}))

    assert answer.status_code == 400
    page = answer.content.decode()
    assert "HTTP 400 Bad Request" in page
    assert response_json(page)["code"] == "invalid_shape"
    assert json.loads(textarea(page)) == {"input_data": {"X": [[5.1, 3.5]]}}

    good = post_form(browser, url, json.dumps({"input_data": {"X": [ROW]}}))
    assert response_json(good.content.decode())["output_data"]["label"] == [0]


def test_the_form_is_refused_without_its_csrf_token(browser, iris):
    answer = browser.post(
        f"/api/v1/models/{iris['id']}/predict",
        json.dumps({"input_data": {"X": [ROW]}}),
        content_type="application/json",
        HTTP_ACCEPT=SCRIPT_ACCEPT,
    )

    assert answer.status_code == 403
    assert "CSRF" in response_json(answer.content.decode())["detail"]


def test_json_clients_still_get_the_predict_json(browser, iris, predict_client):
    body = json.dumps({"input_data": {"X": [ROW]}})
    for accept in ("application/json", "*/*"):
        response = predict_client.post(
            f"/api/v1/models/{iris['id']}/predict", body, content_type="application/json", HTTP_ACCEPT=accept
        )
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response.json()["output_data"]["label"] == [0]


def schema_paths() -> dict[str, list[str]]:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return {path: sorted(ops) for path, ops in document["paths"].items()}


def test_every_route_the_api_lists_opens_in_the_browsable_api(browser, iris, manage_client, settings, tmp_path):
    services.alias_set(name="Iris", alias="production", version="1.0.0")
    token = csrf_token(browser, "/api/v1/models")
    predicted = browser.post(
        f"/api/v1/models/{iris['id']}/predict",
        json.dumps({"input_data": {"X": [ROW]}}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert predicted.status_code == 200
    history.flush()
    job = browser.post(
        "/api/v1/jobs",
        json.dumps({"model_name": "Iris", "input_data": {"X": [ROW]}}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert job.status_code == 202, job.content
    # Rows for the routes that read one: iris's drift reference, a webhook and its delivery.
    reference = tmp_path / "reference.csv"
    reference.write_text("\n".join(",".join(map(str, ROW)) for _ in range(5)))
    monitoring_services.reference_set_from_file(
        model=MLModel.objects.get(pk=iris["id"]), path=reference, filename="reference.csv", input_format=None
    )
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    subscription = webhook_services.subscription_create(
        name="browsable", url="http://127.0.0.1:9/hook", event_types=["alias.moved"]
    )
    delivery = webhook_services.subscription_test(subscription=subscription)
    values = {
        "id": iris["id"],
        "model_id": iris["id"],
        "name": "Iris",
        "alias": "production",
        "prediction_id": str(Prediction.objects.get().pk),
    }
    checked = 0
    for path, methods in schema_paths().items():
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        if path.startswith("/api/v1/jobs/{id}"):
            url = url.replace(iris["id"], str(Job.objects.get().pk))
        elif path.startswith("/api/v1/webhooks/{id}"):
            url = url.replace(iris["id"], str(subscription.pk))
        elif path.startswith("/api/v1/webhook-deliveries/{id}"):
            url = url.replace(iris["id"], str(delivery.pk))
        response = browser.get(url, HTTP_ACCEPT=BROWSER_ACCEPT)
        page = response.content.decode()
        assert response["Content-Type"].startswith("text/html"), (url, response["Content-Type"])
        if "get" in methods:
            # (The health pages answer 503 while no Celery worker answers: that is their page.)
            allowed = (200, 202, 503) if path.startswith("/api/v1/health") else (200, 202)
            assert response.status_code in allowed, (url, response.status_code, page[-1500:])
        else:
            # A route without GET: its 405 page, with a form for what it takes (not a 403).
            assert response.status_code == 405, (url, response.status_code, page[-1500:])
            action = re.escape(url.split("?")[0])
            forms = re.findall(rf'<form[^>]*action="{action}"[^>]*(?:method="POST"|data-method="(?:PUT|DELETE)")', page)
            assert forms, (url, page[-3000:])
        checked += 1
    assert checked == len(schema_paths()) >= 20
