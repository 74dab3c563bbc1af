"""Rollouts where ops look (issues 19 and 20): on the name page, each alias's rollout
(candidate and weight, shadow and share copied, the guard, tripped or not and why) with a link
to the alias's rollout panel, and the versions marked as candidate or shadow; on the dashboard,
a guard trip of the range as a notice at the top and the rollouts running."""

from __future__ import annotations

import html as entities
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from registry import rollouts, services
from registry.models import AliasEvent, ModelAlias, Rollout
from tests.console.test_name_page import staff
from tests.registry.onnx_factories import make_iris_model
from tests.registry.versions import ready_version

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("console-dashboard")
REASON = "candidate server-error rate 12.0% exceeds the primary's 0.0% by more than 5 points"


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def name_url(name: str = "iris") -> str:
    return reverse("admin:registry_mlmodel_name", args=[name])


def words(html: str) -> str:
    return entities.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip())


@pytest.fixture
def rollout(ops_user):
    """iris@production on 1.0.0, 1.1.0 its candidate at 10 %, 1.2.0 its shadow at 25 %, the
    guard on; set through registry.rollouts as the panel and the API do."""
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        ready_version(make_iris_model(zipmap=False), name="iris", version=version)
    services.alias_set(name="iris", alias="production", version="1.0.0", actor=ops_user)
    change = rollouts.rollout_set(
        name="iris",
        alias="production",
        candidate="1.1.0",
        weight=10,
        shadow="1.2.0",
        shadow_percent=25,
        guard={"guard_enabled": True},
        actor=ops_user,
    )
    return change.rollout


def alias_row(html: str, alias: str = "production") -> str:
    row = html[html.index(f'<tr data-alias="{alias}"') :]
    return row[: row.index("</tr>")]


def version_row(html: str, version: str) -> str:
    row = html[html.index(f'<tr data-version="{version}"') :]
    return row[: row.index("</tr>")]


def test_the_name_page_shows_the_alias_s_rollout_and_links_to_its_panel(admin_client, rollout):
    html = admin_client.get(name_url()).content.decode()
    row = alias_row(html)
    assert "1.0.0 → 1.1.0 at 10 %" in words(row)
    assert "shadow 1.2.0: 25 % copied" in words(row)
    assert "guard on, not tripped" in words(row)
    panel = reverse("admin:registry_modelalias_rollout", args=[rollout.alias_id])
    assert f'<a href="{panel}" class="button mf-rollout-link" aria-label="Rollout of @production">Rollout…</a>' in row
    # The versions table marks the candidate and the shadow.
    assert '<span class="mf-role-badge">candidate of @production (10 %)</span>' in version_row(html, "1.1.0")
    assert '<span class="mf-role-badge">shadow of @production (25 % copied)</span>' in version_row(html, "1.2.0")
    assert "mf-role-badge" not in version_row(html, "1.0.0")


def test_a_tripped_guard_says_when_and_why_on_the_name_page(admin_client, rollout):
    assert rollouts.rollout_trip(rollout_id=rollout.pk, reason=REASON) is not None
    row = words(alias_row(admin_client.get(name_url()).content.decode()))
    assert "1.0.0 → 1.1.0 at 0 %" in row
    assert "guard tripped" in row and REASON in row


def test_an_alias_without_a_rollout_offers_to_start_one(admin_client, ops_user):
    ready_version(make_iris_model(zipmap=False), name="iris", version="1.0.0")
    services.alias_set(name="iris", alias="production", version="1.0.0", actor=ops_user)
    row = alias_row(admin_client.get(name_url()).content.decode())
    alias = ModelAlias.objects.get(name="iris", alias="production")
    assert '<td class="mf-rollout"><span class="mf-muted">none</span></td>' in row
    assert f'href="{reverse("admin:registry_modelalias_rollout", args=[alias.pk])}"' in row


def test_the_rollout_link_is_for_those_who_may_read_rollouts(django_user_model, rollout):
    viewer = staff(django_user_model, "registry.view_mlmodel", "registry.view_modelalias", username="viewer")
    html = viewer.get(name_url()).content.decode()
    assert "Rollout…" not in html
    assert "1.0.0 → 1.1.0 at 10 %" in words(alias_row(html))  # what runs is still shown
    reader = staff(django_user_model, "registry.view_mlmodel", "registry.view_rollout", username="reader")
    assert "Rollout…" in reader.get(name_url()).content.decode()


def test_the_dashboard_notices_a_guard_trip_and_lists_running_rollouts(admin_client, rollout):
    html = admin_client.get(DASHBOARD).content.decode()
    assert 'id="mf-guard-trips"' not in html  # nothing tripped yet
    running = words(html[html.index('id="mf-rollouts"') : html.index('id="mf-serving"')])
    assert "iris@production: 1.0.0 → 1.1.0 at 10 %; shadow 1.2.0 (25 % copied). Rollout panel" in running
    assert (
        f'<a href="{reverse("admin:registry_modelalias_rollout", args=[rollout.alias_id])}">Rollout panel</a>' in html
    )

    rollouts.rollout_trip(rollout_id=rollout.pk, reason=REASON)
    html = admin_client.get(DASHBOARD).content.decode()
    # At the top: before the status per version.
    assert html.index('id="mf-guard-trips"') < html.index('id="mf-health"')
    notice = words(html[html.index('id="mf-guard-trips"') : html.index("</section>")])
    trip = AliasEvent.objects.get(action=AliasEvent.Action.GUARD_TRIPPED)
    assert (
        f"Rollout guard tripped on iris@production: candidate 1.1.0 set to 0 % at "
        f"{trip.created_at:%Y-%m-%d %H:%M:%S} UTC. {REASON}"
    ) in notice
    assert REASON in notice
    assert f'href="{name_url()}#mf-aliases"' in html
    running = words(html[html.index('id="mf-rollouts"') : html.index('id="mf-serving"')])
    assert "1.0.0 → 1.1.0 at 0 %" in running and "guard tripped" in running
    # The trip is one of the alias changes drawn on the charts as well.
    assert "iris@production guard tripped: 1.1.0 → 1.0.0" in html


def test_a_trip_outside_the_range_is_not_noticed(admin_client, rollout):
    event = rollouts.rollout_trip(rollout_id=rollout.pk, reason=REASON)
    AliasEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert 'id="mf-guard-trips"' not in admin_client.get(DASHBOARD, {"range": "1h"}).content.decode()
    assert 'id="mf-guard-trips"' in admin_client.get(DASHBOARD, {"range": "6h"}).content.decode()
    # Once the rollout ends, it is no longer listed as running.
    rollouts.rollout_abort(name="iris", alias="production")
    assert not Rollout.objects.exists()
    assert 'id="mf-rollouts"' not in admin_client.get(DASHBOARD).content.decode()
