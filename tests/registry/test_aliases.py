"""Model aliases: named pointers (production, staging) per model name, moved atomically, audited.

The API (/api/v1/models/by-name/{name}/aliases), the services behind it, their bad inputs, the
concurrency of moves, and the admin. How predict, /v2 and jobs resolve through aliases is
tested in tests/inference/test_alias_resolution.py, tests/v2/test_aliases.py and
tests/jobs/test_job_aliases.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from registry import services
from registry.errors import ModelAliased
from registry.models import AliasEvent, MLModel, ModelAlias, validate_alias
from tests.registry.versions import scaled_version

pytestmark = pytest.mark.django_db

BY_NAME = "/api/v1/models/by-name"


def aliases_url(name: str) -> str:
    return f"{BY_NAME}/{name}/aliases"


def alias_url(name: str, alias: str) -> str:
    return f"{BY_NAME}/{name}/aliases/{alias}"


def put_alias(client, name: str, alias: str, version: str):
    return client.put(alias_url(name, alias), {"version": version}, format="json")


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.content[:2000]
    body = response.json()
    assert set(body) >= {"code", "detail"}, body
    assert body["detail"], body
    return body["code"]


@pytest.fixture
def iris():
    """Three ready versions of "iris" and one that is not (pending)."""
    versions = {
        version: scaled_version("iris", version, factor)
        for version, factor in (("1.0.0", 1.0), ("1.1.0", 2.0), ("2.0.0", 3.0))
    }
    versions["3.0.0"] = services.model_create(name="iris", version="3.0.0")
    return versions


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["production", "staging", "canary-2", "blue_green", "A", "x" * 50])
def test_alias_names_are_labels(alias):
    validate_alias(alias)


@pytest.mark.parametrize(
    ("alias", "code"),
    [
        ("1.0.0", "alias_is_version"),
        ("2.0.0-rc.1", "alias_is_version"),
        ("1", "invalid_alias"),  # Triton-style integer versions stay versions
        ("-prod", "invalid_alias"),
        ("prod.1", "invalid_alias"),
        ("../etc", "invalid_alias"),
        ("prod uction", "invalid_alias"),
        ("x" * 51, "invalid_alias"),
        ("", "invalid_alias"),
    ],
)
def test_alias_names_that_are_refused(alias, code):
    with pytest.raises(ValidationError) as refused:
        validate_alias(alias)
    assert refused.value.error_list[0].code == code


# --- create, move, delete, and the audit trail ----------------------------------------------------


def test_put_creates_an_alias_and_records_who_did_it(manage_client, iris):
    response = put_alias(manage_client, "iris", "production", "1.0.0")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["alias"], body["version"]) == ("iris", "production", "1.0.0")
    assert body["model_id"] == str(iris["1.0.0"].pk)
    assert body["status"] == "ready"
    assert body["updated_by"] == "key:ops"

    listing = manage_client.get(aliases_url("iris")).json()
    assert listing["default_version"] == "1.0.0"  # production wins over the latest ready 2.0.0
    assert [(alias["alias"], alias["version"]) for alias in listing["aliases"]] == [("production", "1.0.0")]
    (event,) = listing["events"]
    assert event["action"] == "created"
    assert (event["from_version"], event["to_version"]) == ("", "1.0.0")
    assert (event["from_model_id"], event["to_model_id"]) == (None, str(iris["1.0.0"].pk))
    assert (event["actor"], event["actor_type"]) == ("key:ops", "key")
    assert event["created_at"]


def test_moves_are_audited_newest_first_with_from_and_to(manage_client, client_for, iris):
    deployer = client_for("manage", name="deploy-bot")
    put_alias(manage_client, "iris", "production", "1.0.0")
    put_alias(manage_client, "iris", "staging", "2.0.0")
    moved = put_alias(deployer, "iris", "production", "1.1.0")
    assert moved.status_code == 200, moved.json()
    assert (moved.json()["version"], moved.json()["updated_by"]) == ("1.1.0", "key:deploy-bot")
    put_alias(deployer, "iris", "production", "2.0.0")

    listing = manage_client.get(aliases_url("iris")).json()
    assert {alias["alias"]: alias["version"] for alias in listing["aliases"]} == {
        "production": "2.0.0",
        "staging": "2.0.0",
    }
    trail = [(e["alias"], e["action"], e["from_version"], e["to_version"], e["actor"]) for e in listing["events"]]
    assert trail == [
        ("production", "moved", "1.1.0", "2.0.0", "key:deploy-bot"),
        ("production", "moved", "1.0.0", "1.1.0", "key:deploy-bot"),
        ("staging", "created", "", "2.0.0", "key:ops"),
        ("production", "created", "", "1.0.0", "key:ops"),
    ]


def test_moving_to_the_version_it_has_changes_nothing_and_records_nothing(manage_client, iris):
    put_alias(manage_client, "iris", "production", "1.1.0")
    again = put_alias(manage_client, "iris", "production", "1.1.0")
    assert again.status_code == 200
    assert again.json()["version"] == "1.1.0"
    assert AliasEvent.objects.count() == 1


def test_delete_removes_the_alias_and_records_it(manage_client, client_for, iris):
    put_alias(manage_client, "iris", "staging", "1.1.0")
    response = client_for("manage", name="cleanup").delete(alias_url("iris", "staging"))
    assert response.status_code == 204
    assert not ModelAlias.objects.exists()
    listing = manage_client.get(aliases_url("iris")).json()
    assert listing["aliases"] == []
    assert listing["default_version"] == "2.0.0"  # no production alias: the latest ready version
    latest = listing["events"][0]
    assert (latest["action"], latest["from_version"], latest["to_version"]) == ("deleted", "1.1.0", "")
    assert latest["actor"] == "key:cleanup"


def test_the_trail_outlives_a_deleted_alias_and_its_version(manage_client, iris):
    put_alias(manage_client, "iris", "canary", "1.1.0")
    manage_client.delete(alias_url("iris", "canary"))
    assert manage_client.delete(f"/api/v1/models/{iris['1.1.0'].pk}").status_code == 204
    events = manage_client.get(aliases_url("iris")).json()["events"]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in events] == [
        ("deleted", "1.1.0", ""),
        ("created", "", "1.1.0"),
    ]
    assert events[0]["from_model_id"] is None  # the version is gone; its number stays


def test_a_name_with_versions_but_no_aliases_lists_none(read_client, iris):
    listing = read_client.get(aliases_url("iris")).json()
    assert (listing["aliases"], listing["events"], listing["default_version"]) == ([], [], "2.0.0")


def test_an_aliased_version_cannot_be_deleted_until_the_alias_moves(manage_client, iris):
    put_alias(manage_client, "iris", "production", "1.0.0")
    refused = manage_client.delete(f"/api/v1/models/{iris['1.0.0'].pk}")
    assert error_code(refused, 409) == "model_aliased"
    assert "production" in refused.json()["detail"]
    assert MLModel.objects.filter(pk=iris["1.0.0"].pk).exists()
    put_alias(manage_client, "iris", "production", "1.1.0")
    assert manage_client.delete(f"/api/v1/models/{iris['1.0.0'].pk}").status_code == 204


def test_an_aliased_version_cannot_be_archived_until_the_alias_moves(manage_client, iris):
    put_alias(manage_client, "iris", "production", "1.0.0")
    refused = manage_client.post(f"/api/v1/models/{iris['1.0.0'].pk}/archive")
    assert error_code(refused, 409) == "model_aliased"
    assert "iris@production" in refused.json()["detail"]
    assert MLModel.objects.get(pk=iris["1.0.0"].pk).status == "ready"
    put_alias(manage_client, "iris", "production", "1.1.0")
    assert manage_client.post(f"/api/v1/models/{iris['1.0.0'].pk}/archive").status_code == 200
    # ... and an alias cannot be pointed at an archived version.
    assert error_code(put_alias(manage_client, "iris", "production", "1.0.0"), 409) == "model_not_ready"


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "code"),
    [("1.0.0", "alias_is_version"), ("prod.1", "invalid_alias"), ("-x", "invalid_alias"), ("7", "invalid_alias")],
)
def test_put_refuses_bad_alias_names(manage_client, iris, alias, code):
    assert error_code(put_alias(manage_client, "iris", alias, "1.0.0"), 400) == code
    assert not ModelAlias.objects.exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid"),
        ({"version": "latest"}, "invalid_version"),
        ({"version": "production"}, "invalid_version"),  # an alias cannot point at an alias
        ({"version": "1.0.0", "model_id": "x"}, "read_only_field"),
    ],
)
def test_put_refuses_bad_bodies(manage_client, iris, body, code):
    response = manage_client.put(alias_url("iris", "production"), body, format="json")
    assert error_code(response, 400) == code


def test_put_to_a_version_that_does_not_exist_is_404(manage_client, iris):
    response = put_alias(manage_client, "iris", "production", "9.9.9")
    assert error_code(response, 404) == "model_not_found"
    assert "1.1.0" in response.json()["detail"]  # it lists the versions there are


def test_put_to_a_version_that_is_not_ready_is_409(manage_client, iris):
    response = put_alias(manage_client, "iris", "production", "3.0.0")
    assert error_code(response, 409) == "model_not_ready"
    assert not AliasEvent.objects.exists()


def test_aliases_of_a_name_that_does_not_exist_are_404(manage_client):
    assert error_code(put_alias(manage_client, "nope", "production", "1.0.0"), 404) == "model_not_found"
    assert error_code(manage_client.get(aliases_url("nope")), 404) == "model_not_found"
    assert error_code(manage_client.delete(alias_url("nope", "production")), 404) == "model_not_found"


def test_delete_of_an_unknown_alias_is_404(manage_client, iris):
    put_alias(manage_client, "iris", "production", "1.0.0")
    response = manage_client.delete(alias_url("iris", "staging"))
    assert error_code(response, 404) == "alias_not_found"
    assert "production" in response.json()["detail"]  # it names the aliases there are
    assert error_code(manage_client.delete(alias_url("iris", "1.0.0")), 400) == "alias_is_version"


def test_moving_needs_the_manage_scope_and_reading_the_read_scope(client_for, api_client, read_client, iris):
    for client in (read_client, client_for("predict")):
        assert error_code(put_alias(client, "iris", "production", "1.0.0"), 403) == "missing_scope"
        assert error_code(client.delete(alias_url("iris", "production")), 403) == "missing_scope"
    assert not ModelAlias.objects.exists()
    assert read_client.get(aliases_url("iris")).status_code == 200
    assert error_code(client_for("predict").get(aliases_url("iris")), 403) == "missing_scope"
    assert api_client.get(aliases_url("iris")).status_code == 401
    assert api_client.put(alias_url("iris", "production"), {"version": "1.0.0"}, format="json").status_code == 401


# --- concurrency --------------------------------------------------------------------------------


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # the view is a snapshot per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.parametrize("exists", [True, False], ids=["move", "create"])
def test_concurrent_moves_are_each_applied_and_audited_in_turn(exists):
    """Two moves of one alias at once: both wait on the row lock held here, then run one after
    the other. Both are audited, the second's `from` is the first's `to`, and the alias ends at
    the version of the newest event."""
    versions = {v: scaled_version("iris", v, factor) for v, factor in (("1.0.0", 1.0), ("1.1.0", 2.0), ("2.0.0", 3.0))}
    if exists:
        services.alias_set(name="iris", alias="production", version="1.0.0")
    errors: list[BaseException] = []

    def move(version: str) -> None:
        try:
            services.alias_set(name="iris", alias="production", version=version)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        if exists:
            ModelAlias.objects.select_for_update().get(name="iris", alias="production")
        else:
            # Hold the unique slot the creators race for: an uncommitted alias row of our own.
            ModelAlias.objects.create(name="iris", alias="production", model=versions["1.0.0"])
        threads = [threading.Thread(target=move, args=(version,)) for version in ("1.1.0", "2.0.0")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _waiting_on_locks() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_on_locks() == 2, "both moves should be waiting on the alias row"
        if not exists:
            transaction.set_rollback(True)  # let the creators have the slot
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors

    trail = list(AliasEvent.objects.order_by("created_at", "id"))  # oldest first
    if exists:
        created = trail.pop(0)
        assert (created.action, created.to_version) == ("created", "1.0.0")
    first, second = trail
    assert first.action == ("moved" if exists else "created")
    assert first.from_version == ("1.0.0" if exists else "")
    assert second.action == "moved"
    assert second.from_version == first.to_version  # the second left the version the first set
    assert {first.to_version, second.to_version} == {"1.1.0", "2.0.0"}
    assert ModelAlias.objects.get(name="iris", alias="production").model.version == second.to_version


# --- the admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(ops_user) -> Client:
    client = Client()
    client.force_login(ops_user)
    return client


def test_admin_lists_aliases_with_their_version_and_when_they_moved(admin_client, iris):
    services.alias_set(name="iris", alias="production", version="1.1.0")
    services.alias_set(name="iris", alias="staging", version="2.0.0")
    page = admin_client.get(reverse("admin:registry_modelalias_changelist"))
    assert page.status_code == 200
    rows = [row for row in page.content.decode().split("<tr") if "iris" in row]
    assert any("production" in row and "1.1.0" in row for row in rows)
    assert any("staging" in row and "2.0.0" in row for row in rows)


def test_admin_moves_an_alias_through_the_service_and_shows_the_audit_row(admin_client, iris):
    alias = services.alias_set(name="iris", alias="production", version="1.0.0").alias
    url = reverse("admin:registry_modelalias_change", args=[alias.pk])
    form = admin_client.get(url)
    assert form.status_code == 200
    # Only ready versions of this name are offered.
    options = form.content.decode()
    assert ">1.1.0<" in options and ">2.0.0<" in options and ">3.0.0<" not in options

    confirmation = admin_client.post(url, {"model": str(iris["2.0.0"].pk)})  # asks first, moves nothing
    assert confirmation.status_code == 200 and "1.0.0 → 2.0.0" in confirmation.content.decode()
    response = admin_client.post(url, {"model": str(iris["2.0.0"].pk), "post": "yes"})
    assert response.status_code == 302, response.content[:3000]
    alias.refresh_from_db()
    assert alias.model_id == iris["2.0.0"].pk
    assert alias.updated_by.username == "ops"
    event = AliasEvent.objects.newest_first().first()
    assert (event.action, event.from_version, event.to_version) == ("moved", "1.0.0", "2.0.0")
    assert (event.actor_user.username, event.actor_label) == ("ops", "ops")

    page = admin_client.get(url).content.decode()
    trail = page.split("Audit trail (newest first)", 1)[1].split("</table>", 1)[0]
    rows = trail.split("<tr>")[2:]  # after the header row, newest first
    assert "<td>Moved</td><td>1.0.0</td><td>2.0.0</td><td>ops</td>" in rows[0]
    assert "<td>Created</td><td>—</td><td>1.0.0</td><td>—</td>" in rows[1]  # set by a service call, no actor


def test_admin_creates_and_deletes_aliases_through_the_services(admin_client, iris):
    response = admin_client.post(
        reverse("admin:registry_modelalias_add"), {"alias": "staging", "model": str(iris["1.1.0"].pk)}
    )
    assert response.status_code == 302, response.content[:3000]
    alias = ModelAlias.objects.get(name="iris", alias="staging")
    assert alias.model_id == iris["1.1.0"].pk

    duplicate = admin_client.post(
        reverse("admin:registry_modelalias_add"), {"alias": "staging", "model": str(iris["2.0.0"].pk)}
    )
    assert duplicate.status_code == 200
    assert "already has the alias staging" in duplicate.content.decode()
    bad_name = admin_client.post(
        reverse("admin:registry_modelalias_add"), {"alias": "1.0.0", "model": str(iris["2.0.0"].pk)}
    )
    assert "is a version, not an alias name" in bad_name.content.decode()

    response = admin_client.post(reverse("admin:registry_modelalias_delete", args=[alias.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not ModelAlias.objects.exists()
    actions = list(AliasEvent.objects.newest_first().values_list("action", "actor_label"))
    assert actions == [("deleted", "ops"), ("created", "ops")]


def test_admin_refuses_a_target_that_stopped_being_ready(admin_client, iris):
    alias = services.alias_set(name="iris", alias="production", version="1.0.0").alias
    url = reverse("admin:registry_modelalias_change", args=[alias.pk])
    admin_client.get(url)
    services.model_archive(model=iris["2.0.0"])  # after the form was shown, before it is sent
    response = admin_client.post(url, {"model": str(iris["2.0.0"].pk)}, follow=True)
    assert response.status_code == 200
    alias.refresh_from_db()
    assert alias.model_id == iris["1.0.0"].pk
    assert AliasEvent.objects.count() == 1


def test_admin_audit_rows_are_read_only(admin_client, iris):
    services.alias_set(name="iris", alias="production", version="1.0.0")
    event = AliasEvent.objects.get()
    changelist = admin_client.get(reverse("admin:registry_aliasevent_changelist"))
    assert changelist.status_code == 200
    assert "production" in changelist.content.decode()
    assert 'value="delete_selected"' not in changelist.content.decode()
    assert admin_client.get(reverse("admin:registry_aliasevent_add")).status_code == 403
    view = admin_client.get(reverse("admin:registry_aliasevent_change", args=[event.pk]))
    assert view.status_code == 200 and 'type="submit"' not in view.content.decode().split('id="content-main"')[1]
    edit = admin_client.post(reverse("admin:registry_aliasevent_change", args=[event.pk]), {"to_version": "9.9.9"})
    assert edit.status_code == 403
    delete = admin_client.post(reverse("admin:registry_aliasevent_delete", args=[event.pk]), {"post": "yes"})
    assert delete.status_code == 403
    event.refresh_from_db()
    assert event.to_version == "1.0.0"


def test_admin_will_not_delete_an_aliased_version(admin_client, iris):
    services.alias_set(name="iris", alias="production", version="1.0.0")
    page = admin_client.get(reverse("admin:registry_mlmodel_delete", args=[iris["1.0.0"].pk]))
    assert "protected" in page.content.decode().lower()
    with pytest.raises(ModelAliased):
        services.model_delete(model=iris["1.0.0"])
