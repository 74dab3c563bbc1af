"""The dashboard: numbers from recorded serving statistics (real requests, flushed), charts,
jobs by status, and the workers as /api/v1/health/celery reports them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inference.serving_stats import serving_stats
from registry.models import MLModel
from tests.inference.api import predict
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
    """iris 1.0.0: 4 requests (1 error, 1 cache hit); iris 2.0.0: 1 request; then flushed."""
    first = ready_model(make_iris_model(zipmap=False), name="iris", version="1.0.0")
    second = ready_model(make_iris_model(zipmap=False), name="iris", version="2.0.0")
    assert predict(predict_client, first["id"], {"X": ROW}).status_code == 200
    assert predict(predict_client, first["id"], {"X": ROW}).status_code == 200  # cache hit
    assert predict(predict_client, first["id"], {"X": [[1.0, 2.0, 3.0, 4.0]]}).status_code == 200
    assert predict(predict_client, first["id"], {"X": [[1.0]]}).status_code == 400
    assert predict(predict_client, second["id"], {"X": ROW}).status_code == 200
    serving_stats.flush()
    return first, second


def test_dashboard_shows_per_version_figures_from_recorded_data(admin_client, served):
    first, second = served
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    rows = {row["model_version"]: row for row in response.context["serving"]["summary"]}
    assert (rows["1.0.0"]["requests"], rows["1.0.0"]["errors"]) == (4, 1)
    assert rows["1.0.0"]["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)  # 1 hit in 3 lookups
    assert rows["1.0.0"]["mean_batch_size"] == 1.0
    assert rows["1.0.0"]["p50_ms"] is not None and rows["1.0.0"]["p95_ms"] >= rows["1.0.0"]["p50_ms"]
    assert rows["2.0.0"]["requests"] == 1
    html = response.content.decode()
    assert '<span class="mf-big" id="mf-total-requests">5</span>' in html
    assert '<span class="mf-big" id="mf-total-errors">1</span>' in html
    first_row = html[html.index(f'data-model-id="{first["id"]}"') :]
    assert '<td class="mf-num">4</td>' in first_row[:600] and "1 (25%)" in first_row[:600]
    assert "33%" in first_row[:900]  # the cache hit rate in words and digits
    # Two charts, each an image with a title and a text description, and the same numbers as tables.
    assert html.count('<svg class="mf-chart" role="img"') == 2
    assert "<desc>5 requests and 1 errors in" in html
    assert sum(row["count"] for row in response.context["serving"]["histogram"]) == 5


def test_dashboard_charts_one_version_when_asked(admin_client, served):
    _, second = served
    response = admin_client.get(DASHBOARD, {"model": second["id"]})
    serving = response.context["serving"]
    assert sum(row["requests"] for row in serving["series"]) == 1
    assert sum(row["count"] for row in serving["histogram"]) == 1
    assert "iris 2.0.0: requests and latency" in response.content.decode()
    assert admin_client.get(DASHBOARD, {"model": "not-a-uuid"}).status_code == 200


def test_dashboard_without_traffic_says_so(admin_client):
    html = admin_client.get(DASHBOARD).content.decode()
    assert "No requests were recorded in the last 24 hours." in html


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


def test_admin_index_links_to_the_dashboard(admin_client):
    assert f'href="{DASHBOARD}"' in admin_client.get(reverse("admin:index")).content.decode()
