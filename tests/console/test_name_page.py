"""The page of a model name (console.name_page): versions side by side with their serving
figures and lineage, promote and roll back through the confirmation page, the models list's
links and production column, the version page's siblings, and who may do what."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from inference.serving_stats import serving_stats
from registry import services
from registry.models import AliasEvent, MLModel, ModelAlias
from tests.inference.api import predict
from tests.registry.onnx_factories import make_iris_model
from tests.registry.versions import ready_version

pytestmark = pytest.mark.django_db

ROW = [[5.1, 3.5, 1.4, 0.2]]
RUN = "https://mlflow.example.com/#/experiments/3/runs/7f3a9c"
COMMIT = "4f2c9e1d0b7a6c5e4f3a2b1c0d9e8f7a6b5c4d3e"


def name_url(name: str = "iris") -> str:
    return reverse("admin:registry_mlmodel_name", args=[name])


def promote_url(name: str = "iris") -> str:
    return reverse("admin:registry_mlmodel_name_promote", args=[name])


def rollback_url(name: str = "iris") -> str:
    return reverse("admin:registry_mlmodel_name_rollback", args=[name])


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def staff(django_user_model, *permissions: str, username: str) -> Client:
    user = django_user_model.objects.create_user(username=username, password=None, is_staff=True)
    wanted = [permission.split(".") for permission in permissions]
    user.user_permissions.set(
        [
            row
            for row in Permission.objects.select_related("content_type")
            if [row.content_type.app_label, row.codename] in wanted
        ]
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def iris(manage_client, ops_user):
    """iris 1.0.0 (production, by ops), 1.1.0 with lineage uploaded through the API, 0.9.0
    archived. 1.0.0 answered 3 requests (1 error, 1 cache hit), 1.1.0 one; flushed."""
    old = ready_version(make_iris_model(zipmap=False), name="iris", version="0.9.0")
    services.model_archive(model=old)
    current = ready_version(make_iris_model(zipmap=False), name="iris", version="1.0.0")
    MLModel.objects.filter(pk=current.pk).update(created_by=ops_user)
    response = manage_client.post(
        "/api/v1/models",
        {
            "name": "iris",
            "version": "1.1.0",
            "file": SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False)),
            "source_url": RUN,
            "code_commit": COMMIT,
            "dataset": "iris-v4",
            "metrics": json.dumps({"accuracy": 0.97, "f1": 0.95}),
        },
        format="multipart",
    )
    assert response.status_code == 202, response.json()
    candidate = MLModel.objects.get(pk=response.json()["id"])
    assert candidate.status == MLModel.Status.READY
    services.alias_set(name="iris", alias="production", version="1.0.0", actor=ops_user)
    return {"old": old, "current": current, "candidate": candidate}


@pytest.fixture
def served(iris, predict_client):
    current, candidate = iris["current"], iris["candidate"]
    assert predict(predict_client, current.pk, {"X": ROW}).status_code == 200
    assert predict(predict_client, current.pk, {"X": ROW}).status_code == 200  # a cache hit
    assert predict(predict_client, current.pk, {"X": [[1.0]]}).status_code == 400
    assert predict(predict_client, candidate.pk, {"X": ROW}).status_code == 200
    serving_stats.flush()
    return iris


def row_of(response, version: str) -> dict:
    return next(row for row in response.context["mf_rows"] if row["model"].version == version)


def test_the_page_shows_each_version_with_its_aliases_lineage_and_serving_side_by_side(admin_client, served):
    response = admin_client.get(name_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert [row["model"].version for row in response.context["mf_rows"]] == ["1.1.0", "1.0.0", "0.9.0"]

    current = row_of(response, "1.0.0")
    assert current["aliases"] == ["production"] and current["is_production"]
    assert [cell["value"] for cell in current["hour"]][:2] == ["3", "1"]  # requests, errors
    assert [cell["value"] for cell in current["day"]][:2] == ["3", "1"]
    assert current["hour"][4]["value"] == "50%"  # 1 hit of 2 lookups (the refused request looked nothing up)
    assert current["hour"][2]["value"] != "—" and current["hour"][3]["value"] != "—"  # p50, p95
    candidate = row_of(response, "1.1.0")
    assert [cell["value"] for cell in candidate["hour"]][:2] == ["1", "0"]
    archived = row_of(response, "0.9.0")
    assert [cell["value"] for cell in archived["day"]] == ["0", "0", "—", "—", "—"]

    # The versions table: status in words, alias badges, who and when, sha256, size, producer.
    versions = html[html.index('id="mf-version-table"') : html.index('id="mf-serving"')]
    assert "Archived" in versions and "Ready" in versions
    assert '<span class="mf-alias-badge">@production</span>' in versions
    assert ">ops</td>" in versions
    assert f"{served['current'].file_sha256[:12]}…" in versions
    assert "skl2onnx" in versions
    assert reverse("admin:registry_mlmodel_change", args=[served["candidate"].pk]) in versions  # open a version
    # Lineage: metrics as columns to compare, the commit, the dataset, the run as a link.
    lineage = html[html.index('id="mf-lineage-table"') :]
    assert '<th scope="col" class="mf-num">accuracy</th>' in lineage and '<td class="mf-num">0.97</td>' in lineage
    assert COMMIT[:12] in lineage and "iris-v4" in lineage and f'<a href="{RUN}"' in lineage
    assert 'id="mf-production-version">1.0.0<' in html
    # Upload the next version: the name fixed, the next patch of the highest version suggested.
    assert 'name="name" value="iris"' in html and 'value="1.1.1"' in html


def test_the_models_list_links_every_row_to_its_name_page_and_shows_production(admin_client, iris):
    html = admin_client.get(reverse("admin:registry_mlmodel_changelist")).content.decode()
    assert html.count(f'href="{name_url()}"') == 3  # one per row
    assert '<strong class="mf-production">1.0.0 (this version)</strong>' in html
    rows = html[html.index('id="result_list"') :].split("<tr")
    candidate_row = next(row for row in rows if ">1.1.0<" in row)
    assert '<td class="field-production_display">1.0.0</td>' in candidate_row


def test_a_versions_page_lists_its_siblings_and_links_the_name_page(admin_client, iris):
    html = admin_client.get(reverse("admin:registry_mlmodel_change", args=[iris["candidate"].pk])).content.decode()
    siblings = html[html.index('id="mf-siblings"') : html.index('id="mf-status"')]
    assert "<strong>1.1.0 (this version)</strong>" in siblings
    assert reverse("admin:registry_mlmodel_change", args=[iris["current"].pk]) in siblings
    assert '<span class="mf-alias-badge">@production</span>' in siblings
    assert f'href="{name_url()}" id="mf-name-page-link"' in siblings
    # Try it and the upload of a new version come before the status, the aliases and the form.
    assert html.index('id="mf-try"') < html.index('id="mf-new-version"') < html.index('id="mf-status"')
    assert html.index('id="mf-status"') < html.index('id="mlmodel_form"')


def test_promote_shows_the_move_and_its_traffic_first_then_moves_the_alias_audited(admin_client, served, ops_user):
    asked = admin_client.post(promote_url(), {"version": "1.1.0", "alias": "production"})
    assert asked.status_code == 200
    html = asked.content.decode()
    assert "iris@production: 1.0.0 → 1.1.0; 1.0.0 answered 3 requests in the last 24 h." in html
    assert 'id="mf-confirm-button"' in html
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == served["current"].pk  # not yet

    done = admin_client.post(promote_url(), {"version": "1.1.0", "alias": "production", "post": "yes"}, follow=True)
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == served["candidate"].pk
    event = AliasEvent.objects.newest_first().first()
    moved = (event.action, event.from_version, event.to_version, event.actor_user)
    assert moved == ("moved", "1.0.0", "1.1.0", ops_user)
    assert "iris@production now points at 1.1.0 (was 1.0.0)." in done.content.decode()


def test_promote_to_a_new_alias_creates_it_after_the_confirmation(admin_client, iris):
    asked = admin_client.post(promote_url(), {"version": "1.1.0", "alias": "staging"})
    assert "Create the alias iris@staging" in asked.content.decode()
    assert not ModelAlias.objects.filter(alias="staging").exists()
    admin_client.post(promote_url(), {"version": "1.1.0", "alias": "staging", "post": "yes"})
    assert ModelAlias.objects.get(name="iris", alias="staging").model_id == iris["candidate"].pk


def test_roll_back_moves_the_alias_to_the_version_it_pointed_at_before(admin_client, iris, ops_user):
    services.alias_set(name="iris", alias="production", version="1.1.0", actor=ops_user)
    page = admin_client.get(name_url()).content.decode()
    assert 'class="button">Roll back to 1.0.0</button>' in page  # enabled

    asked = admin_client.post(rollback_url(), {"alias": "production"})
    assert asked.status_code == 200
    assert "iris@production: 1.1.0 → 1.0.0" in asked.content.decode()
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["candidate"].pk

    admin_client.post(rollback_url(), {"alias": "production", "post": "yes"})
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["current"].pk
    event = AliasEvent.objects.newest_first().first()
    assert (event.from_version, event.to_version, event.actor_label) == ("1.1.0", "1.0.0", "ops")


def test_roll_back_without_an_earlier_version_changes_nothing_and_says_why(admin_client, iris):
    assert "no earlier version" in admin_client.get(name_url()).content.decode()  # production was only created
    events = AliasEvent.objects.count()
    response = admin_client.post(rollback_url(), {"alias": "production", "post": "yes"}, follow=True)
    assert "no earlier version to roll back to" in response.content.decode()
    assert AliasEvent.objects.count() == events
    assert admin_client.post(rollback_url(), {"alias": "nosuch"}).status_code == 404


def test_refusals_come_from_the_service_with_their_code(admin_client, iris):
    archived = admin_client.post(promote_url(), {"version": "0.9.0", "alias": "production", "post": "yes"}, follow=True)
    assert "Promote refused (model_not_ready)" in archived.content.decode()
    bad_alias = admin_client.post(promote_url(), {"version": "1.1.0", "alias": "1.0.0"}, follow=True)
    assert "Promote refused (alias_is_version)" in bad_alias.content.decode()
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["current"].pk
    assert admin_client.post(promote_url(), {"version": "9.9.9"}).status_code == 404
    assert admin_client.get(promote_url()).status_code == 405
    assert admin_client.get(name_url("nosuch")).status_code == 404


def test_viewers_see_the_page_but_only_alias_managers_promote_or_roll_back(django_user_model, iris):
    nobody = staff(django_user_model, username="nobody")
    assert nobody.get(name_url()).status_code == 403

    viewer = staff(django_user_model, "registry.view_mlmodel", username="viewer")
    page = viewer.get(name_url())
    assert page.status_code == 200
    html = page.content.decode()
    assert "mf-promote-form" not in html and f'action="{rollback_url()}"' not in html
    assert viewer.post(promote_url(), {"version": "1.1.0", "alias": "production", "post": "yes"}).status_code == 403
    assert viewer.post(rollback_url(), {"alias": "production", "post": "yes"}).status_code == 403
    # A version's own "Move alias here" asks the alias permission too, not the version's.
    editor = staff(django_user_model, "registry.change_mlmodel", username="editor")
    move = reverse("admin:registry_mlmodel_alias", args=[iris["candidate"].pk])
    assert editor.post(move, {"alias": "production", "post": "yes"}).status_code == 403
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["current"].pk

    # Moving an existing alias needs `change`; creating one needs `add`.
    mover = staff(django_user_model, "registry.view_mlmodel", "registry.change_modelalias", username="mover")
    assert "mf-promote-form" in mover.get(name_url()).content.decode()
    assert mover.post(promote_url(), {"version": "1.1.0", "alias": "staging", "post": "yes"}).status_code == 403
    mover.post(promote_url(), {"version": "1.1.0", "alias": "production", "post": "yes"})
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["candidate"].pk


def test_roll_back_to_a_version_archived_since_is_offered_disabled_and_refused(admin_client, iris, ops_user):
    services.alias_set(name="iris", alias="production", version="1.1.0", actor=ops_user)
    services.model_archive(model=iris["current"])  # 1.0.0, production's previous version
    page = admin_client.get(name_url()).content.decode()
    assert 'class="button" disabled>Roll back to 1.0.0</button>' in page and "1.0.0 is archived" in page

    refused = admin_client.post(rollback_url(), {"alias": "production", "post": "yes"}, follow=True)
    assert "Roll back refused (model_not_ready)" in refused.content.decode()
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["candidate"].pk
