"""The threshold watch raises `threshold.crossed` once per change of a version's level."""

from __future__ import annotations

import pytest
from django.utils import timezone

from core import events
from inference.models import ServingMinute
from monitoring.models import ThresholdState
from monitoring.threshold_watch import threshold_watch
from tests.registry.onnx_factories import make_add_model
from tests.registry.versions import ready_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def raised(django_capture_on_commit_callbacks):
    seen = []

    def receiver(sender, *, type, data, id, **kwargs):  # noqa: A002
        if type == "threshold.crossed":
            seen.append(data)

    events.raised.connect(receiver, dispatch_uid="test-threshold-watch")
    yield seen
    events.raised.disconnect(dispatch_uid="test-threshold-watch")


def serve(model, *, requests: int, errors: int) -> None:
    ServingMinute.objects.update_or_create(
        model=model,
        minute=timezone.now().replace(second=0, microsecond=0),
        defaults={"requests": requests, "errors": errors, "server_errors": errors, "le_1": requests},
    )


def watch(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return threshold_watch()


def test_levels_changing_raise_once_each(raised, django_capture_on_commit_callbacks):
    model = ready_version(make_add_model(), name="adder", version="1.0.0")
    serve(model, requests=100, errors=0)
    assert watch(django_capture_on_commit_callbacks) == {"judged": 1, "crossed": 0}  # starts green: nothing
    serve(model, requests=100, errors=2)
    watch(django_capture_on_commit_callbacks)
    serve(model, requests=100, errors=2)
    watch(django_capture_on_commit_callbacks)  # still amber: nothing more
    serve(model, requests=100, errors=0)
    watch(django_capture_on_commit_callbacks)
    assert [(item["from_level"], item["to_level"]) for item in raised] == [("green", "amber"), ("amber", "green")]
    assert raised[0]["reason"] == "server-error rate 2.0% ≥ 1.0%"
    assert (raised[0]["name"], raised[0]["version"], raised[0]["server_errors"]) == ("adder", "1.0.0", 2)


def test_idle_keeps_the_last_level(raised, django_capture_on_commit_callbacks):
    model = ready_version(make_add_model(), name="adder", version="1.0.0")
    serve(model, requests=100, errors=10)
    watch(django_capture_on_commit_callbacks)
    serve(model, requests=5, errors=5)  # under MONITOR_MIN_REQUESTS: no judgement
    assert watch(django_capture_on_commit_callbacks) == {"judged": 0, "crossed": 0}
    assert ThresholdState.objects.get(model=model).level == "red"
    assert [(item["from_level"], item["to_level"]) for item in raised] == [("green", "red")]


def test_thresholds_of_the_name_apply(raised, django_capture_on_commit_callbacks):
    from monitoring.models import Thresholds

    Thresholds.objects.create(name="adder", error_rate_amber=0.5, error_rate_red=0.9)
    model = ready_version(make_add_model(), name="adder", version="1.0.0")
    serve(model, requests=100, errors=10)
    watch(django_capture_on_commit_callbacks)
    assert raised == []


def test_client_errors_never_cross_a_threshold(raised, django_capture_on_commit_callbacks):
    """Bad input, a missing scope or a throttle are the callers' to fix: a version answering
    only 4xx stays green, as on the dashboard."""
    model = ready_version(make_add_model(), name="adder", version="1.0.0")
    ServingMinute.objects.update_or_create(
        model=model,
        minute=timezone.now().replace(second=0, microsecond=0),
        defaults={"requests": 100, "errors": 90, "client_errors": 90, "le_1": 100},
    )
    watch(django_capture_on_commit_callbacks)
    assert raised == []
