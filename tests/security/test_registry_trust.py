"""Issue 15 ("Trust"), the registry's part: versions are immutable once ready, through every
route; a version with a number too large (or a key too long) is a 400 `invalid_version`,
never a 500, on every route that takes one; and uploads are throttled by default.

Validation in the background (the 202 flow, the embedded runner and Celery, the sweeper) is
tests/registry/test_background_validation.py; the slow-validation attack on a real server is
at the end of this file.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from registry import services
from registry.errors import VersionImmutable
from registry.models import MLModel
from registry.versioning import MAX_NUMBER_DIGITS
from tests import granian_server
from tests.inference.factories import make_scaled_model
from tests.registry.onnx_factories import make_busy_loop_model
from tests.security.battery import assert_still_serves, via_django, via_fastpath

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"
X = b'{"input_data": {"X": [[1.0, 2.0, 3.0]]}}'
HUGE = "1" + "0" * MAX_NUMBER_DIGITS  # 21 digits: one more than a version number may have
# Every place a number sits in a version, each one digit too long.
HUGE_VERSIONS = [
    f"{HUGE}.0.0",
    f"1.{HUGE}.0",
    f"1.0.{HUGE}",
    f"1.0.0-rc.{HUGE}",
    f"1.0.0-{HUGE}",
    "9" * 60 + ".0.0",
]
# The densest version of 64 characters: its sort key (670 digits) must fit its column.
DENSEST = "0.0.0-" + ".".join(["1"] * 29)


def onnx_file(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")


def stored_files(storage: Path) -> list[str]:
    return sorted(path.name for path in storage.rglob("*.onnx"))


@pytest.fixture
def served(ready_model, make_key):
    """A ready version and a predict key: what must keep answering, byte for byte."""
    model = ready_model(make_scaled_model(2.0), name="scaler")
    return model, make_key("read", "predict", name="caller")[1]


def assert_serves_the_original(model: dict, key: str) -> None:
    for send in (via_django, via_fastpath):
        reply = send(f"{MODELS}/{model['id']}/predict", X, key=key)
        assert reply.status == 200, reply.content[:500]
        assert reply.json()["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}


# --- versions are immutable once ready ---------------------------------------------------------


def test_api_upload_to_a_ready_version_is_409_version_immutable(manage_client, served, model_storage):
    model, key = served
    before = stored_files(model_storage)

    response = manage_client.post(
        f"{MODELS}/{model['id']}/upload", {"file": onnx_file(make_scaled_model(3.0))}, format="multipart"
    )

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "version_immutable"
    assert "new version" in body["detail"]
    row = MLModel.objects.get(pk=model["id"])
    assert (row.status, row.file_sha256) == ("ready", model["file_sha256"])
    assert stored_files(model_storage) == before  # the refused file was not kept
    assert list((model_storage / "tmp").iterdir()) == []
    assert_serves_the_original(model, key)


def test_a_version_that_was_ready_stays_immutable_after_it_fails_or_is_archived(manage_client, served):
    model, key = served
    row = MLModel.objects.get(pk=model["id"])
    services.model_mark_corrupt(model=row, code="checksum_mismatch", detail="the file changed on disk")

    response = manage_client.post(
        f"{MODELS}/{model['id']}/upload", {"file": onnx_file(make_scaled_model(3.0))}, format="multipart"
    )

    assert (response.status_code, response.json()["code"]) == (409, "version_immutable")
    row.refresh_from_db()
    assert (row.status, row.file_sha256) == ("error", model["file_sha256"])

    MLModel.objects.filter(pk=row.pk).update(status="archived")
    response = manage_client.post(
        f"{MODELS}/{model['id']}/upload", {"file": onnx_file(make_scaled_model(3.0))}, format="multipart"
    )
    assert (response.status_code, response.json()["code"]) == (409, "model_archived")


def test_a_version_never_ready_still_takes_a_new_file(manage_client, make_key):
    created = manage_client.post(MODELS, {"name": "fixme", "version": "1.0.0", "file": onnx_file(b"not onnx")})
    assert (created.status_code, created.json()["status"]) == (202, "error")
    url = f"{MODELS}/{created.json()['id']}"

    uploaded = manage_client.post(f"{url}/upload", {"file": onnx_file(make_scaled_model(4.0))}, format="multipart")
    assert (uploaded.status_code, uploaded.json()["status"]) == (200, "uploaded")
    assert manage_client.post(f"{url}/validate").json()["status"] == "ready"

    # ...and from then on it is fixed too.
    again = manage_client.post(f"{url}/upload", {"file": onnx_file(make_scaled_model(5.0))}, format="multipart")
    assert (again.status_code, again.json()["code"]) == (409, "version_immutable")
    key = make_key("predict")[1]
    assert via_django(f"{url}/predict", X, key=key).json()["output_data"] == {"Y": [[4.0, 8.0, 12.0]]}


def test_an_upload_racing_the_validation_that_makes_it_ready_is_refused(model_storage):
    """The service re-checks in its conditional UPDATE: a caller holding the row from before the
    validation ended (the API's get_object, then a slow upload) cannot replace the file."""
    model = services.model_create(name="race", version="1.0.0")
    model = services.model_upload(model=model, staged=services.stage_stream(io.BytesIO(make_scaled_model(2.0))))
    stale = MLModel.objects.get(pk=model.pk)  # read while uploaded
    services.model_validate(model=model)  # ready now (at once in tests)

    staged = services.stage_stream(io.BytesIO(make_scaled_model(3.0)))
    with pytest.raises(VersionImmutable):
        services.model_upload(model=stale, staged=staged)

    row = MLModel.objects.get(pk=model.pk)
    assert (row.status, row.file_sha256) == ("ready", model.file_sha256)
    assert stored_files(model_storage) == [f"{model.file_sha256}.onnx"]


def test_admin_change_form_refuses_a_new_file_for_a_ready_version(client, ops_user, served):
    model, key = served
    client.force_login(ops_user)
    row = MLModel.objects.get(pk=model["id"])
    url = reverse("admin:registry_mlmodel_change", args=[row.pk])
    page = client.get(url)
    assert "its file can never be replaced" in page.content.decode()  # said before anyone tries

    form = {
        "description": "changed",
        "tags": "",
        "preload": "",
        "allow_non_finite": "",
        "max_batch_size": row.max_batch_size,
        "max_queue_delay_microseconds": row.max_queue_delay_microseconds,
        "preferred_batch_size": "",
        "max_queue_size": row.max_queue_size,
        "default_timeout_microseconds": row.default_timeout_microseconds,
        "file": onnx_file(make_scaled_model(3.0)),
    }
    response = client.post(url, form)

    assert response.status_code == 200  # the form again, with the error on the file field
    errors = response.context["adminform"].form.errors
    assert errors["file"] == [
        "This version has been ready, so its file can never be replaced. "
        "Upload the new file as a new version with 'Upload a new version' below."
    ]
    row.refresh_from_db()
    assert (row.file_sha256, row.description) == (model["file_sha256"], "")  # nothing saved
    assert_serves_the_original(model, key)


def test_import_models_never_replaces_the_file_of_a_registered_version(tmp_path, served, model_storage):
    model, key = served
    source = tmp_path / "import"
    (source / "scaler" / "1.0.0").mkdir(parents=True)
    (source / "scaler" / "1.0.0" / "model.onnx").write_bytes(make_scaled_model(3.0))
    out = io.StringIO()

    with pytest.raises(CommandError, match="1 of 1 model"):
        call_command("import_models", str(source), stdout=out, stderr=out)

    assert "conflict" in out.getvalue()
    assert MLModel.objects.get(pk=model["id"]).file_sha256 == model["file_sha256"]
    assert_serves_the_original(model, key)


# --- versions: invalid_version, never a 500 -----------------------------------------------------


@pytest.mark.parametrize("version", HUGE_VERSIONS)
def test_create_with_a_version_number_over_20_digits_is_400_invalid_version(manage_client, version):
    for payload, kind in (({"name": "m", "version": version}, "json"), ({"name": "m", "version": version}, None)):
        if kind is None:
            payload = {**payload, "file": onnx_file(make_scaled_model(2.0))}
            response = manage_client.post(MODELS, payload, format="multipart")
        else:
            response = manage_client.post(MODELS, payload, format="json")
        assert response.status_code == 400, response.content[:300]
        body = response.json()
        assert body["code"] == "invalid_version"
        assert body["detail"].startswith("version: ")
        assert "at most 20 digits" in body["detail"] or "at most 64 characters" in body["detail"]
    assert MLModel.objects.count() == 0


def test_the_densest_64_character_version_is_registered_and_ordered(manage_client):
    response = manage_client.post(MODELS, {"name": "dense", "version": DENSEST}, format="json")
    assert response.status_code == 201, response.content[:300]
    manage_client.post(MODELS, {"name": "dense", "version": "0.0.0"}, format="json")
    versions = manage_client.get(f"{MODELS}/by-name/dense/versions").json()["results"]
    assert [v["version"] for v in versions] == ["0.0.0", DENSEST]  # a release outranks its pre-releases


@pytest.mark.parametrize("version", HUGE_VERSIONS[:3])
def test_by_name_routes_with_a_huge_version_are_4xx_never_500(manage_client, served, version):
    model, key = served
    alias = manage_client.put(f"{MODELS}/by-name/scaler/aliases/production", {"version": version}, format="json")
    assert (alias.status_code, alias.json()["code"]) == (400, "invalid_version")

    for path, query in (
        (f"{MODELS}/by-name/scaler/predict", f"version={version}"),
        (f"/v2/models/scaler/versions/{version}/infer", ""),
    ):
        for send in (via_django, via_fastpath):
            body = X if path.startswith(MODELS) else b'{"inputs": []}'
            reply = send(path, body, key=key, query=query)
            assert reply.status == 404, (path, reply.content[:300])
    assert manage_client.get(f"{MODELS}/by-name/scaler/versions").status_code == 200
    assert_still_serves(via_fastpath, model["id"], key, row={"X": [[1.0, 2.0, 3.0]]})


def test_admin_add_form_with_a_huge_version_is_a_form_error(client, ops_user):
    client.force_login(ops_user)
    response = client.post(
        reverse("admin:registry_mlmodel_add"),
        {"name": "m", "version": HUGE_VERSIONS[0], "description": "", "tags": "", "file": onnx_file(b"x")},
    )
    assert response.status_code == 200
    assert "at most 20 digits" in response.context["adminform"].form.errors["version"][0]
    assert MLModel.objects.count() == 0


def test_import_models_with_a_huge_version_fails_that_entry_only(tmp_path):
    source = tmp_path / "import"
    (source / "m" / HUGE_VERSIONS[0]).mkdir(parents=True)
    (source / "m" / HUGE_VERSIONS[0] / "model.onnx").write_bytes(make_scaled_model(2.0))
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 model"):
        call_command("import_models", str(source), stdout=out, stderr=out)
    assert "at most 20 digits" in out.getvalue()
    assert "Traceback" not in out.getvalue()
    assert MLModel.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("description", "d" * 10_001, "max_length"),
        ("tags", [f"t{index}" for index in range(51)], "max_length"),
        ("tags", ["x" * 51], "max_length"),
        ("name", "n" * 101, "max_length"),
        ("version", "1.0.0-" + "a" * 59, "max_length"),
    ],
)
def test_every_field_over_its_limit_is_a_400_naming_it(manage_client, field, value, code):
    payload = {"name": "m", "version": "1.0.0", field: value}
    response = manage_client.post(MODELS, payload, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"].startswith(f"{field}")
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    "batching",
    [
        {"max_batch_size": 2**31},
        {"max_queue_size": 2**63},
        {"default_timeout_microseconds": 10**30},
        {"preferred_batch_size": -1},
        {"max_queue_delay_microseconds": 2**31},
    ],
)
def test_serving_numbers_too_large_for_their_column_are_400(manage_client, served, batching):
    model, _ = served
    response = manage_client.patch(f"{MODELS}/{model['id']}", {"batching": batching}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"].startswith("batching: ")


def test_admin_change_form_refuses_serving_numbers_out_of_bounds(client, ops_user, served):
    model, _ = served
    client.force_login(ops_user)
    row = MLModel.objects.get(pk=model["id"])
    form = {
        "description": "",
        "tags": "",
        "max_batch_size": 2**40,  # more than the integer column holds
        "max_queue_delay_microseconds": row.max_queue_delay_microseconds,
        "preferred_batch_size": "",
        "max_queue_size": 10**7,  # more than the API accepts
        "default_timeout_microseconds": row.default_timeout_microseconds,
    }
    response = client.post(reverse("admin:registry_mlmodel_change", args=[row.pk]), form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["max_batch_size"] == ["Ensure this value is less than or equal to 100000."]
    assert errors["max_queue_size"] == ["Ensure this value is less than or equal to 1000000."]
    row.refresh_from_db()
    assert row.max_batch_size == 64


# --- uploads are throttled by default ------------------------------------------------------------


def test_uploads_are_throttled_by_default_at_30_a_minute(manage_client, settings):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.THROTTLE_RATES['upload'])"],
        env={key: value for key, value in os.environ.items() if key != "THROTTLE_RATE_UPLOAD"},
        cwd=granian_server.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "30/min"

    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "upload": "30/min"}
    created = [manage_client.post(MODELS, {"name": "m", "version": f"1.0.{index}"}) for index in range(30)]
    assert {response.status_code for response in created} == {201}
    refused = manage_client.post(f"{MODELS}/{created[0].json()['id']}/validate")  # validating costs one too
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert manage_client.get(MODELS).status_code == 200  # reads are not throttled


# --- a slow-to-validate model no longer holds the server's threads -------------------------------

SLOW_UPLOADS = 3


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_slow_validations_do_not_hold_the_servers_threads(tmp_path, make_key):
    """Against granian with 2 threads: 3 uploads of a model whose validation runs until its
    timeout (a busy loop) each answer 202 at once, and while all three are still validating
    the server answers reads and health probes. (Before, each upload held a thread for up to
    VALIDATION_TIMEOUT_SECONDS: the third waited, and so did everything else.)"""
    port = granian_server.free_port()
    environment = _server_environment(tmp_path)
    granian_server.manage(environment, "migrate", "--noinput")
    created = granian_server.manage(environment, "create_api_key", "--name", "ops", "--scopes", "read,manage")
    key = created.stdout.splitlines()[0].strip()
    server = granian_server.start(environment, tmp_path / "server.log", port=port, threads=2, ready_path="/api/v1/live")
    try:
        import urllib3

        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {key}"}
        pool = urllib3.PoolManager(maxsize=SLOW_UPLOADS + 2, timeout=urllib3.Timeout(total=60))
        busy = make_busy_loop_model()
        from concurrent.futures import ThreadPoolExecutor

        def upload(index: int):
            fields = {"name": "slow", "version": f"1.0.{index}", "file": ("m.onnx", busy, "application/octet-stream")}
            return pool.request("POST", f"{base}/models", fields=fields, headers=headers)

        with ThreadPoolExecutor(SLOW_UPLOADS) as executor:
            answers = list(executor.map(upload, range(SLOW_UPLOADS)))
        assert [answer.status for answer in answers] == [202] * SLOW_UPLOADS, [a.data[:300] for a in answers]
        assert {answer.json()["status"] for answer in answers} == {"validating"}
        assert all(answer.headers["Location"].endswith(f"/api/v1/models/{answer.json()['id']}") for answer in answers)

        assert pool.request("GET", f"{base}/live").status == 200
        listed = pool.request("GET", f"{base}/models?name=slow", headers=headers)
        assert listed.status == 200
        # Still validating: each runs until VALIDATION_TIMEOUT_SECONDS (300 s here), one at a time.
        assert [model["status"] for model in listed.json()["results"]] == ["validating"] * SLOW_UPLOADS
    finally:
        granian_server.stop(server)
        # The validating children (busy loops) are in the server's process group: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def _server_environment(tmp_path: Path) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "HOME", "TMPDIR")},
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "registry-trust-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "store"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "JOB_STORAGE_PATH": str(tmp_path / "jobs"),
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",  # validations on the embedded runner, in the server process
        "JOB_EMBEDDED_THREADS": "1",  # one busy child at a time on a shared CI machine
        "VALIDATION_TIMEOUT_SECONDS": "300",
        "THROTTLE_RATE_UPLOAD": "",
        "LOG_LEVEL": "WARNING",
    }
