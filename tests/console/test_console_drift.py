"""Drift where ops look (issue 21): a drifted feature shows amber or red on the model's name
page, with a chart of its distribution against the reference and the same shares in a table,
and on the dashboard beside the serving health ("serving: green, drift: red (X[2])"), a red
drift at the top and linked to the name page's drift section."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import services as monitoring
from monitoring.models import DriftResult
from registry.demo import build_iris_onnx
from tests.console.test_dashboard import minutes_ago, record, section
from tests.monitoring.drift_data import as_csv, iris_rows
from tests.monitoring.drift_data import record as record_predictions
from tests.monitoring.test_drift import upload_reference
from tests.registry.versions import ready_version

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("console-dashboard")
HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture(autouse=True)
def _one_window(settings):
    settings.DRIFT_WINDOWS = ["1h"]
    settings.DRIFT_MIN_ROWS = 100


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def name_url(name: str = "iris") -> str:
    return reverse("admin:registry_mlmodel_name", args=[name])


@pytest.fixture
def drifted(manage_client):
    """iris 1.0.0 with a reference and a last hour whose petal length (X[2]) moved by 3 of its
    standard deviations, the drift computed by the monitoring service; iris 1.1.0 without any."""
    onnx = build_iris_onnx()
    model = ready_version(onnx, name="iris", version="1.0.0")
    ready_version(onnx, name="iris", version="1.1.0")
    assert upload_reference(manage_client, model.pk, as_csv(iris_rows(1000, seed=1))).status_code == 200
    now = timezone.now()
    record_predictions(model, onnx, iris_rows(400, seed=2, shift={2: 3.0}), at=now)
    monitoring.drift_compute(model=model, now=now)
    result = DriftResult.objects.get(model=model, window="1h")
    assert result.level == "red"
    return model


def drift_section(html: str) -> str:
    start = html.index('id="mf-drift"')
    return html[start : html.index('<div class="module', start)]


def test_the_name_page_shows_a_red_feature_with_its_chart_against_the_reference(admin_client, drifted):
    html = admin_client.get(name_url()).content.decode()
    # The versions table: the level in words and colour, the drifted feature, a link to the section.
    row = html[html.index('<tr data-version="1.0.0"') :]
    row = row[: row.index("</tr>")]
    assert '<a href="#mf-drift-1-0-0" class="mf-status mf-red">red</a>' in row
    assert "X[2]" in row and "X[0]" not in row
    unmeasured = html[html.index('<tr data-version="1.1.0"') :]
    assert '<span class="mf-muted">—</span>' in unmeasured[: unmeasured.index("</tr>")]
    assert '<a href="#mf-drift">Drift</a>' in html  # in the page's navigation

    drift = drift_section(html)
    assert 'id="mf-drift-1-0-0"' in drift and 'id="mf-drift-1-1-0"' not in drift
    assert '<span class="mf-status mf-red">drift red</span>' in drift
    assert "over the last 1h" in drift
    # X[2] moved, and the outputs with it (the model answers differently); the other inputs did not.
    drifted_names = re.search(r"Drifted: <strong>(.*?)</strong>", drift).group(1).split(", ")
    assert drifted_names[0] == "X[2]" and "label" in drifted_names
    assert not {"X[0]", "X[1]", "X[3]"} & set(drifted_names)
    # Only the drifted features are charted: images with a title and their numbers in words.
    assert drift.count('<svg class="mf-chart mf-drift-chart" role="img"') == len(drifted_names)
    assert 'data-feature="X[0]"' not in drift
    figure = drift[drift.index('data-feature="X[2]"') : drift.index("</figure>")]
    assert "<title>X[2]: red, the window (1h) against the reference</title>" in figure
    description = re.search(r"<desc>(.*?)</desc>", figure).group(1)
    assert description.startswith("X[2] is red (PSI ")
    assert "KS p-value" in description and "400 samples in the window" in description
    assert "Share of samples per bin: ≤ " in description and "reference 10%" in description
    # The same shares as a table: ten reference bins of equal mass, the window piled at the top.
    table = figure[figure.index("<table") : figure.index("</table>")]
    shares = re.findall(r'<td class="mf-num">(\d+) %</td><td class="mf-num">(\d+) %</td>', table)
    assert len(shares) == 10
    assert all(abs(int(reference) - 10) <= 2 for reference, _window in shares)
    assert int(shares[-1][1]) > 50 and int(shares[0][1]) == 0


def test_a_version_without_drifted_features_charts_its_highest_psi(admin_client, manage_client):
    onnx = build_iris_onnx()
    model = ready_version(onnx, name="iris", version="1.0.0")
    assert upload_reference(manage_client, model.pk, as_csv(iris_rows(1000, seed=1))).status_code == 200
    now = timezone.now()
    record_predictions(model, onnx, iris_rows(400, seed=2), at=now)
    monitoring.drift_compute(model=model, now=now)
    drift = drift_section(admin_client.get(name_url()).content.decode())
    assert '<span class="mf-status mf-green">drift green</span>' in drift
    assert "Drifted:" not in drift
    assert drift.count('<svg class="mf-chart mf-drift-chart" role="img"') == 3
    assert drift.count(": green, the window (1h) against the reference</title>") == 3


def test_feature_names_are_escaped_in_the_chart_the_table_and_the_badges(admin_client, ops_user):
    model = ready_version(build_iris_onnx(), name="iris", version="1.0.0")
    now = timezone.now()
    feature = {
        "name": HOSTILE,
        "source": "output",
        "kind": "categorical",
        "level": "amber",
        "psi": 0.18,
        "p_value": 0.001,
        "test": "chi2",
        "rows": 500,
        "categories": ["<b>cat</b>", "dog"],
        "reference_counts": [50, 50],
        "window_counts": [350, 150],
    }
    DriftResult.objects.create(
        model=model,
        window="1h",
        window_start=now - timedelta(hours=1),
        window_end=now,
        predictions=50,
        rows=500,
        level="amber",
        state="amber",
        features=[feature],
        computed_at=now,
    )
    html = admin_client.get(name_url()).content.decode()
    assert HOSTILE not in html and "<b>cat</b>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;: amber, the window (1h) against the reference" in html
    assert "&lt;b&gt;cat&lt;/b&gt;: reference 50%, window 70%" in html  # the chart's words, per class
    dashboard = admin_client.get(DASHBOARD).content.decode()
    assert HOSTILE not in dashboard
    assert "(&lt;img src=x onerror=&quot;alert(1)&quot;&gt;)" in section(dashboard, "mf-health")


def test_the_dashboard_puts_red_drift_at_the_top_beside_serving_health(admin_client, drifted):
    # 1.1.0 serves with too many server errors (amber); 1.0.0 serves cleanly (green) but drifted.
    other = drifted.__class__.objects.get(name="iris", version="1.1.0")
    record(other, at=minutes_ago(5), requests=100, server_errors=2)
    record(drifted, at=minutes_ago(5), requests=100)
    html = admin_client.get(DASHBOARD).content.decode()
    health = section(html, "mf-health")
    versions = re.findall(r"<strong>iris ([\d.]+)</strong>", health)
    assert versions == ["1.0.0", "1.1.0"]  # red drift outranks amber serving
    first = health[health.index("<strong>iris 1.0.0</strong>") : health.index("</li>")]
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", first))
    assert words.startswith("iris 1.0.0 serving: Green") and "drift: Red (X[2], " in words
    assert "X[0]" not in words
    anchor = f"{name_url()}#mf-drift-1-0-0"
    assert f'href="{anchor}"' in first
    # Beside the words, a small chart of the most drifted feature against the reference.
    chart = first[first.index('<div class="mf-drift-mini">') :]
    assert 'class="mf-chart mf-drift-chart" role="img"' in chart and "X[2]" in chart[: chart.index("</title>")]
    assert section(html, "mf-health").count('<div class="mf-drift-mini">') == 1  # 1.1.0 has no drift
    # The serving table has the drift column too; the version without results says "—".
    row = html[html.index(f'<tr data-model-id="{drifted.pk}"') :]
    assert f'<td data-label="Drift"><a class="mf-status mf-red" href="{anchor}"' in row[: row.index("</tr>")]
    row = html[html.index(f'<tr data-model-id="{other.pk}"') :]
    assert '<td data-label="Drift">—</td>' in row[: row.index("</tr>")]


def test_a_drifted_version_without_traffic_in_the_range_is_still_listed(admin_client, drifted):
    health = section(admin_client.get(DASHBOARD).content.decode(), "mf-health")
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", health))
    assert "iris 1.0.0 serving: Idle no requests in the range, drift: Red (X[2], " in words
    assert "1.1.0" not in words  # no traffic and no drift: nothing to say
