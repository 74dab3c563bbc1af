"""Irreversible acts on the registry, in the API and the admin (issue 15).

- Archiving or deleting a version an alias points at is refused (API: 409 model_aliased naming
  the aliases; admin: an error, no confirm button), and nothing changes.
- An archived version can be unarchived: its stored file is verified against its sha256 and
  validated again; a file that is gone or changed keeps it archived with the reason.
- Every destructive admin act (archive, delete, move an alias, delete an alias) shows first a
  page saying what will change (from -> to, the requests the version carries), and nothing
  changes on a GET or an unconfirmed POST.

Traffic is real: requests through the predict API, recorded by the serving statistics and
flushed to the database as every server process does.
"""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from django.contrib.messages import get_messages
from django.db import connection, transaction
from django.urls import reverse

from inference.history import history
from inference.serving_stats import serving_stats
from registry import services
from registry.errors import ModelAliased, ModelNotReady
from registry.models import AliasEvent, MLModel, ModelAlias
from registry.storage import ModelStore
from tests.inference.api import predict
from tests.registry.onnx_factories import make_iris_model
from tests.registry.test_aliases import _waiting_on_locks
from tests.registry.versions import scaled_version

pytestmark = pytest.mark.django_db

Status = MLModel.Status
MODELS = "/api/v1/models"
CHANGELIST = reverse("admin:registry_mlmodel_changelist")
ROW = [[1.0, 2.0, 3.0]]


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


@pytest.fixture
def iris():
    """Two ready versions of iris; production points at 1.0.0, staging too."""
    versions = {
        version: scaled_version("iris", version, factor) for version, factor in (("1.0.0", 1.0), ("1.1.0", 2.0))
    }
    services.alias_set(name="iris", alias="production", version="1.0.0")
    services.alias_set(name="iris", alias="staging", version="1.0.0")
    return versions


@pytest.fixture
def traffic(client_for, iris):
    """Seven requests answered by iris 1.0.0, none by 1.1.0, recorded as the servers record them."""
    predictor = client_for("read", "predict", name="predictor")
    for _ in range(7):
        assert predict(predictor, str(iris["1.0.0"].pk), {"X": ROW}, skip_cache=True).status_code == 200
    serving_stats.flush()
    return 7


def registered(name: str = "flower", version: str = "1.0.0") -> MLModel:
    """A version registered and validated (in the sandbox) through the services."""
    staged = services.stage_stream(io.BytesIO(make_iris_model(zipmap=False)))
    return services.model_register(name=name, version=version, staged=staged)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def status_of(model: MLModel) -> str:
    return MLModel.objects.get(pk=model.pk).status


def text_of(response) -> str:
    """The page's text without tags, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def confirm_button(response) -> bool:
    return 'id="mf-confirm-button"' in response.content.decode()


# --- API: refusals ---------------------------------------------------------------------------------


def test_api_archive_of_an_aliased_version_is_409_naming_every_alias(manage_client, client_for, iris):
    response = manage_client.post(f"{MODELS}/{iris['1.0.0'].pk}/archive")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "model_aliased"
    assert "iris@production" in body["detail"] and "iris@staging" in body["detail"]
    assert "PUT /api/v1/models/by-name/iris/aliases/" in body["detail"]  # what to do about it
    assert status_of(iris["1.0.0"]) == Status.READY
    predictor = client_for("read", "predict")
    answered = predictor.post(f"{MODELS}/by-name/iris/predict?alias=production", {"input_data": {"X": ROW}}, "json")
    assert answered.status_code == 200


def test_api_delete_of_an_aliased_version_is_409_and_keeps_row_and_file(manage_client, iris):
    path = ModelStore().path_for(iris["1.0.0"].file_sha256)
    response = manage_client.delete(f"{MODELS}/{iris['1.0.0'].pk}")
    assert (response.status_code, response.json()["code"]) == (409, "model_aliased")
    assert "iris@production" in response.json()["detail"]
    assert MLModel.objects.filter(pk=iris["1.0.0"].pk).exists()
    assert path.exists()


def test_api_archive_goes_ahead_once_the_aliases_moved(manage_client, iris):
    for alias in ("production", "staging"):
        services.alias_set(name="iris", alias=alias, version="1.1.0")
    response = manage_client.post(f"{MODELS}/{iris['1.0.0'].pk}/archive")
    assert (response.status_code, response.json()["status"]) == (200, "archived")


# --- races: an alias and an archive at the same moment ------------------------------------------


def _in_thread(call) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # reported by the test thread
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_until_blocked(thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60  # a safety net: the wait ends on the lock wait being seen
    while _waiting_on_locks() < 1 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _waiting_on_locks() == 1, "the other call should be waiting on the version's row lock"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_an_archive_waiting_on_an_alias_being_created_is_refused_once_it_commits():
    model = scaled_version("iris", "1.0.0", 1.0)
    with transaction.atomic():
        services.alias_set(name="iris", alias="production", version="1.0.0")  # not committed yet
        thread, outcome = _in_thread(lambda: services.model_archive(model=MLModel.objects.get(pk=model.pk)))
        _wait_until_blocked(thread)
    thread.join(timeout=60)
    assert isinstance(outcome[0], ModelAliased), outcome
    assert status_of(model) == Status.READY


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_an_alias_waiting_on_an_archive_is_refused_once_it_commits():
    model = scaled_version("iris", "1.0.0", 1.0)
    with transaction.atomic():
        services.model_archive(model=model)  # not committed yet
        thread, outcome = _in_thread(lambda: services.alias_set(name="iris", alias="production", version="1.0.0"))
        _wait_until_blocked(thread)
    thread.join(timeout=60)
    assert isinstance(outcome[0], ModelNotReady), outcome
    assert not ModelAlias.objects.exists()


# --- API: unarchive --------------------------------------------------------------------------------


def test_api_unarchive_verifies_and_validates_again_then_serves(manage_client, client_for):
    model = registered()
    services.model_archive(model=model)
    response = manage_client.post(f"{MODELS}/{model.pk}/unarchive")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["input_schema"][0]["name"] == "X"
    predictor = client_for("read", "predict")
    assert predict(predictor, str(model.pk), {"X": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


def test_api_unarchive_of_a_changed_file_stays_archived_with_checksum_mismatch(manage_client):
    model = registered()
    services.model_archive(model=model)
    path = ModelStore().path_for(model.file_sha256)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # one byte changed on disk

    response = manage_client.post(f"{MODELS}/{model.pk}/unarchive")
    assert (response.status_code, response.json()["code"]) == (409, "checksum_mismatch")
    assert "stays archived" in response.json()["detail"]
    model.refresh_from_db()
    assert (model.status, model.error_code) == (Status.ARCHIVED, "checksum_mismatch")


def test_api_unarchive_of_a_missing_file_stays_archived_with_file_missing(manage_client):
    model = registered()
    services.model_archive(model=model)
    ModelStore().path_for(model.file_sha256).unlink()

    response = manage_client.post(f"{MODELS}/{model.pk}/unarchive")
    assert (response.status_code, response.json()["code"]) == (409, "file_missing")
    assert status_of(model) == Status.ARCHIVED


def test_api_unarchive_of_a_version_that_is_not_archived_is_409_invalid_status(manage_client, iris):
    response = manage_client.post(f"{MODELS}/{iris['1.1.0'].pk}/unarchive")
    assert (response.status_code, response.json()["code"]) == (409, "invalid_status")
    assert status_of(iris["1.1.0"]) == Status.READY


def test_api_unarchive_needs_the_manage_scope(read_client, api_client):
    model = registered()
    services.model_archive(model=model)
    assert read_client.post(f"{MODELS}/{model.pk}/unarchive").status_code == 403
    assert api_client.post(f"{MODELS}/{model.pk}/unarchive").status_code == 401
    assert status_of(model) == Status.ARCHIVED


def test_unarchive_of_an_unknown_id_is_404_model_not_found(manage_client):
    response = manage_client.post(f"{MODELS}/00000000-0000-4000-8000-000000000000/unarchive")
    assert (response.status_code, response.json()["code"]) == (404, "model_not_found")


def test_unarchive_of_a_version_archived_without_a_file_goes_back_to_pending(manage_client):
    model = services.model_create(name="empty", version="1.0.0")
    services.model_archive(model=model)
    response = manage_client.post(f"{MODELS}/{model.pk}/unarchive")
    assert (response.status_code, response.json()["status"]) == (200, "pending")


def test_unarchive_is_documented_in_the_schema(read_client):
    schema = read_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/models/{id}/unarchive/"]["post"]
    assert {"200", "409"} <= set(operation["responses"])


# --- admin: archive --------------------------------------------------------------------------------


def test_bulk_archive_shows_versions_aliases_and_traffic_and_changes_nothing_unconfirmed(admin_client, iris, traffic):
    other = scaled_version("other", "1.0.0", 3.0)
    selected = {"action": "archive_selected", "_selected_action": [str(iris["1.0.0"].pk), str(other.pk)]}

    page = admin_client.post(CHANGELIST, selected)
    assert page.status_code == 200
    text = text_of(page)
    assert "iris 1.0.0" in text and "other 1.0.0" in text
    assert "@production, @staging" in text
    row = [line for line in page.context["changes"]["rows"] if "iris" in str(line["cells"][0]["value"])][0]
    assert [cell["value"] for cell in row["cells"][3:]] == [f"{traffic}", f"{traffic}"]
    assert row["refused"] and "iris@production, iris@staging point at it" in row["outcome"]
    assert "Archive 1 of 2 versions?" in text
    assert confirm_button(page)
    assert (status_of(iris["1.0.0"]), status_of(other)) == (Status.READY, Status.READY)

    done = admin_client.post(CHANGELIST, {**selected, "post": "yes"}, follow=True)
    assert (status_of(iris["1.0.0"]), status_of(other)) == (Status.READY, Status.ARCHIVED)
    shown = messages_of(done)
    assert "Archived 1, refused 1." in shown
    assert any("iris@production" in message and "Not archived" in message for message in shown)


def test_bulk_archive_of_aliased_versions_only_offers_cancel(admin_client, iris):
    page = admin_client.post(CHANGELIST, {"action": "archive_selected", "_selected_action": [str(iris["1.0.0"].pk)]})
    assert page.status_code == 200
    assert not confirm_button(page)
    assert "Nothing here can go ahead." in text_of(page)


def test_model_page_archive_asks_first_and_refuses_an_aliased_version(admin_client, iris, traffic):
    url = reverse("admin:registry_mlmodel_serving", args=[iris["1.0.0"].pk, "archive"])
    page = admin_client.post(url)
    assert page.status_code == 200 and not confirm_button(page)
    assert "Refused: iris@production, iris@staging point at it" in text_of(page)
    # Confirming anyway (a stale page, a crafted POST) is refused by the service.
    refused = admin_client.post(url, {"post": "yes"}, follow=True)
    assert any(m.startswith("Archive refused (model_aliased)") for m in messages_of(refused))
    assert status_of(iris["1.0.0"]) == Status.READY

    other_url = reverse("admin:registry_mlmodel_serving", args=[iris["1.1.0"].pk, "archive"])
    page = admin_client.post(other_url)
    assert confirm_button(page) and "Ready → archived" in text_of(page)
    assert status_of(iris["1.1.0"]) == Status.READY
    admin_client.post(other_url, {"post": "yes"})
    assert status_of(iris["1.1.0"]) == Status.ARCHIVED


def test_serving_actions_refuse_get(admin_client, iris):
    url = reverse("admin:registry_mlmodel_serving", args=[iris["1.1.0"].pk, "archive"])
    assert admin_client.get(url).status_code == 405
    assert status_of(iris["1.1.0"]) == Status.READY


# --- admin: delete ---------------------------------------------------------------------------------


def test_delete_page_of_an_aliased_version_names_the_aliases_and_deletes_nothing(admin_client, iris, traffic):
    url = reverse("admin:registry_mlmodel_delete", args=[iris["1.0.0"].pk])
    page = admin_client.get(url)
    text = text_of(page)
    assert "iris@production" in text and "Refused" in text
    assert f"{traffic} {traffic}" in text  # requests in the last hour and 24 h
    assert 'name="post" value="yes"' not in page.content.decode()  # Django offers no confirm
    admin_client.post(url, {"post": "yes"})
    assert MLModel.objects.filter(pk=iris["1.0.0"].pk).exists()


def test_delete_page_shows_what_goes_and_deletes_only_when_confirmed(admin_client, iris, client_for):
    predictor = client_for("read", "predict")
    for _ in range(3):
        predict(predictor, str(iris["1.1.0"].pk), {"X": ROW}, skip_cache=True)
    serving_stats.flush()
    history.flush()
    url = reverse("admin:registry_mlmodel_delete", args=[iris["1.1.0"].pk])
    page = admin_client.get(url)
    text = text_of(page)
    assert "Ready → deleted" in text and "3 3" in text and "Will be deleted." in text
    # What goes along is counted, not listed row by row (a history can hold millions).
    assert "3 predictions" in text and "1 serving minute" in text
    assert "Prediction:" not in text
    assert MLModel.objects.filter(pk=iris["1.1.0"].pk).exists()
    admin_client.post(url, {"post": "yes"})
    assert not MLModel.objects.filter(pk=iris["1.1.0"].pk).exists()


def test_bulk_delete_of_an_aliased_version_is_refused(admin_client, iris):
    selected = {"action": "delete_selected", "_selected_action": [str(iris["1.0.0"].pk), str(iris["1.1.0"].pk)]}
    page = admin_client.post(CHANGELIST, selected)
    assert page.status_code == 200
    text = text_of(page)
    assert "iris@production" in text and "Will be deleted." in text
    admin_client.post(CHANGELIST, {**selected, "post": "yes"})
    assert MLModel.objects.filter(name="iris").count() == 2


# --- admin: aliases ----------------------------------------------------------------------------------


def test_moving_an_alias_in_its_change_form_asks_first_with_from_to_and_traffic(admin_client, iris, traffic):
    alias = ModelAlias.objects.get(name="iris", alias="production")
    url = reverse("admin:registry_modelalias_change", args=[alias.pk])
    events = AliasEvent.objects.count()

    page = admin_client.post(url, {"model": str(iris["1.1.0"].pk), "_save": "Save"})
    assert page.status_code == 200
    text = text_of(page)
    assert f"iris@production: 1.0.0 → 1.1.0; 1.0.0 answered {traffic} requests in the last 24 h." in text
    assert "requests without a version get: today 1.0.0" in text
    assert confirm_button(page)
    alias.refresh_from_db()
    assert alias.model_id == iris["1.0.0"].pk and AliasEvent.objects.count() == events

    admin_client.post(url, {"model": str(iris["1.1.0"].pk), "_save": "Save", "post": "yes"})
    alias.refresh_from_db()
    assert alias.model_id == iris["1.1.0"].pk
    assert AliasEvent.objects.newest_first().first().to_version == "1.1.0"


def test_an_alias_change_form_that_changes_nothing_or_is_invalid_shows_no_confirmation(admin_client, iris):
    alias = ModelAlias.objects.get(name="iris", alias="production")
    url = reverse("admin:registry_modelalias_change", args=[alias.pk])
    same = admin_client.post(url, {"model": str(iris["1.0.0"].pk), "_save": "Save"})
    assert same.status_code == 302
    invalid = admin_client.post(url, {"model": "not-a-version", "_save": "Save"})
    assert invalid.status_code == 200 and not confirm_button(invalid)
    alias.refresh_from_db()
    assert alias.model_id == iris["1.0.0"].pk


def test_creating_the_production_alias_in_the_admin_asks_first(admin_client):
    versions = [scaled_version("rose", version, 1.0) for version in ("1.0.0", "2.0.0")]
    url = reverse("admin:registry_modelalias_add")
    page = admin_client.post(url, {"alias": "production", "model": str(versions[0].pk), "_save": "Save"})
    assert confirm_button(page)
    assert "rose@production: (none) → 1.0.0" in text_of(page)
    assert "today 2.0.0" in text_of(page)  # what unversioned requests get until then
    assert not ModelAlias.objects.filter(name="rose").exists()
    admin_client.post(url, {"alias": "production", "model": str(versions[0].pk), "_save": "Save", "post": "yes"})
    assert ModelAlias.objects.get(name="rose", alias="production").model_id == versions[0].pk
    # Another alias takes no requests from anything: created without a page.
    admin_client.post(url, {"alias": "canary", "model": str(versions[1].pk), "_save": "Save"})
    assert ModelAlias.objects.filter(name="rose", alias="canary").exists()


def test_move_alias_here_on_the_model_page_asks_first(admin_client, iris, traffic):
    url = reverse("admin:registry_mlmodel_alias", args=[iris["1.1.0"].pk])
    page = admin_client.post(url, {"alias": "production"})
    assert page.status_code == 200
    assert f"iris@production: 1.0.0 → 1.1.0; 1.0.0 answered {traffic} requests" in text_of(page)
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["1.0.0"].pk
    admin_client.post(url, {"alias": "production", "post": "yes"})
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["1.1.0"].pk


def test_deleting_an_alias_shows_what_its_requests_get_then(admin_client, iris, traffic):
    alias = ModelAlias.objects.get(name="iris", alias="production")
    url = reverse("admin:registry_modelalias_delete", args=[alias.pk])
    page = admin_client.get(url)
    text = text_of(page)
    assert f"iris@production: 1.0.0 → (none); 1.0.0 answered {traffic} requests in the last 24 h." in text
    assert "get 404 alias_not_found" in text and "latest ready version" in text
    assert ModelAlias.objects.filter(pk=alias.pk).exists()
    admin_client.post(url, {"post": "yes"})
    assert not ModelAlias.objects.filter(pk=alias.pk).exists()
    assert AliasEvent.objects.newest_first().first().action == AliasEvent.Action.DELETED


def test_bulk_alias_delete_lists_each_alias_with_its_traffic(admin_client, iris, traffic):
    aliases = ModelAlias.objects.filter(name="iris")
    selected = {"action": "delete_selected", "_selected_action": [str(a.pk) for a in aliases]}
    page = admin_client.post(reverse("admin:registry_modelalias_changelist"), selected)
    text = text_of(page)
    assert "iris@production 1.0.0 → (none)" in text and "iris@staging 1.0.0 → (none)" in text
    assert ModelAlias.objects.filter(name="iris").count() == 2


# --- admin: unarchive --------------------------------------------------------------------------------


def test_unarchive_from_the_model_page_and_the_action(admin_client):
    first, second = registered("flower", "1.0.0"), registered("flower", "1.0.1")
    for model in (first, second):
        services.model_archive(model=model)
    page = admin_client.get(reverse("admin:registry_mlmodel_change", args=[first.pk]))
    assert ">Unarchive</button>" in page.content.decode() and ">Archive</button>" not in page.content.decode()

    done = admin_client.post(reverse("admin:registry_mlmodel_serving", args=[first.pk, "unarchive"]), follow=True)
    assert status_of(first) == Status.READY
    assert any(m.startswith("flower 1.0.0 is ready") for m in messages_of(done))

    path = ModelStore().path_for(second.file_sha256)
    path.write_bytes(b"not the file that was validated")
    done = admin_client.post(
        CHANGELIST, {"action": "unarchive_selected", "_selected_action": [str(second.pk)]}, follow=True
    )
    assert status_of(second) == Status.ARCHIVED
    assert any("Not unarchived" in m and "no longer matches its sha256" in m for m in messages_of(done))
