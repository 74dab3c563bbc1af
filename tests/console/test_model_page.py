"""The model page of the admin: timeline, Try it (the predict service and its errors), serving
actions, aliases, recent predictions and "Upload a new version"."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from inference.history import history
from inference.models import Prediction
from inference.sessions import get_pool
from registry import services
from registry.models import AliasEvent, MLModel, ModelAlias
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

Status = MLModel.Status


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def register(name: str = "iris", version: str = "1.0.0") -> MLModel:
    staged = services.stage_stream(io.BytesIO(make_iris_model(zipmap=False)))
    return services.model_register(name=name, version=version, staged=staged)


@pytest.fixture
def iris() -> MLModel:
    return register()


def page_url(model: MLModel) -> str:
    return reverse("admin:registry_mlmodel_change", args=[model.pk])


def try_it(client, model: MLModel, input_text: str, *, skip_cache: bool = False):
    data = {"input_data": input_text, **({"skip_cache": "on"} if skip_cache else {})}
    return client.post(reverse("admin:registry_mlmodel_try", args=[model.pk]), data)


def test_page_shows_timeline_example_input_and_panels(admin_client, iris):
    html = admin_client.get(page_url(iris)).content.decode()
    assert "Status: Ready" in html
    timeline = html[html.index('class="mf-timeline"') :]
    assert timeline.index("Registered") < timeline.index("File uploaded") < timeline.index("Validated: ready")
    # One row for the variable dimension, float zeros for a float input.
    assert "{&quot;X&quot;: [[0.0, 0.0, 0.0, 0.0]]}</textarea>" in html
    assert 'value="1.0.1"' in html  # the suggested next version
    for label in ("Validate", "Archive", "Preload session", "Evict session", "Move alias here", "Predict"):
        assert f">{label}</button>" in html
    # Every field of the page's own forms has a label.
    for field_id in ("mf-try-input", "mf-try-skip", "mf-alias-name", "mf-new-version-number", "mf-new-file"):
        assert f'for="{field_id}"' in html and f'id="{field_id}"' in html


def test_try_it_runs_the_predict_service_and_records_history(admin_client, iris, ops_user):
    response = try_it(admin_client, iris, '{"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
    assert response.status_code == 200
    result = response.context["mf_result"]
    assert result["ok"] and result["response"]["output_data"]["label"] == [0, 2]
    assert result["cache"] == "MISS"
    assert set(result["timings"]) == {"parse", "queue", "compute", "serialize"}
    assert "compute" in response.content.decode()

    again = try_it(admin_client, iris, '{"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
    assert again.context["mf_result"]["cache"] == "HIT"
    history.flush()
    recorded = list(Prediction.objects.filter(model=iris).order_by("created_at"))
    assert [row.cached for row in recorded] == [False, True]
    assert recorded[0].user_id == ops_user.pk
    page = admin_client.get(page_url(iris)).content.decode()
    assert reverse("admin:inference_prediction_change", args=[recorded[1].pk]) in page  # recent predictions


@pytest.mark.parametrize(
    ("input_text", "code"),
    [
        ('{"X": [[5.1, 3.5]]}', "invalid_shape"),
        ('{"X": [[NaN, 1, 2, 3]]}', "non_finite_value"),
        ('{"X": [["a", 1, 2, 3]]}', "invalid_dtype"),
        ('{"Y": [[1, 2, 3, 4]]}', "unknown_input"),
        ("{}", "missing_input"),
        ('{"X": [[1, 2, 3, 4]', "parse_error"),
        ("", "invalid_input"),
    ],
)
def test_try_it_shows_the_api_error_code_for_bad_input(admin_client, iris, input_text, code):
    response = try_it(admin_client, iris, input_text)
    assert response.status_code == 400
    assert response.context["mf_result"]["response"]["code"] == code
    assert f'<code id="mf-error-code">{code}</code>' in response.content.decode()


def test_try_it_on_an_archived_model_is_refused_with_its_code(admin_client, iris):
    services.model_archive(model=iris)
    response = try_it(admin_client, iris, '{"X": [[5.1, 3.5, 1.4, 0.2]]}')
    assert response.status_code == 409
    assert response.context["mf_result"]["response"]["code"] == "model_archived"
    assert "Only a ready version can be tried" in admin_client.get(page_url(iris)).content.decode()


def test_preload_and_evict_act_on_the_session_pool(admin_client, iris):
    url = lambda action: reverse("admin:registry_mlmodel_serving", args=[iris.pk, action])  # noqa: E731
    assert iris.file_sha256 not in get_pool().loaded()
    response = admin_client.post(url("preload"), follow=True)
    assert iris.file_sha256 in get_pool().loaded()
    assert "Session in this server process: <strong>loaded</strong>" in response.content.decode()
    admin_client.post(url("evict"))
    assert iris.file_sha256 not in get_pool().loaded()
    assert admin_client.get(url("preload")).status_code == 405
    assert admin_client.post(url("explode")).status_code == 404


def test_archive_and_validate_from_the_page_use_the_services_and_are_logged(admin_client, iris):
    url = lambda action: reverse("admin:registry_mlmodel_serving", args=[iris.pk, action])  # noqa: E731
    admin_client.post(url("validate"))
    response = admin_client.post(url("archive"), {"post": "yes"}, follow=True)  # as confirmed
    iris.refresh_from_db()
    assert iris.status == Status.ARCHIVED
    html = response.content.decode()
    assert "Admin: Validated: ready" in html and "Admin: Archived" in html
    refused = admin_client.post(url("validate"), follow=True)
    assert any("model_archived" in str(message) for message in refused.context["messages"])
    preload = admin_client.post(url("preload"), follow=True)
    assert any("model_archived" in str(message) for message in preload.context["messages"])


def test_moving_the_production_alias_from_the_page_is_audited(admin_client, iris, ops_user):
    newer = register(version="1.1.0")
    alias_url = lambda model: reverse("admin:registry_mlmodel_alias", args=[model.pk])  # noqa: E731
    # Confirmed, as from the confirmation page each move shows first.
    admin_client.post(alias_url(iris), {"alias": "production", "post": "yes"})
    response = admin_client.post(alias_url(newer), {"alias": "production", "post": "yes"}, follow=True)
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == newer.pk
    moved = AliasEvent.objects.get(action=AliasEvent.Action.MOVED)
    assert (moved.from_version, moved.to_version, moved.actor_user_id) == ("1.0.0", "1.1.0", ops_user.pk)
    html = response.content.decode()
    assert "Alias iris@production now points at 1.1.0 (was 1.0.0)." in html
    history_table = html[html.index('id="mf-alias-history"') :]
    assert "Moved" in history_table and "Created" in history_table
    assert "1.1.0 (this version)" in html


def test_an_alias_cannot_point_at_a_version_that_is_not_ready(admin_client):
    pending = MLModel.objects.create(name="iris", version="3.0.0")
    response = admin_client.post(reverse("admin:registry_mlmodel_alias", args=[pending.pk]), {"alias": "production"})
    messages = [str(message) for message in response.wsgi_request._messages]
    assert any("model_not_ready" in message for message in messages)
    assert not ModelAlias.objects.exists()


def test_upload_a_new_version_from_the_page_goes_through_the_add_form(admin_client, iris):
    upload = SimpleUploadedFile("model.onnx", make_iris_model(zipmap=False), content_type="application/octet-stream")
    response = admin_client.post(
        reverse("admin:registry_mlmodel_add"),
        {"name": "iris", "version": "1.0.1", "description": "next", "tags": "a, b", "file": upload, "_continue": "1"},
    )
    newer = MLModel.objects.get(name="iris", version="1.0.1")
    assert response.status_code == 302 and response["Location"].startswith(page_url(newer))
    assert newer.status == Status.READY
    assert sorted(newer.tags.values_list("name", flat=True)) == ["a", "b"]
    duplicate = SimpleUploadedFile("model.onnx", make_iris_model(zipmap=False), content_type="application/octet-stream")
    again = admin_client.post(
        reverse("admin:registry_mlmodel_add"), {"name": "iris", "version": "1.0.1", "file": duplicate}
    )
    assert again.status_code == 200 and "already registered" in again.content.decode()


def test_model_page_views_need_a_staff_login(client, iris):
    assert client.get(page_url(iris)).status_code == 302
    response = client.post(reverse("admin:registry_mlmodel_try", args=[iris.pk]), {"input_data": "{}"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not Prediction.objects.exists()


def test_example_input_follows_the_schema_types(admin_client):
    from console.model_page import example_input_text

    model = MLModel(
        input_schema=[
            {"name": "a", "kind": "tensor", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "b", "kind": "tensor", "datatype": "BOOL", "shape": [3]},
            {"name": "c", "kind": "tensor", "datatype": "BYTES", "shape": [-1]},
        ]
    )
    assert json.loads(example_input_text(model)) == {"a": [[0, 0]], "b": [False, False, False], "c": [""]}


def test_try_it_counts_in_the_metrics_like_any_prediction_refused_or_not(admin_client, iris, read_client):
    from tests.inference.test_metrics import scrape, value

    labels = {"model": "iris", "version": "1.0.0"}
    before = scrape(read_client)
    assert try_it(admin_client, iris, '{"X": [[5.1, 3.5, 1.4, 0.2]]}').status_code == 200
    assert try_it(admin_client, iris, '{"X": [[5.1, 3.5]]}').status_code == 400  # refused: wrong shape
    after = scrape(read_client)
    for outcome in ("ok", "client_error"):
        grown = value(after, "modelforge_requests_total", **labels, outcome=outcome) - value(
            before, "modelforge_requests_total", **labels, outcome=outcome
        )
        assert grown == 1, outcome


def test_timeline_shows_settings_changed_through_the_api(admin_client, iris, make_key):
    key = make_key("manage")[0]
    services.model_update(model=iris, runtime={"ort_intra_op_threads": 2, "warmup_count": 3}, actor=key)
    html = admin_client.get(page_url(iris)).content.decode()
    timeline = html[html.index('class="mf-timeline"') :]
    assert "Settings changed: ort_intra_op_threads, warmup_count" in timeline
    assert f"by key:{key.name}" in timeline
