"""The rollout guard: a candidate that answers with server errors loses its traffic by itself,
with an audited event, and GET /metrics shows it; a healthy candidate keeps its weight."""

from __future__ import annotations

import pytest

from inference.rollout_guard import rollouts_guard
from inference.serving_stats import serving_stats
from inference.sessions import get_pool
from registry.models import AliasEvent, Rollout
from registry.storage import ModelStore
from tests.rollouts.conftest import NAME, rollout_url

pytestmark = pytest.mark.django_db

GUARD = {"enabled": True, "min_requests": 20, "error_margin": 5, "window_minutes": 5}


def lose_file(model: dict) -> None:
    """The candidate's file is gone from the storage: it answers 503 model_file_unavailable."""
    ModelStore().path_for(model["file_sha256"]).unlink()
    get_pool().evict(model["file_sha256"])


def test_a_candidate_with_server_errors_trips_the_guard_and_stops_getting_requests(
    versions, start, http_send, client_for
):
    start(candidate_version="1.1.0", weight=50, guard=GUARD)
    lose_file(versions["1.1.0"])
    answers = [http_send(f"user-{index}") for index in range(80)]
    failed = [r for r in answers if r.status_code >= 500]
    assert failed and all(r.headers["X-Model-Version"] == "1.1.0" for r in failed)
    serving_stats.flush()

    tripped = rollouts_guard()

    assert len(tripped) == 1
    event = AliasEvent.objects.get(name=NAME, action="guard_tripped")
    assert (event.from_version, event.to_version, event.to_weight, event.actor_label) == (
        "1.1.0",
        "1.0.0",
        0.0,
        "guard",
    )
    assert event.from_weight == 50.0 and "error rate" in event.detail
    rollout = Rollout.objects.get(alias__name=NAME)
    assert rollout.weight == 0.0 and rollout.guard_tripped_at is not None
    # Clients stop getting it: every key goes to the primary now.
    assert {http_send(f"user-{index}").headers["X-Model-Version"] for index in range(80)} == {"1.0.0"}
    assert rollouts_guard() == []  # nothing more to trip
    report = client_for("read").get(rollout_url()).json()
    assert report["rollout"]["guard_reason"] == event.detail
    assert report["events"][0]["action"] == "guard_tripped"

    metrics = client_for("read").get("/metrics").content.decode()
    assert f'modelforge_rollout_guard_trips_total{{alias="production",model="{NAME}"}} 1.0' in metrics
    assert f'modelforge_rollout_weight_percent{{alias="production",candidate="1.1.0",model="{NAME}"}} 0.0' in metrics


def test_a_healthy_candidate_keeps_its_weight(versions, start, http_send):
    # Judged on errors only: on a loaded machine the candidate's first requests (its session
    # loading) can make its p95 of 40 requests slower than the primary's, which is no fault.
    start(candidate_version="1.2.0", weight=50, guard={**GUARD, "latency_margin": 1_000_000})
    assert all(http_send(f"user-{index}").status_code == 200 for index in range(80))
    serving_stats.flush()
    assert rollouts_guard() == []
    assert Rollout.objects.get(alias__name=NAME).weight == 50.0


def test_the_guard_waits_for_its_minimum_of_requests(versions, start, http_send):
    start(candidate_version="1.1.0", weight=50, guard={**GUARD, "min_requests": 1000})
    lose_file(versions["1.1.0"])
    for index in range(40):
        http_send(f"user-{index}")
    serving_stats.flush()
    assert rollouts_guard() == []


def test_without_the_guard_nothing_trips(versions, start, http_send):
    start(candidate_version="1.1.0", weight=50)
    lose_file(versions["1.1.0"])
    for index in range(40):
        http_send(f"user-{index}")
    serving_stats.flush()
    assert rollouts_guard() == []


def test_the_guard_is_scheduled_on_celery_beat_and_the_embedded_runner(versions, start, http_send, settings):
    from core.embedded_runner import runner
    from inference.tasks import rollout_guard

    assert settings.CELERY_BEAT_SCHEDULE["rollout-guard"]["task"] == rollout_guard.name
    assert rollouts_guard in [work for work, _seconds in runner._periodic]
    start(candidate_version="1.1.0", weight=50, guard=GUARD)
    lose_file(versions["1.1.0"])
    for index in range(60):
        http_send(f"user-{index}")
    serving_stats.flush()
    assert rollout_guard() == 1  # what beat's task does: one trip
    assert Rollout.objects.get(alias__name=NAME).weight == 0.0
