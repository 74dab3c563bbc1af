"""Shadow traffic: clients get exactly what they would without it, whatever the shadow does;
the copies are compared with the primary's answers and counted per minute."""

from __future__ import annotations

import orjson
import pytest
from django.test import Client

from inference.models import ShadowMinute
from inference.shadow import compare, shadow_runner, shadow_stats
from tests.inference.api import MODELS
from tests.inference.factories import make_int64_model
from tests.inference.slow_models import make_sleepy_model
from tests.rollouts.conftest import NAME, rollout_url

pytestmark = pytest.mark.django_db

ROWS = [[1.0, 2.0, 3.0], [0.5, -1.0, 7.25], [10.0, 0.0, -3.0], [1e-3, 2e3, 5.5]]


@pytest.fixture
def v2(make_key):
    """v2(row, name=NAME) -> (status, body bytes) of /v2 infer by name (the production alias)."""
    _key, raw = make_key("predict", name="v2-client")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def _infer(row, *, name: str = NAME, width: int = 3):
        body = orjson.dumps(
            {"id": "fixed", "inputs": [{"name": "X", "shape": [1, width], "datatype": "FP32", "data": row}]}
        )
        response = client.post(f"/v2/models/{name}/infer", body, content_type="application/json")
        return response.status_code, response.content

    return _infer


def shadow_minutes(shadow_id) -> dict:
    shadow_runner.join()
    shadow_stats.flush()
    rows = ShadowMinute.objects.filter(shadow_id=shadow_id)
    fields = ("copies", "dropped", "errors", "compared", "agreements")
    totals = {field: sum(getattr(row, field) for row in rows) for field in fields}
    totals["max_abs_diff"] = max((row.max_abs_diff for row in rows), default=0.0)
    return totals


def test_a_100_percent_shadow_changes_no_client_body_and_its_differences_are_counted(versions, start, v2):
    plain = [v2(row) for row in ROWS]
    start(shadow_version="1.1.0", shadow_percent=100)  # 1.1.0 answers 2X: it differs
    shadowed = [v2(row) for row in ROWS]
    assert shadowed == plain
    assert all(status == 200 for status, _body in plain)
    counted = shadow_minutes(versions["1.1.0"]["id"])
    assert counted["copies"] == counted["compared"] == len(ROWS)
    assert counted["agreements"] == 0
    assert counted["max_abs_diff"] == pytest.approx(2e3)


def test_the_same_file_under_another_version_agrees_every_time(versions, start, v2, manage_client):
    start(shadow_version="1.2.0", shadow_percent=100)
    for row in ROWS:
        v2(row)
    shadow_runner.join()
    shadow_stats.flush()
    report = manage_client.get(rollout_url()).json()
    assert report["shadow"]["compared"] == len(ROWS)
    assert report["shadow"]["agreement"] == 1.0
    assert report["shadow"]["max_abs_diff"] == 0.0
    start(shadow_version="1.1.0")
    for row in ROWS:
        v2(row)
    shadow_runner.join()
    shadow_stats.flush()
    assert manage_client.get(rollout_url()).json()["shadow"]["agreement"] < 1.0


def test_a_shadow_that_raises_changes_nothing_for_clients(versions, upload, start, v2):
    upload(make_int64_model(), "3.0.0")  # takes other inputs: every copy fails
    plain = [v2(row) for row in ROWS]
    start(shadow_version="3.0.0", shadow_percent=100)
    assert [v2(row) for row in ROWS] == plain
    counted = shadow_minutes(_id("3.0.0"))
    assert (counted["copies"], counted["errors"], counted["compared"]) == (len(ROWS), len(ROWS), 0)


def _id(version):
    from registry.models import MLModel

    return MLModel.objects.get(name=NAME, version=version).pk


def test_an_archived_shadow_changes_nothing_for_clients(versions, start, v2, manage_client):
    plain = [v2(row) for row in ROWS]
    start(shadow_version="1.1.0", shadow_percent=100)
    archived = manage_client.post(f"{MODELS}/{versions['1.1.0']['id']}/archive")
    assert archived.status_code == 200, archived.json()  # a shadow answers no one: it may be archived
    assert [v2(row) for row in ROWS] == plain
    counted = shadow_minutes(versions["1.1.0"]["id"])
    assert (counted["errors"], counted["compared"]) == (len(ROWS), 0)


def test_a_shadow_that_times_out_changes_nothing_for_clients(upload, manage_client, start, v2, settings):
    settings.SHADOW_TIMEOUT_SECONDS = 0.2
    upload(make_sleepy_model(1), "1.0.0", name="sleepy")  # four iterations for a row of ones
    slow = upload(make_sleepy_model(), "2.0.0", name="sleepy")  # four million: stopped at the deadline
    manage_client.put(f"{MODELS}/by-name/sleepy/aliases/production", {"version": "1.0.0"}, format="json")
    row = [1.0, 1.0, 1.0, 1.0]
    plain = v2(row, name="sleepy", width=4)
    start(name="sleepy", shadow_version="2.0.0", shadow_percent=100)
    assert v2(row, name="sleepy", width=4) == plain
    counted = shadow_minutes(slow["id"])
    assert (counted["copies"], counted["errors"]) == (1, 1)


def test_a_fraction_copies_about_that_share(versions, start, v2):
    start(shadow_version="1.2.0", shadow_percent=25)
    for index in range(200):  # about 50 copies: within the queue (SHADOW_QUEUE_SIZE) while they wait
        v2([float(index), 1.0, 2.0])
    counted = shadow_minutes(versions["1.2.0"]["id"])
    assert 30 <= counted["copies"] <= 70
    assert counted["agreements"] == counted["compared"] == counted["copies"]


def test_a_full_queue_drops_copies_and_counts_them(versions, start, v2, settings, monkeypatch):
    from inference import shadow
    from inference.serving import serving_cache

    settings.SHADOW_QUEUE_SIZE = 1
    settings.SHADOW_THREADS = 1
    runner = shadow.ShadowRunner()
    monkeypatch.setattr(shadow, "offer", runner.offer)
    start(shadow_version="1.2.0", shadow_percent=100)
    plan = serving_cache.by_name(NAME).routing_plan
    # The runner's one thread busy with a copy that takes until released, as a slow shadow run does.
    busy = _Busy()
    runner._ensure_threads()
    runner._queue.put(shadow._Copy(plan, plan.primary, busy, b"", None, None, 0.0))
    busy.started.wait(timeout=30)
    try:
        for row in ROWS:
            v2(row)  # the first copy waits in the queue (size 1), the others are dropped
    finally:
        busy.release.set()
    runner.join()
    counted = shadow_minutes(versions["1.2.0"]["id"])
    assert counted["dropped"] == len(ROWS) - 1
    assert counted["compared"] == 1
    assert counted["errors"] == 1  # the busy copy, which never decoded


class _Busy:
    """A protocol whose decode holds the shadow thread until released, then fails."""

    def __init__(self):
        import threading

        self.started, self.release = threading.Event(), threading.Event()

    def decode(self, model, body, incoming):
        self.started.set()
        self.release.wait(timeout=30)
        raise ValueError("released")


@pytest.mark.parametrize(
    ("primary", "shadow", "agree"),
    [
        ({"label": [1, 2]}, {"label": [1, 2]}, True),
        ({"label": [1, 2]}, {"label": [1, 3]}, False),
        ({"Y": [[1.0, 2.0]]}, {"Y": [[1.0, 2.0000001]]}, True),
        ({"Y": [[1.0, 2.0]]}, {"Y": [[1.0, 2.5]]}, False),
        ({"Y": [[1.0, 2.0]]}, {"Y": [[1.0, 2.0, 3.0]]}, False),
        ({"p": [{"a": 0.5}]}, {"p": [{"a": 0.5}]}, True),
    ],
)
def test_outputs_are_compared_as_labels_or_tensors(primary, shadow, agree):
    assert compare(primary, shadow).agree is agree


def test_old_shadow_minutes_are_deleted_with_the_serving_statistics(versions, start, v2, settings):
    from datetime import timedelta

    from django.utils import timezone

    from inference.serving_stats import serving_stats_cleanup

    start(shadow_version="1.2.0", shadow_percent=100)
    v2(ROWS[0])
    shadow_minutes(versions["1.2.0"]["id"])
    assert ShadowMinute.objects.count() == 1
    later = timezone.now() + timedelta(days=settings.SERVING_STATS_RETENTION_DAYS, minutes=2)
    assert serving_stats_cleanup(now=later) >= 1
    assert ShadowMinute.objects.count() == 0


def test_a_copy_waits_for_the_process_to_be_idle_and_is_dropped_when_it_never_is(versions, start, v2, settings):
    """A shadow never runs beside a client's request: while one is being answered the copy
    waits, and one that finds no idle moment within SHADOW_MAX_WAIT_SECONDS is dropped."""
    from inference import shadow

    start(shadow_version="1.2.0", shadow_percent=100)
    settings.SHADOW_MAX_WAIT_SECONDS = 0.05
    shadow.client_started()  # a client being answered for as long as the copy may wait
    try:
        assert v2([1.0, 2.0, 3.0])[0] == 200
        shadow_runner.join()  # the copy gave up waiting
    finally:
        shadow.client_finished()
    counted = shadow_minutes(versions["1.2.0"]["id"])
    assert (counted["copies"], counted["dropped"], counted["compared"]) == (1, 1, 0)

    settings.SHADOW_MAX_WAIT_SECONDS = 600
    assert v2([1.0, 2.0, 3.0])[0] == 200  # nobody else is answered: the copy runs
    counted = shadow_minutes(versions["1.2.0"]["id"])
    assert (counted["copies"], counted["dropped"], counted["compared"]) == (2, 1, 1)
