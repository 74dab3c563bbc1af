"""Lineage, as MLflow users expect it: a version's source run URL, code commit, dataset and
metrics, optional on upload (the API's create, JSON or multipart, and the admin's add form),
each refused with its own code, and shown in the API and on the version's page."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from registry.models import MLModel
from tests.registry.onnx_factories import make_add_model

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"
ADD = reverse("admin:registry_mlmodel_add")
RUN = "https://mlflow.example.com/#/experiments/3/runs/7f3a9c"
COMMIT = "4f2c9e1d0b7a6c5e4f3a2b1c0d9e8f7a6b5c4d3e"
LINEAGE = {"source_url": RUN, "code_commit": COMMIT, "dataset": "iris-2026-11 (s3://data/iris/v4)"}
METRICS = {"accuracy": 0.97, "f1": 0.955, "epochs": 12}


def onnx_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("model.onnx", make_add_model(), content_type="application/octet-stream")


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def test_multipart_upload_takes_lineage_and_the_api_shows_it(manage_client, read_client):
    response = manage_client.post(
        MODELS,
        {"name": "adder", "version": "1.0.0", "file": onnx_file(), **LINEAGE, "metrics": json.dumps(METRICS)},
        format="multipart",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert {field: body[field] for field in LINEAGE} == LINEAGE
    assert body["metrics"] == METRICS

    # Every read of the version shows it: by id and among the name's versions.
    assert read_client.get(f"{MODELS}/{body['id']}").json()["metrics"] == METRICS
    versions = read_client.get(f"{MODELS}/by-name/adder/versions").json()["results"]
    assert versions[0]["code_commit"] == COMMIT and versions[0]["source_url"] == RUN


def test_json_create_takes_lineage_and_it_is_optional(manage_client):
    with_lineage = manage_client.post(
        MODELS, {"name": "iris", "version": "1.0.0", **LINEAGE, "metrics": METRICS}, format="json"
    )
    assert with_lineage.status_code == 201, with_lineage.json()
    assert with_lineage.json()["metrics"] == METRICS
    model = MLModel.objects.get(name="iris", version="1.0.0")
    assert (model.source_url, model.code_commit, model.metrics) == (RUN, COMMIT, METRICS)

    without = manage_client.post(MODELS, {"name": "iris", "version": "1.1.0"}, format="json").json()
    assert (without["source_url"], without["code_commit"], without["dataset"], without["metrics"]) == ("", "", "", {})


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("source_url", "ftp://files.example.com/run/1", "invalid_source_url"),
        ("source_url", "javascript:alert(1)", "invalid_source_url"),
        ("source_url", "mlflow run 12", "invalid_source_url"),
        ("code_commit", "main", "invalid_code_commit"),
        ("code_commit", "4f2c9e", "invalid_code_commit"),  # too short to name a commit
        ("code_commit", "4f2c9e1; rm -rf /", "invalid_code_commit"),
        ("metrics", ["accuracy", 0.97], "invalid_metrics"),
        ("metrics", {"accuracy": "high"}, "invalid_metrics"),
        ("metrics", {"accuracy": True}, "invalid_metrics"),
        ("metrics", {"": 1}, "invalid_metrics"),
        ("metrics", '{"accuracy": 0.97}', "invalid_metrics"),  # JSON text in a JSON body is a string
        ("metrics", {f"m{index}": index for index in range(51)}, "invalid_metrics"),
    ],
)
def test_bad_lineage_is_refused_with_its_code_and_nothing_is_registered(manage_client, field, value, code):
    response = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0", field: value}, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == code
    assert field in body["detail"]  # says which field to fix
    assert not MLModel.objects.exists()


@pytest.mark.parametrize(
    ("metrics", "code"),
    [("not json", "invalid_metrics"), ('{"auc": "0.9"}', "invalid_metrics"), ("[1, 2]", "invalid_metrics")],
)
def test_multipart_metrics_must_be_a_json_object_of_numbers(manage_client, metrics, code):
    response = manage_client.post(
        MODELS, {"name": "adder", "version": "1.0.0", "file": onnx_file(), "metrics": metrics}, format="multipart"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert not MLModel.objects.exists()


def test_admin_add_form_takes_lineage_and_the_version_page_shows_it(admin_client):
    response = admin_client.post(
        ADD,
        {"name": "adder", "version": "1.0.0", "file": onnx_file(), **LINEAGE, "metrics": json.dumps(METRICS)},
    )
    assert response.status_code == 302
    model = MLModel.objects.get(name="adder", version="1.0.0")
    assert (model.source_url, model.code_commit, model.dataset, model.metrics) == (
        RUN,
        COMMIT,
        LINEAGE["dataset"],
        METRICS,
    )
    page = admin_client.get(reverse("admin:registry_mlmodel_change", args=[model.pk])).content.decode()
    assert f'<a href="{RUN}" rel="noopener noreferrer nofollow">' in page
    assert COMMIT in page
    assert '<th scope="row">accuracy</th><td class="mf-num">0.97</td>' in page


def test_admin_add_form_shows_lineage_errors_on_the_form(admin_client):
    response = admin_client.post(
        ADD,
        {
            "name": "adder",
            "version": "1.0.0",
            "file": onnx_file(),
            "source_url": "ftp://x.example.com/",
            "code_commit": "HEAD",
            "metrics": '{"accuracy": "great"}',
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"source_url", "code_commit", "metrics"}
    assert "http(s)" in errors["source_url"][0]
    assert "hexadecimal" in errors["code_commit"][0]
    assert "'accuracy'" in errors["metrics"][0]
    not_json = admin_client.post(ADD, {"name": "adder", "version": "1.0.0", "file": onnx_file(), "metrics": "{oops"})
    assert "JSON object of metric name" in not_json.context["adminform"].form.errors["metrics"][0]
    assert not MLModel.objects.exists()


def test_the_source_link_is_escaped(admin_client, manage_client):
    tricky = 'https://runs.example.com/?q="><script>alert(1)</script>'
    body = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0", "source_url": tricky}, format="json")
    assert body.status_code == 201, body.json()
    page = admin_client.get(reverse("admin:registry_mlmodel_change", args=[body.json()["id"]])).content.decode()
    assert "<script>alert(1)</script>" not in page
