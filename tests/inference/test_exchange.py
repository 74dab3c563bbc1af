"""Every door of the serving exchange (inference.exchange) answers alike: the /api/v1 predict
views, the /v2 infer view, the WSGI fast path for both, and the admin's Try it. The same cause
gives the same status, code and Retry-After on each; a staff session is authorized the same way
through the API and through Try it; and the routes Django resolves are the ones the fast path
answers."""

from __future__ import annotations

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.wsgi import get_wsgi_application
from django.test import Client, RequestFactory
from django.urls import resolve, reverse

from core.body_reading import BodyReadersBusy
from core.exceptions import DomainErrorMiddleware
from inference.fastpath import PredictFastPath
from inference.routes import ROUTES
from tests.inference.api import MODELS, predict_url
from tests.inference.test_fastpath import call
from tests.redis_databases import redis_database_per_worker  # noqa: F401 (a Redis database per test worker)
from tests.registry.onnx_factories import make_iris_model
from tests.security.test_session_permissions import staff_client

pytestmark = pytest.mark.django_db

ROW = {"X": [[5.1, 3.5, 1.4, 0.2]]}
BODY = orjson.dumps({"input_data": ROW})
V2_BODY = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
RUN_MODEL = {"registry.view_mlmodel", "inference.add_prediction"}


@pytest.fixture
def iris(manage_client):
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    response = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0", "file": upload}, format="multipart")
    assert response.json()["status"] == "ready", response.json()
    return response.json()


@pytest.fixture
def fast():
    return PredictFastPath(get_wsgi_application())


def v2_infer_url(name: str = "iris") -> str:
    return f"/v2/models/{name}/infer"


def doors(fast, key: str):
    """(door name, send(path, body) -> (status, headers, JSON body)) for each key-taking door."""

    def django(path, body):
        response = Client().generic(
            "POST", path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        return response.status_code, response.headers, orjson.loads(response.content)

    def fastpath(path, body):
        status, headers, content = call(fast, path, body, key=key)
        return status, headers, orjson.loads(content)

    return [("django", django), ("fastpath", fastpath)]


def test_a_throttled_caller_gets_429_with_retry_after_at_every_door(fast, iris, make_key, settings):
    settings.THROTTLE_RATES = {"predict": "1/min", "upload": "", "jobs": ""}
    for door in ("django", "fastpath"):
        _, key = make_key("predict", name=f"key-{door}")  # a key, and so a budget, per door
        send = dict(doors(fast, key))[door]
        assert send(predict_url(iris["id"]), BODY)[0] == 200
        for path, body, message in ((predict_url(iris["id"]), BODY, "detail"), (v2_infer_url(), V2_BODY, "error")):
            status, headers, document = send(path, body)
            assert status == 429, (door, path, document)
            assert document["code"] == "throttled"
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert "Retry in" in document[message]


def test_an_archived_model_is_refused_alike_before_its_body_is_read(fast, iris, manage_client, make_key):
    assert manage_client.post(f"{MODELS}/{iris['id']}/archive").status_code == 200
    _, key = make_key("predict")
    for door, send in doors(fast, key):
        # Not JSON at all: the model's state is checked first, so the answer is about the model.
        status, _, document = send(predict_url(iris["id"]), b"{not json")
        assert (status, document["code"]) == (409, "model_archived"), door
        status, _, document = send("/v2/models/iris/versions/1.0.0/infer", b"{not json")
        assert (status, document["code"]) == (503, "model_archived"), door
        assert "archived" in document["error"]


def test_uppercase_ids_and_trailing_slashes_mean_the_same_on_both_doors(fast, iris, make_key):
    _, key = make_key("predict")
    for path in (predict_url(iris["id"].upper()), predict_url(iris["id"]) + "/"):
        answers = {door: send(path, BODY) for door, send in doors(fast, key)}
        assert answers["django"][0] == answers["fastpath"][0] == 200, answers
        assert answers["django"][2]["output_data"] == answers["fastpath"][2]["output_data"]


def test_the_fast_path_answers_exactly_the_routes_django_resolves(iris):
    paths = {
        "model-predict": predict_url(iris["id"]),
        "model-by-name-predict": f"{MODELS}/by-name/iris/predict",
        "v2-infer": "/v2/models/iris/versions/1.0.0/infer",
    }
    assert {route.name for route in ROUTES} == set(paths)
    for route in ROUTES:
        path = paths[route.name]
        assert resolve(path).url_name == route.name
        assert route.match(path) == resolve(path).kwargs
        # and no other route of the table claims it
        assert [other.name for other in ROUTES if other.match(path) is not None] == [route.name]
    assert ROUTES[0].match(f"{MODELS}/not-a-uuid/predict") is None


def try_it(client, model_id: str):
    return client.post(
        reverse("admin:registry_mlmodel_try", args=[model_id]), {"input_data": orjson.dumps(ROW).decode()}
    )


def test_a_session_is_authorized_alike_through_the_api_and_try_it(django_user_model, iris):
    view_only = staff_client(django_user_model, {"registry.view_mlmodel"}, username="viewer")
    response = view_only.post(predict_url(iris["id"]), BODY, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert "inference.add_prediction" in response.json()["detail"]
    page = try_it(view_only, iris["id"])
    assert page.status_code == 403
    assert "permission_denied" in page.content.decode() and "inference.add_prediction" in page.content.decode()

    runner = staff_client(django_user_model, RUN_MODEL, username="runner")
    response = runner.post(predict_url(iris["id"]), BODY, content_type="application/json")
    assert response.status_code == 200 and response.json()["output_data"]
    assert try_it(runner, iris["id"]).status_code == 200


def test_try_it_spends_the_same_budget_as_the_users_api_session(django_user_model, iris, settings):
    settings.THROTTLE_RATES = {"predict": "2/min", "upload": "", "jobs": ""}
    runner = staff_client(django_user_model, RUN_MODEL, username="runner")
    assert runner.post(predict_url(iris["id"]), BODY, content_type="application/json").status_code == 200
    assert try_it(runner, iris["id"]).status_code == 200
    page = try_it(runner, iris["id"])
    assert page.status_code == 429 and "throttled" in page.content.decode()
    response = runner.post(predict_url(iris["id"]), BODY, content_type="application/json")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1


@pytest.mark.parametrize("path", ["/api/v1/models", "/admin/registry/mlmodel/add/"])
def test_a_busy_server_says_when_to_retry_outside_drf_too(path):
    """DomainErrorMiddleware renders errors raised outside DRF (an upload parsed for the admin):
    from the same table, so a 503 carries its Retry-After there as well."""
    request = RequestFactory().post(path)
    response = DomainErrorMiddleware(lambda request: None).process_exception(
        request, BodyReadersBusy("Too many request bodies are arriving at once.")
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
