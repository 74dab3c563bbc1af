"""Drift against a version's reference: the issue's bar (a shift of feature 0 is raised on it
and not on the others; unshifted traffic raises nothing over 20 windows), references from a
file and from the first recorded predictions, and the API's refusals."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from core import events
from inference.history import history
from monitoring import services
from monitoring.drift import latest_for
from monitoring.models import DriftResult, Reference
from registry.demo import build_iris_onnx
from tests.inference.api import predict_ok
from tests.monitoring.drift_data import COLUMNS, as_csv, iris_rows, record
from tests.registry.versions import ready_version

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"
DRIFTED = {"amber", "red"}


@pytest.fixture(autouse=True)
def _one_window(settings):
    settings.DRIFT_WINDOWS = ["1h"]
    settings.DRIFT_MIN_ROWS = 100


@pytest.fixture
def iris():
    return ready_version(build_iris_onnx(), name="iris", version="1.0.0")


@pytest.fixture
def raised():
    """The drift events sent, in order (captured as a webhook receiver would hear them)."""
    heard = []

    def receiver(sender, type, data, id, **kwargs):
        if type.startswith("drift."):
            heard.append((type, data))

    events.raised.connect(receiver)
    yield heard
    events.raised.disconnect(receiver)


def upload_reference(client, model_id, content: bytes, filename: str = "reference.csv", **fields):
    upload = SimpleUploadedFile(filename, content, content_type="application/octet-stream")
    return client.put(f"{MODELS}/{model_id}/reference", {"file": upload, **fields}, format="multipart")


def levels(result: DriftResult) -> dict[str, str]:
    return {feature["name"]: feature["level"] for feature in result.features}


def test_a_shift_of_feature_0_is_raised_on_feature_0_in_the_next_window_and_not_on_the_others(
    iris, manage_client, read_client, raised, django_capture_on_commit_callbacks
):
    response = upload_reference(manage_client, iris.pk, as_csv(iris_rows(2000, seed=1)))
    assert response.status_code == 200, response.json()
    assert [f["name"] for f in response.json()["features"]] == [
        "X[0]", "X[1]", "X[2]", "X[3]", "label", "probabilities[0]", "probabilities[1]", "probabilities[2]",
    ]  # fmt: skip
    now = timezone.now()
    onnx = build_iris_onnx()
    record(iris, onnx, iris_rows(500, seed=2), at=now - timedelta(hours=1))
    record(iris, onnx, iris_rows(500, seed=3, shift={0: 3.0}), at=now)

    with django_capture_on_commit_callbacks(execute=True):
        (before,) = services.drift_compute(model=iris, now=now - timedelta(hours=1))
        (after,) = services.drift_compute(model=iris, now=now)

    assert before.level == "green"
    assert not DRIFTED & set(levels(before).values())
    assert after.rows == 500
    assert levels(after)["X[0]"] == "red"
    assert {levels(after)[name] for name in ("X[1]", "X[2]", "X[3]")} == {"green"}
    [(kind, payload)] = raised
    assert kind == "drift.raised"
    assert (payload["model"], payload["version"], payload["model_id"]) == ("iris", "1.0.0", str(iris.pk))
    assert payload["window"] == "1h" and payload["level"] == "red"
    feature_0 = next(feature for feature in payload["features"] if feature["name"] == "X[0]")
    assert feature_0["psi"] > 1 and feature_0["p_value"] < 1e-6 and feature_0["test"] == "ks"

    body = read_client.get(f"{MODELS}/{iris.pk}/drift").json()
    assert body["level"] == "red"
    (window,) = body["windows"]
    shown = {feature["name"]: feature for feature in window["features"]}
    assert shown["X[0]"]["level"] == "red"
    assert sum(shown["X[0]"]["window_counts"]) == 500
    assert len(shown["X[0]"]["bin_edges"]) == len(shown["X[0]"]["reference_counts"]) + 1
    assert shown["label"]["test"] == "chi2" and shown["label"]["categories"][-1] == "(other)"

    # Back to the reference's distribution: cleared in the next window.
    record(iris, onnx, iris_rows(500, seed=4), at=now + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        (cleared,) = services.drift_compute(model=iris, now=now + timedelta(hours=1))
    assert cleared.level == "green"
    assert [kind for kind, _ in raised] == ["drift.raised", "drift.cleared"]


def test_unshifted_traffic_raises_nothing_over_20_windows(
    iris, manage_client, raised, django_capture_on_commit_callbacks
):
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(2000, seed=10))).status_code == 200
    onnx = build_iris_onnx()
    start = timezone.now() - timedelta(hours=20)
    seen = []
    with django_capture_on_commit_callbacks(execute=True):
        for hour in range(1, 21):
            end = start + timedelta(hours=hour)
            record(iris, onnx, iris_rows(500, seed=100 + hour), at=end)
            (result,) = services.drift_compute(model=iris, now=end)
            assert result.rows == 500
            seen.extend(levels(result).values())
    assert len(seen) == 20 * 8
    assert set(seen) == {"green"}
    assert raised == []


def test_windows_with_too_few_samples_are_idle_and_keep_the_state(iris, manage_client, settings):
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(500, seed=5))).status_code == 200
    now = timezone.now()
    record(iris, build_iris_onnx(), iris_rows(50, seed=6, shift={0: 3.0}), at=now)
    (result,) = services.drift_compute(model=iris, now=now)
    assert result.level == "idle" and result.state == "green"
    assert set(levels(result).values()) == {"idle"}


def test_without_a_file_the_first_recorded_predictions_are_the_reference(iris, client_for, read_client, settings):
    settings.DRIFT_REFERENCE_PREDICTIONS = 30
    predict_client = client_for("predict")
    assert read_client.get(f"{MODELS}/{iris.pk}/reference").json()["code"] == "reference_not_found"
    for index in range(29):
        predict_ok(predict_client, str(iris.pk), {"X": iris_rows(10, seed=index).tolist()})
    history.flush()
    services.drift_run()
    assert not Reference.objects.filter(model=iris).exists()  # 29 of 30: not yet

    predict_ok(predict_client, str(iris.pk), {"X": iris_rows(10, seed=99).tolist()})
    history.flush()
    assert services.drift_run()["references"] == 1

    body = read_client.get(f"{MODELS}/{iris.pk}/reference").json()
    assert (body["source"], body["rows"]) == ("predictions", 300)
    features = {feature["name"]: feature for feature in body["features"]}
    assert features["X[0]"]["count"] == 300
    assert sum(features["X[0]"]["counts"]) == 300
    assert 4.0 < features["X[0]"]["mean"] < 8.0
    assert sum(features["label"]["counts"]) == 300
    assert set(features["label"]["categories"]) <= {"0", "1", "2"}
    # And the windows are judged against it: the same traffic, nothing drifted.
    drift = read_client.get(f"{MODELS}/{iris.pk}/drift").json()
    assert drift["reference"]["source"] == "predictions"
    assert drift["windows"][0]["rows"] == 300
    assert drift["windows"][0]["level"] == "green"


def test_a_reference_file_with_a_column_the_model_does_not_take_is_400_naming_it(iris, manage_client):
    rows = iris_rows(20, seed=1)
    with_species = np.hstack([rows, np.zeros((20, 1), dtype=np.float32)])
    response = upload_reference(manage_client, iris.pk, as_csv(with_species, header=(*COLUMNS, "species")))
    assert response.status_code == 400
    assert response.json()["code"] == "reference_columns"
    assert "'species'" in response.json()["detail"]

    lines = b"\n".join(orjson.dumps({"X": row, "colour": 1}) for row in rows.tolist())
    response = upload_reference(manage_client, iris.pk, lines, filename="reference.jsonl")
    assert response.status_code == 400
    assert "colour" in response.json()["detail"]

    response = upload_reference(manage_client, iris.pk, as_csv(rows[:, :3], header=None))
    assert response.status_code == 400, response.json()
    assert not Reference.objects.filter(model=iris).exists()


def test_a_reference_npy_file_is_summarised(iris, manage_client, tmp_path):
    buffer = tmp_path / "reference.npy"
    np.save(buffer, iris_rows(300, seed=8))
    response = upload_reference(manage_client, iris.pk, buffer.read_bytes(), filename="reference.npy")
    assert response.status_code == 200, response.json()
    assert response.json()["rows"] == 300 and response.json()["source"] == "file"


def test_a_version_that_is_not_ready_takes_no_reference(manage_client):
    created = manage_client.post(MODELS, {"name": "later", "version": "1.0.0"}, format="json").json()
    response = upload_reference(manage_client, created["id"], as_csv(iris_rows(20, seed=1)))
    assert response.status_code == 409
    assert response.json()["code"] == "model_not_ready"


def test_references_are_managed_with_the_manage_scope(iris, read_client):
    response = upload_reference(read_client, iris.pk, as_csv(iris_rows(20, seed=1)))
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"psi_amber": -1}, "min_value"),
        ({"psi_red": 11}, "max_value"),
        ({"p_value": 2}, "max_value"),
        ({"min_rows": 0}, "min_value"),
        ({"psi_amber": 0.5, "psi_red": 0.3}, "invalid_thresholds"),
        ({"psi": 0.5}, "read_only_field"),
    ],
)
def test_thresholds_outside_their_range_are_400(iris, manage_client, body, code):
    response = manage_client.patch(f"{MODELS}/{iris.pk}/drift/thresholds", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_a_model_s_thresholds_change_its_levels(iris, manage_client, read_client, settings):
    response = manage_client.patch(f"{MODELS}/{iris.pk}/drift/thresholds", {"psi_red": 50.0 / 10}, format="json")
    assert response.status_code == 200
    assert response.json() == {"psi_amber": 0.1, "psi_red": 5.0, "p_value": 0.01, "min_rows": 100}
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(1000, seed=1))).status_code == 200
    now = timezone.now()
    record(iris, build_iris_onnx(), iris_rows(500, seed=3, shift={0: 1.0}), at=now)
    (result,) = services.drift_compute(model=iris, now=now)
    assert levels(result)["X[0]"] == "amber"  # over amber's 0.1, under this name's red
    assert read_client.get(f"{MODELS}/{iris.pk}/drift/thresholds").json()["psi_red"] == 5.0


def test_latest_for_gives_the_console_each_version_s_worst_window(iris, manage_client, settings):
    settings.DRIFT_WINDOWS = ["1h", "1d"]
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(1000, seed=1))).status_code == 200
    now = timezone.now()
    onnx = build_iris_onnx()
    record(iris, onnx, iris_rows(300, seed=2), at=now)
    record(iris, onnx, iris_rows(1000, seed=3, shift={2: 3.0}), at=now - timedelta(hours=3))
    services.drift_compute(model=iris, now=now)
    latest = latest_for([iris.pk])[iris.pk]
    assert latest["windows"] == {"1h": "green", "1d": "red"}
    assert (latest["level"], latest["window"]) == ("red", "1d")
    feature = next(feature for feature in latest["features"] if feature["name"] == "X[2]")
    assert feature["level"] == "red"
    assert {"psi", "p_value", "reference_counts", "window_counts", "bin_edges"} <= set(feature)


def test_metrics_export_a_psi_gauge_per_version_window_and_feature(iris, manage_client, read_client):
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(1000, seed=1))).status_code == 200
    now = timezone.now()
    record(iris, build_iris_onnx(), iris_rows(300, seed=3, shift={0: 3.0}), at=now)
    (result,) = services.drift_compute(model=iris, now=now)
    text = read_client.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    psi = {feature["name"]: feature["psi"] for feature in result.features}
    line = next(
        line for line in text.splitlines() if line.startswith("modelforge_drift_psi{") and 'feature="X[0]"' in line
    )
    assert 'model="iris"' in line and 'version="1.0.0"' in line and 'window="1h"' in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(psi["X[0]"])
    assert sum(line.startswith("modelforge_drift_psi{") for line in text.splitlines()) == 8
    assert 'modelforge_drift_level{model="iris",version="1.0.0",window="1h"} 2.0' in text


def test_at_most_drift_max_features_per_version_outputs_first(iris, manage_client, read_client, settings):
    settings.DRIFT_MAX_FEATURES = 3
    response = upload_reference(manage_client, iris.pk, as_csv(iris_rows(200, seed=1)))
    assert [feature["name"] for feature in response.json()["features"]] == [
        "label",
        "probabilities[0]",
        "probabilities[1]",
    ]
    assert "over DRIFT_MAX_FEATURES=3" in response.json()["skipped"][0]
    now = timezone.now()
    record(iris, build_iris_onnx(), iris_rows(200, seed=2), at=now)
    services.drift_compute(model=iris, now=now)
    text = read_client.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    assert sum(line.startswith("modelforge_drift_psi{") for line in text.splitlines()) == 3


def test_the_admin_shows_the_reference_and_the_latest_drift_read_only(iris, manage_client, ops_user, client):
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(500, seed=1))).status_code == 200
    now = timezone.now()
    record(iris, build_iris_onnx(), iris_rows(300, seed=3, shift={0: 3.0}), at=now)
    (result,) = services.drift_compute(model=iris, now=now)
    client.force_login(ops_user)
    reference = Reference.objects.get(model=iris)
    page = client.get(f"/admin/monitoring/reference/{reference.pk}/change/").content.decode()
    assert "X[0]" in page and "probabilities[2]" in page and "reference.csv" in page
    page = client.get(f"/admin/monitoring/driftresult/{result.pk}/change/").content.decode()
    assert "X[0]" in page and "red" in page
    assert client.get("/admin/monitoring/driftresult/").status_code == 200


def test_the_admin_uploads_a_reference_and_names_a_column_that_does_not_fit(iris, ops_user, client):
    client.force_login(ops_user)
    bad = SimpleUploadedFile("ref.csv", as_csv(np.zeros((5, 5), dtype=np.float32), header=(*COLUMNS, "species")))
    page = client.post("/admin/monitoring/reference/add/", {"model": iris.pk, "file": bad})
    assert page.status_code == 200
    assert "species" in page.content.decode() and "reference_columns" in page.content.decode()
    assert not Reference.objects.filter(model=iris).exists()

    good = SimpleUploadedFile("ref.csv", as_csv(iris_rows(200, seed=1)))
    response = client.post("/admin/monitoring/reference/add/", {"model": iris.pk, "file": good})
    reference = Reference.objects.get(model=iris)
    assert response.status_code == 302 and response["Location"].endswith(f"/reference/{reference.pk}/change/")
    assert (reference.source, reference.rows, reference.filename) == ("file", 200, "ref.csv")


def test_the_periodic_run_is_scheduled_with_a_broker_and_without_one(settings, iris, manage_client):
    from core.embedded_runner import runner
    from monitoring import tasks

    assert settings.CELERY_BEAT_SCHEDULE["drift"]["task"] == tasks.drift.name == "monitoring.drift"
    assert settings.CELERY_BEAT_SCHEDULE["drift"]["schedule"] == settings.DRIFT_INTERVAL_SECONDS
    assert (services.drift_run, settings.DRIFT_INTERVAL_SECONDS) in runner._periodic
    assert upload_reference(manage_client, iris.pk, as_csv(iris_rows(300, seed=1))).status_code == 200
    assert tasks.drift.apply().get() == {"references": 0, "versions": 1, "failed": 0}
    assert DriftResult.objects.filter(model=iris, window="1h").exists()


def test_a_reference_file_s_format_is_declared_or_taken_from_its_name(iris, manage_client):
    content = as_csv(iris_rows(120, seed=2))
    response = upload_reference(manage_client, iris.pk, content, filename="samples.txt")
    assert response.status_code == 400 and response.json()["code"] == "unsupported_format"
    response = upload_reference(manage_client, iris.pk, content, filename="samples.txt", input_format="csv")
    assert response.status_code == 200, response.json()
    assert (response.json()["rows"], response.json()["filename"]) == (120, "samples.txt")
