"""The ops console in a real browser: Playwright driving Debian's chromium (headless) against a
real server process (granian, DEBUG off, static files collected and served by WhiteNoise, jobs
on the embedded runner), its own SQLite database and model store.

Screenshots of each step go to tests/e2e/artifacts/ (git-ignored). Without /usr/bin/chromium
the tests fail under CI (which installs it: .ci/run) and are skipped elsewhere, saying why.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.demo import build_iris_onnx
from tests import granian_server
from tests.jobs.factories import iris_rows, jsonl_bytes

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ADMIN_USER, ADMIN_PASSWORD = "ops", "console-e2e-password-1"
TIMEOUT_MS = 60_000


@dataclass
class ConsoleServer:
    base: str
    key: str
    env: dict
    workdir: Path

    def manage(self, *args: str) -> str:
        return granian_server.manage(self.env, *args).stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A production-like server with an admin user, an API key and three iris versions."""
    workdir = tmp_path_factory.mktemp("console")
    port = granian_server.free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "console-e2e-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(workdir / "models"),
        "JOB_STORAGE_PATH": str(workdir / "jobs"),
        "STATIC_ROOT": str(workdir / "static"),
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",  # jobs on the embedded runner, in the server process
        "JOB_CHUNK_ROWS": "200",  # many progress updates for the job the browser watches
        "HISTORY_FLUSH_INTERVAL_SECONDS": "0.2",
        "SERVING_STATS_FLUSH_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    granian_server.manage(env, "migrate", "--noinput", "-v0")
    granian_server.manage(env, "collectstatic", "--noinput", "-v0")
    granian_server.manage(env, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "ops@example.com")
    source = workdir / "source"
    for name, version in (("iris", "1.0.0"), ("iris", "1.1.0"), ("csv-iris", "1.0.0")):
        folder = source / name / version
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(build_iris_onnx())
    granian_server.manage(env, "import_models", str(source))
    scopes = "read,predict,manage"
    key = granian_server.manage(env, "create_api_key", "--name", "console-e2e", "--scopes", scopes).stdout.strip()

    process = granian_server.start(env, workdir / "server.log", port=port, ready_path="/api/v1/live")
    try:
        yield ConsoleServer(base=f"http://127.0.0.1:{port}", key=key, env=env, workdir=workdir)
    finally:
        granian_server.stop(process, timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A signed-in admin page (a new browser context per test)."""
    context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    yield page
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api(server, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 (our own loopback server)
        server.base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def wait_for_history(server, model_id: str, count: int) -> None:
    """History is written in the background (within HISTORY_FLUSH_INTERVAL_SECONDS)."""
    deadline = time.monotonic() + 30
    while len(api(server, "GET", f"/api/v1/models/{model_id}/predictions")["results"]) < count:
        assert time.monotonic() < deadline, "the predictions were not recorded"
        time.sleep(0.2)


# The model page refreshes itself while validating; this bounds the wait for the outcome.
VALIDATION_BOUND_MS = 120_000


def model_page(page, name: str, version: str) -> None:
    page.goto(f"/admin/registry/mlmodel/?name__exact={name}")
    page.locator("#result_list").get_by_role("link", name=version, exact=True).click()
    page.wait_for_selector("#mf-status")


def test_sign_in_and_upload_a_model_through_the_form(page, server, tmp_path):
    from playwright.sync_api import expect

    shot(page, "01-admin-index")
    expect(page.get_by_role("link", name="Dashboard")).to_be_visible()
    model_file = tmp_path / "uploaded.onnx"
    model_file.write_bytes(build_iris_onnx())
    page.goto("/admin/registry/mlmodel/add/")
    page.get_by_label("Name").fill("uploaded-iris")
    page.get_by_label("Version").fill("2.0.0")
    page.get_by_label("Tags").fill("e2e, browser")
    page.get_by_label("ONNX model file").set_input_files(str(model_file))
    shot(page, "02-add-form")
    page.get_by_role("button", name="Save", exact=True).click()
    # The new version's page, while it is validated in the background; it refreshes itself
    # until the outcome. The message keeps the name as it is written.
    expect(page.locator(".messagelist")).to_have_text(
        "uploaded-iris 2.0.0 is being validated in the background; its page refreshes until it is ready or has failed."
    )
    expect(page.locator("#mf-status h2")).to_have_text("Status: Ready", timeout=VALIDATION_BOUND_MS)
    expect(page.locator("#mf-validating")).to_have_count(0)
    page.goto("/admin/registry/mlmodel/")
    expect(page.locator("#result_list")).to_contain_text("uploaded-iris")
    row = page.locator("#result_list tbody tr", has_text="uploaded-iris")
    expect(row.locator(".mf-status")).to_have_text("Ready")
    shot(page, "03-uploaded-ready")


def test_try_it_shows_the_output_and_timings(page, server):
    from playwright.sync_api import expect

    model_page(page, "iris", "1.0.0")
    textarea = page.get_by_label("Input data (JSON, the input_data of a predict request)")
    assert json.loads(textarea.input_value()) == {"X": [[0.0, 0.0, 0.0, 0.0]]}  # one row from the schema
    shot(page, "04-model-page")
    textarea.fill('{"X": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
    page.get_by_role("button", name="Predict").click()
    output = page.locator("#mf-output")
    expect(output).to_be_visible()
    answer = json.loads(output.inner_text())
    assert answer["model_name"] == "iris" and answer["model_version"] == "1.0.0"
    assert answer["output_data"]["label"] == [0, 2]
    expect(page.get_by_role("cell", name="compute")).to_be_visible()
    shot(page, "05-try-it-output")

    page.get_by_label("Input data (JSON, the input_data of a predict request)").fill('{"X": [[5.1, 3.5]]}')
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#mf-error-code")).to_have_text("invalid_shape")
    shot(page, "06-try-it-error")


def test_the_browsable_apis_predict_form_shows_the_prediction(page, server):
    """The API's own pages, signed in to the admin: the predict form's script posts the body and
    puts the answer's page in place (before, the JSON answer made it reload the URL: a 405)."""
    from playwright.sync_api import expect

    page.goto("/api/v1/models/by-name/iris/predict?version=1.0.0")
    response = page.locator(".response-info")
    expect(response).to_contain_text("HTTP 405 Method Not Allowed")  # a POST-only route, with its form
    form = page.locator("#post-generic-content-form")
    body = form.locator("textarea")
    assert json.loads(body.input_value()) == {"input_data": {"X": [[0.0, 0.0, 0.0, 0.0]]}, "skip_cache": False}
    body.fill('{"input_data": {"X": [[6.7, 3.0, 5.2, 2.3]]}}')
    form.get_by_role("button", name="POST").click()
    expect(response).to_contain_text("HTTP 200 OK")
    expect(response).to_contain_text('"model_name": "iris"')
    expect(response).to_contain_text('"model_version": "1.0.0"')
    assert page.url.endswith("/api/v1/models/by-name/iris/predict?version=1.0.0")
    shot(page, "06c-browsable-api-predict")


def test_upload_a_new_version_and_move_the_production_alias(page, server, tmp_path):
    from playwright.sync_api import expect

    model_page(page, "iris", "1.1.0")
    page.get_by_role("button", name="Move alias here").click()  # production -> 1.1.0 (created)
    # Creating production asks first: what requests without a version will get from now on.
    expect(page.locator("#content")).to_contain_text("iris@production")
    shot(page, "06b-alias-confirmation")
    page.locator("#mf-confirm-button").click()
    expect(page.locator(".messagelist")).to_contain_text("Alias iris@production now points at 1.1.0")

    # A new version from the page: the name is fixed, the version suggested (the next patch).
    model_file = tmp_path / "next.onnx"
    model_file.write_bytes(build_iris_onnx())
    panel = page.locator("#mf-new-version")
    expect(panel.get_by_label("Version")).to_have_value("1.1.1")
    panel.get_by_label("ONNX model file").set_input_files(str(model_file))
    panel.get_by_role("button", name="Upload and validate").click()
    expect(page.locator(".messagelist")).to_contain_text("iris 1.1.1 is being validated in the background")
    expect(page.locator("#mf-status h2")).to_have_text("Status: Ready", timeout=VALIDATION_BOUND_MS)

    page.get_by_role("button", name="Move alias here").click()  # production 1.1.0 -> 1.1.1
    confirmation = page.locator("#content")
    expect(confirmation).to_contain_text("1.1.0")  # from -> to, on the page that asks first
    expect(confirmation).to_contain_text("1.1.1")
    page.locator("#mf-confirm-button").click()
    expect(page.locator(".messagelist")).to_contain_text("Alias iris@production now points at 1.1.1 (was 1.1.0)")
    history = page.locator("#mf-alias-history tbody tr").first
    expect(history).to_contain_text("Moved")
    expect(history).to_contain_text("1.1.0")
    expect(history).to_contain_text("1.1.1")
    expect(history).to_contain_text(ADMIN_USER)
    shot(page, "07-alias-moved")
    # Requests without a version now get the alias's version.
    answer = api(server, "POST", "/api/v1/models/by-name/iris/predict", {"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}})
    assert answer["model_version"] == "1.1.1"


def test_a_batch_job_page_follows_the_job_until_completed(page, server, browser):
    from playwright.sync_api import expect

    rows = 20_000
    batch = {"name": "rows.jsonl", "mimeType": "application/jsonl", "buffer": jsonl_bytes(iris_rows(rows))}
    request = page.context.request
    response = request.post(
        "/api/v1/jobs",
        headers={"Authorization": f"Bearer {server.key}"},
        multipart={
            "model_name": "csv-iris",
            "input_file": batch,
        },
    )
    assert response.status == 202, response.text()
    job = response.json()
    page.goto(f"/admin/jobs/job/{job['id']}/change/")
    shot(page, "08-job-page")
    # The page reloads itself while the job is active, until it shows the job completed.
    expect(page.locator("#mf-job-state h2")).to_have_text("Job completed", timeout=120_000)
    expect(page.locator("#mf-refreshing")).to_have_count(0)
    progress = page.locator("progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(rows)
    expect(page.locator(".mf-progress")).to_contain_text(f"{rows:,} / {rows:,} (100%)")
    shot(page, "09-job-completed")
    page.goto("/admin/jobs/job/")
    expect(page.locator("#result_list .mf-status").first).to_have_text("Completed")


# What a worker writes when it takes a job and when it finishes it: set from outside the server,
# so the list is seen while the job runs, however fast the machine is.
RUNNING_JOB = """
from django.utils import timezone
from jobs.models import Job
from registry.models import MLModel
model = MLModel.objects.get(name="csv-iris", version="1.0.0")
job = Job.objects.create(
    model=model, model_name=model.name, model_version=model.version, input_format="json",
    input_data={"X": [[5.1, 3.5, 1.4, 0.2]]}, status="running", started_at=timezone.now(), progress_total=1,
)
print(job.pk)
"""
FINISH_JOB = """
from django.utils import timezone
from jobs.models import Job
Job.objects.filter(pk="{job_id}").update(
    status="completed", output_data={{"label": [0]}}, progress_done=1, finished_at=timezone.now()
)
"""


def test_the_job_list_follows_a_running_job_until_it_finishes(page, server):
    from playwright.sync_api import expect

    job_id = server.manage("shell", "--no-imports", "-c", RUNNING_JOB).strip().splitlines()[-1]
    page.goto("/admin/jobs/job/")
    row = page.locator("#result_list tbody tr", has_text=job_id[:8])
    expect(row.locator(".mf-status")).to_have_text("Running")
    expect(page.locator("#mf-refreshing")).to_be_visible()
    shot(page, "09b-job-list-running")

    server.manage("shell", "--no-imports", "-c", FINISH_JOB.format(job_id=job_id))

    # No click: the list reloads itself and shows the outcome, then stops reloading.
    expect(row.locator(".mf-status")).to_have_text("Completed", timeout=30_000)
    expect(page.locator("#mf-refreshing")).to_have_count(0)


def test_export_predictions_as_csv_with_the_current_filters(page, server):
    from playwright.sync_api import expect

    inputs = [[[4.9 + index / 10, 3.0, 1.4, 0.2]] for index in range(5)]
    for x in inputs:
        answer = api(server, "POST", "/api/v1/models/by-name/csv-iris/predict", {"input_data": {"X": x}})
    api(server, "POST", "/api/v1/models/by-name/csv-iris/predict", {"input_data": {"X": inputs[0]}})  # cached
    wait_for_history(server, answer["model_id"], 6)
    # The model filter's own link (it lists models only once two have predictions).
    page.goto(f"/admin/inference/prediction/?model__id__exact={answer['model_id']}")
    shot(page, "10-predictions")
    page.locator("#changelist-filter").get_by_role("link", name="No").click()  # cached: no
    expect(page.locator("#result_list tbody tr")).to_have_count(5, timeout=10_000)
    shot(page, "11-predictions-filtered")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export these predictions as CSV").click()
    download = download_info.value
    text = Path(download.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5
    assert {row["model_name"] for row in rows} == {"csv-iris"}
    assert {row["cached"] for row in rows} == {"False"}
    assert sorted(json.loads(row["input_data"])["X"] for row in rows) == sorted(inputs)
    assert all(json.loads(row["output_data"])["label"] == [0] for row in rows)


def dashboard_requests(page, model_id: str) -> int:
    page.goto("/admin/dashboard/")
    row = page.locator(f'#mf-serving-table tr[data-model-id="{model_id}"]')
    return int(row.locator("td").nth(2).inner_text()) if row.count() else 0


def test_the_dashboard_shows_what_was_served(page, server):
    from playwright.sync_api import expect

    body = {"input_data": {"X": [[5.0, 3.1, 1.5, 0.2]]}}
    model_id = api(server, "GET", "/api/v1/models?name=csv-iris")["results"][0]["id"]
    time.sleep(1)  # let the server write what it counted so far (every SERVING_STATS_FLUSH_SECONDS)
    before = dashboard_requests(page, model_id)
    for _ in range(2):
        api(server, "POST", "/api/v1/models/by-name/csv-iris/predict", body)
    deadline = time.monotonic() + 30
    while dashboard_requests(page, model_id) != before + 2:
        assert time.monotonic() < deadline, "the dashboard did not show the two requests"
        time.sleep(0.5)
    expect(page.locator("svg.mf-chart")).to_have_count(5)  # requests, errors, p95, batch size, latency
    expect(page.locator("#mf-workers")).to_contain_text("embedded")
    shot(page, "12-dashboard")
    page.locator(f'#mf-serving-table tr[data-model-id="{model_id}"]').get_by_role("link", name="show").click()
    expect(page.locator("#mf-charts h2")).to_contain_text("csv-iris 1.0.0")
    shot(page, "13-dashboard-one-model")


def _status_of(server, key: str, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(server.base + path, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own loopback server)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_api_keys_are_created_once_named_uniquely_used_and_expired_now(page, server):
    # Create: the raw key is shown once; reloading that page shows it gone and creates nothing.
    page.goto("/admin/access/apikey/add/")
    page.get_by_label("Name").fill("nightly-scorer")
    page.get_by_role("checkbox", name="Predict").check()
    page.get_by_role("checkbox", name="Read").check()
    page.get_by_role("button", name="Save", exact=True).click()
    raw_key = page.locator("#mf-raw-key").input_value()
    assert raw_key
    shot(page, "keys-1-created-once")
    page.reload()
    assert page.locator("#mf-key-gone").is_visible()
    assert page.locator("#mf-raw-key").count() == 0
    page.goto("/admin/access/apikey/?q=nightly-scorer")
    assert page.locator("#result_list tbody tr").count() == 1

    # The same name again (any case) is refused on the form, naming the key that has it.
    page.goto("/admin/access/apikey/add/")
    page.get_by_label("Name").fill("Nightly-Scorer")
    page.get_by_role("checkbox", name="Read").check()
    page.get_by_role("button", name="Save", exact=True).click()
    assert "nightly-scorer" in page.locator(".errorlist").inner_text()
    shot(page, "keys-2-name-taken")

    # Used: the list shows when.
    status, _ = _status_of(server, raw_key, "/api/v1/models")
    assert status == 200
    page.goto("/admin/access/apikey/?q=nightly-scorer")
    row = page.locator("#result_list tbody tr").first
    assert row.locator("td.field-last_used_at").inner_text().strip() not in ("", "-")

    # Expire now: a confirmation first, then the key is refused with its own code.
    row.get_by_role("link", name="nightly-scorer").click()
    page.get_by_role("link", name="Expire now").click()
    assert "nightly-scorer" in page.locator("#mf-expire-keys").inner_text()
    status, _ = _status_of(server, raw_key, "/api/v1/models")
    assert status == 200, "nothing changes before the confirmation"
    shot(page, "keys-3-expire-confirmation")
    page.locator("#mf-confirm-expire").click()
    status, body = _status_of(server, raw_key, "/api/v1/models")
    assert (status, body["code"]) == (401, "api_key_expired")
