"""The dashboard: numbers from recorded serving statistics (real requests, flushed), status by
threshold, client and server errors apart, time ranges and auto-refresh, alias changes on the
charts, jobs by status, the workers as /api/v1/health/celery reports them, and its place in the
admin's navigation."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from inference.models import ServingMinute
from inference.serving_stats import serving_stats
from monitoring.models import Thresholds
from registry.models import AliasEvent, MLModel
from tests.console.test_model_page import register, try_it
from tests.inference.api import predict
from tests.inference.test_metrics import scrape, value
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("console-dashboard")
ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


@pytest.fixture
def served(ready_model, predict_client):
    """iris 1.0.0: 4 requests (1 client error, 1 cache hit); iris 2.0.0: 1 request; then flushed."""
    first = ready_model(make_iris_model(zipmap=False), name="iris", version="1.0.0")
    second = ready_model(make_iris_model(zipmap=False), name="iris", version="2.0.0")
    assert predict(predict_client, first["id"], {"X": ROW}).status_code == 200
    assert predict(predict_client, first["id"], {"X": ROW}).status_code == 200  # cache hit
    assert predict(predict_client, first["id"], {"X": [[1.0, 2.0, 3.0, 4.0]]}).status_code == 200
    assert predict(predict_client, first["id"], {"X": [[1.0]]}).status_code == 400
    assert predict(predict_client, second["id"], {"X": ROW}).status_code == 200
    serving_stats.flush()
    return first, second


def minutes_ago(minutes: float):
    return (timezone.now() - timedelta(minutes=minutes)).replace(second=0, microsecond=0)


def record(model: MLModel, *, at, requests: int, server_errors: int = 0, client_errors: int = 0, **buckets):
    """A minute as the serving statistics write it: latencies in buckets (le_1=n...)."""
    buckets = buckets or {"le_1": requests}
    return ServingMinute.objects.create(
        model=model,
        minute=at,
        requests=requests,
        errors=server_errors + client_errors,
        server_errors=server_errors,
        client_errors=client_errors,
        **buckets,
    )


def section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>" if element_id == "mf-health" else "</table>", start)]


def test_dashboard_shows_per_version_figures_from_recorded_data(admin_client, served):
    first, second = served
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    rows = {row["model_version"]: row for row in response.context["serving"]["summary"]}
    assert (rows["1.0.0"]["requests"], rows["1.0.0"]["client_errors"], rows["1.0.0"]["server_errors"]) == (4, 1, 0)
    assert rows["1.0.0"]["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)  # 1 hit in 3 lookups
    assert rows["1.0.0"]["mean_batch_size"] == 1.0
    assert rows["1.0.0"]["p50_ms"] is not None and rows["1.0.0"]["p95_ms"] >= rows["1.0.0"]["p50_ms"]
    assert rows["2.0.0"]["requests"] == 1
    html = response.content.decode()
    assert '<span class="mf-big" id="mf-total-requests">5</span>' in html
    assert '<span class="mf-big" id="mf-total-client-errors">1</span>' in html
    assert '<span class="mf-big" id="mf-total-server-errors">0</span>' in html
    first_row = html[html.index(f'<tr data-model-id="{first["id"]}"') :]
    first_row = first_row[: first_row.index("</tr>")]
    assert '<td class="mf-num" data-label="Requests">4</td>' in first_row
    assert '<td class="mf-num" data-label="Client errors (4xx)">1 (25%)</td>' in first_row
    assert '<td class="mf-num" data-label="Server errors (5xx)">0</td>' in first_row
    assert "33%" in first_row  # the cache hit rate in words and digits
    # Five charts, each an image with a title and a text description, and the same numbers as tables.
    assert html.count('<svg class="mf-chart" role="img"') == 5
    assert "<desc>5 requests and 1 errors in" in html
    assert "<desc>0 server errors (5xx) and 1 client errors (4xx) in" in html
    for title in ("p95 latency per 15 minutes (ms)", "Mean batch size per 15 minutes", "Latency histogram (ms)"):
        assert f"<title>{title}</title>" in html
    assert sum(row["count"] for row in response.context["serving"]["histogram"]) == 5
    series_table = section(html, "mf-series-table")
    assert series_table.count("<tr>") == len(response.context["serving"]["series"]) + 1  # and the header


def test_status_by_threshold_in_words_and_colour_at_the_top(admin_client):
    red, amber, green, idle = (register(name, "1.0.0") for name in ("red-model", "amber-model", "green-model", "idle"))
    now = minutes_ago(5)
    record(red, at=now, requests=100, server_errors=10)  # 10% ≥ the default red 5%
    record(amber, at=now, requests=100, server_errors=2)  # 2% ≥ the default amber 1%
    record(green, at=now, requests=100, client_errors=60)  # client errors are the callers': green
    record(idle, at=now, requests=3, server_errors=3)  # fewer than 20 requests: not judged
    html = admin_client.get(DASHBOARD).content.decode()
    health = section(html, "mf-health")
    assert html.index('id="mf-health"') < html.index('id="mf-serving-table"')  # at the top
    levels = re.findall(
        r'<strong>([\w-]+) 1.0.0</strong>\s*serving: <span class="mf-status mf-(\w+)">(\w+)</span>', health
    )
    # Worst first, the level as a word and as a colour class.
    assert levels == [
        ("red-model", "red", "Red"),
        ("amber-model", "amber", "Amber"),
        ("green-model", "green", "Green"),
        ("idle", "idle", "Idle"),
    ]
    assert "server-error rate 10.0% ≥ 5.0%" in health
    assert "3 requests, fewer than 20 to judge" in health
    # The serving table says the same per row, with a link to each name's thresholds.
    row = html[html.index(f'<tr data-model-id="{amber.pk}"') :]
    assert '<span class="mf-status mf-amber" title="server-error rate 2.0% ≥ 1.0%">Amber</span>' in row[:1500]
    assert f'href="{reverse("admin:monitoring_thresholds_add")}?name=amber-model"' in row[:1500]

    # A name's own thresholds: amber-model tolerates 3% server errors; a p95 limit turns green red.
    own = Thresholds.objects.create(name="amber-model", error_rate_amber=0.03, error_rate_red=0.1)
    Thresholds.objects.create(name="green-model", p95_amber_ms=0.5, p95_red_ms=0.9)
    html = admin_client.get(DASHBOARD).content.decode()
    health = section(html, "mf-health")
    assert re.search(r'<strong>amber-model 1.0.0</strong>\s*serving: <span class="mf-status mf-green">Green', health)
    assert re.search(
        r'<strong>green-model 1.0.0</strong>\s*serving: <span class="mf-status mf-red">Red</span>\s*'
        r'<span class="mf-reason">p95',
        health,
    )
    assert f'href="{reverse("admin:monitoring_thresholds_change", args=[own.pk])}"' in html
    assert 'id="mf-edit-thresholds">Edit thresholds</a>' in health
    assert f'href="{reverse("admin:monitoring_thresholds_changelist")}"' in health


def test_each_range_has_its_window_and_its_periods(admin_client):
    model = register("ranged", "1.0.0")
    for minutes, requests in ((20, 1), (3 * 60, 10), (20 * 60, 100), (3 * 24 * 60, 1000)):
        record(model, at=minutes_ago(minutes), requests=requests)
    record(model, at=minutes_ago(8 * 24 * 60), requests=10_000)  # older than every range
    expected = {"1h": (1, 1), "6h": (11, 5), "24h": (111, 15), "7d": (1111, 60)}
    for key, (requests, bucket_minutes) in expected.items():
        response = admin_client.get(DASHBOARD, {"range": key})
        serving = response.context["serving"]
        assert serving["totals"]["requests"] == requests, key
        assert sum(row["requests"] for row in serving["series"]) == requests, key
        starts = [row["start"] for row in serving["series"]]
        assert {later - earlier for earlier, later in zip(starts, starts[1:], strict=False)} == {
            timedelta(minutes=bucket_minutes)
        }
        span = response.context["range"].span
        assert span / timedelta(minutes=bucket_minutes) <= len(starts) <= span / timedelta(minutes=bucket_minutes) + 1
        html = response.content.decode()
        assert f'<strong aria-current="page">{key[:-1]} {key[-1]}</strong>' in html
        assert f"the last {response.context['range'].label}" in html
    # An unknown range is the default, 24 hours.
    response = admin_client.get(DASHBOARD, {"range": "1y"})
    assert response.status_code == 200 and response.context["range"].key == "24h"


def test_auto_refresh_keeps_the_range_and_the_model(admin_client):
    model = register("refreshed", "1.0.0")
    record(model, at=minutes_ago(2), requests=5)
    html = admin_client.get(DASHBOARD, {"range": "6h", "refresh": "10", "model": str(model.pk)}).content.decode()
    # A <meta> refresh reloads this very address (its query string: range, refresh, model).
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "reloads every 10 s" in html
    ranges = html[html.index('id="mf-range"') : html.index('id="mf-refresh"')]
    assert f'href="?range=1h&amp;refresh=10&amp;model={model.pk}"' in ranges
    assert f'href="?refresh=10&amp;model={model.pk}"' in ranges  # 24 h, the default
    refresh = html[html.index('id="mf-refresh"') : html.index("</nav>", html.index('id="mf-refresh"'))]
    assert f'href="?range=6h&amp;model={model.pk}"' in refresh  # off, the default
    assert f'href="?range=6h&amp;refresh=60&amp;model={model.pk}"' in refresh
    assert '<strong aria-current="true">10 s</strong>' in refresh
    assert 'href="?range=6h&amp;refresh=10">Show all models</a>' in html
    # Off: no reload.
    html = admin_client.get(DASHBOARD, {"range": "6h"}).content.decode()
    assert 'http-equiv="refresh"' not in html and "reloads every" not in html
    assert 'http-equiv="refresh"' not in admin_client.get(DASHBOARD, {"refresh": "5"}).content.decode()


def test_alias_changes_and_rollout_steps_are_drawn_on_the_time_charts(admin_client):
    model = register("marked", "1.0.0")
    record(model, at=minutes_ago(30), requests=5)
    moved = AliasEvent.objects.create(
        name="marked", alias="production", action="moved", from_version="0.9.0", to_version="1.0.0", actor_label="ops"
    )
    AliasEvent.objects.create(name="marked", alias="canary", action="promoted", to_version="1.1.0")
    old = AliasEvent.objects.create(name="marked", alias="production", action="created", to_version="0.9.0")
    AliasEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=3))
    AliasEvent.objects.filter(pk=moved.pk).update(created_at=timezone.now() - timedelta(minutes=20))

    html = admin_client.get(DASHBOARD, {"range": "1h"}).content.decode()
    listed = html[html.index('id="mf-markers"') : html.index("</ol>")]
    assert "marked@production moved: 0.9.0 → 1.0.0 by ops" in listed
    assert "marked@canary promoted: – → 1.1.0" in listed  # an action added later is drawn too
    assert "0.9.0</li>" not in listed  # created 3 hours ago: outside the hour
    # Each of the four time charts draws both, numbered as listed, the words in the tooltip.
    assert html.count('<g class="mf-marker">') == 8
    assert html.count("UTC: marked@production moved: 0.9.0 → 1.0.0 by ops</title>") == 4
    assert html.count("Dashed lines mark 2 alias changes.") == 4
    # Six hours hold the creation too.
    html = admin_client.get(DASHBOARD, {"range": "6h"}).content.decode()
    assert html.count('<g class="mf-marker">') == 12


def test_a_refused_try_it_counts_like_a_refused_api_request(admin_client, predict_client, read_client):
    """The admin's Try it is a door of the same exchange: a refusal (bad input) is a client
    error in /metrics and in the dashboard's minutes, as the API's own refusal is."""
    iris = register("tried", "1.0.0")
    labels = {"model": "tried", "version": "1.0.0", "outcome": "client_error"}
    before = value(scrape(read_client), "modelforge_requests_total", **labels)
    assert try_it(admin_client, iris, '{"X": [[5.1, 3.5]]}').status_code == 400  # refused: wrong shape
    assert predict(predict_client, iris.pk, {"X": [[5.1, 3.5]]}).status_code == 400
    assert value(scrape(read_client), "modelforge_requests_total", **labels) - before == 2
    serving_stats.flush()
    (minute,) = ServingMinute.objects.filter(model=iris)
    assert (minute.requests, minute.errors, minute.client_errors, minute.server_errors) == (2, 2, 2, 0)
    html = admin_client.get(DASHBOARD).content.decode()
    assert '<span class="mf-big" id="mf-total-client-errors">2</span>' in html


def test_dashboard_charts_one_version_when_asked(admin_client, served):
    _, second = served
    response = admin_client.get(DASHBOARD, {"model": second["id"]})
    serving = response.context["serving"]
    assert sum(row["requests"] for row in serving["series"]) == 1
    assert sum(row["count"] for row in serving["histogram"]) == 1
    html = response.content.decode()
    assert "iris 2.0.0: the last 24 hours, per 15 minutes" in html
    # The p95 chart draws this model's amber and red thresholds (the defaults here).
    assert "amber at 250 ms" in html and "red at 1,000 ms" in html
    assert admin_client.get(DASHBOARD, {"model": "not-a-uuid"}).status_code == 200


def test_dashboard_without_traffic_says_so(admin_client):
    html = admin_client.get(DASHBOARD).content.decode()
    assert "No requests were recorded in the last 24 hours." in html
    assert (
        "No requests were recorded in the last 1 hour" in admin_client.get(DASHBOARD, {"range": "1h"}).content.decode()
    )


def test_dashboard_shows_jobs_by_status_and_the_embedded_workers(admin_client, settings):
    from jobs.models import Job

    settings.CELERY_BROKER_URL = ""
    model = MLModel.objects.create(name="m", version="1.0.0")
    for status in ("queued", "failed", "failed"):
        Job.objects.create(model=model, model_name="m", model_version="1.0.0", status=status, input_format="json",
                           input_data={"X": [1]})  # fmt: skip
    response = admin_client.get(DASHBOARD)
    rows = {row["status"]: row for row in response.context["jobs"]["rows"]}
    assert (rows["failed"]["total"], rows["queued"]["total"], rows["completed"]["total"]) == (2, 1, 0)
    assert response.context["jobs"]["active"] == 1
    workers = response.context["workers"]
    assert workers["mode"] == "embedded" and workers["healthy"]
    html = response.content.decode()
    assert "Workers and queues (embedded)" in html and "Broker: <strong>none</strong>" in html
    assert "answering, 2 threads" in html


def test_dashboard_is_for_staff_only(client, django_user_model):
    assert client.get(DASHBOARD).status_code == 302
    user = django_user_model.objects.create_user(username="plain", password="plain-password-123")
    client.force_login(user)
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_dashboard_is_in_the_index_and_the_navigation_sidebar(admin_client, client, django_user_model):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'<a href="{DASHBOARD}">Dashboard</a>' in index
    # Every admin page's sidebar: "Ops console" first, its one entry the dashboard.
    page = admin_client.get(reverse("admin:registry_mlmodel_changelist")).content.decode()
    sidebar = page[page.index('id="nav-sidebar"') : page.index("</nav>", page.index('id="nav-sidebar"'))]
    assert sidebar.index("Ops console") < sidebar.index("Registry")
    assert f'<a href="{DASHBOARD}">Dashboard</a>' in sidebar
    # Staff without the dashboard's permission see neither the entry nor the page.
    staff = django_user_model.objects.create_user(username="staff", password="staff-password-123", is_staff=True)
    client.force_login(staff)
    assert DASHBOARD not in client.get(reverse("admin:index")).content.decode()
    assert client.get(DASHBOARD).status_code == 403


def test_thresholds_admin_refuses_amber_above_red_and_rates_outside_0_to_1(admin_client, settings):
    settings.MONITOR_ERROR_RATE_RED = 0.05
    add = reverse("admin:monitoring_thresholds_add")
    page = admin_client.get(add, {"name": "iris"}).content.decode()
    assert 'value="iris"' in page and "Default: 5.0%." in page and "Default: 1,000 ms." in page

    def post(**fields):
        return admin_client.post(add, {"name": "iris", **fields})

    refused = post(error_rate_amber="0.2", error_rate_red="0.1").content.decode()
    assert "The amber server-error rate (20.0%) is above the red one (10.0%): amber must be at most red." in refused
    # Against the default of the field left empty.
    refused = post(error_rate_amber="0.08").content.decode()
    assert "The amber server-error rate (8.0%) is above the red one (5.0%, the default)" in refused
    refused = post(p95_red_ms="100").content.decode()
    assert "The amber p95 latency (250 ms, the default) is above the red one (100 ms)" in refused
    refused = post(error_rate_red="1.5").content.decode()
    assert "Ensure this value is less than or equal to 1.0." in refused
    assert not Thresholds.objects.exists()

    response = post(error_rate_amber="0.02", error_rate_red="0.1", p95_amber_ms="", p95_red_ms="2000")
    assert response.status_code == 302
    saved = Thresholds.objects.get(name="iris")
    assert saved.effective()["error_rate_red"] == 0.1 and saved.effective()["p95_amber_ms"] == 250
    listing = admin_client.get(reverse("admin:monitoring_thresholds_changelist")).content.decode()
    assert "2.0% / 10.0%" in listing and "250 ms (default) / 2,000 ms" in listing
