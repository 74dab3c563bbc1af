"""An admin session gets from the API exactly what its Django permissions give it in the admin
(issue 15, "Access through an admin session"; access.permissions).

Every /api/v1 route and /metrics is called by real staff users with real Permission rows,
signed in with Django's session (force_login): no permission, view-only, view and change,
exactly the route's permissions, every permission but the route's, and a superuser. A refused
request is `403 permission_denied`, leaks nothing of the data and changes nothing; an allowed
one does what it says. Keys keep seeing only their own rows (tests/security/test_access.py).
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import URLPattern, URLResolver, get_resolver

from access.permissions import SESSION_PERMISSIONS
from inference.cache import prediction_cache
from inference.history import history
from inference.models import Prediction
from jobs.models import Job
from monitoring import services as monitoring_services
from monitoring.models import Reference, Thresholds
from registry import services
from registry.models import MLModel, ModelAlias
from tests.registry.onnx_factories import make_iris_model
from tests.registry.versions import ready_version
from tests.security.battery import IRIS_ROW, model_snapshot
from webhooks import services as webhook_services
from webhooks.models import Delivery, Subscription

pytestmark = pytest.mark.django_db

APPS = ("registry", "inference", "jobs", "access", "monitoring", "webhooks")
THEIR_INPUT = [[6.3, 2.9, 5.6, 1.8]]  # what the other key sent: must never reach a refused session


@pytest.fixture
def world(client_for, tmp_path, settings):
    """Two versions of iris (1.0.0 carries production), a version with a file not yet
    validated, a registered one without a file; another key's predictions (a cache miss and a
    hit), its finished job and its queued one; a webhook subscription to a loopback URL and a
    delivered delivery of it."""
    iris = ready_version(make_iris_model(zipmap=False), name="iris", version="1.0.0")
    spare = ready_version(make_iris_model(zipmap=False), name="iris", version="1.1.0")
    services.alias_set(name="iris", alias="production", version="1.0.0")
    unvalidated = services.model_upload(
        model=services.model_create(name="fresh", version="1.0.0"),
        staged=services.stage_stream(io.BytesIO(make_iris_model(zipmap=False))),
    )
    blank = services.model_create(name="blank", version="1.0.0")
    shelved = services.model_archive(model=ready_version(make_iris_model(zipmap=False), name="iris", version="0.9.0"))
    reference = tmp_path / "reference.csv"
    reference.write_text("\n".join(",".join(map(str, row)) for row in THEIR_INPUT * 5))
    monitoring_services.reference_set_from_file(model=iris, path=reference, filename="reference.csv", input_format=None)

    theirs = client_for("predict", name="theirs")
    body = orjson.dumps({"input_data": {"X": THEIR_INPUT}})
    for _ in range(2):
        response = theirs.generic("POST", f"/api/v1/models/{iris.pk}/predict", body, content_type="application/json")
        assert response.status_code == 200, response.content
    history.flush()
    prediction = Prediction.objects.get(api_key=theirs.api_key, cached=False)
    common = {"model": iris, "model_name": "iris", "model_version": "1.0.0", "api_key": theirs.api_key}
    done = Job.objects.create(
        **common, status=Job.Status.COMPLETED, input_format="json", input_data={"X": THEIR_INPUT},
        output_data={"label": [2]},
    )  # fmt: skip
    queued = Job.objects.create(**common, status=Job.Status.QUEUED, input_format="json", input_data={"X": THEIR_INPUT})
    metrics = prediction_cache.metrics()
    assert metrics["hits"] >= 1 and metrics["misses"] >= 1

    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8"]  # the subscription's loopback receiver
    subscription = webhook_services.subscription_create(
        name="ops-bot", url="http://127.0.0.1:9/hook", event_types=["model.validated"]
    )
    delivery = Delivery.objects.create(
        subscription=subscription,
        event_id=uuid.uuid4(),
        event_type="model.validated",
        body='{"data":{}}',
        status=Delivery.Status.DELIVERED,
        tries=1,
    )
    return SimpleNamespace(
        iris=iris,
        spare=spare,
        unvalidated=unvalidated,
        blank=blank,
        shelved=shelved,
        prediction=prediction,
        done=done,
        queued=queued,
        subscription=subscription,
        delivery=delivery,
    )


def state() -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "models": model_snapshot(),
        "descriptions": sorted(MLModel.objects.values_list("name", "version", "description")),
        "aliases": sorted(ModelAlias.objects.values_list("name", "alias", "model__version")),
        "jobs": sorted(Job.objects.values_list("id", "status")),
        "predictions": Prediction.objects.count(),
        "cache": prediction_cache.metrics(),
        "references": sorted(Reference.objects.values_list("model_id", "rows")),
        "thresholds": sorted(Thresholds.objects.values_list("name", "drift_psi_red")),
        "subscriptions": sorted(
            Subscription.objects.values_list("id", "name", "url", "event_types", "active", "secret"), key=str
        ),
        "deliveries": sorted(
            Delivery.objects.values_list("id", "subscription_id", "event_type", "status", "tries"), key=str
        ),
    }


# --- the routes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One request: what it needs, how it is sent, and what it did when it was allowed."""

    name: str
    method: str
    url: Callable[[SimpleNamespace], str]
    needs: frozenset[str]
    json: Callable[[SimpleNamespace], object] | None = None
    files: Callable[[SimpleNamespace], dict] | None = None
    ok: tuple[int, ...] = (200,)
    effect: Callable[[SimpleNamespace, object], None] = field(default=lambda world, response: None)
    label: str = ""  # tells apart two requests to one route and method

    def send(self, client: Client, world: SimpleNamespace):
        url = self.url(world)
        if self.files is not None and self.method == "PUT":
            return client.put(url, encode_multipart(BOUNDARY, self.files(world)), content_type=MULTIPART_CONTENT)
        if self.files is not None:
            return client.post(url, self.files(world))
        if self.json is not None:
            return client.generic(self.method, url, orjson.dumps(self.json(world)), content_type="application/json")
        return client.generic(self.method, url)


def _needs(*permissions: str) -> frozenset[str]:
    return frozenset(permissions)


def _ids(response) -> list[str]:
    return [row["id"] for row in response.json()["results"]]


def _model_created(world, response):
    assert MLModel.objects.filter(name="new-model", version="1.0.0").exists()


def _described(world, response):
    assert MLModel.objects.get(pk=world.iris.pk).description == "changed by a session"


def _deleted(world, response):
    assert not MLModel.objects.filter(pk=world.spare.pk).exists()


def _unarchived(world, response):
    assert MLModel.objects.get(pk=world.shelved.pk).status != MLModel.Status.ARCHIVED


def _uploaded(world, response):
    blank = MLModel.objects.get(pk=world.blank.pk)
    assert blank.file_sha256 and blank.status != MLModel.Status.PENDING


def _validated(world, response):
    assert MLModel.objects.get(pk=world.unvalidated.pk).status != MLModel.Status.UPLOADED


def _archived(world, response):
    assert MLModel.objects.get(pk=world.spare.pk).status == MLModel.Status.ARCHIVED


def _production_moved(world, response):
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == world.spare.pk


def _staging_created(world, response):
    assert ModelAlias.objects.get(name="iris", alias="staging").model_id == world.spare.pk


def _production_deleted(world, response):
    assert not ModelAlias.objects.filter(name="iris", alias="production").exists()


def _predicted(world, response):
    assert response.json()["output_data"]


def _sees_their_predictions(world, response):
    assert str(world.prediction.pk) in _ids(response)
    assert THEIR_INPUT in [row["input_data"]["X"] for row in response.json()["results"]]


def _sees_their_prediction(world, response):
    assert response.json()["input_data"] == {"X": THEIR_INPUT}


def _cache_reset(world, response):
    assert (response.json()["hits"], response.json()["misses"]) == (0, 0)


def _sees_their_jobs(world, response):
    assert {str(world.done.pk), str(world.queued.pk)} <= set(_ids(response))


def _job_created(world, response):
    assert Job.objects.filter(pk=response.json()["id"], user__isnull=False, api_key__isnull=True).exists()


def _sees_their_job(world, response):
    assert response.json()["id"] == str(world.done.pk)


def _job_deleted(world, response):
    assert not Job.objects.filter(pk=world.done.pk).exists()


def _job_cancelled(world, response):
    assert Job.objects.get(pk=world.queued.pk).status == Job.Status.CANCELLED


def _their_result(world, response):
    assert response.json()["output_data"] == {"label": [2]}


def _reference_replaced(world, response):
    assert Reference.objects.get(model=world.iris).rows == 3


def _reference_deleted(world, response):
    assert not Reference.objects.filter(model=world.iris).exists()


def _sees_the_reference(world, response):
    assert response.json()["rows"] == 5


def _thresholds_set(world, response):
    assert Thresholds.objects.get(name="iris").drift_psi_red == 0.5


def _sees_the_subscription(world, response):
    assert str(world.subscription.pk) in _ids(response)
    assert "secret" not in response.json()["results"][0]


def _subscribed(world, response):
    assert Subscription.objects.filter(name="new-hook", url="http://127.0.0.1:9/new").exists()
    assert response.json()["secret"]  # shown once, to whoever created it


def _reads_the_subscription(world, response):
    assert response.json()["id"] == str(world.subscription.pk) and "secret" not in response.json()


def _subscription_renamed(world, response):
    assert Subscription.objects.get(pk=world.subscription.pk).name == "renamed by a session"


def _unsubscribed(world, response):
    assert not Subscription.objects.filter(pk=world.subscription.pk).exists()
    assert not Delivery.objects.filter(pk=world.delivery.pk).exists()


def _test_event_queued(world, response):
    assert Delivery.objects.filter(subscription=world.subscription, event_type="webhook.test").exists()


def _sees_the_delivery(world, response):
    assert str(world.delivery.pk) in _ids(response)


def _reads_the_delivery(world, response):
    assert response.json()["id"] == str(world.delivery.pk)


def _redelivered(world, response):
    delivery = Delivery.objects.get(pk=world.delivery.pk)
    assert (delivery.status, delivery.tries) == (Delivery.Status.PENDING, 0)


def _exposition(world, response):
    assert b"modelforge_jobs" in response.content


VIEW_MODEL = "registry.view_mlmodel"
PREDICT_BODY = {"input_data": IRIS_ROW, "skip_cache": True}


def _rollout_started(world, response) -> None:
    from registry.models import Rollout

    assert Rollout.objects.get(alias__name="iris", alias__alias="production").candidate_id == world.spare.pk


ROUTES = [
    # the schema and its pages: any staff session
    Route("schema", "GET", lambda w: "/api/v1/schema", _needs()),
    Route("swagger-ui", "GET", lambda w: "/api/v1/docs", _needs()),
    Route("redoc", "GET", lambda w: "/api/v1/redoc", _needs()),
    # models
    Route("model-list", "GET", lambda w: "/api/v1/models", _needs(VIEW_MODEL)),
    Route("model-list", "HEAD", lambda w: "/api/v1/models", _needs(VIEW_MODEL)),
    Route(
        "model-list",
        "POST",
        lambda w: "/api/v1/models",
        _needs("registry.add_mlmodel"),
        json=lambda w: {"name": "new-model", "version": "1.0.0"},
        ok=(201,),
        effect=_model_created,
    ),  # fmt: skip
    Route("model-detail", "GET", lambda w: f"/api/v1/models/{w.iris.pk}", _needs(VIEW_MODEL)),
    Route(
        "model-detail",
        "PATCH",
        lambda w: f"/api/v1/models/{w.iris.pk}",
        _needs("registry.change_mlmodel"),
        json=lambda w: {"description": "changed by a session"},
        effect=_described,
    ),  # fmt: skip
    Route(
        "model-detail",
        "DELETE",
        lambda w: f"/api/v1/models/{w.spare.pk}",
        _needs("registry.delete_mlmodel"),
        ok=(204,),
        effect=_deleted,
    ),  # fmt: skip
    Route(
        "model-upload",
        "POST",
        lambda w: f"/api/v1/models/{w.blank.pk}/upload",
        _needs("registry.change_mlmodel"),
        files=lambda w: {"file": SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))},
        ok=(200, 202),
        effect=_uploaded,
    ),  # fmt: skip
    Route(
        "model-validate",
        "POST",
        lambda w: f"/api/v1/models/{w.unvalidated.pk}/validate",
        _needs("registry.change_mlmodel"),
        ok=(200, 202),
        effect=_validated,
    ),  # fmt: skip
    Route(
        "model-archive",
        "POST",
        lambda w: f"/api/v1/models/{w.spare.pk}/archive",
        _needs("registry.change_mlmodel"),
        effect=_archived,
    ),  # fmt: skip
    Route(
        "model-unarchive",
        "POST",
        lambda w: f"/api/v1/models/{w.shelved.pk}/unarchive",
        _needs("registry.change_mlmodel"),
        ok=(200, 202),
        effect=_unarchived,
    ),  # fmt: skip
    Route("model-by-name-versions", "GET", lambda w: "/api/v1/models/by-name/iris/versions", _needs(VIEW_MODEL)),
    Route("model-by-name-latest", "GET", lambda w: "/api/v1/models/by-name/iris/latest", _needs(VIEW_MODEL)),
    # aliases
    Route(
        "model-by-name-aliases",
        "GET",
        lambda w: "/api/v1/models/by-name/iris/aliases",
        _needs("registry.view_modelalias"),
    ),  # fmt: skip
    Route(
        "model-by-name-alias-set",
        "PUT",
        lambda w: "/api/v1/models/by-name/iris/aliases/production",
        _needs("registry.change_modelalias"),
        json=lambda w: {"version": "1.1.0"},
        effect=_production_moved,
    ),  # fmt: skip
    Route(
        "model-by-name-alias-set",
        "PUT",
        lambda w: "/api/v1/models/by-name/iris/aliases/staging",
        _needs("registry.add_modelalias"),
        json=lambda w: {"version": "1.1.0"},
        ok=(201,),
        effect=_staging_created,
    ),  # fmt: skip
    Route(
        "model-by-name-alias-set",
        "DELETE",
        lambda w: "/api/v1/models/by-name/iris/aliases/production",
        _needs("registry.delete_modelalias"),
        ok=(204,),
        effect=_production_deleted,
    ),  # fmt: skip
    # rollouts (the world has none: abort and promote answer 404 rollout_not_found once allowed)
    Route(
        "alias-rollout",
        "GET",
        lambda w: "/api/v1/models/by-name/iris/aliases/production/rollout",
        _needs("registry.view_rollout"),
    ),  # fmt: skip
    Route(
        "alias-rollout",
        "PUT",
        lambda w: "/api/v1/models/by-name/iris/aliases/production/rollout",
        _needs("registry.change_rollout"),
        json=lambda w: {"candidate_version": "1.1.0", "weight": 10},
        effect=_rollout_started,
    ),  # fmt: skip
    Route(
        "alias-rollout",
        "DELETE",
        lambda w: "/api/v1/models/by-name/iris/aliases/production/rollout",
        _needs("registry.change_rollout"),
        ok=(404,),
    ),  # fmt: skip
    Route(
        "alias-rollout-promote",
        "POST",
        lambda w: "/api/v1/models/by-name/iris/aliases/production/rollout/promote",
        _needs("registry.change_rollout"),
        ok=(404,),
    ),  # fmt: skip
    # inference
    Route(
        "model-predict",
        "POST",
        lambda w: f"/api/v1/models/{w.iris.pk}/predict",
        _needs(VIEW_MODEL, "inference.add_prediction"),
        json=lambda w: PREDICT_BODY,
        effect=_predicted,
    ),  # fmt: skip
    Route(
        "model-by-name-predict",
        "POST",
        lambda w: "/api/v1/models/by-name/iris/predict",
        _needs(VIEW_MODEL, "inference.add_prediction"),
        json=lambda w: PREDICT_BODY,
        effect=_predicted,
    ),  # fmt: skip
    Route(
        "model-predictions",
        "GET",
        lambda w: f"/api/v1/models/{w.iris.pk}/predictions",
        _needs("inference.view_prediction"),
        effect=_sees_their_predictions,
    ),  # fmt: skip
    Route(
        "prediction-detail",
        "GET",
        lambda w: f"/api/v1/predictions/{w.prediction.pk}",
        _needs("inference.view_prediction"),
        effect=_sees_their_prediction,
    ),  # fmt: skip
    Route("cache-metrics", "GET", lambda w: "/api/v1/cache/metrics", _needs("inference.view_prediction")),
    Route(
        "cache-metrics-reset",
        "POST",
        lambda w: "/api/v1/cache/metrics/reset",
        _needs("inference.change_prediction"),
        effect=_cache_reset,
    ),  # fmt: skip
    # jobs
    Route("job-list", "GET", lambda w: "/api/v1/jobs", _needs("jobs.view_job"), effect=_sees_their_jobs),
    Route(
        "job-list",
        "POST",
        lambda w: "/api/v1/jobs",
        _needs(VIEW_MODEL, "jobs.add_job"),
        json=lambda w: {"model_id": str(w.iris.pk), "input_data": IRIS_ROW},
        ok=(202,),
        effect=_job_created,
    ),  # fmt: skip
    Route("job-detail", "GET", lambda w: f"/api/v1/jobs/{w.done.pk}", _needs("jobs.view_job"), effect=_sees_their_job),
    Route(
        "job-detail",
        "DELETE",
        lambda w: f"/api/v1/jobs/{w.done.pk}",
        _needs("jobs.delete_job"),
        ok=(204,),
        effect=_job_deleted,
    ),  # fmt: skip
    Route(
        "job-cancel",
        "POST",
        lambda w: f"/api/v1/jobs/{w.queued.pk}/cancel",
        _needs("jobs.change_job"),
        effect=_job_cancelled,
    ),  # fmt: skip
    Route(
        "job-result",
        "GET",
        lambda w: f"/api/v1/jobs/{w.done.pk}/result",
        _needs("jobs.view_job"),
        effect=_their_result,
    ),  # fmt: skip
    Route("health-celery", "GET", lambda w: "/api/v1/health/celery", _needs("jobs.view_job"), ok=(200, 503)),
    # drift (monitoring)
    Route("model-drift", "GET", lambda w: f"/api/v1/models/{w.iris.pk}/drift", _needs(VIEW_MODEL)),
    Route(
        "model-reference",
        "GET",
        lambda w: f"/api/v1/models/{w.iris.pk}/reference",
        _needs(VIEW_MODEL),
        effect=_sees_the_reference,
    ),  # fmt: skip
    Route(
        "model-reference",
        "PUT",
        lambda w: f"/api/v1/models/{w.iris.pk}/reference",
        _needs("registry.change_mlmodel"),
        files=lambda w: {"file": SimpleUploadedFile("r.csv", b"5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n5.9,3.0,5.1,1.8\n")},
        effect=_reference_replaced,
    ),  # fmt: skip
    Route(
        "model-reference",
        "DELETE",
        lambda w: f"/api/v1/models/{w.iris.pk}/reference",
        _needs("registry.change_mlmodel"),
        ok=(204,),
        effect=_reference_deleted,
    ),  # fmt: skip
    Route(
        "model-drift-thresholds",
        "GET",
        lambda w: f"/api/v1/models/{w.iris.pk}/drift/thresholds",
        _needs("monitoring.view_thresholds"),
    ),  # fmt: skip
    Route(
        "model-drift-thresholds",
        "PATCH",
        lambda w: f"/api/v1/models/{w.iris.pk}/drift/thresholds",
        _needs("monitoring.change_thresholds"),
        json=lambda w: {"psi_red": 0.5},
        effect=_thresholds_set,
    ),  # fmt: skip
    # webhooks
    Route(
        "webhook-list",
        "GET",
        lambda w: "/api/v1/webhooks",
        _needs("webhooks.view_subscription"),
        effect=_sees_the_subscription,
    ),  # fmt: skip
    Route(
        "webhook-list",
        "POST",
        lambda w: "/api/v1/webhooks",
        _needs("webhooks.add_subscription"),
        json=lambda w: {"name": "new-hook", "url": "http://127.0.0.1:9/new", "event_types": ["alias.moved"]},
        ok=(201,),
        effect=_subscribed,
    ),  # fmt: skip
    Route(
        "webhook-detail",
        "GET",
        lambda w: f"/api/v1/webhooks/{w.subscription.pk}",
        _needs("webhooks.view_subscription"),
        effect=_reads_the_subscription,
    ),  # fmt: skip
    Route(
        "webhook-detail",
        "PATCH",
        lambda w: f"/api/v1/webhooks/{w.subscription.pk}",
        _needs("webhooks.change_subscription"),
        json=lambda w: {"name": "renamed by a session"},
        effect=_subscription_renamed,
    ),  # fmt: skip
    Route(
        "webhook-detail",
        "DELETE",
        lambda w: f"/api/v1/webhooks/{w.subscription.pk}",
        _needs("webhooks.delete_subscription"),
        ok=(204,),
        effect=_unsubscribed,
    ),  # fmt: skip
    Route(
        "webhook-test",
        "POST",
        lambda w: f"/api/v1/webhooks/{w.subscription.pk}/test",
        _needs("webhooks.change_subscription"),
        ok=(202,),
        effect=_test_event_queued,
    ),  # fmt: skip
    Route(
        "webhook-deliveries",
        "GET",
        lambda w: f"/api/v1/webhooks/{w.subscription.pk}/deliveries",
        _needs("webhooks.view_delivery"),
        effect=_sees_the_delivery,
    ),  # fmt: skip
    Route(
        "webhook-delivery-detail",
        "GET",
        lambda w: f"/api/v1/webhook-deliveries/{w.delivery.pk}",
        _needs("webhooks.view_delivery"),
        effect=_reads_the_delivery,
    ),  # fmt: skip
    Route(
        "webhook-delivery-redeliver",
        "POST",
        lambda w: f"/api/v1/webhook-deliveries/{w.delivery.pk}/redeliver",
        _needs("webhooks.change_delivery"),
        ok=(202,),
        effect=_redelivered,
    ),  # fmt: skip
    # Prometheus
    Route("metrics", "GET", lambda w: "/metrics", _needs(VIEW_MODEL), effect=_exposition),
]


# --- the users -------------------------------------------------------------------------------


def _all_permissions() -> set[str]:
    rows = Permission.objects.filter(content_type__app_label__in=APPS).values_list(
        "content_type__app_label", "codename"
    )
    return {f"{app}.{codename}" for app, codename in rows}


def _implied(permissions: set[str]) -> set[str]:
    """As the admin has it: `change` on a model lets one view it."""
    return permissions | {name.replace(".change_", ".view_") for name in permissions if ".change_" in name}


# role -> the permissions it holds, given the route's needs (None: a superuser).
ROLES: dict[str, Callable[[frozenset[str]], set[str] | None]] = {
    "no-permissions": lambda needs: set(),
    "view-only": lambda needs: {name for name in _all_permissions() if ".view_" in name},
    "view-and-change": lambda needs: {name for name in _all_permissions() if ".view_" in name or ".change_" in name},
    "exactly-the-routes": lambda needs: set(needs),
    "all-but-the-routes": lambda needs: {
        name for name in _all_permissions() if name not in needs and name.replace(".change_", ".view_") not in needs
    },
    "superuser": lambda needs: None,
}


def permission_rows(names) -> list[Permission]:
    wanted = {tuple(name.split(".")) for name in names}
    rows = Permission.objects.filter(content_type__app_label__in=APPS).select_related("content_type")
    return [row for row in rows if (row.content_type.app_label, row.codename) in wanted]


def staff_client(django_user_model, permissions: set[str] | None, *, username: str = "staffer") -> Client:
    """Signed in with force_login (no password: hashing one costs a second on a loaded machine)."""
    user = django_user_model.objects.create_user(
        username=username, password=None, is_staff=True, is_superuser=permissions is None
    )
    user.user_permissions.set(permission_rows(permissions or ()))
    client = Client()
    client.force_login(user)
    return client


def assert_refused(response, role: str = "") -> None:
    """403 permission_denied, naming what is missing, and nothing else in the body."""
    assert response.status_code == 403, (role, response.content[:500])
    if response.request["REQUEST_METHOD"] == "HEAD":
        return
    body = response.json()
    assert set(body) == {"code", "detail"}, body
    assert body["code"] == "permission_denied"


@contextlib.contextmanager
def undone():
    """Roll back what the block wrote (a savepoint in the test's transaction), so every role
    of a route meets the same world without building it again."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method}-{route.name}{route.label}")
def test_session_gets_exactly_its_django_permissions(route, world, django_user_model):
    """Each role in turn: refused (403, no data, nothing changed) unless it holds the route's
    permissions, and then the request does what it says."""
    for role, permissions_of in ROLES.items():
        held = permissions_of(route.needs)
        allowed = held is None or route.needs <= _implied(held)
        with undone():
            client = staff_client(django_user_model, held, username=f"staff-{role}")
            before = state()
            response = route.send(client, world)
            if allowed:
                assert response.status_code in route.ok, (role, response.content[:1000])
                route.effect(world, response)
            else:
                assert_refused(response, role)
                assert b"6.3" not in response.content, role
                assert state() == before, role


def test_every_api_route_has_a_session_rule_and_a_test():
    """A new route is refused to sessions until access.permissions says what it needs, and
    this file tests every rule there is (routes not yet in the URLconf excepted)."""
    routes = {}

    def walk(resolver, prefix: str) -> None:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
                routes[pattern.name] = (prefix + str(pattern.pattern), view)

    walk(get_resolver(), "")
    served = {name for name, (path, _) in routes.items() if path.startswith("api/v1/") or name == "metrics"}
    open_probes = {"live", "ready", "health"}
    assert {name for name, _ in SESSION_PERMISSIONS} >= served - open_probes
    tested = {(route.name, "GET" if route.method == "HEAD" else route.method) for route in ROUTES}
    assert {rule for rule in SESSION_PERMISSIONS if rule[0] in served} <= tested


def test_a_non_staff_user_with_every_permission_is_refused(world, django_user_model):
    user = django_user_model.objects.create_user(username="plain", password=None)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=APPS))
    client = Client()
    client.force_login(user)
    assert_refused(client.get("/api/v1/jobs"))
    assert_refused(client.post("/api/v1/cache/metrics/reset"))


def test_session_without_view_sees_no_job_or_prediction_of_any_key(world, django_user_model):
    """Listing another key's rows, reading its job result or prediction: refused, not empty."""
    client = staff_client(django_user_model, {VIEW_MODEL, "jobs.add_job", "inference.add_prediction"})
    for url in (
        "/api/v1/jobs",
        f"/api/v1/jobs/{world.done.pk}",
        f"/api/v1/jobs/{world.done.pk}/result",
        f"/api/v1/models/{world.iris.pk}/predictions",
        f"/api/v1/predictions/{world.prediction.pk}",
    ):
        response = client.get(url)
        assert_refused(response)
        assert b"6.3" not in response.content


def test_session_through_the_admin_login_needs_the_csrf_token(world, django_user_model):
    """The browser's way: sign in on /admin/login/, then call the API with the session cookie.
    Writes need the CSRF token too; with it, the user's permissions decide."""
    for username, permissions in (("resetter", ["change_prediction"]), ("looker", ["view_prediction"])):
        user = django_user_model.objects.create_user(username=username, password="a-long-password-1", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="inference", codename__in=permissions)
        )
    browser = Client(enforce_csrf_checks=True)
    login_page = browser.get("/admin/login/")
    token = login_page.cookies["csrftoken"].value
    response = browser.post(
        "/admin/login/",
        {"username": "looker", "password": "a-long-password-1", "csrfmiddlewaretoken": token, "next": "/admin/"},
    )
    assert response.status_code == 302, response.content[:500]
    token = browser.cookies["csrftoken"].value

    assert browser.get("/api/v1/cache/metrics").status_code == 200
    without_token = browser.post("/api/v1/cache/metrics/reset")
    assert without_token.status_code == 403 and "CSRF" in without_token.json()["detail"]
    assert_refused(browser.post("/api/v1/cache/metrics/reset", HTTP_X_CSRFTOKEN=token))
    assert prediction_cache.metrics()["hits"] >= 1

    browser.post("/admin/logout/", HTTP_X_CSRFTOKEN=token)
    browser.get("/admin/login/")
    token = browser.cookies["csrftoken"].value
    browser.post(
        "/admin/login/", {"username": "resetter", "password": "a-long-password-1", "csrfmiddlewaretoken": token}
    )
    token = browser.cookies["csrftoken"].value
    response = browser.post("/api/v1/cache/metrics/reset", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert response.json()["hits"] == 0


def test_v2_takes_no_session(world, django_user_model):
    """/v2 infer and the repository extension accept API keys only: a superuser's session is 401."""
    client = staff_client(django_user_model, None)
    infer = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW["X"][0]}]}
    for url, body in (
        ("/v2/models/iris/infer", infer),
        ("/v2/repository/models/iris/load", {}),
        ("/v2/repository/models/iris/unload", {}),
        ("/v2/repository/index", {}),
    ):
        response = client.post(url, orjson.dumps(body), content_type="application/json")
        assert response.status_code == 401, (url, response.content)
        assert response.json()["code"] == "not_authenticated"


def test_admin_dashboard_needs_the_metrics_permission(world, django_user_model):
    """The dashboard shows what /metrics does (traffic per model, jobs, queues): a staff user
    without that permission is refused it and not offered the link; a viewer sees it."""
    refused = staff_client(django_user_model, set(), username="nobody")
    assert refused.get("/admin/dashboard/").status_code == 403
    assert 'href="/admin/dashboard/"' not in refused.get("/admin/").content.decode()
    viewer = staff_client(django_user_model, {"registry.view_mlmodel"}, username="viewer")
    assert viewer.get("/admin/dashboard/").status_code == 200
    assert 'href="/admin/dashboard/"' in viewer.get("/admin/").content.decode()


def test_options_describes_a_route_without_its_data(world, django_user_model):
    """OPTIONS answers what the schema says (any staff session) and nothing of the rows."""
    client = staff_client(django_user_model, set(), username="nobody")
    for url in ("/api/v1/jobs", f"/api/v1/jobs/{world.done.pk}", "/api/v1/models/by-name/iris/aliases/production"):
        response = client.options(url)
        assert response.status_code == 200, (url, response.content)
        assert b"6.3" not in response.content and str(world.done.pk).encode() not in response.content
        assert "actions" not in response.json()  # no form for writes it may not make
