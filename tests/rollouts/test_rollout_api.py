"""The rollout API: start, weight, promote, abort, each audited with actor and from/to; bad input
refused with a code; scopes and the alias's own move refused while a rollout runs."""

from __future__ import annotations

import pytest

from core import events
from registry.models import AliasEvent
from tests.inference.api import MODELS
from tests.inference.factories import make_int64_model, make_scaled_model
from tests.rollouts.conftest import NAME, rollout_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def raised():
    """The domain events raised (after commit) during the test: [(type, data)]."""
    seen = []

    def receiver(sender, type, data, id, **kwargs):
        seen.append((type, data))

    events.raised.connect(receiver)
    yield seen
    events.raised.disconnect(receiver)


def trail() -> list[tuple]:
    rows = AliasEvent.objects.filter(name=NAME).order_by("created_at", "id")
    return [(e.action, e.from_version, e.to_version, e.from_weight, e.to_weight, e.actor_label) for e in rows]


def test_start_weight_promote_are_audited_with_actor_and_from_to(
    versions, manage_client, send, raised, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        started = manage_client.put(rollout_url(), {"candidate_version": "1.1.0", "weight": 10}, format="json")
    assert started.status_code == 200, started.json()
    report = started.json()
    assert report["split"] == {"primary": 90.0, "candidate": 10.0}
    assert report["rollout"]["candidate"] == "1.1.0"

    with django_capture_on_commit_callbacks(execute=True):
        manage_client.put(rollout_url(), {"weight": 30}, format="json")
    again = manage_client.put(rollout_url(), {"weight": 30}, format="json")  # nothing changes: no event
    assert again.status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        promoted = manage_client.post(rollout_url() + "/promote")
    assert promoted.status_code == 200, promoted.json()
    assert promoted.json()["version"] == "1.1.0" and promoted.json()["rollout"] is None

    assert trail()[1:] == [
        ("rollout_started", "1.0.0", "1.1.0", None, 10.0, "key:ops"),
        ("weight_changed", "1.0.0", "1.1.0", 10.0, 30.0, "key:ops"),
        ("promoted", "1.0.0", "1.1.0", 30.0, 100.0, "key:ops"),
    ]
    assert [kind for kind, _data in raised] == ["rollout.started", "rollout.weight_changed", "rollout.promoted"]
    assert raised[1][1]["weight"] == 30.0 and raised[1][1]["from_weight"] == 10.0
    # The alias is the candidate now: every request goes there.
    assert {send(f"k{index}")[1] for index in range(20)} == {"1.1.0"}
    events_listed = manage_client.get(f"{MODELS}/by-name/{NAME}/aliases").json()["events"]
    assert events_listed[0]["action"] == "promoted"


def test_abort_sends_everything_back_to_the_primary(versions, start, manage_client, send):
    start(candidate_version="1.1.0", weight=100)
    assert send("x")[1] == "1.1.0"
    response = manage_client.delete(rollout_url())
    assert response.status_code == 200 and response.json()["rollout"] is None
    assert send("x")[1] == "1.0.0"
    assert trail()[-1] == ("aborted", "1.1.0", "1.0.0", 100.0, 0.0, "key:ops")
    assert manage_client.delete(rollout_url()).json()["code"] == "rollout_not_found"


def test_the_report_shows_each_versions_requests_side_by_side(versions, start, manage_client, http_send):
    from inference.serving_stats import serving_stats

    start(candidate_version="1.1.0", weight=50)
    for index in range(40):
        http_send(f"user-{index}")
    serving_stats.flush()
    report = manage_client.get(rollout_url() + "?minutes=60").json()
    rows = {row["role"]: row for row in report["versions"]}
    assert rows["primary"]["version"] == "1.0.0" and rows["candidate"]["version"] == "1.1.0"
    assert rows["primary"]["requests"] + rows["candidate"]["requests"] == 40
    assert rows["primary"]["requests"] > 0 and rows["candidate"]["requests"] > 0
    assert rows["candidate"]["p95_ms"] is not None
    assert manage_client.get(rollout_url() + "?minutes=7").json()["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"candidate_version": "1.1.0", "weight": 150}, 400, "invalid_weight"),
        ({"candidate_version": "1.1.0", "weight": -1}, 400, "invalid_weight"),
        ({"candidate_version": "1.1.0", "candidate_name": "other", "weight": 10}, 400, "other_name"),
        ({"candidate_version": "1.0.0", "weight": 10}, 400, "candidate_is_primary"),
        ({"candidate_version": "9.9.9", "weight": 10}, 404, "model_not_found"),
        ({"weight": 10}, 400, "no_candidate"),
        ({"shadow_version": "1.0.0", "shadow_percent": 100}, 400, "shadow_is_primary"),
        ({"shadow_version": "1.1.0", "shadow_percent": 101}, 400, "invalid_shadow_percent"),
        ({"candidate_version": "1.1.0", "guard": {"window_minutes": 0}}, 400, "min_value"),
        ({"candidate_version": "1.1.0", "surprise": 1}, 400, "read_only_field"),
    ],
)
def test_bad_rollouts_are_refused_with_a_code(versions, manage_client, body, status, code):
    response = manage_client.put(rollout_url(), body, format="json")
    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert "rollout" not in {e[0] for e in trail()}


def test_a_candidate_of_another_name_or_not_ready_is_refused(versions, upload, manage_client):
    upload(make_scaled_model(3.0), "1.0.0", name="other")
    # "other" 1.0.0 is not a version of scaler: the version is looked up in the alias's name.
    response = manage_client.put(
        rollout_url(), {"candidate_name": "other", "candidate_version": "1.0.0", "weight": 5}, format="json"
    )
    assert response.json()["code"] == "other_name"
    archived = upload(make_scaled_model(4.0), "1.3.0")
    manage_client.post(f"{MODELS}/{archived['id']}/archive")
    response = manage_client.put(rollout_url(), {"candidate_version": "1.3.0", "weight": 5}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "model_not_ready")


def test_the_candidate_cannot_be_archived_and_the_alias_not_moved_during_a_rollout(versions, start, manage_client):
    start(candidate_version="1.1.0", weight=10)
    archive = manage_client.post(f"{MODELS}/{versions['1.1.0']['id']}/archive")
    assert (archive.status_code, archive.json()["code"]) == (409, "model_aliased")
    assert "candidate of the rollout" in archive.json()["detail"]
    move = manage_client.put(f"{MODELS}/by-name/{NAME}/aliases/production", {"version": "1.2.0"}, format="json")
    assert (move.status_code, move.json()["code"]) == (409, "rollout_in_progress")


def test_rollouts_need_the_manage_scope_to_change_and_read_to_look(versions, client_for, start):
    start(candidate_version="1.1.0", weight=10)
    reader = client_for("read")
    assert reader.get(rollout_url()).status_code == 200
    assert reader.put(rollout_url(), {"weight": 50}, format="json").json()["code"] == "missing_scope"
    assert reader.post(rollout_url() + "/promote").status_code == 403
    assert reader.delete(rollout_url()).status_code == 403
    assert client_for("predict").get(rollout_url()).status_code == 403


def test_an_unknown_alias_is_404(versions, manage_client):
    response = manage_client.put(rollout_url(alias="staging"), {"candidate_version": "1.1.0"}, format="json")
    assert (response.status_code, response.json()["code"]) == (404, "alias_not_found")


def test_a_shadow_only_rollout_cannot_be_promoted(versions, start, manage_client):
    start(shadow_version="1.1.0", shadow_percent=100)
    response = manage_client.post(rollout_url() + "/promote")
    assert (response.status_code, response.json()["code"]) == (400, "no_candidate")


def test_the_schema_documents_the_rollout_routes(manage_client):
    schema = manage_client.get("/api/v1/schema?format=json").json()
    paths = schema["paths"]
    rollout = paths["/api/v1/models/by-name/{name}/aliases/{alias}/rollout"]
    assert {"get", "put", "delete"} <= set(rollout)
    assert "post" in paths["/api/v1/models/by-name/{name}/aliases/{alias}/rollout/promote"]


def test_a_candidate_with_other_inputs_is_still_a_version_of_the_name(versions, upload, start, send):
    upload(make_int64_model(), "2.0.0")
    start(candidate_version="2.0.0", weight=100)
    status, version, body = send("a")
    assert version == "2.0.0" and status == 400  # the candidate's own schema refuses the row
