"""The alias admin's rollout panel: the figures side by side, set / promote / abort through a
confirmation page showing the split before and after, refusals with the API's codes and
statuses, and 403 for staff without the rollout permissions."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry.models import AliasEvent, ModelAlias, Rollout
from tests.rollouts.conftest import NAME
from tests.security.test_session_permissions import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def panel(versions):
    alias = ModelAlias.objects.get(name=NAME, alias="production")
    return reverse("admin:registry_modelalias_rollout", args=[alias.pk])


@pytest.fixture
def ops(django_user_model):
    return staff_client(django_user_model, None, username="ops-admin")  # a superuser


def test_the_alias_page_links_to_the_panel_which_shows_the_versions_side_by_side(
    versions, panel, ops, start, http_send
):
    from inference.serving_stats import serving_stats

    alias = ModelAlias.objects.get(name=NAME, alias="production")
    page = ops.get(reverse("admin:registry_modelalias_change", args=[alias.pk])).content.decode()
    assert panel in page and "Start a rollout" in page
    start(candidate_version="1.1.0", weight=50, shadow_version="1.2.0", shadow_percent=100)
    for index in range(30):
        http_send(f"user-{index}")
    serving_stats.flush()
    response = ops.get(panel)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1.0.0 (primary): 50.0 %" in html and "1.1.0 (candidate): 50.0 %" in html
    for minutes in (15, 60):
        window = response.context["windows"][0 if minutes == 15 else 1][1]
        rows = {row["role"]: row for row in window["versions"]}
        assert rows["primary"]["requests"] + rows["candidate"]["requests"] == 30
        assert f'id="mf-window-{minutes}"' in html
    assert "rollout_started" in html or "Rollout started" in html


def test_setting_a_weight_shows_the_split_before_and_after_then_applies_on_confirm(versions, panel, ops, start):
    start(candidate_version="1.1.0", weight=10)
    candidate = versions["1.1.0"]["id"]
    body = {"action": "set", "candidate": candidate, "weight": "30", "shadow_percent": "0"}
    page = ops.post(panel, body)
    assert page.status_code == 200
    html = page.content.decode()
    assert "primary 90 % / candidate 10 % → primary 70 % / candidate 30 %" in html
    assert "10 % → 30 %" in html
    assert Rollout.objects.get(alias__name=NAME).weight == 10.0  # nothing changed yet
    done = ops.post(panel, {**body, "post": "yes"})
    assert done.status_code == 302
    assert Rollout.objects.get(alias__name=NAME).weight == 30.0
    event = AliasEvent.objects.filter(name=NAME).latest("created_at")
    assert (event.action, event.from_weight, event.to_weight, event.actor_label) == (
        "weight_changed",
        10.0,
        30.0,
        "ops-admin",
    )


def test_promote_and_abort_are_confirmed_first(versions, panel, ops, start):
    start(candidate_version="1.1.0", weight=20)
    page = ops.post(panel, {"action": "abort"}).content.decode()
    assert "primary 80 % / candidate 20 % → primary 100 % / candidate 0 %" in page
    assert Rollout.objects.filter(alias__name=NAME).exists()
    ops.post(panel, {"action": "promote", "post": "yes"})
    assert ModelAlias.objects.get(name=NAME, alias="production").model.version == "1.1.0"
    assert not Rollout.objects.filter(alias__name=NAME).exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"candidate": "1.1.0", "weight": "150"}, 400, "invalid_weight"),
        ({"candidate": "1.0.0", "weight": "10"}, 400, "candidate_is_primary"),
        ({"candidate": "other", "weight": "10"}, 400, "other_name"),
        ({"candidate": "archived", "weight": "10"}, 409, "model_not_ready"),
        ({"shadow": "1.0.0", "shadow_percent": "100"}, 400, "shadow_is_primary"),
    ],
)
def test_bad_input_is_refused_with_the_apis_code_and_status(
    versions, panel, ops, upload, manage_client, body, status, code
):
    from tests.inference.api import MODELS
    from tests.inference.factories import make_scaled_model

    ids = {version: made["id"] for version, made in versions.items()}
    ids["other"] = upload(make_scaled_model(5.0), "1.0.0", name="other")["id"]
    ids["archived"] = upload(make_scaled_model(6.0), "1.4.0")["id"]
    manage_client.post(f"{MODELS}/{ids['archived']}/archive")
    posted = {"action": "set", **{k: ids.get(v, v) if k in ("candidate", "shadow") else v for k, v in body.items()}}
    response = ops.post(panel, {**posted, "post": "yes"})
    assert response.status_code == status
    assert response.context["error"][0] == code
    assert f"<code>{code}</code>" in response.content.decode()
    assert not Rollout.objects.filter(alias__name=NAME).exists()


def test_staff_without_the_rollout_permissions_get_403(versions, panel, django_user_model, start):
    start(candidate_version="1.1.0", weight=10)
    alias_only = staff_client(django_user_model, {"registry.view_modelalias", "registry.change_modelalias"})
    assert alias_only.get(panel).status_code == 403
    viewer = staff_client(django_user_model, {"registry.view_modelalias", "registry.view_rollout"}, username="viewer")
    assert viewer.get(panel).status_code == 200
    assert 'id="mf-rollout-set"' not in viewer.get(panel).content.decode()
    assert viewer.post(panel, {"action": "abort", "post": "yes"}).status_code == 403
    assert Rollout.objects.filter(alias__name=NAME).exists()
