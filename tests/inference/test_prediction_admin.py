"""Predictions in the admin: read-only, filtered by model, cached and a date range, exported as
a streamed CSV of what the filters select."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from inference.history import history
from inference.models import Prediction
from tests.inference.api import predict
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:inference_prediction_changelist")
EXPORT = reverse("admin:inference_prediction_export")


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


@pytest.fixture
def recorded(ready_model, predict_client):
    """Two models' predictions made through the API and written by the history writer:
    iris 3 computed + 1 cached, other 1 computed."""
    iris = ready_model(make_iris_model(zipmap=False), name="iris")
    other = ready_model(make_iris_model(zipmap=False), name="other")
    for index in range(3):
        assert predict(predict_client, iris["id"], {"X": [[5.0 + index, 3.5, 1.4, 0.2]]}).status_code == 200
    assert predict(predict_client, iris["id"], {"X": [[5.0, 3.5, 1.4, 0.2]]}).status_code == 200  # cached
    assert predict(predict_client, other["id"], {"X": [[6.0, 3.0, 5.0, 2.0]]}).status_code == 200
    history.flush()
    return iris, other


def export_rows(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_changelist_filters_by_model_and_cached(admin_client, recorded):
    iris, _ = recorded
    response = admin_client.get(CHANGELIST, {"model__id__exact": iris["id"], "cached__exact": "0"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 3
    html = response.content.decode()
    assert "Export these predictions as CSV" in html
    assert f"{EXPORT}?model__id__exact={iris['id']}&amp;cached__exact=0" in html
    assert 'for="mf-created_at__from"' in html and 'for="mf-created_at__to"' in html  # labelled dates
    assert admin_client.get(reverse("admin:inference_prediction_add")).status_code == 403


def test_export_streams_the_filtered_rows_as_csv(admin_client, recorded, django_assert_max_num_queries):
    iris, _ = recorded
    with django_assert_max_num_queries(9):  # a fixed number, whatever the rows (the file name reads the model's)
        response = admin_client.get(EXPORT, {"model__id__exact": iris["id"], "cached__exact": "0"})
        rows = export_rows(response)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="predictions_iris-1.0.0_until-')
    assert len(rows) == 3
    assert {row["model_name"] for row in rows} == {"iris"} and {row["cached"] for row in rows} == {"False"}
    assert sorted(json.loads(row["input_data"])["X"][0][0] for row in rows) == [5.0, 6.0, 7.0]
    assert all(json.loads(row["output_data"])["label"] for row in rows)
    assert {row["api_key"] for row in rows} == {"predictor"}
    assert len(export_rows(admin_client.get(EXPORT))) == 5  # no filter: everything


def test_date_range_filter_is_inclusive_and_checked(admin_client, recorded):
    today = timezone.localdate()
    old = Prediction.objects.order_by("created_at").first()
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    yesterday, two_days_ago = today - timedelta(days=1), today - timedelta(days=2)
    assert (
        len(export_rows(admin_client.get(EXPORT, {"created_at__from": str(today), "created_at__to": str(today)}))) == 4
    )
    assert len(export_rows(admin_client.get(EXPORT, {"created_at__to": str(two_days_ago)}))) == 1
    assert len(export_rows(admin_client.get(EXPORT, {"created_at__from": str(yesterday)}))) == 4
    listed = admin_client.get(CHANGELIST, {"created_at__from": str(today)})
    assert listed.context["cl"].result_count == 4
    bad = admin_client.get(EXPORT, {"created_at__from": "yesterday"}, follow=True)
    assert any("Nothing exported" in str(message) for message in bad.context["messages"])


def test_export_neutralises_spreadsheet_formulas(admin_client, recorded, make_key):
    key, _ = make_key("predict", name="=HYPERLINK(1)")
    Prediction.objects.update(api_key=key)
    rows = export_rows(admin_client.get(EXPORT))
    assert {row["api_key"] for row in rows} == {"'=HYPERLINK(1)"}


def test_export_needs_a_staff_login(client, recorded):
    response = client.get(EXPORT)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_changelist_filters_by_model_name_across_versions(admin_client, recorded, ready_model, predict_client):
    iris_2 = ready_model(make_iris_model(zipmap=False), name="iris", version="2.0.0")
    assert predict(predict_client, iris_2["id"], {"X": [[5.0, 3.5, 1.4, 0.2]]}).status_code == 200
    history.flush()

    page = admin_client.get(CHANGELIST)
    html = page.content.decode()
    assert "By model name" in html and 'href="?model_name=iris"' in html and 'href="?model_name=other"' in html

    listed = admin_client.get(CHANGELIST, {"model_name": "iris"})
    assert listed.context["cl"].result_count == 5  # 1.0.0's four and 2.0.0's one
    assert {row.model_version for row in listed.context["cl"].result_list} == {"1.0.0", "2.0.0"}


def test_today_is_one_click_in_the_date_filter(admin_client, recorded):
    today = timezone.localdate().isoformat()
    old = Prediction.objects.order_by("created_at").first()
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    link = f'href="?created_at__from={today}&amp;created_at__to={today}"'
    assert link in admin_client.get(CHANGELIST).content.decode()

    listed = admin_client.get(CHANGELIST, {"created_at__from": today, "created_at__to": today})

    assert listed.context["cl"].result_count == 4
    assert f'<li class="selected"><a {link}>Today</a></li>' in listed.content.decode()


def test_the_export_file_is_named_after_the_model_and_the_dates(admin_client, recorded):
    iris, _ = recorded

    def filename(params) -> str:
        disposition = admin_client.get(EXPORT, params)["Content-Disposition"]
        return disposition.removeprefix('attachment; filename="').removesuffix('"')

    assert filename({"model_name": "iris", "created_at__from": "2026-12-01", "created_at__to": "2026-12-06"}) == (
        "predictions_iris_2026-12-01_2026-12-06.csv"
    )
    today = timezone.localdate().isoformat()
    assert filename({"model__id__exact": iris["id"], "created_at__from": "2026-12-01"}) == (
        f"predictions_iris-1.0.0_2026-12-01_{today}.csv"
    )
    everything = filename({})
    assert everything.startswith(f"predictions_all-models_until-{timezone.now():%Y-%m-%d}T")
    assert everything.endswith("Z.csv")
